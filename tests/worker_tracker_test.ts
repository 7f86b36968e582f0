import postgres from "postgres";
import { loadConfig } from "../functions/_shared/config.ts";
import { createLogger } from "../functions/_shared/log.ts";
import { createStatusTracker, storable } from "../functions/_shared/tracker.ts";
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

/** A tracker on `url` configured from `env` as the worker is, and the log lines it writes. */
function trackerOn(url: string | undefined, env: Record<string, string> = {}) {
  const { lines, logger } = capture();
  const config = loadConfig({ ...baseEnv, DELIVERY_STATUS_DATABASE_URL: url, ...env });
  return { tracker: createStatusTracker(config.tracking, { logger }), lines };
}

/** A queue request for a new verification-code delivery `deliveryId`. */
function queueRequest(deliveryId: string) {
  return {
    deliveryId,
    workflow: "verification-code",
    recipient: "ada@example.com",
    payload: { code: "123456", expiresInMinutes: 5 },
    metadata: {},
  };
}

/** Calls `call` every 250 ms until `done` says its result is a success again, for at most 5 s. */
async function recovers<T>(call: () => Promise<T>, done: (r: T) => boolean): Promise<boolean> {
  const started = Date.now();
  while (Date.now() - started < 5000) {
    await new Promise((r) => setTimeout(r, 250));
    if (done(await call())) return true;
  }
  return false;
}

test("no database URL: a no-op tracker, one info line, and the worker still sends", async () => {
  const { tracker, lines } = trackerOn(undefined);
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
  const { tracker, lines } = trackerOn(`postgresql://postgres@127.0.0.1:${listener.addr.port}/x`, {
    TRACKER_TIMEOUT_MS: "300",
    TRACKER_BREAKER_THRESHOLD: "2",
  });
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
  const pg = await startPrivatePostgres();
  const { tracker, lines } = trackerOn(pg.url, {
    TRACKER_TIMEOUT_MS: "1000",
    TRACKER_BREAKER_THRESHOLD: "2",
    TRACKER_BREAKER_COOLDOWN_MS: "300",
  });
  const queue = () => tracker.queueAndClaim(queueRequest(newDeliveryId("breaker")), 60);
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

test("an outage with more calls in flight than tracker connections: the tracker recovers once Postgres is back", async () => {
  // npm:postgres's shared reconnect backoff grew to 10-20 s and wedged the connections whose queries
  // were cancelled while connecting: without a fresh pool every later call timed out.
  const pg = await startPrivatePostgres();
  const { tracker, lines } = trackerOn(pg.url, {
    TRACKER_POOL_SIZE: "3",
    TRACKER_TIMEOUT_MS: "800",
    TRACKER_BREAKER_THRESHOLD: "2",
    TRACKER_BREAKER_COOLDOWN_MS: "200",
  });
  try {
    assertEquals((await tracker.reapExpiredLeases()).kind, "reaped");
    await pg.stop();
    const during = await Promise.all(Array.from({ length: 8 }, () => tracker.reapExpiredLeases()));
    assertEquals(during.map((r) => r.kind), during.map(() => "unavailable"));
    await pg.start();

    const recovered = await recovers(() => tracker.reapExpiredLeases(), (r) => r.kind === "reaped");
    assert(recovered, "tracking resumed within 5 s of Postgres coming back");
    assertEquals(tracker.health(), { state: "closed", consecutiveFailures: 0 });
    const after = await Promise.all(Array.from({ length: 8 }, () => tracker.reapExpiredLeases()));
    assertEquals(after.map((r) => r.kind), after.map(() => "reaped"));
    assert(lines.some((l) => l.action === "tracker_pool_recycled" && l.reason === "breaker_open"));
  } finally {
    await tracker.close().catch(() => {});
    await pg.destroy();
  }
});

/** A TCP gate in front of Postgres: while shut it accepts connections and holds them unanswered. */
function startGate(target: URL) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const held: Deno.Conn[] = [];
  let open = false;
  const pipe = async (c: Deno.Conn) => {
    const up = await Deno.connect({ hostname: target.hostname, port: Number(target.port || 5432) });
    conns.push(up);
    await Promise.all([c.readable.pipeTo(up.writable), up.readable.pipeTo(c.writable)]).catch(() => {});
  };
  (async () => {
    for await (const c of listener) {
      conns.push(c);
      if (open) pipe(c).catch(() => {});
      else held.push(c);
    }
  })().catch(() => {});
  const url = new URL(target);
  url.port = String(listener.addr.port);
  return {
    url: url.toString(),
    open() {
      open = true;
      for (const c of held.splice(0)) pipe(c).catch(() => {});
    },
    close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed already */ }
      }
    },
  };
}

test("connections that come up only after their calls timed out do not wedge the tracker (breaker still closed)", async () => {
  // npm:postgres keeps a query cancelled while its connection was connecting as that connection's
  // first query; once connected it never returns to the pool, and later calls wait behind it.
  const gate = startGate(new URL(Deno.env.get("DATABASE_URL")!));
  const { tracker, lines } = trackerOn(gate.url, {
    TRACKER_POOL_SIZE: "3",
    TRACKER_TIMEOUT_MS: "500",
    TRACKER_BREAKER_THRESHOLD: "1000",
  });
  const reject = () => tracker.recordRejected({ reasonCode: "invalid_json", reason: `gate ${crypto.randomUUID()}` });
  try {
    const during = await Promise.all(Array.from({ length: 8 }, reject));
    assertEquals(during, during.map(() => ({ kind: "unavailable", reason: "failed" })));
    assertEquals(tracker.health().state, "closed");
    gate.open();

    const recovered = await recovers(reject, (r) => r.kind === "stored");
    assert(recovered, "calls work again within 5 s of the connections coming up");
    const after = await Promise.all(Array.from({ length: 8 }, reject));
    assertEquals(after.map((r) => r.kind), after.map(() => "stored"));
    assert(lines.some((l) => l.action === "tracker_pool_recycled" && l.reason === "timeout_before_send"));
  } finally {
    await tracker.close().catch(() => {});
    gate.close();
  }
});

test("storable replaces U+0000 and lone surrogates, keeps everything else, and cuts to the limit", () => {
  assertEquals(storable("a\u0000b", 10), "a\ufffdb");
  assertEquals(storable("x\ud800y\udc00", 10), "x\ufffdy\ufffd");
  assertEquals(storable("\ud83d\ude00 ß İ \u202e \r\n", 100), "\ud83d\ude00 ß İ \u202e \r\n");
  // A cut through a surrogate pair leaves no half of it behind.
  assertEquals(storable("ab\ud83d\ude00", 3), "ab\ufffd");
});

test("a rejection with U+0000 and lone surrogates in its reason, ids and headers is stored, the raw body byte for byte", async () => {
  const { tracker } = trackerOn(Deno.env.get("DATABASE_URL"));
  const db = postgres(Deno.env.get("DATABASE_URL")!, { max: 1, onnotice: () => {} });
  try {
    const rawBody = new Uint8Array([0x7b, 0x00, 0xff, 0xfe, 0xed, 0xa0, 0x80, 0x7d]);
    const tag = crypto.randomUUID();
    const stored = await tracker.recordRejected({
      reasonCode: "invalid_json",
      reason: `bad \u0000 and \ud800 in ${tag}`,
      rawBody,
      bodyBytes: rawBody.length,
      deliveryId: `id-\u0000-${tag}`,
      messageId: "m\u0000\udc00",
      headers: { "x-goog-pubsub-message-id": "v\u0000", "x-\u0000": "\ud800" },
    });
    assert(stored.kind === "stored", JSON.stringify(stored));
    const [row] = await db<
      {
        reason: string;
        delivery_id: string;
        message_id: string;
        headers: Record<string, string>;
        raw_body: Uint8Array;
      }[]
    >`select reason, delivery_id, message_id, headers, raw_body from email.rejected_messages where id = ${stored.id}`;
    assertEquals(row.reason, `bad \ufffd and \ufffd in ${tag}`);
    assertEquals(row.delivery_id, `id-\ufffd-${tag}`);
    assertEquals(row.message_id, "m\ufffd\ufffd");
    assertEquals(row.headers, { "x-goog-pubsub-message-id": "v\ufffd", "x-\ufffd": "\ufffd" });
    assertEquals([...row.raw_body], [...rawBody]);
  } finally {
    await tracker.close();
    await db.end();
  }
});

/** Asserts that `fn` rejects with a TypeError (what the tracker must not turn into a result). */
async function assertTypeError(fn: () => Promise<unknown>): Promise<void> {
  let result: unknown;
  try {
    result = await fn();
  } catch (error) {
    assert(error instanceof TypeError, `not a TypeError: ${error}`);
    return;
  }
  throw new Error(`expected a TypeError, got ${JSON.stringify(result)}`);
}

/** A tracker on the test database and a claimed delivery in it. */
async function claimedDelivery(tag: string) {
  const { tracker, lines } = trackerOn(Deno.env.get("DATABASE_URL"));
  const deliveryId = newDeliveryId(tag);
  const claimed = await tracker.queueAndClaim(queueRequest(deliveryId), 60);
  assert(claimed.kind === "claimed", JSON.stringify(claimed));
  return { tracker, lines, deliveryId, attempt: claimed.attempt };
}

test("a programming error in an outcome write is thrown, not recorded as a stale attempt, and the breaker does not count it", async () => {
  const { tracker, lines, deliveryId, attempt } = await claimedDelivery("bug-stale");
  const db = postgres(Deno.env.get("DATABASE_URL")!, { max: 1, onnotice: () => {} });
  try {
    // A mailer answer without a message id: the query builder throws a TypeError before any SQL runs.
    const broken = { messageId: undefined as unknown as string, response: "250 ok" };
    await assertTypeError(() => tracker.markSent(deliveryId, attempt, broken));
    assertEquals(tracker.health(), { state: "closed", consecutiveFailures: 0 });
    assert(!lines.some((l) => l.action === "tracker_call_failed" || l.action === "tracker_call_error"));
    const [row] = await db`select status from email.deliveries where delivery_id = ${deliveryId}`;
    assertEquals(row.status, "in_progress");
    // The same write with a real answer is recorded: the attempt was never stale.
    const ok = await tracker.markSent(deliveryId, attempt, { messageId: "<m@x>", response: "250 ok" });
    assertEquals([ok.kind, ok.kind === "recorded" && ok.status], ["recorded", "sent"]);
  } finally {
    await tracker.close();
    await db.end();
  }
});

test("a payload that cannot be serialised is thrown from queueAndClaim: neither a conflict, a refusal nor an outage", async () => {
  const { tracker, lines } = await claimedDelivery("bug-queue");
  const db = postgres(Deno.env.get("DATABASE_URL")!, { max: 1, onnotice: () => {} });
  try {
    const deliveryId = newDeliveryId("bug-bigint");
    const base = queueRequest(deliveryId);
    const request = { ...base, payload: { ...base.payload, n: 1n } }; // JSON cannot hold a BigInt
    await assertTypeError(() => tracker.queueAndClaim(request, 60));
    // A request whose fields throw when read: the query builder itself throws.
    const throwing = Object.defineProperty({ ...request, n: undefined }, "deliveryId", {
      get: () => {
        throw new TypeError("a bug");
      },
    });
    await assertTypeError(() => tracker.queueAndClaim(throwing, 60));
    assertEquals(tracker.health(), { state: "closed", consecutiveFailures: 0 });
    assert(!lines.some((l) => l.action === "tracker_call_failed" || l.action === "tracker_call_error"));
    const rows = await db`select 1 from email.deliveries where delivery_id = ${deliveryId}`;
    assertEquals(rows.length, 0);
  } finally {
    await tracker.close();
    await db.end();
  }
});

test("a programming error in the half-open breaker's trial call does not leave the breaker open for good", async () => {
  const gate = startGate(new URL(Deno.env.get("DATABASE_URL")!));
  const { tracker } = trackerOn(gate.url, {
    TRACKER_TIMEOUT_MS: "300",
    TRACKER_BREAKER_THRESHOLD: "1",
    TRACKER_BREAKER_COOLDOWN_MS: "200",
  });
  try {
    assertEquals(await tracker.reapExpiredLeases(), { kind: "unavailable", reason: "failed" });
    assertEquals(tracker.health().state, "open");
    gate.open();
    await new Promise((r) => setTimeout(r, 300)); // past the cooldown: the next call is the trial
    const broken = { messageId: undefined as unknown as string, response: "250 ok" };
    await assertTypeError(() => tracker.markSent(newDeliveryId("trial"), 1, broken));
    let r = await tracker.reapExpiredLeases();
    for (let i = 0; i < 20 && r.kind !== "reaped"; i++) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      r = await tracker.reapExpiredLeases();
    }
    assertEquals(r.kind, "reaped");
    assertEquals(tracker.health().state, "closed");
  } finally {
    await tracker.close().catch(() => {});
    gate.close();
  }
});

test("each attempt's outcome event records the relay it went through (SMTP_HOST), the other events none", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    const replies: Record<string, { code: number; message: string } | undefined> = {};
    smtp.respond = (mail) => replies[String((mail.to as { text: string }).text)];
    const sent = verificationEvent();
    const retrying = verificationEvent();
    const failed = verificationEvent();
    replies[retrying.recipient] = { code: 451, message: "4.3.0 Try again later" };
    replies[failed.recipient] = { code: 550, message: "5.1.1 No such user" };
    for (const event of [sent, retrying, failed]) {
      assertEquals((await worker.push(envelope(event), { token })).status, 200);
    }
    for (const [event, outcome] of [[sent, "sent"], [retrying, "retrying"], [failed, "failed"]] as const) {
      const events = await db.events(event.deliveryId!);
      const relays = events.map((e) => [e.to_status, (e as unknown as { detail: { relay?: string } }).detail.relay]);
      assertEquals(relays.at(-1), [outcome, "127.0.0.1"]);
      assertEquals(relays.slice(0, -1).filter(([, relay]) => relay !== undefined), []);
    }
  });
});
