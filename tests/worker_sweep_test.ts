import type { TestDb } from "./support/db.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { type Harness, test, withHarness } from "./support/harness.ts";
import { envelope, newDeliveryId, newRecipient, verificationEvent } from "./support/pubsub.ts";
import { mailTo, type TestSmtp } from "./support/smtp.ts";

test("a transient failure, then success through the sweep", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    smtp.respond = () => ({ code: 451, message: "4.4.1 Connection timed out upstream" });
    const event = verificationEvent();
    assertEquals((await (await worker.push(envelope(event), { token })).json()).status, "retrying");

    smtp.respond = () => undefined;
    await db.makeDue(event.deliveryId!);
    const res = await worker.sweep();
    assertEquals(res.status, 200);
    const counts = await res.json();
    assert(counts.claimed >= 1 && counts.sent >= 1, JSON.stringify(counts));

    assertEquals(mailTo(smtp, event.recipient).length, 1);
    const d = await db.delivery(event.deliveryId!);
    assertEquals([d?.status, d?.attempts], ["sent", 2]);
    const trail = (await db.events(event.deliveryId!)).map((e) => `${e.to_status}:${e.attempt}`);
    assertEquals(trail, ["in_progress:1", "retrying:1", "in_progress:2", "sent:2"]);
  });
});

test("attempts exhausted end in dead_letter, and a later duplicate push sends nothing", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    smtp.respond = () => ({ code: 452, message: "4.2.2 Mailbox full" });
    const event = verificationEvent();
    await worker.push(envelope(event), { token });
    const max = (await db.delivery(event.deliveryId!))!.max_attempts as number;
    for (let attempt = 2; attempt <= max; attempt++) {
      await db.makeDue(event.deliveryId!);
      assertEquals((await worker.sweep()).status, 200);
      assertEquals((await db.delivery(event.deliveryId!))?.attempts, attempt);
    }
    const d = await db.delivery(event.deliveryId!);
    assertEquals([d?.status, d?.last_error_code], ["dead_letter", "smtp_452"]);
    const before = smtp.attempts;
    const again = await (await worker.push(envelope(event), { token })).json();
    assertEquals([again.status, again.deliveryStatus], ["duplicate", "dead_letter"]);
    assertEquals(smtp.attempts, before);
  });
});

/** Waits until the relay has the message's DATA (the send is in flight), for at most 15 s. */
async function dataArrived(smtp: TestSmtp) {
  for (let i = 0; i < 600 && smtp.attempts < 1; i++) await new Promise((r) => setTimeout(r, 25));
  assert(smtp.attempts >= 1, "the relay got the message");
}

/**
 * Reaps (as every sweep does first) until `id` is retrying, at most 50 times: the reaper skips a row
 * another transaction holds (a heartbeat's renewal, which the expired lease then refuses).
 */
async function reapUntilRetrying(db: TestDb, id: string) {
  for (let i = 0; i < 50 && (await db.delivery(id))?.status !== "retrying"; i++) {
    await db.sql`select email.reap_expired_leases()`;
    await new Promise((r) => setTimeout(r, 20));
  }
  assertEquals((await db.delivery(id))?.status, "retrying");
}

/** Makes the lease of `id` look expired mid-send, as if the worker had lost the database for longer than it (the test's clock jump). */
async function expireLease(db: TestDb, id: string) {
  await db.sql`update email.deliveries set lease_expires_at = now() - interval '1 second' where delivery_id = ${id}`;
}

test("a send slower than the claim's lease keeps its lease: a sweep meanwhile reaps nothing, one mail", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    smtp.delayMs = 4000;
    const event = verificationEvent();
    const push = worker.push(envelope(event), { token });
    await dataArrived(smtp);
    await new Promise((r) => setTimeout(r, 1200)); // past the claim's 1 s lease, mid-send
    assertEquals((await worker.sweep()).status, 200); // reaps expired leases first
    // Under load the sweep itself may outlast the rest of the send: either way the attempt was not reaped.
    const now = (await db.delivery(event.deliveryId!))?.status;
    assert(now === "in_progress" || now === "sent", `not reaped (status ${now})`);
    const reply = await (await push).json();
    assertEquals([reply.outcome, reply.status, reply.tracked], ["sent", "sent", true]);
    const trail = (await db.events(event.deliveryId!)).map((e) => `${e.to_status}:${e.error_code ?? ""}`);
    assertEquals(trail, ["in_progress:", "sent:"]);
    assertEquals(mailTo(smtp, event.recipient).length, 1);
  }, { env: { LEASE_SECONDS: "1" } });
});

test("a heartbeat keeps the lease of a send in flight moving forward, and the send starts on a lease that outlasts its timeouts", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    smtp.delayMs = 3000;
    const event = verificationEvent();
    const id = event.deliveryId!;
    const push = worker.push(envelope(event), { token });
    await dataArrived(smtp);
    const lease = async () => {
      const [r] = await db.sql`select extract(epoch from lease_expires_at - now())::float8 as left_s,
        lease_expires_at, send_started_at is not null as started from email.deliveries where delivery_id = ${id}`;
      return r as unknown as { left_s: number; lease_expires_at: Date; started: boolean };
    };
    const first = await lease();
    // LEASE_SECONDS=1, SMTP timeouts 2 + 2 + 5 s: the lease taken as the send starts covers 10 s.
    assert(first.started && first.left_s > 5, JSON.stringify(first));
    await new Promise((r) => setTimeout(r, 1200));
    const later = await lease();
    assert(later.lease_expires_at.getTime() > first.lease_expires_at.getTime(), "the heartbeat renewed it");
    assertEquals((await (await push).json()).tracked, true);
  }, { env: { LEASE_SECONDS: "1" } });
});

/**
 * Pushes a new event to a relay that answers in 4 s and, mid-send, makes its lease look expired and
 * reaps it (attempt 1 is then retrying as outcome_unknown while its send goes on); returns the event
 * and the push's answer to come.
 */
async function reapedMidSend({ smtp, worker, db, token }: Harness) {
  smtp.delayMs = 4000;
  const event = verificationEvent();
  const push = worker.push(envelope(event), { token });
  await dataArrived(smtp); // mid-send
  await expireLease(db, event.deliveryId!);
  await reapUntilRetrying(db, event.deliveryId!);
  return { event, push };
}

test("a lease that expires mid-send is reaped as outcome_unknown, and the late success still records sent", async () => {
  await withHarness(async (h) => {
    const { smtp, db } = h;
    const { event, push } = await reapedMidSend(h);

    const reply = await (await push).json();
    assertEquals([reply.outcome, reply.status], ["sent", "sent"]);
    const trail = (await db.events(event.deliveryId!)).map((e) => `${e.to_status}:${e.error_code ?? ""}`);
    assertEquals(trail, ["in_progress:", "retrying:outcome_unknown", "sent:"]);
    assertEquals(mailTo(smtp, event.recipient).length, 1);
  }, { env: { LEASE_SECONDS: "1" } });
});

test("an attempt whose lease was reaped and re-claimed is fenced off as stale", async () => {
  await withHarness(async (h) => {
    const { smtp, worker, db } = h;
    const { event, push } = await reapedMidSend(h); // reaps attempt 1
    await db.makeDue(event.deliveryId!);
    smtp.delayMs = 0;
    const sweep = worker.sweep(); // claims attempt 2 while attempt 1 is still sending
    const reply = await (await push).json();
    await sweep;
    assertEquals([reply.attempt, reply.outcome, reply.tracked], [1, "sent", false]);
    assert(worker.logs.some((l) => l.action === "outcome_stale" && l.deliveryId === event.deliveryId));
    const d = await db.delivery(event.deliveryId!);
    assertEquals([d?.status, d?.attempts], ["sent", 2]);
  }, { env: { LEASE_SECONDS: "1" } });
});

test("a delivery that cannot be rendered after enqueue ends failed through mark_failed", async () => {
  await withHarness(async ({ smtp, worker, db }) => {
    const id = newDeliveryId("render");
    const recipient = newRecipient();
    // Accepted by an older publisher, before the schema tightened: the payload no longer renders.
    await db.sql`select email.record_queued(${id}, 'invite', ${recipient},
      ${db.sql.json({ inviterName: "Ada", organizationName: "Acme", inviteUrl: "javascript:alert(1)" })})`;
    await db.makeDue(id);
    const counts = await (await worker.sweep()).json();
    assert(counts.failed >= 1, JSON.stringify(counts));
    const d = await db.delivery(id);
    assertEquals([d?.status, d?.last_error_code], ["failed", "render_failed"]);
    assertEquals(mailTo(smtp, recipient).length, 0);
  });
});

test("the sweep refuses a missing or wrong secret with 401 and does nothing", async () => {
  await withHarness(async ({ worker }) => {
    const wrong = await worker.sweep("not-the-sweep-secret-at-all");
    assertEquals([wrong.status, (await wrong.json()).error.code], [401, "unauthorized"]);
    const none = await fetch(`${worker.url}/email-worker/sweep`, { method: "POST" });
    assertEquals(none.status, 401);
    await none.body?.cancel();
    assert(!worker.logs.some((l) => l.action === "sweep"));
  });
});

test("the sweep is refused while SWEEP_SECRET is unset", async () => {
  await withHarness(async ({ worker }) => {
    const res = await worker.sweep("anything-anything-anything");
    assertEquals([res.status, (await res.json()).error.code], [403, "sweep_disabled"]);
  }, { env: { SWEEP_SECRET: undefined } });
});

test("the sweep answers 503 when the tracking database is unreachable", async () => {
  await withHarness(async ({ worker }) => {
    const res = await worker.sweep();
    assertEquals([res.status, (await res.json()).error.code], [503, "tracking_unavailable"]);
  }, { env: { DELIVERY_STATUS_DATABASE_URL: "postgresql://postgres@127.0.0.1:1/none", TRACKER_TIMEOUT_MS: "1000" } });
});

test("health reports the tracker state and no secrets; unknown paths are 404 and wrong methods 405", async () => {
  await withHarness(async ({ worker }) => {
    const res = await worker.health();
    assertEquals(res.status, 200);
    const text = await res.text();
    const body = JSON.parse(text);
    assertEquals([body.status, body.tracking.mode, body.tracking.state, body.pubsubVerify], [
      "ok",
      "optional",
      "closed",
      true,
    ]);
    for (const secret of ["test-sweep-secret", "postgres:postgres", "SMTP"]) assert(!text.includes(secret));
    const missing = await fetch(`${worker.url}/email-worker/nope`);
    assertEquals([missing.status, (await missing.json()).error.code], [404, "not_found"]);
    const wrongMethod = await fetch(`${worker.url}/email-worker`);
    assertEquals([wrongMethod.status, (await wrongMethod.json()).error.code], [405, "method_not_allowed"]);
  });
});
