/**
 * `email-status dashboard`: the metrics dashboard served on 127.0.0.1, for hosted projects on
 * `*.supabase.co`, where Supabase serves a function's text/html answers as text/plain, so the page the
 * function serves cannot be opened there (it can on a custom domain).
 *
 *   email-status dashboard --url https://<ref>.supabase.co/functions/v1/email-worker [--port N]
 *     The page (the function's own, functions/_shared/dashboard_page.ts) is served locally and reads
 *     the deployed function's JSON routes from the browser; the function answers CORS for loopback
 *     origins. Sign in with a support or admin user's access token, or DASHBOARD_TOKEN, as on the
 *     function. Nothing but the page goes through this process.
 *   email-status dashboard [--port N]
 *     Against the database (DATABASE_URL or DELIVERY_STATUS_DATABASE_URL) with the function's own
 *     handler; the JSON routes are opened by a one-time token that the printed URL carries in its
 *     fragment (other local users cannot read the metrics without it).
 *
 * Listens on 127.0.0.1 only, answers only requests addressed to it by that name (no DNS rebinding),
 * prints the URL on stdout and runs until Ctrl-C (SIGINT) or SIGTERM.
 */
import { parseArgs } from "node:util";
import type postgres from "postgres";
import { dashboardPageResponse, handleDashboard } from "../functions/_shared/dashboard.ts";
import { jsonError } from "../functions/_shared/http.ts";
import { safeText } from "./terminal.ts";

/** The usage text of `email-status dashboard`. */
export const dashboardUsage = `usage: email-status dashboard [--url <function URL>] [--port N]
  --url URL   the deployed function, e.g. https://<ref>.supabase.co/functions/v1/email-worker: the local
              page reads its JSON routes (sign in with a support/admin user's token or DASHBOARD_TOKEN)
              without --url: against the database (DATABASE_URL), opened by a one-time token in the URL
  --port N    the local port on 127.0.0.1 (default 8788; 0 picks a free one)`;

/** What the subcommand needs from its caller: how to open the database (only without --url). */
export type DashboardCommandDeps = { connect: () => postgres.Sql };

/** Runs `email-status dashboard <args>` until SIGINT/SIGTERM; returns the exit code (0, 1 error, 2 bad usage). */
export async function dashboardCommand(args: string[], deps: DashboardCommandDeps): Promise<number> {
  let o;
  try {
    o = parseArgs({
      args,
      options: { url: { type: "string" }, port: { type: "string" }, help: { type: "boolean", short: "h" } },
    }).values;
  } catch (e) {
    console.error(`email-status dashboard: ${e instanceof Error ? e.message : e}\n${dashboardUsage}`);
    return 2;
  }
  if (o.help) {
    console.log(dashboardUsage);
    return 0;
  }
  const port = o.port === undefined ? 8788 : Number(o.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`email-status dashboard: --port must be 0 to 65535\n${dashboardUsage}`);
    return 2;
  }
  let api: URL | undefined;
  if (o.url !== undefined) {
    api = functionDashboardUrl(o.url);
    if (!api) {
      console.error(
        "email-status dashboard: --url must be the function's https URL, e.g. https://<ref>.supabase.co/functions/v1/email-worker",
      );
      return 2;
    }
  }

  let sql: postgres.Sql | undefined;
  let handle: (req: Request) => Response | Promise<Response>;
  let fragment = "";
  if (api) {
    const page = api;
    handle = (req) => {
      const { pathname } = new URL(req.url);
      if (pathname !== "/dashboard" && pathname !== "/dashboard/") return jsonError(404, "not_found", "no such page");
      if (req.method !== "GET" && req.method !== "HEAD") return jsonError(405, "method_not_allowed", "use GET");
      return dashboardPageResponse({ api: page });
    };
  } else {
    try {
      sql = deps.connect();
      await sql`select 1`;
    } catch (e) {
      console.error(
        `email-status dashboard: ${safeText(e instanceof Error ? e.message : String(e))}\n` +
          "  (or read a deployed function: email-status dashboard --url https://<ref>.supabase.co/functions/v1/email-worker)",
      );
      await sql?.end({ timeout: 1 }).catch(() => {});
      return (e as { exitCode?: number }).exitCode ?? 1;
    }
    const dashboardToken = randomToken();
    fragment = `#token=${dashboardToken}`;
    const db = sql;
    handle = (req) => {
      const { pathname } = new URL(req.url);
      if (!/^\/dashboard(\/|$)/.test(pathname)) return jsonError(404, "not_found", "no such page");
      return handleDashboard(req, { sql: db, jwt: {}, dashboardToken });
    };
  }

  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, (req) => {
      const { pathname } = new URL(req.url);
      if (!localHost(req.headers.get("host"), server.addr.port)) {
        return jsonError(421, "misdirected", "this server answers requests for 127.0.0.1 and localhost only");
      }
      if (pathname === "/") return Response.redirect(new URL("/dashboard", req.url), 302);
      return handle(req);
    });
  } catch (e) {
    await sql?.end({ timeout: 1 }).catch(() => {});
    const busy = e instanceof Deno.errors.AddrInUse ? " (in use: try --port 0)" : "";
    console.error(`email-status dashboard: cannot listen on 127.0.0.1:${port}${busy}`);
    return 1;
  }
  const base = `http://127.0.0.1:${server.addr.port}/dashboard`;
  console.log(`${base}${fragment}`);
  console.error(
    api
      ? `email-status dashboard: serving the page for ${api.origin}${api.pathname}; sign in with a support or admin user's token or DASHBOARD_TOKEN. Ctrl-C stops.`
      : "email-status dashboard: serving the database's metrics; open the URL above (its #token is for this run only). Ctrl-C stops.",
  );
  const stop = () => server.shutdown();
  // SIGTERM cannot be listened for on Windows; Ctrl-C (SIGINT) can everywhere.
  const signals = (["SIGINT", "SIGTERM"] as const).filter((signal) => {
    try {
      Deno.addSignalListener(signal, stop);
      return true;
    } catch {
      return false;
    }
  });
  try {
    await server.finished;
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, stop);
    await sql?.end({ timeout: 2 }).catch(() => {});
  }
  return 0;
}

/**
 * The function's dashboard URL from its base URL (`…/functions/v1/email-worker`, or a custom domain's
 * `…/email-worker`): https, or http to a loopback host (a local worker); undefined if not such a URL.
 */
export function functionDashboardUrl(functionUrl: string): URL | undefined {
  let url: URL;
  try {
    url = new URL(functionUrl);
  } catch {
    return undefined;
  }
  const loopback = /^(127\.0\.0\.1|localhost|\[::1\])$/.test(url.hostname);
  if (url.protocol !== "https:" && !(url.protocol === "http:" && loopback)) return undefined;
  if (url.username || url.password || url.search || url.hash) return undefined;
  const path = url.pathname.replace(/\/+$/, "").replace(/\/dashboard$/, "");
  if (!path.endsWith("/email-worker")) return undefined;
  return new URL(`${url.origin}${path}/dashboard`);
}

function localHost(host: string | null, port: number): boolean {
  return host === `127.0.0.1:${port}` || host === `localhost:${port}`;
}

function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
