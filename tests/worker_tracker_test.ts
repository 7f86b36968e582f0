import postgres from "postgres";
import { loadConfig } from "../functions/_shared/config.ts";
import { createLogger } from "../functions/_shared/log.ts";
import { createStatusTracker } from "../functions/_shared/tracker.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { test, withHarness } from "./support/harness.ts";
import { startPrivatePostgres } from "./support/postgres.ts";
import { envelope, newDeliveryId, verificationEvent } from "./support/pubsub.ts";
import { mailTo } from "./support/smtp.ts";

function capture() {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger("tracker", { sink: (l) => lines.push(JSON.parse(l)) });
  return { lines, logger };
}

const baseEnv = { SMTP_HOST: "127.0.0.1", SMTP_FROM: "x@worker.test", PUBSUB_VERIFY: "false" };

test("no database URL: a no-op tracker, one info line, and the worker still sends", async () => {
  const { lines, logger } = capture();
  const tracker = createStatusTracker(loadConfig(baseEnv).tracking, { logger });
  assertEquals(lines.map((l) => [l.level, l.action]), [["info", "tracking_off"]]);
  assertEquals(await tracker.recordRejected({ reasonCode: "x", reason: "y" }), { kind: "unavailable", reason: "off" });
  assertEquals(tracker.health().state, "off");
  assertEquals(lines.length, 1);

  await withHarness(async ({ smtp, worker, token }) => {
    const event = verificationEvent();
    const reply = await (await worker.push(envelope(event), { token })).json();
    assertEquals([reply.outcome, reply.tracked], ["sent", false]);
    assertEquals(mailTo(smtp, event.recipient).length, 1);
    // Invalid input has nowhere to go without tracking: acked (redelivery cannot help), not stored.
    const rejected = await worker.push('{"message": 7}', { token });
    assertEquals([rejected.status, (await rejected.json()).stored], [200, false]);
    assertEquals((await (await worker.health()).json()).tracking.state, "off");
  }, { env: { DELIVERY_STATUS_DATABASE_URL: undefined, SUPABASE_DB_URL: undefined } });
});

test("missing schema (a database without the migrations): tracking disabled with one warning, sends continue", async () => {
  const admin = postgres(Deno.env.get("TEST_SERVER_URL")!, { max: 1, onnotice: () => {} });
  const name = `email_worker_noschema_${crypto.randomUUID().slice(0, 8)}`;
  await admin.unsafe(`create database ${name}`);
  const url = new URL(Deno.env.get("TEST_SERVER_URL")!);
  url.pathname = `/${name}`;
  try {
    await withHarness(async ({ smtp, worker, token }) => {
      for (let i = 0; i < 3; i++) {
        const event = verificationEvent();
        const reply = await (await worker.push(envelope(event), { token })).json();
        assertEquals([reply.outcome, reply.tracked], ["sent", false]);
        assertEquals(mailTo(smtp, event.recipient).length, 1);
      }
      const warnings = worker.logs.filter((l) => l.action === "tracking_disabled");
      assertEquals(warnings.length, 1);
      assertEquals(warnings[0].level, "warn");
      assert(["3F000", "42883", "42P01", "42704"].includes(String(warnings[0].sqlstate)));
      assertEquals((await (await worker.health()).json()).tracking.state, "disabled");
    }, { env: { DELIVERY_STATUS_DATABASE_URL: url.toString(), SUPABASE_DB_URL: undefined } });
  } finally {
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end();
  }
});

test("SUPABASE_DB_URL is used when DELIVERY_STATUS_DATABASE_URL is unset", () => {
  const c = loadConfig({ ...baseEnv, SUPABASE_DB_URL: "postgresql://u:p@db.supabase.test:5432/postgres" });
  assertEquals(c.tracking.databaseUrl, "postgresql://u:p@db.supabase.test:5432/postgres");
  const both = loadConfig({
    ...baseEnv,
    SUPABASE_DB_URL: "postgresql://u:p@a:5432/postgres",
    DELIVERY_STATUS_DATABASE_URL: "postgresql://u:p@b:5432/postgres",
  });
  assertEquals(both.tracking.databaseUrl, "postgresql://u:p@b:5432/postgres");
});

test("a tracker call that outlives TRACKER_TIMEOUT_MS is given up and counted against the breaker", async () => {
  // A server that accepts TCP connections and never answers: the call can only end by timing out.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  (async () => {
    for await (const c of listener) held.push(c);
  })();
  const { lines, logger } = capture();
  const tracker = createStatusTracker(
    loadConfig({
      ...baseEnv,
      DELIVERY_STATUS_DATABASE_URL: `postgresql://postgres@127.0.0.1:${listener.addr.port}/x`,
      TRACKER_TIMEOUT_MS: "300",
      TRACKER_BREAKER_THRESHOLD: "2",
    }).tracking,
    { logger },
  );
  try {
    const started = Date.now();
    assertEquals(await tracker.reapExpiredLeases(), { kind: "unavailable", reason: "failed" });
    assert(Date.now() - started < 2000, "the call did not time out in time");
    assertEquals(tracker.health(), { state: "closed", consecutiveFailures: 1 });
    await tracker.reapExpiredLeases();
    assertEquals(tracker.health().state, "open");
    assertEquals(await tracker.reapExpiredLeases(), { kind: "unavailable", reason: "open" });
    assert(lines.some((l) => l.action === "tracker_breaker" && l.state === "open"));
  } finally {
    listener.close();
    for (const c of held) c.close();
    tracker.close().catch(() => {});
  }
});

test("circuit breaker opens while Postgres is stopped and closes after it is started again", async () => {
  const pg = await startPrivatePostgres(54361);
  const { lines, logger } = capture();
  const tracker = createStatusTracker(
    loadConfig({
      ...baseEnv,
      DELIVERY_STATUS_DATABASE_URL: pg.url,
      TRACKER_TIMEOUT_MS: "1000",
      TRACKER_BREAKER_THRESHOLD: "2",
      TRACKER_BREAKER_COOLDOWN_MS: "300",
    }).tracking,
    { logger },
  );
  const queue = () =>
    tracker.queueAndClaim({
      deliveryId: newDeliveryId("breaker"),
      workflow: "verification-code",
      recipient: "ada@example.com",
      payload: { code: "123456", expiresInMinutes: 5 },
      metadata: {},
    }, 60);
  try {
    assertEquals((await queue()).kind, "claimed");
    assertEquals(tracker.health().state, "closed");

    await pg.stop();
    assertEquals(await queue(), { kind: "unavailable", reason: "failed" });
    assertEquals(await queue(), { kind: "unavailable", reason: "failed" });
    assertEquals(tracker.health().state, "open");
    assertEquals(await queue(), { kind: "unavailable", reason: "open" });

    // Cooldown over, still down: the one trial call fails and the breaker opens again.
    await new Promise((r) => setTimeout(r, 350));
    assertEquals(await queue(), { kind: "unavailable", reason: "failed" });
    assertEquals(tracker.health().state, "open");

    await pg.start();
    await new Promise((r) => setTimeout(r, 350));
    assertEquals((await queue()).kind, "claimed");
    assertEquals(tracker.health(), { state: "closed", consecutiveFailures: 0 });
    const transitions = lines.filter((l) => l.action === "tracker_breaker").map((l) => l.state);
    assertEquals(transitions, ["open", "half_open", "open", "half_open", "closed"]);
  } finally {
    await tracker.close().catch(() => {});
    await pg.destroy();
  }
});
