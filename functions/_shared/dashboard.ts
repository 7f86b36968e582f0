/**
 * The metrics dashboard: `GET /email-worker/dashboard` serves a self-contained page (its files are
 * functions/_shared/dashboard_page/, inlined into dashboard_page.ts by scripts/dashboard_page.mjs; no
 * external resource), which reads its data from two JSON routes beside it:
 * - `GET .../dashboard/data?since=24h&workflow=W`: email_api.metrics (success rate per workflow,
 *   latency percentiles, error codes, dead-letter size, attempt outcomes and deferral rate by
 *   recipient domain and SMTP relay; answered from the metric rollups), deliveries over time by
 *   status, the recent failures and the workflows seen;
 * - `GET .../dashboard/deliveries/<delivery_id>`: one delivery and its timeline (email_api.get_delivery).
 * The page itself holds no data and is served to anyone; the JSON routes need
 * `Authorization: Bearer <token>`, where the token is a signed-in Supabase user's JWT (role
 * `authenticated`) whose app_metadata.role is support or admin (verified with the project's HS256
 * secret or its JWKS), or the configured DASHBOARD_TOKEN. The page asks for the token, keeps it in
 * sessionStorage, and also takes it from the URL fragment (`#token=...`, which never reaches a server
 * or a log).
 *
 * On `*.supabase.co` hosted Supabase serves a function's text/html answers as text/plain, so the page
 * only opens from the function on a custom domain; elsewhere `email-status dashboard --url` serves the
 * same page on 127.0.0.1 and the browser calls the JSON routes across origins. For that, the JSON
 * routes answer CORS for loopback origins only (`http://127.0.0.1:<port>`, `http://localhost:<port>`,
 * `http://[::1]:<port>`): preflight answered, `Authorization` allowed, no credentials mode (the token
 * is a header the page adds, never a cookie). Other origins get no CORS headers, and a 403 preflight.
 */
import type { Sql } from "postgres";
import { bearerToken, secretsEqual } from "./auth.ts";
import { type JwtVerification, verifyUserJwt } from "./delivery_lookup.ts";
import { json, jsonError } from "./http.ts";
import { isDeliveryId } from "./ids.ts";
import type { Logger } from "./log.ts";
import { dashboardHtml } from "./dashboard_page.ts";
import { statusNames } from "./statuses.gen.ts";

const apiMeta = '<meta name="dashboard-api" content="">';

/**
 * The page with its headers. `api`: the deployed function's `.../dashboard` URL when the page is
 * served elsewhere (`email-status dashboard --url`); it goes into `<meta name="dashboard-api">` and
 * the CSP's connect-src. Without it the page reads the routes beside it.
 */
export function dashboardPageResponse(options: { api?: URL } = {}): Response {
  const { api } = options;
  const connect = api ? `'self' ${api.origin}` : "'self'";
  const html = api
    ? dashboardHtml.replace(apiMeta, () => apiMeta.replace('""', `"${escapeAttribute(api.href)}"`))
    : dashboardHtml;
  return new Response(html, {
    headers: {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      "content-security-policy":
        `default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src ${connect}; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'`,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
    },
  });
}

function escapeAttribute(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Whether a page at `origin` may read the JSON routes across origins: loopback http origins only. */
export function isAllowedOrigin(origin: string): boolean {
  return /^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?$/.test(origin);
}

/** What the dashboard needs: the service database connection and how to check callers. */
export type DashboardDeps = {
  sql: Sql;
  jwt: JwtVerification;
  /** A shared secret that also opens the dashboard (DASHBOARD_TOKEN); at least 16 characters. */
  dashboardToken?: string;
  logger?: Logger;
};

const windows: Record<string, { seconds: number; bucket: string }> = {
  "1h": { seconds: 3600, bucket: "2 minutes" },
  "6h": { seconds: 6 * 3600, bucket: "15 minutes" },
  "24h": { seconds: 86400, bucket: "1 hour" },
  "7d": { seconds: 7 * 86400, bucket: "6 hours" },
  "30d": { seconds: 30 * 86400, bucket: "1 day" },
};

const bucketSeconds: Record<string, number> = {
  "2 minutes": 120,
  "15 minutes": 900,
  "1 hour": 3600,
  "6 hours": 21600,
  "1 day": 86400,
};

/** Whether a request path is one of the dashboard's (…/dashboard, …/dashboard/…). */
export function isDashboardPath(pathname: string): boolean {
  return /\/dashboard(\/.*)?$/.test(pathname);
}

/** Who the caller is when allowed: "token" or "user:<sub>"; else the error response to send. */
async function authorize(req: Request, deps: DashboardDeps): Promise<{ who: string } | { response: Response }> {
  const token = bearerToken(req.headers);
  if (!token) {
    return { response: jsonError(401, "unauthorized", "sign in: a support user's token or the dashboard token") };
  }
  if (deps.dashboardToken && deps.dashboardToken.length >= 16 && await secretsEqual(token, deps.dashboardToken)) {
    return { who: "token" };
  }
  let claims;
  try {
    claims = await verifyUserJwt(token, deps.jwt);
  } catch {
    return { response: jsonError(401, "unauthorized", "the token is not valid") };
  }
  // Only a signed-in user's token: an anon (or service) token carries no user, whatever its app_metadata says.
  if (claims.role !== "authenticated") {
    return { response: jsonError(403, "forbidden", "the dashboard needs a signed-in support or admin user's token") };
  }
  const role = (claims.app_metadata as { role?: unknown } | undefined)?.role;
  if (role !== "support" && role !== "admin") {
    return { response: jsonError(403, "forbidden", "the dashboard is for support and admin users") };
  }
  return { who: `user:${claims.sub}` };
}

/** Handles GET …/dashboard, …/dashboard/data and …/dashboard/deliveries/<id> (and CORS preflight for the JSON routes). */
export async function handleDashboard(req: Request, deps: DashboardDeps): Promise<Response> {
  const url = new URL(req.url);
  const sub = /\/dashboard(\/.*)?$/.exec(url.pathname)?.[1] ?? "";
  const isPage = sub === "" || sub === "/";
  if (req.method === "OPTIONS" && !isPage) return preflight(req);
  if (req.method !== "GET" && req.method !== "HEAD") {
    return json({ error: { code: "method_not_allowed", message: "use GET" } }, 405, {
      allow: isPage ? "GET, HEAD" : "GET, HEAD, OPTIONS",
    });
  }
  if (isPage) return dashboardPageResponse();
  return withCors(req, await answerJson(req, sub, url, deps));
}

async function answerJson(req: Request, sub: string, url: URL, deps: DashboardDeps): Promise<Response> {
  const auth = await authorize(req, deps);
  if ("response" in auth) return auth.response;
  try {
    if (sub === "/data") {
      return json(await dashboardData(deps.sql, url.searchParams), 200, { "cache-control": "no-store" });
    }
    const m = /^\/deliveries\/([^/]+)$/.exec(sub);
    if (m) {
      let id: string;
      try {
        id = decodeURIComponent(m[1]);
      } catch {
        id = "";
      }
      if (!isDeliveryId(id)) return jsonError(400, "bad_delivery_id", "not a delivery id");
      const [row] = await deps.sql<{ doc: unknown }[]>`select email_api.get_delivery(${id}) as doc`;
      if (!row?.doc) return jsonError(404, "not_found", `delivery ${id} not found`);
      return json(row.doc, 200, { "cache-control": "no-store" });
    }
  } catch (e) {
    deps.logger?.error("dashboard_query_failed", { error: String((e as Error)?.message ?? e).slice(0, 300) });
    return jsonError(500, "query_failed", "the metrics could not be read; try again later");
  }
  return jsonError(404, "not_found", "no such dashboard route");
}

/** Answers a CORS preflight: allowed for loopback origins asking to GET with an Authorization header. */
function preflight(req: Request): Response {
  const origin = req.headers.get("origin") ?? "";
  const method = req.headers.get("access-control-request-method") ?? "";
  if (!isAllowedOrigin(origin) || (method !== "GET" && method !== "HEAD")) {
    return json(
      { error: { code: "origin_not_allowed", message: "cross-origin calls come from the local page only" } },
      403,
      {
        vary: "Origin",
      },
    );
  }
  return new Response(null, {
    status: 204,
    headers: {
      "access-control-allow-origin": origin,
      "access-control-allow-methods": "GET, HEAD",
      "access-control-allow-headers": "authorization",
      "access-control-max-age": "600",
      vary: "Origin",
    },
  });
}

function withCors(req: Request, res: Response): Response {
  const origin = req.headers.get("origin");
  res.headers.append("vary", "Origin");
  if (origin && isAllowedOrigin(origin)) res.headers.set("access-control-allow-origin", origin);
  return res;
}

/** The dashboard's data for a window (`since`: 1h, 6h, 24h, 7d, 30d) and an optional workflow. */
export async function dashboardData(sql: Sql, params: URLSearchParams): Promise<Record<string, unknown>> {
  const windowName = windows[params.get("since") ?? ""] ? params.get("since")! : "24h";
  const { seconds, bucket } = windows[windowName];
  const workflow = params.get("workflow") || null;
  const until = new Date(Date.now() + 1000);
  const since = new Date(until.getTime() - seconds * 1000);
  const [[metrics], series, failures, workflows] = await Promise.all([
    sql<{ doc: Record<string, unknown> }[]>`select email_api.metrics(${since}, ${until}, ${workflow}) as doc`,
    sql<{ t: Date; status: string; n: number }[]>`
      select date_bin(${bucket}::interval, d.queued_at, ${since}::timestamptz) as t, d.status, count(*)::int as n
      from email.deliveries d
      where d.queued_at >= ${since} and d.queued_at < ${until} and (${workflow}::text is null or d.workflow = ${workflow})
      group by 1, 2 order by 1, 2`,
    sql`
      select d.delivery_id, d.workflow, d.recipient, d.status, d.attempts, d.last_error_code, d.last_error_message,
        d.updated_at
      from email.deliveries d
      -- what needs a look: failed attempts (email.statuses.failing) and suppressed deliveries
      where d.status in (select s.status from email.statuses s where s.failing or s.counts_as = 'suppressed')
        -- the same statuses, literally: the predicate of the partial index deliveries_attention_idx
        and d.status in ('retrying', 'failed', 'dead_letter', 'suppressed')
        and d.updated_at >= ${since}
        and (${workflow}::text is null or d.workflow = ${workflow})
      order by d.updated_at desc limit 25`,
    sql<{ workflow: string }[]>`
      select d.workflow from email.deliveries d where d.queued_at >= ${since} group by 1 order by 1 limit 200`,
  ]);
  return {
    window: {
      name: windowName,
      since: since.toISOString(),
      until: until.toISOString(),
      bucket,
      bucket_seconds: bucketSeconds[bucket],
      workflow,
    },
    metrics: metrics.doc,
    series: series.map((r) => ({ t: r.t.toISOString(), status: r.status, n: r.n })),
    recent_failures: failures,
    workflows: workflows.map((r) => r.workflow),
    statuses: statusNames,
  };
}
