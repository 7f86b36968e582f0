/**
 * The dashboard over real HTTP against the real database, with real signed tokens, driven in a real
 * headless Chromium (Debian's, through playwright-core), from each place a user opens it:
 * - the page the worker itself serves (`GET /email-worker/dashboard`: a custom domain, `npm start`);
 * - `email-status dashboard --url <worker>` (a hosted project on *.supabase.co): the page on another
 *   local port reads the worker's JSON routes across origins, through its CORS;
 * - `email-status dashboard` against the database, opened by the one-time token it prints.
 * Each time the charts must show the numbers of the deliveries the test seeds under a workflow of its
 * own. Screenshots go to tests/artifacts/.
 */
import postgres from "postgres";
import { type Browser, chromium, type Page } from "playwright-core";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { handleDashboard, isDashboardPath } from "../functions/_shared/dashboard.ts";
import { cliEnv, runCli } from "./support/cli.ts";
import { test } from "./support/harness.ts";
import { signUserToken } from "./support/user_tokens.ts";
import { startWorker, type TestWorker } from "./support/worker.ts";
import { dashboardHtml } from "../functions/_shared/dashboard_page.ts";
import { modulePath, renderDashboardModule, sourceDir } from "../scripts/dashboard_page.mjs";

const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

const jwtSecret = "dashboard-test-jwt-secret-at-least-32-chars";
const dashboardToken = `dash-token-${crypto.randomUUID()}`;
const run = crypto.randomUUID().slice(0, 8);
const artifacts = new URL("./artifacts/", import.meta.url);
const root = new URL("../", import.meta.url);

/** A user's access token (a new user each time) with `claims`, signed with `key`. */
function sign(claims: Record<string, unknown>, key = jwtSecret, expiresIn = "5m"): Promise<string> {
  return signUserToken({ sub: crypto.randomUUID(), ...claims }, key, expiresIn);
}

/** Seeds 11 deliveries of `workflow` over the last 50 minutes; returns the failed one's id. */
async function seed(sql: postgres.Sql, workflow: string): Promise<string> {
  let n = 0;
  const queue = async (recipient?: string) => {
    const id = `${workflow}-${++n}-${crypto.randomUUID().slice(0, 6)}`;
    recipient ??= `${workflow}-${n}@example.com`;
    await sql`select email.record_queued(${id}, ${workflow}, ${recipient}, '{}')`;
    return id;
  };
  const backdate = async (id: string, minutesAgo: number, latencyMs?: number) => {
    await sql`update email.deliveries set queued_at = now() - make_interval(mins => ${minutesAgo}),
      sent_at = case when sent_at is not null then now() - make_interval(mins => ${minutesAgo})
        + make_interval(secs => ${(latencyMs ?? 0) / 1000}) end
      where delivery_id = ${id}`;
  };
  for (let i = 1; i <= 6; i++) {
    const id = await queue();
    await sql`select email.mark_in_progress(${id})`;
    await sql`select email.mark_sent(${id}, 1, 'mid', '250 ok')`;
    await backdate(id, 4 * i, i * 100);
  }
  const failed = await queue();
  await sql`select email.mark_in_progress(${failed})`;
  await sql`select * from email.record_failure(${failed}, 1, '550 5.1.1 no such user', 550, '5.1.1')`;
  await backdate(failed, 30);
  for (const minutes of [35, 40]) {
    const id = await queue();
    await sql`select email.mark_in_progress(${id})`;
    await sql`update email.deliveries set max_attempts = 1 where delivery_id = ${id}`;
    await sql`select * from email.record_failure(${id}, 1, '421 try again later', 421)`;
    await backdate(id, minutes);
  }
  const retrying = await queue();
  await sql`select email.mark_in_progress(${retrying})`;
  await sql`select * from email.record_failure(${retrying}, 1, '451 greylisted', 451)`;
  await backdate(retrying, 45);
  const suppressedAddress = `${workflow}-suppressed@example.com`;
  await sql`select email.add_suppression(${suppressedAddress}, 'dashboard test')`;
  await backdate(await queue(suppressedAddress), 48);
  return failed;
}

/** Runs `fn` with `resource`, and closes it after, whatever `fn` did. */
async function closing<T extends { close(): Promise<void> }>(resource: T, fn: (r: T) => Promise<void>): Promise<void> {
  try {
    await fn(resource);
  } finally {
    await resource.close();
  }
}

/** handleDashboard alone behind Deno.serve, for the route-level checks. */
type App = { base: string; close(): Promise<void> };

/** Runs `fn` with handleDashboard alone behind Deno.serve (`base` is its dashboard URL), closed after. */
function withApp(fn: (app: App) => Promise<void>): Promise<void> {
  return closing(serve(), fn);
}

/** Serves handleDashboard alone on a free port. */
function serve(): App {
  const deps = {
    sql: postgres(databaseUrl!, { max: 4, onnotice: () => {} }),
    jwt: { secret: jwtSecret },
    dashboardToken,
  };
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, (req) => {
    const url = new URL(req.url);
    return isDashboardPath(url.pathname) ? handleDashboard(req, deps) : new Response("not found", { status: 404 });
  });
  return {
    base: `http://127.0.0.1:${server.addr.port}/email-worker/dashboard`,
    close: async () => {
      await server.shutdown();
      await deps.sql.end({ timeout: 2 });
    },
  };
}

/** Runs `fn` with the real worker (see `worker`), closed after. */
function withWorker(fn: (w: TestWorker) => Promise<void>): Promise<void> {
  return closing(worker(), fn);
}

/** The real worker (createHandler, configured through loadConfig) with the dashboard's secrets. */
function worker() {
  // No mail is sent here: the SMTP port is never dialled. The HS256 secret under both names (JWT_SECRET
  // is the one `supabase secrets set` accepts, SUPABASE_JWT_SECRET the local fallback).
  return startWorker({
    smtpPort: 9,
    env: { JWT_SECRET: jwtSecret, SUPABASE_JWT_SECRET: jwtSecret, DASHBOARD_TOKEN: dashboardToken },
  });
}

Deno.test("the page module the function serves is built from the page's files", async () => {
  const current = await Deno.readTextFile(new URL(modulePath, root));
  assert(current === renderDashboardModule(), `${modulePath} is stale: run node scripts/dashboard_page.mjs`);
  assertEquals(dashboardHtml.split('<meta name="dashboard-api" content="">').length, 2, "one dashboard-api marker");
  const js = await Deno.readTextFile(new URL(`${sourceDir}/page.js`, root));
  assert(dashboardHtml.includes(`<script>\n${js}</script>`), "page.js inlined as it is");
  assert(!/<(script|link)[^>]+(src|href)=/.test(dashboardHtml), "nothing loaded from elsewhere");
});

Deno.test("the dashboard's data routes need a support/admin JWT or the dashboard token", () =>
  withApp(async (app) => {
    const page = await fetch(app.base);
    assertEquals(page.status, 200);
    assertMatch(page.headers.get("content-type")!, /^text\/html/);
    assertMatch(page.headers.get("content-security-policy")!, /default-src 'none'.*connect-src 'self';/);
    const html = await page.text();
    assert(!/<script[^>]+src=/.test(html) && !/https?:\/\/(?!www\.w3\.org)/.test(html), "no external resource");
    assertMatch(html, /<meta name="dashboard-api" content="">/);

    const get = (path: string, token?: string) =>
      fetch(app.base + path, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    const status = async (path: string, token?: string) => {
      const res = await get(path, token);
      await res.body?.cancel();
      return res.status;
    };
    assertEquals(await status("/data"), 401);
    assertEquals(await status("/data", await sign({ app_metadata: { role: "user" } })), 403);
    assertEquals(
      await status("/data", await sign({ app_metadata: { role: "support" } }, "another-secret-of-at-least-32-chars!!")),
      401,
    );
    assertEquals(await status("/data", await sign({ app_metadata: { role: "admin" } }, jwtSecret, "-1m")), 401);
    assertEquals(await status("/data", "dash-token-wrong"), 401);
    assertEquals(await status("/data", await sign({ app_metadata: { role: "support" } })), 200);
    assertEquals(await status("/data", await sign({ app_metadata: { role: "admin" } })), 200);
    assertEquals(await status("/data", dashboardToken), 200);
    assertEquals(await status("/deliveries/does-not-exist", dashboardToken), 404);
    assertEquals(await status("/nope", dashboardToken), 404);
    const post = await fetch(app.base + "/data", {
      method: "POST",
      headers: { authorization: `Bearer ${dashboardToken}` },
    });
    await post.body?.cancel();
    assertEquals(post.status, 405);
  }));

Deno.test("the data's deliveries over time and workflows come from the rollups, equal to the rows' with an unfolded tail", () =>
  withApp(async (app) => {
    const sql = postgres(databaseUrl!, { max: 1, onnotice: () => {} });
    try {
      const workflow = `dash-series-${run}`;
      let n = 0;
      const add = async (minutesAgo: number) => {
        const id = `${workflow}-${++n}`;
        await sql`select email.record_queued(${id}, ${workflow}, ${`${id}@example.com`}, '{}')`;
        if (n % 3 === 0) {
          await sql`select email.mark_in_progress(${id})`;
          await sql`select email.mark_sent(${id}, 1, 'mid', '250 ok')`;
        } else if (n % 3 === 1) {
          await sql`select email.mark_in_progress(${id})`;
          await sql`select * from email.record_failure(${id}, 1, '451 greylisted', 451)`;
        }
        await sql`update email.deliveries set queued_at = now() - make_interval(mins => ${minutesAgo}) where delivery_id = ${id}`;
      };
      const foldAll = async () => {
        for (let i = 0; i < 100; i++) {
          const [r] = await sql<{ done: boolean }[]>`select (select last_event_id from email.metric_state)
            >= (select coalesce(max(id), 0) from email.delivery_events) as done`;
          if (r.done) return;
          await sql`select email.fold_metric_events()`;
        }
      };
      // folded: 40 deliveries over 29 days (one 10 minutes inside the 30 days); then a tail of 12 over
      // the last two days that the fold has not read, one of the folded ones moving on
      await add(30 * 1440 - 10);
      for (let i = 1; i < 40; i++) await add(Math.round(i * 29 * 1440 / 40) + 7);
      await foldAll();
      for (let i = 0; i < 12; i++) await add(i * 237 + 3);
      await sql`select email.mark_in_progress(${`${workflow}-1`})`;
      // a workflow the fold has not seen yet
      const fresh = `${workflow}-fresh`;
      await sql`select email.record_queued(${fresh}, ${fresh}, ${`${fresh}@example.com`}, '{}')`;
      const token = await sign({ app_metadata: { role: "support" } });
      const data = async (since: string) => {
        const res = await fetch(`${app.base}/data?since=${since}&workflow=${workflow}`, {
          headers: { authorization: `Bearer ${token}` },
        });
        assertEquals(res.status, 200);
        return await res.json();
      };
      const rows = async (w: { since: string; until: string; bucket: string }) =>
        (await sql<{ t: Date; status: string; n: number }[]>`
          select date_bin(${w.bucket}::interval, d.queued_at, '2001-01-01 00:00:00+00') as t, d.status, count(*)::int as n
          from email.deliveries d
          where d.queued_at >= ${w.since} and d.queued_at < ${w.until} and d.workflow = ${workflow}
          group by 1, 2 order by 1, 2`).map((r) => ({ t: r.t.toISOString(), status: r.status, n: r.n }));
      for (const since of ["30d", "7d", "24h", "6h", "1h"]) {
        const body = await data(since);
        assertEquals(body.series, await rows(body.window), `${since}: the series equals the rows'`);
        assert(
          body.workflows.includes(workflow) && body.workflows.includes(fresh),
          `${since}: both workflows are listed`,
        );
      }
      const month = await data("30d");
      assertEquals(month.series.reduce((a: number, r: { n: number }) => a + r.n, 0), 52);
      assert(
        month.metrics.source.unfolded_events > 0 && month.metrics.source.rollup_days >= 28,
        JSON.stringify(month.metrics.source),
      );
      assert(
        month.series.every((r: { t: string }) => r.t.endsWith("T00:00:00.000Z")),
        "daily buckets start at UTC midnight",
      );
      // read from the rollups: a changed day rollup changes the series
      const [day] = await sql<{ bucket: Date }[]>`
        select bucket from email.metric_rollups where grain = 'day' and workflow = ${workflow} and status = 'retrying'
          and bucket > now() - interval '28 days' and bucket < now() - interval '3 days'
        order by bucket limit 1`;
      await sql`update email.metric_rollups set deliveries = deliveries + 5
        where grain = 'day' and workflow = ${workflow} and status = 'retrying' and bucket = ${day.bucket}`;
      const changed = await data("30d");
      const at = (s: { series: { t: string; status: string; n: number }[] }) =>
        s.series.find((r) => r.t === day.bucket.toISOString() && r.status === "retrying")?.n;
      assertEquals(at(changed), at(month)! + 5);
      await sql`update email.metric_rollups set deliveries = deliveries - 5
        where grain = 'day' and workflow = ${workflow} and status = 'retrying' and bucket = ${day.bucket}`;
    } finally {
      await sql.end({ timeout: 2 });
    }
  }));

Deno.test("a token without a signed-in user is refused, whatever its app_metadata says", () =>
  withApp(async (app) => {
    for (const role of ["anon", "service_role"]) {
      const res = await fetch(`${app.base}/data`, {
        headers: { authorization: `Bearer ${await sign({ role, app_metadata: { role: "admin" } })}` },
      });
      assertEquals(res.status, 403, `a ${role}-role token with app_metadata.role admin`);
      assertEquals((await res.json()).error.code, "forbidden");
    }
  }));

test("a malformed percent escape in a delivery id is a 400, not a 500", () =>
  withApp((app) =>
    withWorker(async (w) => {
      for (const base of [app.base, `${w.url}/email-worker/dashboard`]) {
        for (const bad of ["%E0%A4%A", "%zz", "abc%"]) {
          const res = await fetch(`${base}/deliveries/${bad}`, {
            headers: { authorization: `Bearer ${dashboardToken}` },
          });
          assertEquals(res.status, 400, `${base} ${bad}`);
          assertEquals((await res.json()).error.code, "bad_delivery_id");
        }
      }
    })
  ));

Deno.test("the JSON routes answer CORS for loopback pages only, without credentials mode", () =>
  withApp(async (app) => {
    const preflight = (origin: string, method = "GET") =>
      fetch(`${app.base}/data`, {
        method: "OPTIONS",
        headers: {
          origin,
          "access-control-request-method": method,
          "access-control-request-headers": "authorization",
        },
      });
    for (const origin of ["http://127.0.0.1:8788", "http://localhost:41234", "http://[::1]:8788"]) {
      const res = await preflight(origin);
      await res.body?.cancel();
      assertEquals(res.status, 204, origin);
      assertEquals(res.headers.get("access-control-allow-origin"), origin);
      assertEquals(res.headers.get("access-control-allow-headers"), "authorization");
      assertEquals(res.headers.get("access-control-allow-methods"), "GET, HEAD");
      assertEquals(res.headers.get("access-control-allow-credentials"), null);
      assertMatch(res.headers.get("vary")!, /Origin/);
    }
    for (
      const origin of [
        "https://evil.example",
        "http://127.0.0.1.evil.example",
        "https://127.0.0.1:8788",
        "http://localhost.evil.example:80",
        "null",
      ]
    ) {
      const res = await preflight(origin);
      await res.body?.cancel();
      assertEquals(res.status, 403, origin);
      assertEquals(res.headers.get("access-control-allow-origin"), null, origin);
    }
    const post = await preflight("http://127.0.0.1:8788", "POST");
    await post.body?.cancel();
    assertEquals(post.status, 403);

    const get = async (origin: string, token = dashboardToken) => {
      const res = await fetch(`${app.base}/data`, { headers: { origin, authorization: `Bearer ${token}` } });
      await res.body?.cancel();
      return res;
    };
    const local = await get("http://127.0.0.1:8788");
    assertEquals([local.status, local.headers.get("access-control-allow-origin")], [200, "http://127.0.0.1:8788"]);
    const refused = await get("http://127.0.0.1:8788", "dash-token-wrong");
    assertEquals([refused.status, refused.headers.get("access-control-allow-origin")], [401, "http://127.0.0.1:8788"]);
    const foreign = await get("https://evil.example");
    assertEquals(foreign.headers.get("access-control-allow-origin"), null);
    const page = await fetch(app.base, { headers: { origin: "http://127.0.0.1:8788" } });
    await page.body?.cancel();
    assertEquals(page.headers.get("access-control-allow-origin"), null, "the page itself is not shared");
  }));

// ---------------------------------------------------------------------------------------------
// In Chromium
// ---------------------------------------------------------------------------------------------

function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A page that records script errors (401/403 console lines are the sign-in flow's own). */
async function open(browser: Browser): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && !/401|403/.test(m.text()) && errors.push(m.text()));
  return { page, errors };
}

/** Waits for the data to load, then checks every chart against the seed, and the failure's timeline. */
async function expectSeededCharts(
  page: Page,
  errors: string[],
  o: { workflow: string; failed: string; screenshot: string },
): Promise<void> {
  const { workflow, failed } = o;
  await page.waitForSelector("#loaded:not([hidden])", { state: "attached", timeout: 20_000 }).catch(async (e) => {
    const shown = await page.textContent("#signin-error").catch(() => "");
    throw new Error(`the dashboard did not load: ${errors.join("; ") || shown || e}`);
  });
  const text = async (selector: string) => (await page.locator(selector).first().textContent())?.trim();
  assertEquals(await text('[data-testid="card-total"]'), "11");
  assertEquals(await text('[data-testid="card-sent"]'), "6");
  // completed = the terminal statuses of email.statuses: 6 sent, 1 failed, 2 dead letters and the suppressed one
  assertEquals(await text('[data-testid="card-success"]'), "60.0%");
  assertEquals(await text(`[data-testid="success-rate"][data-workflow="${workflow}"]`), "60.0% (6/10)");
  assertEquals(await text(`[data-testid="latency"][data-workflow="${workflow}"][data-percentile="p50"]`), "350 ms");
  assertEquals(await text(`[data-testid="latency"][data-workflow="${workflow}"][data-percentile="p95"]`), "575 ms");
  assertEquals(await text(`[data-testid="latency"][data-workflow="${workflow}"][data-percentile="p99"]`), "595 ms");
  assertEquals(await text('[data-testid="error-code"][data-code="smtp_421"]'), "2");
  assertEquals(await text('[data-testid="error-code"][data-code="smtp_550_5.1.1"]'), "1");
  assertEquals(await text('[data-testid="error-code"][data-code="smtp_451"]'), "1");
  assertEquals(await text('[data-testid="error-code"][data-code="address_suppressed"]'), "1");
  assertEquals(await text('[data-testid="dlq-size"]'), "2");
  assertMatch((await text(`[data-testid="dlq-workflow"][data-workflow="${workflow}"]`))!, /^2 \(oldest /);
  // attempt outcomes by relay (none recorded: unknown): 6 sent, 1 failed, 2 dead letters, 1 deferred
  assertEquals(await text('[data-testid="relay-deferral"][data-relay="unknown"]'), "10.0% (1/10)");

  const legend = await page.locator('[data-testid="series-total"]').allTextContents();
  assertEquals(legend.map((s) => s.trim()), ["sent 6", "retrying 1", "failed 1", "dead_letter 2", "suppressed 1"]);
  const drawn = await page.locator("#chart-series rect[data-status]").evaluateAll((rects) =>
    rects.map((r) => [r.getAttribute("data-status"), Number(r.getAttribute("data-count"))])
  ) as [string, number][];
  const sums: Record<string, number> = {};
  for (const [s, c] of drawn) sums[s] = (sums[s] ?? 0) + c;
  assertEquals(sums, { sent: 6, retrying: 1, failed: 1, dead_letter: 2, suppressed: 1 });
  assert(new Set(drawn.map((d) => d[0])).size === 5 && drawn.length >= 9, "deliveries are spread over several buckets");

  assertEquals(await page.locator('[data-testid="failure-row"]').count(), 5);
  await Deno.mkdir(artifacts, { recursive: true });
  await page.screenshot({ path: new URL(`${o.screenshot}.png`, artifacts).pathname, fullPage: true });

  await page.click(`[data-testid="failure-row"][data-delivery-id="${failed}"]`);
  await page.waitForSelector('[data-testid="timeline-event"]', { timeout: 20_000 });
  const events = await page.locator('[data-testid="timeline-event"]').evaluateAll((li) =>
    li.map((e) => e.getAttribute("data-status"))
  );
  assertEquals(events, ["queued", "in_progress", "failed"]);
  assertMatch((await text("#timeline-summary"))!, new RegExp(`^${workflow} · .* · failed · attempts 1/5$`));
  await page.screenshot({ path: new URL(`${o.screenshot}-timeline.png`, artifacts).pathname, fullPage: false });
  assertEquals(errors, [], "no script errors in the page");
}

/** `email-status dashboard <args>` as a subprocess; resolves with the URL it prints once listening. */
async function startCli(args: string[], env: Record<string, string> = {}) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/email_status.ts", "dashboard", "--port", "0", ...args],
    cwd: root,
    env: cliEnv(env),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const deadline = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    while (!out.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`email-status dashboard exited before listening: ${await stderr}`);
      out += value;
    }
  } finally {
    clearTimeout(deadline);
  }
  lines.releaseLock();
  child.stdout.cancel().catch(() => {});
  return {
    url: out.trim(),
    /** Stops it with SIGTERM; resolves with its exit code and stderr. */
    async stop() {
      child.kill("SIGTERM");
      const { code } = await child.status;
      return { code, stderr: await stderr };
    },
  };
}

/** What a browser test gets: a pool on the test database, a headless Chromium, the deliveries it seeded. */
type Seeded = { sql: postgres.Sql; browser: Browser; workflow: string; failed: string };

/** Runs `fn` with deliveries seeded under workflow `dash-<run>-<name>` and a browser, both closed after. */
async function withSeeded(name: string, fn: (s: Seeded) => Promise<void>): Promise<void> {
  const sql = postgres(databaseUrl!, { max: 2, onnotice: () => {} });
  const browser = await launch();
  try {
    const workflow = `dash-${run}-${name}`;
    await fn({ sql, browser, workflow, failed: await seed(sql, workflow) });
  } finally {
    await browser.close();
    await sql.end({ timeout: 2 });
  }
}

/** Runs `fn` with `email-status dashboard <args>` (`env` added) listening; then stops it, which must exit 0. */
async function withCli(
  o: { args: string[]; env?: Record<string, string> },
  fn: (cli: { url: string }) => Promise<void>,
): Promise<void> {
  const cli = await startCli(o.args, o.env);
  try {
    await fn(cli);
  } finally {
    const { code, stderr } = await cli.stop();
    assertEquals(code, 0, `SIGTERM stops it cleanly: ${stderr}`);
  }
}

/** The status line of `GET /dashboard` sent over a raw socket with this Host header (fetch sets its own). */
async function rawGet(port: number, host: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(`GET /dashboard HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`));
    const buf = new Uint8Array(256);
    const n = await conn.read(buf);
    return new TextDecoder().decode(buf.subarray(0, n ?? 0));
  } finally {
    conn.close();
  }
}

test("in headless Chromium the page the worker serves charts the seeded deliveries and a failure's timeline", () =>
  withWorker((w) =>
    withSeeded("fn", async ({ browser, workflow, failed }) => {
      const base = `${w.url}/email-worker/dashboard`;
      const { page, errors } = await open(browser);

      // Without a token: the sign-in form; a plain user's token is refused with the reason.
      await page.goto(base);
      await page.waitForSelector("#signin:not([hidden])");
      await page.fill("#token-input", await sign({ app_metadata: {} }));
      await page.click("#signin-form button");
      await page.waitForSelector('#signin-error:has-text("for support and admin users")');

      // A support user's token in the fragment opens it, filtered to the test's workflow.
      const token = await sign({ app_metadata: { role: "support" }, email: "support@example.com" });
      await page.goto(`${base}#token=${token}&workflow=${workflow}&since=1h`);
      await expectSeededCharts(page, errors, { workflow, failed, screenshot: "dashboard" });
      assertEquals(await page.textContent('[data-testid="api-host"]'), "", "the function's own page reads beside it");
      assert(!page.url().includes(token), "the token is taken out of the URL");
    })
  ));

test("in headless Chromium `email-status dashboard --url` charts a running worker's data across origins", () =>
  withWorker((w) =>
    withCli(
      { args: ["--url", `${w.url}/email-worker`] },
      (cli) =>
        withSeeded("cli", async ({ browser, workflow, failed }) => {
          assertMatch(cli.url, /^http:\/\/127\.0\.0\.1:\d+\/dashboard$/);
          const local = new URL(cli.url);
          assert(local.origin !== new URL(w.url).origin, "the page and the worker are different origins");

          // The CLI serves the page only, pointed at the worker; it has no data routes of its own.
          const served = await fetch(cli.url);
          const html = await served.text();
          assertMatch(served.headers.get("content-type")!, /^text\/html/);
          assertMatch(html, new RegExp(`<meta name="dashboard-api" content="${w.url}/email-worker/dashboard">`));
          assertMatch(served.headers.get("content-security-policy")!, new RegExp(`connect-src 'self' ${w.url};`));
          const noData = await fetch(`${local.origin}/dashboard/data`, {
            headers: { authorization: `Bearer ${dashboardToken}` },
          });
          await noData.body?.cancel();
          assertEquals(noData.status, 404);
          assertMatch(await rawGet(Number(local.port), `127.0.0.1:${local.port}`), /^HTTP\/1\.1 200 /);
          assertMatch(
            await rawGet(Number(local.port), `attacker.example:${local.port}`),
            /^HTTP\/1\.1 421 /,
            "a request for another host name (DNS rebinding) is refused",
          );

          const { page, errors } = await open(browser);
          const requests: string[] = [];
          page.on(
            "request",
            (r) => requests.push(`${r.method()} ${new URL(r.url()).origin}${new URL(r.url()).pathname}`),
          );
          // An anon-role token with app_metadata.role admin is refused by the worker, and the page says so.
          await page.goto(cli.url);
          await page.waitForSelector("#signin:not([hidden])");
          await page.fill("#token-input", await sign({ role: "anon", app_metadata: { role: "admin" } }));
          await page.click("#signin-form button");
          await page.waitForSelector('#signin-error:has-text("signed-in support or admin")');

          await page.goto(`${cli.url}#token=${dashboardToken}&workflow=${workflow}&since=1h`);
          await expectSeededCharts(page, errors, { workflow, failed, screenshot: "dashboard-cli" });
          assertEquals(await page.textContent('[data-testid="api-host"]'), `· ${new URL(w.url).host}`);
          assert(requests.includes(`GET ${w.url}/email-worker/dashboard/data`), requests.join("\n"));
          assert(
            requests.some((r) => r.startsWith(`GET ${w.url}/email-worker/dashboard/deliveries/`)),
            requests.join("\n"),
          );
        }),
    )
  ));

test("in headless Chromium `email-status dashboard` against the database opens with the token it prints", () =>
  withCli(
    { args: [], env: { DATABASE_URL: databaseUrl! } },
    (cli) =>
      withSeeded("db", async ({ browser, workflow, failed }) => {
        const m = /^(http:\/\/127\.0\.0\.1:\d+\/dashboard)#token=([A-Za-z0-9_-]{32})$/.exec(cli.url);
        assert(m, `a local URL with a one-time token: ${cli.url}`);
        const [, base, token] = m;
        const status = async (path: string, auth?: string) => {
          const res = await fetch(base + path, { headers: auth ? { authorization: `Bearer ${auth}` } : {} });
          await res.body?.cancel();
          return res.status;
        };
        assertEquals(await status("/data"), 401);
        assertEquals(await status("/data", dashboardToken), 401, "only this run's token opens it");
        assertEquals(await status("/data", token), 200);

        const { page, errors } = await open(browser);
        await page.goto(`${cli.url}&workflow=${workflow}&since=1h`);
        await expectSeededCharts(page, errors, { workflow, failed, screenshot: "dashboard-cli-db" });
      }),
  ));

Deno.test("email-status dashboard refuses a --url that is not the function's https URL, and explains a missing database", async () => {
  for (
    const url of [
      "http://example.com/functions/v1/email-worker",
      "https://example.com/functions/v1/other",
      "https://user:pw@x.supabase.co/functions/v1/email-worker",
      "not a url",
    ]
  ) {
    const out = await runCli(["dashboard", "--url", url], {}, "null");
    assertEquals(out.code, 2, url);
    assertMatch(out.stderr, /--url must be the function's https URL/);
  }
  const noDatabase = await runCli(["dashboard"], {}, "null");
  assertEquals(noDatabase.code, 2);
  assertMatch(noDatabase.stderr, /no database: .*\n.*dashboard --url https:/);
});
