/**
 * The dashboard over real HTTP (Deno.serve on port 0) against the real database, with real signed
 * tokens, driven in a real headless Chromium (Debian's, through playwright-core): the charts must
 * show the numbers of the deliveries the test seeds under a workflow of its own. The screenshot goes
 * to tests/artifacts/dashboard.png.
 */
import { SignJWT } from "jose";
import postgres from "postgres";
import { chromium } from "playwright-core";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { handleDashboard, isDashboardPath } from "../functions/_shared/dashboard.ts";

const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

const jwtSecret = "dashboard-test-jwt-secret-at-least-32-chars";
const dashboardToken = `dash-token-${crypto.randomUUID()}`;
const run = crypto.randomUUID().slice(0, 8);
const workflow = `dash-${run}`;
const artifacts = new URL("./artifacts/", import.meta.url);

function sign(claims: Record<string, unknown>, key = jwtSecret, expiresIn = "5m"): Promise<string> {
  return new SignJWT({ role: "authenticated", aud: "authenticated", ...claims })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" }).setSubject(crypto.randomUUID()).setIssuedAt()
    .setExpirationTime(expiresIn).sign(new TextEncoder().encode(key));
}

/** Seeds 11 deliveries of `workflow` over the last 50 minutes; returns the failed one's id. */
async function seed(sql: postgres.Sql): Promise<string> {
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
  await sql`select * from email.record_failure(${failed}, 1, 'smtp_550_5.1.1', '550 5.1.1 no such user', true)`;
  await backdate(failed, 30);
  for (const minutes of [35, 40]) {
    const id = await queue();
    await sql`select email.mark_in_progress(${id})`;
    await sql`select email.mark_dead_letter(${id}, 1, 'smtp_421', '421 try again later')`;
    await backdate(id, minutes);
  }
  const retrying = await queue();
  await sql`select email.mark_in_progress(${retrying})`;
  await sql`select email.mark_retrying(${retrying}, 1, 'smtp_451', '451 greylisted')`;
  await backdate(retrying, 45);
  const suppressedAddress = `${workflow}-suppressed@example.com`;
  await sql`select email.add_suppression(${suppressedAddress}, 'dashboard test')`;
  await backdate(await queue(suppressedAddress), 48);
  return failed;
}

function serve() {
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
    sql: deps.sql,
    close: async () => {
      await server.shutdown();
      await deps.sql.end({ timeout: 2 });
    },
  };
}

Deno.test("the dashboard's data routes need a support/admin JWT or the dashboard token", async () => {
  const app = serve();
  try {
    const page = await fetch(app.base);
    assertEquals(page.status, 200);
    assertMatch(page.headers.get("content-type")!, /^text\/html/);
    assertMatch(page.headers.get("content-security-policy")!, /default-src 'none'/);
    const html = await page.text();
    assert(!/<script[^>]+src=/.test(html) && !/https?:\/\/(?!www\.w3\.org)/.test(html), "no external resource");

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
  } finally {
    await app.close();
  }
});

Deno.test({
  name: "in headless Chromium the charts show the seeded deliveries and a failure opens its timeline",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const app = serve();
    const browser = await chromium.launch({
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
    try {
      const failed = await seed(app.sql);
      const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(String(e)));
      page.on("console", (m) => m.type() === "error" && !/401|403/.test(m.text()) && pageErrors.push(m.text()));
      const loaded = () =>
        page.waitForSelector("#loaded:not([hidden])", { state: "attached", timeout: 10_000 }).catch(async (e) => {
          const shown = await page.textContent("#signin-error").catch(() => "");
          throw new Error(`the dashboard did not load: ${pageErrors.join("; ") || shown || e}`);
        });
      const text = async (selector: string) => (await page.locator(selector).first().textContent())?.trim();

      // Without a token: the sign-in form; a plain user's token is refused with the reason.
      await page.goto(app.base);
      await page.waitForSelector("#signin:not([hidden])");
      await page.fill("#token-input", await sign({ app_metadata: {} }));
      await page.click("#signin-form button");
      await page.waitForSelector('#signin-error:has-text("for support and admin users")');

      // A support user's token in the fragment opens it, filtered to the test's workflow.
      const token = await sign({ app_metadata: { role: "support" }, email: "support@example.com" });
      await page.goto(`${app.base}#token=${token}&workflow=${workflow}&since=1h`);
      await loaded();
      assert(!page.url().includes(token), "the token is taken out of the URL");

      assertEquals(await text('[data-testid="card-total"]'), "11");
      assertEquals(await text('[data-testid="card-sent"]'), "6");
      assertEquals(await text('[data-testid="card-success"]'), "66.7%");
      assertEquals(await text(`[data-testid="success-rate"][data-workflow="${workflow}"]`), "66.7% (6/9)");
      assertEquals(await text(`[data-testid="latency"][data-workflow="${workflow}"][data-percentile="p50"]`), "350 ms");
      assertEquals(await text(`[data-testid="latency"][data-workflow="${workflow}"][data-percentile="p95"]`), "575 ms");
      assertEquals(await text(`[data-testid="latency"][data-workflow="${workflow}"][data-percentile="p99"]`), "595 ms");
      assertEquals(await text('[data-testid="error-code"][data-code="smtp_421"]'), "2");
      assertEquals(await text('[data-testid="error-code"][data-code="smtp_550_5.1.1"]'), "1");
      assertEquals(await text('[data-testid="error-code"][data-code="smtp_451"]'), "1");
      assertEquals(await text('[data-testid="error-code"][data-code="address_suppressed"]'), "1");
      assertEquals(await text('[data-testid="dlq-size"]'), "2");
      assertMatch((await text(`[data-testid="dlq-workflow"][data-workflow="${workflow}"]`))!, /^2 \(oldest /);

      const legend = await page.locator('[data-testid="series-total"]').allTextContents();
      assertEquals(legend.map((s) => s.trim()), ["sent 6", "retrying 1", "failed 1", "dead_letter 2", "suppressed 1"]);
      const drawn = await page.locator("#chart-series rect[data-status]").evaluateAll((rects) =>
        rects.map((r) => [r.getAttribute("data-status"), Number(r.getAttribute("data-count"))])
      ) as [string, number][];
      const sums: Record<string, number> = {};
      for (const [s, c] of drawn) sums[s] = (sums[s] ?? 0) + c;
      assertEquals(sums, { sent: 6, retrying: 1, failed: 1, dead_letter: 2, suppressed: 1 });
      assert(
        new Set(drawn.map((d) => d[0])).size === 5 && drawn.length >= 9,
        "deliveries are spread over several buckets",
      );

      const rows = page.locator('[data-testid="failure-row"]');
      assertEquals(await rows.count(), 5);
      await Deno.mkdir(artifacts, { recursive: true });
      await page.screenshot({ path: new URL("dashboard.png", artifacts).pathname, fullPage: true });

      await page.click(`[data-testid="failure-row"][data-delivery-id="${failed}"]`);
      await page.waitForSelector('[data-testid="timeline-event"]');
      const events = await page.locator('[data-testid="timeline-event"]').evaluateAll((li) =>
        li.map((e) => e.getAttribute("data-status"))
      );
      assertEquals(events, ["queued", "in_progress", "failed"]);
      assertMatch((await text("#timeline-summary"))!, new RegExp(`^${workflow} · .* · failed · attempts 1/5$`));
      await page.screenshot({ path: new URL("dashboard-timeline.png", artifacts).pathname, fullPage: false });
      assertEquals(pageErrors, [], "no script errors in the page");
    } finally {
      await browser.close();
      await app.close();
    }
  },
});
