/**
 * Faults at the SMTP server (a misbehaving server on node:net): refused connections, a connection
 * dropped in the middle of DATA, a server that never greets, one that takes the message and never
 * answers, and 4xx replies. The short SMTP_*_TIMEOUT_MS hold (every push answers within a bound),
 * the deliveries go to retrying, and the sweep sends each exactly once after the server recovers.
 * Also: a 5xx ends the delivery as failed, a 535 keeps it retrying until the credentials work.
 * Bounded: 3 pushes per fault, a few seconds per test.
 */
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { openDb, type TestDb } from "./support/db.ts";
import { type FaultMode, type FaultySmtp, startFaultySmtp } from "./support/faulty_smtp.ts";
import { test } from "./support/harness.ts";
import { envelope, verificationEvent } from "./support/pubsub.ts";
import { databaseUrl, startWorker, type TestWorker } from "./support/worker.ts";

const timeouts = { connection: 500, greeting: 500, socket: 800 };
/** No push may take longer than this, whatever the SMTP server does. */
const pushBoundMs = 3000;

type Ctx = { smtp: FaultySmtp; worker: TestWorker; db: TestDb };

async function withFaultyServer(
  mode: FaultMode,
  fn: (ctx: Ctx) => Promise<void>,
  options: { env?: Record<string, string>; auth?: "accept" | "refuse" } = {},
): Promise<void> {
  const smtp = await startFaultySmtp({ mode });
  smtp.auth = options.auth ?? "accept";
  const worker = startWorker({
    smtpPort: smtp.port,
    env: {
      SMTP_CONNECTION_TIMEOUT_MS: String(timeouts.connection),
      SMTP_GREETING_TIMEOUT_MS: String(timeouts.greeting),
      SMTP_SOCKET_TIMEOUT_MS: String(timeouts.socket),
      LOG_LEVEL: "warn",
      ...options.env,
    },
  });
  const db = openDb(databaseUrl());
  try {
    await fn({ smtp, worker, db });
  } finally {
    await worker.close();
    await db.close();
    await smtp.close();
  }
}

type Pushed = { deliveryId: string; status: number; body: Record<string, unknown>; ms: number };

/** Pushes one new event (no token: these workers run with PUBSUB_VERIFY=false), timing the answer. */
async function pushTimed(worker: TestWorker): Promise<Pushed> {
  const event = verificationEvent({ deliveryId: `smtpfault-${crypto.randomUUID()}` });
  const started = performance.now();
  const res = await fetch(`${worker.url}/email-worker`, {
    method: "POST",
    body: envelope(event),
    headers: { "content-type": "application/json" },
    signal: AbortSignal.timeout(20_000),
  });
  const body = await res.json();
  return { deliveryId: event.deliveryId!, status: res.status, body, ms: performance.now() - started };
}

/** The audit trail as `from>to:attempt:error_code` strings. */
async function trail(db: TestDb, id: string): Promise<string[]> {
  return (await db.events(id)).map((e) => `${e.from_status}>${e.to_status}:${e.attempt}:${e.error_code ?? ""}`);
}

/**
 * Pushes one new event and checks that its first attempt was answered 200 with `outcome`, left the
 * delivery in `status` with `errorCode`, and is the last step of the trail.
 */
async function pushAndExpect(ctx: Ctx, expected: { outcome: string; status: string; errorCode: string }) {
  const p = await pushTimed(ctx.worker);
  assertEquals(
    [p.status, p.body.outcome, p.body.status, p.body.errorCode],
    [200, expected.outcome, expected.status, expected.errorCode],
  );
  assertEquals((await trail(ctx.db, p.deliveryId)).slice(-1), [
    `in_progress>${expected.status}:1:${expected.errorCode}`,
  ]);
  return p;
}

/** Recovers the server, makes the deliveries due and sweeps until each is sent (bounded). */
async function recoverAndSweep(ctx: Ctx, ids: string[]): Promise<void> {
  await ctx.smtp.setMode({ kind: "accept" });
  for (const id of ids) await ctx.db.makeDue(id);
  for (let i = 0; i < 5; i++) {
    const res = await ctx.worker.sweep();
    assertEquals(res.status, 200, JSON.stringify(await res.clone().json()));
    await res.body?.cancel();
    const statuses = await Promise.all(ids.map(async (id) => (await ctx.db.delivery(id))?.status));
    if (statuses.every((s) => s === "sent")) return;
  }
  throw new Error("the sweep did not send every delivery after the server recovered");
}

const faults: { name: string; mode: FaultMode; errorCode: RegExp; minMs: number }[] = [
  { name: "refusing connections", mode: { kind: "refuse" }, errorCode: /^(ECONNREFUSED|ESOCKET)$/, minMs: 0 },
  {
    name: "dropping the connection mid-DATA",
    mode: { kind: "drop_in_data" },
    errorCode: /^(ECONNECTION|ESOCKET|ECONNRESET)$/,
    minMs: 0,
  },
  { name: "never greeting", mode: { kind: "silent" }, errorCode: /^ETIMEDOUT$/, minMs: timeouts.greeting },
  {
    name: "taking the message and never answering",
    mode: { kind: "stall_in_data" },
    errorCode: /^ETIMEDOUT$/,
    minMs: timeouts.socket,
  },
  {
    name: "answering 451",
    mode: { kind: "reply", at: "data", line: "451 4.3.0 Try again later" },
    errorCode: /^smtp_451$/,
    minMs: 0,
  },
];

for (const fault of faults) {
  test(`SMTP server ${fault.name}: pushes answer within the timeouts, deliveries retry, and are sent once after recovery`, async () => {
    await withFaultyServer(fault.mode, async (ctx) => {
      const pushed = await Promise.all([0, 1, 2].map(() => pushTimed(ctx.worker)));
      for (const p of pushed) {
        // Acked: the retry is recorded, so the database owns it, not Pub/Sub.
        assertEquals([p.status, p.body.outcome, p.body.status, p.body.tracked], [
          200,
          "transient_failure",
          "retrying",
          true,
        ], JSON.stringify(p));
        assertMatch(String(p.body.errorCode), fault.errorCode);
        assert(p.ms < pushBoundMs, `push took ${Math.round(p.ms)} ms (bound ${pushBoundMs})`);
        assert(p.ms >= fault.minMs * 0.9, `push took ${Math.round(p.ms)} ms, less than the ${fault.minMs} ms timeout`);
        const d = await ctx.db.delivery(p.deliveryId);
        assertEquals([d?.status, d?.attempts, d?.last_error_code], ["retrying", 1, p.body.errorCode]);
        assertEquals((await trail(ctx.db, p.deliveryId)).slice(-2), [
          "null>in_progress:1:",
          `in_progress>retrying:1:${p.body.errorCode}`,
        ]);
      }
      assertEquals(ctx.smtp.accepted.length, 0, "nothing was accepted while the server misbehaved");
      if (fault.mode.kind === "refuse") assertEquals(ctx.smtp.connections, 0);
      else assertEquals(ctx.smtp.connections, 3);

      const ids = pushed.map((p) => p.deliveryId);
      await recoverAndSweep(ctx, ids);
      for (const id of ids) {
        assertEquals(ctx.smtp.mailsFor(id).length, 1, `exactly one mail for ${id}`);
        assertEquals((await ctx.db.delivery(id))?.attempts, 2);
        assertEquals((await trail(ctx.db, id)).slice(-2), ["retrying>in_progress:2:", "in_progress>sent:2:"]);
      }
    });
  });
}

test("SMTP server answering 550 5.1.1: the delivery fails for good and the sweep never retries it", async () => {
  await withFaultyServer({ kind: "reply", at: "rcpt", line: "550 5.1.1 No such user" }, async (ctx) => {
    const p = await pushAndExpect(ctx, { outcome: "permanent_failure", status: "failed", errorCode: "smtp_550_5.1.1" });

    // Failed is terminal: nothing is due (the schema keeps next_attempt_at null), the sweep skips it.
    await ctx.smtp.setMode({ kind: "accept" });
    const res = await ctx.worker.sweep();
    assertEquals(res.status, 200);
    await res.body?.cancel();
    const d = await ctx.db.delivery(p.deliveryId);
    assertEquals([d?.status, d?.attempts, d?.next_attempt_at], ["failed", 1, null]);
    assertEquals(ctx.smtp.mailsFor(p.deliveryId).length, 0);
  });
});

test("SMTP server answering 535 to AUTH (operator-side): the delivery retries and is sent once the credentials work", async () => {
  await withFaultyServer({ kind: "accept" }, async (ctx) => {
    const p = await pushAndExpect(ctx, {
      outcome: "transient_failure",
      status: "retrying",
      errorCode: "smtp_535_5.7.8",
    });
    assertEquals(ctx.smtp.dataStarted.length, 0, "no DATA without authentication");

    // The operator fixes the credentials at the relay.
    ctx.smtp.auth = "accept";
    await recoverAndSweep(ctx, [p.deliveryId]);
    assertEquals(ctx.smtp.mailsFor(p.deliveryId).length, 1);
  }, { auth: "refuse", env: { SMTP_USER: "worker", SMTP_PASSWORD: "relay-password" } });
});
