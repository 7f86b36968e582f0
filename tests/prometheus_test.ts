/**
 * GET /email-worker/metrics end to end: the real worker over HTTP with a real SMTP server and the
 * real database; the body is checked by the real `promtool check metrics` (Debian package prometheus)
 * and its numbers against what the test sent.
 */
import { escapeLabelValue, exposition, formatValue, renderExposition } from "../functions/_shared/prometheus.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import type { TestDb } from "./support/db.ts";
import { test, withHarness } from "./support/harness.ts";
import { envelope, verificationEvent } from "./support/pubsub.ts";
import { startSmtpServer } from "./support/smtp.ts";
import { startWorker } from "./support/worker.ts";

const metricsToken = "test-metrics-token-0123456789";

/** Runs `promtool check metrics` on `body`: its exit code and what it printed. */
async function promtool(body: string): Promise<{ code: number; output: string }> {
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(body));
  await writer.close();
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, output: text.trim() };
}

/** The samples of a text-format body, keyed `name{k="v",...}` with the labels sorted by name. */
function parseSamples(body: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of body.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable line ${JSON.stringify(line)}`);
    const labels: [string, string][] = [];
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/gy;
    for (let l = re.exec(m[2] ?? ""); l; l = re.exec(m[2] ?? "")) {
      labels.push([l[1], l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c))]);
    }
    samples.set(key(m[1], Object.fromEntries(labels)), m[3] === "+Inf" ? Infinity : Number(m[3]));
  }
  return samples;
}

function key(name: string, labels: Record<string, string> = {}): string {
  const parts = Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) =>
    `${k}=${JSON.stringify(v)}`
  );
  return `${name}{${parts.join(",")}}`;
}

/** GETs the metrics with `Bearer <token>` (null: no authorization header). */
function scrape(url: string, token: string | null = metricsToken): Promise<Response> {
  return fetch(`${url}/email-worker/metrics`, { headers: token === null ? {} : { authorization: `Bearer ${token}` } });
}

/** Scrapes until the fold has caught up with the audit trail (a long history takes a few scrapes). */
async function scrapeCaughtUp(url: string): Promise<string> {
  for (let i = 0; i < 50; i++) {
    const res = await scrape(url);
    assertEquals(res.status, 200);
    const body = await res.text();
    if (parseSamples(body).get(key("email_metrics_events_behind")) === 0) return body;
  }
  throw new Error("the metric fold did not catch up in 50 scrapes");
}

/** Room in the domain registry for this test's domains (earlier tests may have filled the default cap). */
async function roomForDomains(sql: TestDb["sql"]): Promise<void> {
  await sql`update email.metric_state
    set max_domains = least(1000, (select count(*) from email.metric_labels where kind = 'domain') + 5),
        max_relays = least(1000, (select count(*) from email.metric_labels where kind = 'relay') + 5)`;
}

test("the metrics route answers 403 while METRICS_TOKEN is unset", async () => {
  const smtp = await startSmtpServer();
  const worker = startWorker({ smtpPort: smtp.port, env: { METRICS_TOKEN: undefined } });
  try {
    const res = await scrape(worker.url);
    assertEquals([res.status, (await res.json()).error.code], [403, "metrics_disabled"]);
  } finally {
    await worker.close();
    await smtp.close();
  }
});

test("the metrics route answers 401 without the token or with a wrong one", async () => {
  await withHarness(async ({ worker }) => {
    for (const token of [null, "", "wrong-token-0123456789", `${metricsToken}x`, metricsToken.slice(0, -1)]) {
      const res = await scrape(worker.url, token);
      assertEquals([res.status, (await res.json()).error.code], [401, "unauthorized"], `token ${token}`);
    }
    const res = await fetch(`${worker.url}/email-worker/metrics`, { headers: { authorization: metricsToken } });
    assertEquals(res.status, 401, "the token without the Bearer scheme");
    await res.body?.cancel();
  }, { env: { METRICS_TOKEN: metricsToken } });
});

test("a too short METRICS_TOKEN stops the worker at start", () => {
  let message = "";
  try {
    startWorker({ smtpPort: 1, env: { METRICS_TOKEN: "short" } });
  } catch (error) {
    message = (error as Error).message;
  }
  assertMatch(message, /METRICS_TOKEN must be at least 16 characters/);
});

test("after 3 sent and 1 failed the metrics say exactly that, and promtool accepts them", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    const domain = `prom-${crypto.randomUUID().slice(0, 8)}.test`;
    const before = parseSamples(await scrapeCaughtUp(worker.url));
    await roomForDomains(db.sql);

    const sent = [1, 2, 3].map(() =>
      verificationEvent({ recipient: `to-${crypto.randomUUID().slice(0, 8)}@${domain}` })
    );
    for (const e of sent) {
      assertEquals((await (await worker.push(envelope(e), { token })).json()).status, "sent");
    }
    smtp.respond = () => ({ code: 550, message: "5.1.1 No such user here" });
    const failed = verificationEvent({ recipient: `gone@${domain}` });
    assertEquals((await (await worker.push(envelope(failed), { token })).json()).status, "failed");
    const errorCode = (await db.delivery(failed.deliveryId!))?.last_error_code as string;
    assertMatch(errorCode, /^smtp_550/);

    const res = await scrape(worker.url);
    assertEquals([res.status, res.headers.get("content-type")], [200, exposition]);
    await res.body?.cancel();
    const body = await scrapeCaughtUp(worker.url);
    const check = await promtool(body);
    assertEquals(check, { code: 0, output: "" }, `promtool check metrics:\n${check.output}\n${body}`);

    const after = parseSamples(body);
    const delta = (name: string, labels: Record<string, string> = {}) =>
      (after.get(key(name, labels)) ?? 0) - (before.get(key(name, labels)) ?? 0);
    const wf = { workflow: "verification-code" };
    assertEquals(
      {
        queued: delta("email_delivery_transitions_total", { ...wf, status: "queued" }),
        in_progress: delta("email_delivery_transitions_total", { ...wf, status: "in_progress" }),
        sent: delta("email_delivery_transitions_total", { ...wf, status: "sent" }),
        failed: delta("email_delivery_transitions_total", { ...wf, status: "failed" }),
        attempts: delta("email_delivery_attempts_total", wf),
        errors: delta("email_delivery_errors_total", { ...wf, error_code: errorCode }),
        latencyCount: delta("email_delivery_latency_seconds_count", wf),
        latencyInf: delta("email_delivery_latency_seconds_bucket", { ...wf, le: "+Inf" }),
      },
      // Pushed deliveries are born in_progress (email.queue_and_claim): no queued transition.
      { queued: 0, in_progress: 4, sent: 3, failed: 1, attempts: 4, errors: 1, latencyCount: 3, latencyInf: 3 },
    );
    assert(delta("email_delivery_latency_seconds_sum", wf) > 0, "the latency sum grew");
    // by recipient domain and by the relay the worker sent through (SMTP_HOST, recorded in each outcome's event)
    const relay = "127.0.0.1";
    assertEquals(after.get(key("email_recipient_domain_outcomes_total", { domain, relay, status: "sent" })), 3);
    assertEquals(after.get(key("email_recipient_domain_outcomes_total", { domain, relay, status: "failed" })), 1);
    assertEquals(after.get(key("email_metrics_database_up")), 1);
    assertEquals(after.get(key("email_metrics_events_behind")), 0);
    assertEquals(after.get(key("email_tracker_breaker_state", { state: "closed" })), 1);
    assertEquals(after.get(key("email_tracker_breaker_state", { state: "open" })), 0);
    assertEquals(after.get(key("email_smtp_relay_info", { host: "127.0.0.1", port: String(smtp.port) })), 1);
    for (const family of ["email_delivery_latency_seconds", "email_deliveries_due_oldest_age_seconds"]) {
      assertMatch(body, new RegExp(`^# TYPE ${family} (histogram|gauge)$`, "m"));
    }

    // A scrape adds nothing that did not happen.
    const again = parseSamples(await (await scrape(worker.url)).text());
    assertEquals(
      again.get(key("email_delivery_transitions_total", { ...wf, status: "sent" })),
      after.get(key("email_delivery_transitions_total", { ...wf, status: "sent" })),
    );
  }, { env: { METRICS_TOKEN: metricsToken } });
});

test("a recipient domain and a relay with a quote and a backslash are escaped, and promtool accepts them", async () => {
  await withHarness(async ({ worker, db }) => {
    const domain = `q"uo\\te-${crypto.randomUUID().slice(0, 6)}.test`;
    const relay = `re"l\\ay-${crypto.randomUUID().slice(0, 6)}.test`;
    await scrapeCaughtUp(worker.url);
    await roomForDomains(db.sql);
    const id = `prom-escape-${crypto.randomUUID()}`;
    await db.sql`select email.record_queued(${id}, 'verification-code', ${"odd@" + domain}, '{}')`;
    await db.sql`select email.mark_in_progress(${id})`;
    await db.sql`select email.mark_sent(${id}, 1, relay => ${relay})`;
    const body = await scrapeCaughtUp(worker.url);
    assert(body.includes(`domain="${domain.replace("\\", "\\\\").replace('"', '\\"')}"`), body);
    assert(body.includes(`relay="${relay.replace("\\", "\\\\").replace('"', '\\"')}"`), body);
    assertEquals(await promtool(body), { code: 0, output: "" });
    assertEquals(
      parseSamples(body).get(key("email_recipient_domain_outcomes_total", { domain, relay, status: "sent" })),
      1,
    );
  }, { env: { METRICS_TOKEN: metricsToken } });
});

test("the README's alerting rules pass promtool check rules", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const rules = /```yaml\n(# email-worker-rules\.yml\n[\s\S]*?)```/.exec(readme)?.[1];
  assert(rules, "README.md has the rules block");
  const file = await Deno.makeTempFile({ suffix: ".yml" });
  try {
    await Deno.writeTextFile(file, rules);
    const out = await new Deno.Command("promtool", { args: ["check", "rules", file], stdout: "piped", stderr: "piped" })
      .output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 0, text);
    assertMatch(text, /SUCCESS: 2 rules found/);
  } finally {
    await Deno.remove(file);
  }
});

test("without its database the route still answers: database_up 0 and the breaker's state", async () => {
  const smtp = await startSmtpServer();
  const worker = startWorker({
    smtpPort: smtp.port,
    env: {
      METRICS_TOKEN: metricsToken,
      DELIVERY_STATUS_DATABASE_URL: "postgres://postgres:postgres@127.0.0.1:1/none",
      TRACKER_TIMEOUT_MS: "500",
    },
  });
  try {
    const res = await scrape(worker.url);
    assertEquals(res.status, 200);
    const body = await res.text();
    assertEquals(await promtool(body), { code: 0, output: "" });
    const samples = parseSamples(body);
    assertEquals(samples.get(key("email_metrics_database_up")), 0);
    assertEquals(samples.get(key("email_tracker_breaker_state", { state: "closed" })), 1);
    assert(![...samples.keys()].some((k) => k.startsWith("email_delivery_")), body);
    assert(worker.logs.some((l) => l.action === "metrics_unavailable"), "the failure is logged");
  } finally {
    await worker.close();
    await smtp.close();
  }
});

test("the text format: escaped label values and help, values, HELP and TYPE lines", async () => {
  assertEquals(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  assertEquals([formatValue(3), formatValue(0.25), formatValue(Infinity), formatValue(NaN)], [
    "3",
    "0.25",
    "+Inf",
    "NaN",
  ]);
  const body = renderExposition([
    {
      name: "x_requests_total",
      type: "counter",
      help: "Requests\nby path \\ method",
      samples: [{ labels: { path: '/a"b\\c\nd', method: "GET" }, value: 2 }, {
        labels: { path: "/", method: "GET" },
        value: 0,
      }],
    },
    {
      name: "x_duration_seconds",
      type: "histogram",
      help: "Durations",
      samples: [
        { name: "x_duration_seconds_bucket", labels: { le: "1" }, value: 1 },
        { name: "x_duration_seconds_bucket", labels: { le: "+Inf" }, value: 2 },
        { name: "x_duration_seconds_sum", value: 2.5 },
        { name: "x_duration_seconds_count", value: 2 },
      ],
    },
  ]);
  assertEquals(
    body.split("\n").slice(0, 4),
    [
      "# HELP x_requests_total Requests\\nby path \\\\ method",
      "# TYPE x_requests_total counter",
      'x_requests_total{path="/a\\"b\\\\c\\nd",method="GET"} 2',
      'x_requests_total{path="/",method="GET"} 0',
    ],
  );
  assertEquals(await promtool(body), { code: 0, output: "" });
  assertEquals(parseSamples(body).get(key("x_requests_total", { path: '/a"b\\c\nd', method: "GET" })), 2);
  let error = "";
  try {
    renderExposition([{ name: "bad-name", type: "gauge", help: "", samples: [] }]);
  } catch (e) {
    error = (e as Error).message;
  }
  assertMatch(error, /invalid metric name/);
});
