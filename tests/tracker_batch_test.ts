/**
 * Group commit in the tracker (functions/_shared/tracker_batch.ts, email.queue_and_claim_many and
 * email.mark_sent_many): calls made while the pool is busy share one statement and one commit, and
 * every caller still gets its own call's answer; a push claims with its send start recorded, so it
 * sends after one round trip. Against the test database (the real migrations).
 */
import { loadConfig } from "../functions/_shared/config.ts";
import { createLogger } from "../functions/_shared/log.ts";
import { createBatcher } from "../functions/_shared/tracker_batch.ts";
import { createStatusTracker, type StatusTracker } from "../functions/_shared/tracker.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { openDb } from "./support/db.ts";
import { test, withHarness } from "./support/harness.ts";
import { envelope, newDeliveryId, newRecipient, verificationEvent } from "./support/pubsub.ts";
import { databaseUrl } from "./support/worker.ts";

test("the batcher: calls of one tick go together, at most maxInFlight batches of at most maxBatch, answers in order", async () => {
  const batches: number[][] = [];
  const releases: (() => void)[] = [];
  const call = createBatcher<number, string>({
    maxInFlight: 2,
    maxBatch: 3,
    send: (items) => {
      batches.push(items);
      return new Promise((resolve) => releases.push(() => resolve(items.map((i) => `answer ${i}`))));
    },
  });
  const tick = () => new Promise((r) => setTimeout(r, 0));
  const answers = Array.from({ length: 10 }, (_, i) => call(i));
  await tick();
  // Two batches out (the first three calls, the next three); the other four wait.
  assertEquals(batches, [[0, 1, 2], [3, 4, 5]]);
  releases.shift()!();
  await tick();
  assertEquals(batches, [[0, 1, 2], [3, 4, 5], [6, 7, 8]]);
  while (releases.length) {
    releases.shift()!();
    await tick();
  }
  assertEquals(batches, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]);
  assertEquals(await Promise.all(answers), Array.from({ length: 10 }, (_, i) => `answer ${i}`));
});

test("the batcher: a batch that throws rejects its own calls only; a wrong number of answers is an error", async () => {
  let n = 0;
  const call = createBatcher<number, number>({
    maxInFlight: 1,
    maxBatch: 2,
    send: (items) => {
      n++;
      if (n === 1) return Promise.reject(new TypeError("a bug"));
      if (n === 2) return Promise.resolve([1]);
      return Promise.resolve(items);
    },
  });
  const results = await Promise.allSettled([call(1), call(2), call(3), call(4), call(5)]);
  assertEquals(results.map((r) => r.status), ["rejected", "rejected", "rejected", "rejected", "fulfilled"]);
  assert(results[0].status === "rejected" && results[0].reason instanceof TypeError);
  assert(results[2].status === "rejected" && /answered 1 times/.test(String(results[2].reason)));
  assertEquals(results[4].status === "fulfilled" && results[4].value, 5);
});

function tracker(env: Record<string, string> = {}): StatusTracker {
  const config = loadConfig({
    SMTP_HOST: "relay.batch.test",
    SMTP_FROM: "x@worker.test",
    PUBSUB_VERIFY: "false",
    DELIVERY_STATUS_DATABASE_URL: databaseUrl(),
    TRACKER_POOL_SIZE: "1",
    ...env,
  });
  return createStatusTracker(config.tracking, { logger: createLogger("tracker", { sink: () => {} }) });
}

const request = (deliveryId: string, code = "493817") => ({
  deliveryId,
  workflow: "verification-code",
  recipient: newRecipient(),
  payload: { code, expiresInMinutes: 10 },
  metadata: {},
});

test("40 claims at once over one connection: fewer commits than claims, each answered on its own (a conflict only for its own call)", async () => {
  const t = tracker();
  const db = openDb(databaseUrl());
  try {
    const tag = newDeliveryId("batch");
    const known = request(`${tag}-known`);
    assertEquals((await t.queueAndClaim(known, 30)).kind, "claimed");
    const ids = Array.from({ length: 40 }, (_, i) => `${tag}-${String(i).padStart(2, "0")}`);
    // The calls on the known delivery go first, and its id sorts after the others' (the batch
    // functions work in delivery_id order): each answer must still reach its own caller.
    const [conflict, again, claims] = await Promise.all([
      t.queueAndClaim({ ...known, payload: { code: "000000", expiresInMinutes: 10 } }, 30),
      t.queueAndClaim(known, 30),
      Promise.all(ids.map((id) => t.queueAndClaim(request(id), 90, { startingSend: true }))),
    ]);
    assertEquals(claims.map((c) => c.kind === "claimed" && c.attempt), ids.map(() => 1));
    assert(claims.every((c) => c.kind === "claimed" && c.sendStarted));
    assertEquals(conflict.kind, "conflict");
    assertEquals(again, { kind: "not_claimable", status: "in_progress" });
    // Rows written by one transaction share its now() (each call is a subtransaction, with an xmin of
    // its own): the 40 claims took a few commits, not 40.
    const [{ commits, started }] = await db.sql<{ commits: number; started: number }[]>`
      select count(distinct last_attempted_at)::int as commits, count(*) filter (where send_started_at is not null)::int as started
      from email.deliveries where delivery_id like ${tag + "-%"} and delivery_id <> ${tag + "-known"}`;
    assertEquals(started, 40);
    assert(commits >= 2 && commits <= 20, `40 claims in ${commits} transactions`);

    // The outcomes in batches too: one stale call (a wrong attempt) among them is answered stale alone.
    const outcomes = await Promise.all([
      t.markSent(`${tag}-known`, 2, { messageId: "<k@x>", response: "250 ok" }),
      ...ids.map((id) => t.markSent(id, 1, { messageId: `<${id}@x>`, response: "250 ok" })),
    ]);
    assertEquals(outcomes[0].kind, "stale");
    assertEquals(outcomes.slice(1).map((o) => o.kind === "recorded" && o.status), ids.map(() => "sent"));
    const [{ sentCommits, relays }] = await db.sql<{ sentCommits: number; relays: string }[]>`
      select count(distinct d.sent_at)::int as "sentCommits",
             string_agg(distinct e.detail ->> 'relay', ',') as relays
      from email.deliveries d join email.delivery_events e on e.delivery_id = d.delivery_id and e.to_status = 'sent'
      where d.delivery_id like ${tag + "-%"} and d.delivery_id <> ${tag + "-known"} and d.status = 'sent'`;
    assert(sentCommits >= 2 && sentCommits <= 20, `40 outcomes in ${sentCommits} transactions`);
    assertEquals(relays, "relay.batch.test");
  } finally {
    await t.close();
    await db.close();
  }
});

test("TRACKER_BATCH_MAX=1: every call is a statement of its own", async () => {
  const t = tracker({ TRACKER_BATCH_MAX: "1" });
  const db = openDb(databaseUrl());
  try {
    const tag = newDeliveryId("single");
    const ids = Array.from({ length: 8 }, (_, i) => `${tag}-${i}`);
    const claims = await Promise.all(ids.map((id) => t.queueAndClaim(request(id), 30)));
    assert(claims.every((c) => c.kind === "claimed" && !c.sendStarted));
    const [{ commits }] = await db.sql<{ commits: number }[]>`
      select count(distinct last_attempted_at)::int as commits from email.deliveries where delivery_id like ${
      tag + "-%"
    } and delivery_id <> ${tag + "-known"}`;
    assertEquals(commits, 8);
  } finally {
    await t.close();
    await db.close();
  }
});

test("a push claims with its send start recorded and renews no lease before it sends", async () => {
  await withHarness(async ({ worker, db, token, smtp }) => {
    const id = newDeliveryId("push-start");
    const res = await worker.push(envelope(verificationEvent({ deliveryId: id })), { token });
    assertEquals((await res.json()).status, "sent");
    assertEquals(smtp.attempts, 1);
    const [d] = await db.sql<{ status: string; same_transaction: boolean; before_sent: boolean }[]>`
      select status, send_started_at = last_attempted_at as same_transaction, send_started_at <= sent_at as before_sent
      from email.deliveries where delivery_id = ${id}`;
    // now() is the transaction's start: a renewal would have recorded the start in a later one.
    assertEquals(d, { status: "sent", same_transaction: true, before_sent: true });
    assertEquals((await db.events(id)).map((e) => e.to_status), ["in_progress", "sent"]);
  });
});
