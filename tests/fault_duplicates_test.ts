/**
 * Fault: the three ways an email or a webhook message used to go out twice (issue 10, items 1-3),
 * each with the real worker, a real SMTP or HTTP receiver and real Postgres:
 * - Postgres refuses connections while a send is in flight, so its outcome cannot be recorded at once;
 * - overlapping sweeps with a relay slower than the lease;
 * - a webhook batch whose claims expire while it runs in waves, and a report that comes back late.
 * Bounds are stated per test: they are the ones docs/architecture.md ("Delivery guarantee") promises.
 */
import postgres from "postgres";
import { assert, assertEquals } from "./support/assert.ts";
import { openDb, type TestDb } from "./support/db.ts";
import { type Harness, test, withHarness } from "./support/harness.ts";
import { type PrivatePostgres, startPrivatePostgres } from "./support/postgres.ts";
import { envelope, type TestEvent, verificationEvent } from "./support/pubsub.ts";
import { mailTo, type TestSmtp } from "./support/smtp.ts";
import { dispatchWebhooks } from "../functions/_shared/webhooks.ts";
import { databaseUrl } from "./support/worker.ts";
import { sleep, waitFor as waitUntil } from "./support/wait.ts";

/** Polls every 25 ms for at most 15 s (the sends here take seconds). */
const waitFor = (what: string, check: () => Promise<boolean> | boolean) =>
  waitUntil(what, check, { timeoutMs: 15_000, everyMs: 25 });

const trackerEnv = {
  TRACKER_TIMEOUT_MS: "800",
  TRACKER_BREAKER_THRESHOLD: "2",
  TRACKER_BREAKER_COOLDOWN_MS: "200",
};

/**
 * Cuts the worker off from Postgres the way a failover or a connection storm does: the database
 * refuses new connections and the worker's open ones are terminated. `admin` keeps its connection.
 */
async function cutOff(admin: postgres.Sql) {
  await admin`alter database postgres allow_connections false`;
  await admin`select pg_terminate_backend(pid) from pg_stat_activity
    where pid <> pg_backend_pid() and application_name like 'email-worker%'`;
}

/** A connection to another database of the server: Postgres refuses to lock out the current one. */
function adminConnection(url: string) {
  return postgres(url.replace(/\/postgres$/, "/template1"), { max: 1, idle_timeout: 0, onnotice: () => {} });
}

async function restore(admin: postgres.Sql) {
  await admin`alter database postgres allow_connections true`;
}

/** Sweeps until `id` is no longer waiting or in progress (making retries due at once), at most `rounds` times. */
async function settle(
  worker: { sweep(): Promise<Response> },
  db: TestDb,
  id: string,
  rounds = 5,
) {
  for (let i = 0; i < rounds; i++) {
    const res = await worker.sweep();
    await res.body?.cancel();
    const d = await db.delivery(id);
    if (d?.status === "retrying") await db.makeDue(id);
    else if (d?.status !== "in_progress") return;
    await sleep(300);
  }
}

/** Runs `fn` with a private migrated Postgres server and a reader on it; destroys both after. */
async function withPrivateDb(fn: (pg: PrivatePostgres, db: TestDb) => Promise<void>): Promise<void> {
  const pg = await startPrivatePostgres();
  const db = openDb(pg.url);
  try {
    await fn(pg, db);
  } finally {
    await db.close();
    await pg.destroy();
  }
}

/** What `withSendCutOff` hands a test: the harness, the event in flight, its push's answer to come. */
type CutOff = Harness & {
  admin: postgres.Sql;
  event: TestEvent;
  id: string;
  reply: Promise<{ status: number; body: Record<string, unknown> }>;
};

/**
 * A worker on a private Postgres server (LEASE_SECONDS=1, the short tracker timeouts) pushes one new
 * event to a relay that answers after `delayMs`; as soon as the relay has taken the message, Postgres
 * is cut off. `fn` goes on from there (restoring Postgres with `restore(admin)` is its part).
 */
async function withSendCutOff(
  options: { delayMs: number; env?: Record<string, string> },
  fn: (c: CutOff) => Promise<void>,
): Promise<void> {
  await withPrivateDb(async (pg, db) => {
    const admin = adminConnection(pg.url);
    try {
      await withHarness(async (h) => {
        h.smtp.delayMs = options.delayMs;
        const event = verificationEvent();
        const reply = h.worker.push(envelope(event), { token: h.token }).then(async (r) => ({
          status: r.status,
          body: await r.json(),
        }));
        await waitFor("the relay to take the message", () => h.smtp.attempts >= 1);
        await cutOff(admin);
        await fn({ ...h, db, admin, event, id: event.deliveryId!, reply });
      }, { env: { DELIVERY_STATUS_DATABASE_URL: pg.url, LEASE_SECONDS: "1", ...trackerEnv, ...options.env } });
    } finally {
      await admin.end({ timeout: 1 });
    }
  });
}

test("Postgres refusing connections while a send is in flight: the outcome is recorded once it is back, and the sweep sends nothing again", async () => {
  // Bound: Postgres is back 1.5 s after the relay's 250, well within the attempt's lease (the send's
  // timeouts, 2 + 2 + 5 s, plus LEASE_SECONDS); the claim's own lease (1 s) is shorter than the send.
  await withSendCutOff({ delayMs: 1500 }, async ({ smtp, worker, db, admin, event, id, reply: answer }) => {
    await waitFor("the relay to accept it", () => smtp.received.length >= 1);
    await sleep(1500);
    await restore(admin);
    const reply = await answer;
    assertEquals([reply.status, reply.body.outcome], [200, "sent"], JSON.stringify(reply));

    // Sweeps after recovery (retries made due at once, as if their backoff had passed).
    await sleep(1200); // past the claim's 1 s lease
    await settle(worker, db, id);
    assertEquals(mailTo(smtp, event.recipient).length, 1, "exactly one mail");
    const d = await db.delivery(id);
    assertEquals([d?.status, d?.attempts], ["sent", 1]);
    assertEquals(reply.body.tracked, true, "the push waited for Postgres and recorded the outcome");
  });
});

test("Postgres gone for longer than the attempt's lease: the reaper marks the attempt outcome_unknown and retries it (the documented at-least-once bound)", async () => {
  // Short SMTP timeouts: the attempt's lease is 0.5 + 0.5 + 2 s for the send plus LEASE_SECONDS (1 s).
  const env = { SMTP_CONNECTION_TIMEOUT_MS: "500", SMTP_GREETING_TIMEOUT_MS: "500", SMTP_SOCKET_TIMEOUT_MS: "2000" };
  await withSendCutOff({ delayMs: 1000, env }, async ({ smtp, worker, db, admin, event, id, reply: answer }) => {
    const reply = await answer; // gives up when the lease runs out
    assertEquals([reply.status, reply.body.outcome, reply.body.tracked], [200, "sent", false], JSON.stringify(reply));
    await sleep(500);
    await restore(admin);

    await settle(worker, db, id);
    const trail = (await db.events(id)).map((e) => `${e.to_status}:${e.attempt}:${e.error_code ?? ""}`);
    assertEquals(trail, [
      "in_progress:1:",
      "retrying:1:outcome_unknown",
      "in_progress:2:",
      "sent:2:",
    ]);
    assertEquals(mailTo(smtp, event.recipient).length, 2, "at least once: the unknown attempt is sent again");
  });
});

/** Accepts `n` deliveries directly in the database and makes them due for the sweep. */
async function dueDeliveries(db: TestDb, n: number) {
  const events = Array.from({ length: n }, () => verificationEvent({ deliveryId: `overlap-${crypto.randomUUID()}` }));
  for (const e of events) {
    await db.sql`select email.record_queued(${e.deliveryId!}, ${e.workflow}, ${e.recipient}, ${
      db.sql.json(e.data as postgres.JSONValue)
    })`;
    await db.makeDue(e.deliveryId!);
  }
  return events;
}

function countPerRecipient(smtp: TestSmtp, recipients: string[]) {
  return recipients.map((r) => mailTo(smtp, r).length);
}

test("overlapping sweeps every 500 ms with a relay slower than the lease: 8 due deliveries, 8 mails", async () => {
  // Bound: LEASE_SECONDS=2, the relay answers each message in 3 s, 4 sends at once per sweep, a new
  // sweep every 500 ms for 7 s, and retries due 100 ms after a reap (so a reaped lease is re-sent at once).
  await withPrivateDb(async (pg, db) => {
    await db
      .sql`update email.retry_policies set base_delay = interval '100 milliseconds', max_delay = interval '100 milliseconds'`;
    await withHarness(async ({ smtp, worker }) => {
      smtp.delayMs = 3000;
      const events = await dueDeliveries(db, 8);
      const sweeps: Promise<unknown>[] = [];
      for (let i = 0; i < 14; i++) {
        sweeps.push(worker.sweep().then((r) => r.json()));
        await sleep(500);
      }
      await Promise.all(sweeps);
      for (const e of events) await settle(worker, db, e.deliveryId!);
      assertEquals(countPerRecipient(smtp, events.map((e) => e.recipient)), events.map(() => 1), "one mail each");
      for (const e of events) assertEquals((await db.delivery(e.deliveryId!))?.status, "sent");
    }, { env: { DELIVERY_STATUS_DATABASE_URL: pg.url, LEASE_SECONDS: "2", SWEEP_BATCH_SIZE: "20" } });
  });
});

test("a sweep is bounded by time: no delivery is claimed after SWEEP_TIME_BUDGET_MS, the rest wait unclaimed", async () => {
  // 8 due deliveries, a relay answering in 1.5 s, 4 lanes, a 1 s budget: only the first wave is claimed.
  await withPrivateDb(async (pg, db) => {
    await withHarness(async ({ smtp, worker }) => {
      smtp.delayMs = 1500;
      const events = await dueDeliveries(db, 8);
      const counts = await (await worker.sweep()).json();
      assertEquals([counts.claimed, counts.sent], [4, 4], JSON.stringify(counts));
      const rows = await Promise.all(events.map((e) => db.delivery(e.deliveryId!)));
      assertEquals(rows.map((d) => `${d?.status}:${d?.attempts}`).sort(), [
        ...Array(4).fill("queued:0"),
        ...Array(4).fill("sent:1"),
      ]);
      const next = await (await worker.sweep()).json();
      assertEquals([next.claimed, next.sent], [4, 4], JSON.stringify(next));
      assertEquals(countPerRecipient(smtp, events.map((e) => e.recipient)), events.map(() => 1));
    }, { env: { DELIVERY_STATUS_DATABASE_URL: pg.url, SWEEP_TIME_BUDGET_MS: "1000", SWEEP_BATCH_SIZE: "20" } });
  });
});

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

type Arrival = { id: string; at: number };

/**
 * A webhook batch with concurrency 1 against a slow receiver. When the `trigger`-th request arrives,
 * `onTrigger` runs (the test moves claims' clocks) and that request is held `heldMs`; others 200 ms.
 */
async function webhookScenario(
  options: {
    messages: number;
    trigger: number;
    heldMs: number;
    onTrigger: (sql: postgres.Sql, seen: string[]) => Promise<void>;
  },
) {
  // The receiver is on loopback: this session and the dispatcher opt in to private targets.
  const sql = postgres(databaseUrl(), {
    max: 6,
    onnotice: () => {},
    connection: { "email.webhook_allow_private": "on" },
  });
  const arrivals: Arrival[] = [];
  let triggered: Promise<unknown> | undefined;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    await req.text();
    arrivals.push({ id: req.headers.get("webhook-id") ?? "", at: Date.now() });
    if (arrivals.length === options.trigger) {
      triggered = options.onTrigger(sql, arrivals.map((a) => a.id));
      await triggered;
      await sleep(options.heldMs);
    } else {
      await sleep(200);
    }
    return new Response(null, { status: 204 });
  });
  const url = `http://127.0.0.1:${server.addr.port}/hooks`;
  const [endpoint] = await sql<{ id: string }[]>`
    select id::text from email.add_webhook_endpoint(${url}, array['email.queued'], 'fault_duplicates')`;
  try {
    for (let i = 0; i < options.messages; i++) {
      const id = `whdup-${crypto.randomUUID()}`;
      await sql`select email.record_queued(${id}, 'invite', ${`${id}@example.com`}, '{}')`;
    }
    // Only this endpoint's messages are due: every other endpoint's are someone else's.
    await sql`update email.webhook_outbox set next_attempt_at = now() + interval '1 hour'
      where endpoint_id <> ${endpoint.id}::uuid and status = 'pending'`;
    const first = dispatchWebhooks(sql, { batchSize: 50, concurrency: 1, timeoutMs: 3000, allowPrivate: true }).then(
      (r) => ({ ok: true as const, result: r }),
      (e) => ({ ok: false as const, error: String(e?.message ?? e) }),
    );
    await waitFor("the trigger", () => triggered !== undefined);
    await triggered;
    // A second sweep, while the first is still in its waves.
    const second = await dispatchWebhooks(sql, { batchSize: 50, concurrency: 8, timeoutMs: 3000, allowPrivate: true });
    const firstDone = await first;
    const rows = await sql<{ message_id: string; status: string }[]>`
      select message_id, status from email.webhook_outbox where endpoint_id = ${endpoint.id}::uuid order by id`;
    const posts = new Map<string, number>();
    for (const a of arrivals) posts.set(a.id, (posts.get(a.id) ?? 0) + 1);
    return { first: firstDone, second, rows, posts };
  } finally {
    await sql`select email.remove_webhook_endpoint(${endpoint.id}::uuid)`;
    await server.shutdown();
    await sql.end({ timeout: 2 });
  }
}

/** Makes the claims of `ids` look expired, as if the batch had run past its lock (the test's clock jump). */
async function expireClaims(sql: postgres.Sql, endpointFilter: string, ids: string[]) {
  await sql`update email.webhook_outbox set next_attempt_at = now() - interval '1 second'
    where status = 'pending' and message_id = any(${ids}::text[])
      and endpoint_id in (select id from email.webhook_endpoints where description = ${endpointFilter})`;
}

test("a webhook batch whose waiting claims expired: a second sweep sends them, the first skips them, every message POSTed once", async () => {
  // 8 messages, concurrency 1; when the 3rd request arrives the 5 not yet started look expired.
  const { first, rows, posts } = await webhookScenario({
    messages: 8,
    trigger: 3,
    heldMs: 1500,
    onTrigger: async (sql, seen) => {
      const waiting = await sql<{ message_id: string }[]>`
        select message_id from email.webhook_outbox o join email.webhook_endpoints w on w.id = o.endpoint_id
        where w.description = 'fault_duplicates' and o.status = 'pending' and not (o.message_id = any(${seen}::text[]))`;
      await expireClaims(sql, "fault_duplicates", waiting.map((w) => w.message_id));
    },
  });
  assert(first.ok, `the first dispatch did not abort: ${JSON.stringify(first)}`);
  assertEquals(rows.map((r) => r.status), rows.map(() => "delivered"));
  assertEquals([...posts.values()], rows.map(() => 1), "every message POSTed once");
  assertEquals(first.result.stale, 5, "the first dispatch skipped the 5 messages the second one took");
});

test("a late webhook report (its claim was taken over meanwhile) is counted stale and the rest of the batch is still sent", async () => {
  // 6 messages, concurrency 1; the 2nd request's claim is expired while it is in flight and a second
  // sweep takes it over (it is POSTed twice: the receiver dedups on webhook-id); the first dispatch's
  // report for it comes back stale, and it carries on with messages 3 to 6.
  const { first, second, rows, posts } = await webhookScenario({
    messages: 6,
    trigger: 2,
    heldMs: 1500,
    onTrigger: (sql, seen) => expireClaims(sql, "fault_duplicates", [seen[seen.length - 1]]),
  });
  assert(first.ok, `the first dispatch did not abort: ${JSON.stringify(first)}`);
  assertEquals([first.result.delivered, first.result.stale, second.delivered], [5, 1, 1]);
  assertEquals(rows.map((r) => r.status), rows.map(() => "delivered"));
  assertEquals([...posts.values()].sort(), [1, 1, 1, 1, 1, 2]);
});
