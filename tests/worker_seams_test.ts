/**
 * The worker's seams: the workflow's data is validated once per path (push, sweep), and a bug in a
 * tracker call is a bug (500, Pub/Sub redelivers), never a rejection, a conflict or an outage.
 */
import { loadConfig } from "../functions/_shared/config.ts";
import { createLogger } from "../functions/_shared/log.ts";
import { createMailer } from "../functions/_shared/mailer.ts";
import { createStatusTracker, type QueueRequest, type StatusTracker } from "../functions/_shared/tracker.ts";
import { workflows } from "../functions/_shared/workflows/registry.ts";
import { createHandler } from "../functions/email-worker/handler.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { openDb } from "./support/db.ts";
import { test, withHarness } from "./support/harness.ts";
import { envelope, newDeliveryId, newRecipient, verificationEvent } from "./support/pubsub.ts";
import { mailTo, startSmtpServer } from "./support/smtp.ts";
import { databaseUrl } from "./support/worker.ts";

/**
 * Counts how often the verification-code schema checks data carrying `code` (a unique code, so other
 * deliveries the sweep may claim do not count), while `fn` runs; the real check still runs.
 */
async function countChecks(code: string, fn: () => Promise<void>): Promise<number> {
  const schema = workflows.get("verification-code")!.schema;
  const original = schema.safeParse;
  let n = 0;
  schema.safeParse = ((data: unknown, params?: unknown) => {
    if ((data as { code?: unknown })?.code === code) n++;
    return original.call(schema, data, params as never);
  }) as typeof schema.safeParse;
  try {
    await fn();
  } finally {
    schema.safeParse = original;
  }
  return n;
}

const uniqueCode = () => `c-${crypto.randomUUID().slice(0, 8)}`;

test("a push validates the workflow's data once: the checked data is what is rendered", async () => {
  await withHarness(async ({ smtp, worker, token }) => {
    const code = uniqueCode();
    const event = verificationEvent({ data: { code, expiresInMinutes: 10 } });
    const checks = await countChecks(code, async () => {
      const res = await worker.push(envelope(event), { token });
      assertEquals([res.status, (await res.json()).outcome], [200, "sent"]);
    });
    assertEquals(checks, 1);
    assert((mailTo(smtp, event.recipient)[0]?.text ?? "").includes(code));
  });
});

test("the sweep validates a stored payload once before rendering it", async () => {
  await withHarness(async ({ smtp, worker, db }) => {
    const code = uniqueCode();
    const id = newDeliveryId("sweep-once");
    const recipient = newRecipient();
    await db.sql`select email.record_queued(${id}, 'verification-code', ${recipient},
      ${db.sql.json({ code, expiresInMinutes: 5 })})`;
    await db.makeDue(id);
    const checks = await countChecks(code, async () => {
      assertEquals((await worker.sweep()).status, 200);
    });
    assertEquals(checks, 1);
    assertEquals((await db.delivery(id))?.status, "sent");
    assertEquals(mailTo(smtp, recipient).length, 1);
  });
});

/** A worker whose real tracker gets a bug planted by `wrap`. */
async function workerWithBug(wrap: (real: StatusTracker) => StatusTracker, env: Record<string, string> = {}) {
  const smtp = await startSmtpServer();
  const config = loadConfig({
    PUBSUB_VERIFY: "false",
    SMTP_HOST: "127.0.0.1",
    SMTP_PORT: String(smtp.port),
    SMTP_SECURE: "false",
    SMTP_REQUIRE_TLS: "false",
    SMTP_FROM: "Email Worker Test <no-reply@worker.test>",
    DELIVERY_STATUS_DATABASE_URL: databaseUrl(),
    TRACKING_MODE: "optional",
    ...env,
  });
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger("email-worker", { sink: (line) => logs.push(JSON.parse(line)) });
  const real = createStatusTracker(config.tracking, { logger: logger.child("tracker") });
  const tracker = wrap(real);
  const mailer = createMailer(config.smtp);
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    createHandler({
      config,
      tracker,
      mailer,
      logger,
    }),
  );
  return {
    smtp,
    logs,
    real,
    push: (body: string) =>
      fetch(`http://127.0.0.1:${server.addr.port}/email-worker`, {
        method: "POST",
        body,
        headers: { "content-type": "application/json" },
      }),
    async close() {
      await server.shutdown();
      mailer.close();
      await real.close();
      await smtp.close();
    },
  };
}

for (
  const [name, plant] of [
    // JSON cannot hold a BigInt: npm:postgres throws a TypeError while it serialises the query.
    ["a payload that cannot be serialised", (q: { payload: object }) => ({ ...q, payload: { ...q.payload, n: 1n } })],
    // A property that throws when read: the query builder throws before anything is sent.
    [
      "a request whose field throws when read",
      (q: object) =>
        Object.defineProperty({ ...q }, "userId", {
          get: () => {
            throw new TypeError("a bug");
          },
        }),
    ],
  ] as const
) {
  test(`a bug in queue-and-claim (${name}) answers 500: nothing stored as rejected or conflicting, nothing sent`, async () => {
    const w = await workerWithBug((real) => ({
      ...real,
      queueAndClaim: (q, lease) => real.queueAndClaim((plant as (x: QueueRequest) => QueueRequest)(q), lease),
    }));
    const db = openDb(databaseUrl());
    try {
      const event = verificationEvent();
      const res = await w.push(envelope(event));
      assertEquals([res.status, (await res.json()).error?.code], [500, "internal"]);
      assertEquals(w.smtp.attempts, 0);
      assertEquals(mailTo(w.smtp, event.recipient).length, 0);
      assertEquals((await db.rejected({ deliveryId: event.deliveryId })).length, 0);
      assertEquals(await db.delivery(event.deliveryId!), undefined);
      assertEquals(w.real.health(), { state: "closed", consecutiveFailures: 0 });
      assert(w.logs.some((l) => l.action === "unhandled" && l.error === "TypeError"));
    } finally {
      await db.close();
      await w.close();
    }
  });
}

test("a bug in a lease heartbeat stops the heartbeat without ending the process; the send's outcome is recorded", async () => {
  // Heartbeats renew with an undefined delivery id: npm:postgres refuses the query (UNDEFINED_VALUE).
  const w = await workerWithBug((real) => ({
    ...real,
    renewLease: (id, attempt, seconds, options) =>
      real.renewLease(options?.startingSend ? id : undefined as unknown as string, attempt, seconds, options),
  }), { LEASE_SECONDS: "1" });
  const db = openDb(databaseUrl());
  try {
    w.smtp.delayMs = 1500; // several heartbeats (every third of LEASE_SECONDS) while the relay answers
    const event = verificationEvent();
    const res = await w.push(envelope(event));
    const reply = await res.json();
    assertEquals([res.status, reply.outcome, reply.tracked], [200, "sent", true]);
    assertEquals((await db.delivery(event.deliveryId!))?.status, "sent");
    assertEquals(w.logs.filter((l) => l.action === "heartbeat_failed").length, 1);
  } finally {
    await db.close();
    await w.close();
  }
});
