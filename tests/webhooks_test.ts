/**
 * Webhooks end to end: real transitions in the real database write the outbox, the dispatcher POSTs
 * to a real HTTP receiver (Deno.serve on port 0), and the signatures are verified with the npm
 * `standardwebhooks` library, an independent implementation of the spec.
 */
import { Webhook } from "standardwebhooks";
import postgres from "postgres";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { dispatchWebhooks, parseRetryAfter, signWebhook } from "../functions/_shared/webhooks.ts";
import { webhooksCommand } from "../cli/webhooks.ts";
import { type CapturedRun, captureOutput } from "./support/cli.ts";

const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

// The receivers listen on loopback: these tests opt in, as local development does.
const allowPrivate = { "email.webhook_allow_private": "on" };

type Received = { headers: Headers; body: string };
type Reply = (r: Received) => Response | Promise<Response>;

/** A real HTTP receiver whose answer the test changes as it goes. */
function startReceiver() {
  const received: Received[] = [];
  let reply: Reply = () => new Response(null, { status: 204 });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const r = { headers: req.headers, body: await req.text() };
    received.push(r);
    return await reply(r);
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/hooks`,
    received,
    set reply(f: Reply) {
      reply = f;
    },
    close: () => server.shutdown(),
  };
}

/** Runs `fn` with a database pool, a receiver and an endpoint (wanting `types`) that the test owns. */
async function withEndpoint(
  types: string[],
  fn: (ctx: {
    sql: postgres.Sql;
    receiver: ReturnType<typeof startReceiver>;
    endpoint: { id: string; secret: string };
    dispatch: (timeoutMs?: number) => ReturnType<typeof dispatchWebhooks>;
    makeDue: () => Promise<void>;
  }) => Promise<void>,
) {
  const sql = postgres(databaseUrl!, { max: 4, onnotice: () => {}, connection: allowPrivate });
  const receiver = startReceiver();
  const [endpoint] = await sql<{ id: string; secret: string }[]>`
    select id::text, secret from email.add_webhook_endpoint(${receiver.url}, ${types}::text[], 'webhooks_test')`;
  // Only this endpoint's messages are claimed: every other endpoint is someone else's.
  const dispatch = async (timeoutMs = 2000) => {
    await sql`update email.webhook_outbox set next_attempt_at = now() + interval '1 hour'
      where endpoint_id <> ${endpoint.id}::uuid and status = 'pending' and next_attempt_at <= now()
        and endpoint_id in (select id from email.webhook_endpoints where description = 'webhooks_test')`;
    return await dispatchWebhooks(sql, { batchSize: 100, timeoutMs, concurrency: 4, allowPrivate: true });
  };
  const makeDue = async () => {
    await sql`update email.webhook_outbox set next_attempt_at = now() where endpoint_id = ${endpoint.id}::uuid and status = 'pending'`;
  };
  try {
    await fn({ sql, receiver, endpoint, dispatch, makeDue });
  } finally {
    await sql`select email.remove_webhook_endpoint(${endpoint.id}::uuid)`;
    await receiver.close();
    await sql.end({ timeout: 2 });
  }
}

async function sendOne(sql: postgres.Sql, deliveryId: string) {
  await sql`select email.record_queued(${deliveryId}, 'invite', ${`${deliveryId}@example.com`}, '{}')`;
  await sql`select email.mark_in_progress(${deliveryId})`;
  await sql`select email.mark_sent(${deliveryId}, 1, 'mid', '250 ok')`;
}

async function outbox(sql: postgres.Sql, endpointId: string) {
  return await sql<
    {
      status: string;
      attempts: number;
      next_attempt_at: Date;
      last_status_code: number | null;
      last_error: string | null;
    }[]
  >`select status, attempts, next_attempt_at, last_status_code, last_error from email.webhook_outbox
    where endpoint_id = ${endpointId}::uuid order by id`;
}

Deno.test("a sent delivery is posted with Standard Webhooks headers that standardwebhooks verifies", async () => {
  await withEndpoint(["email.sent"], async ({ sql, receiver, endpoint, dispatch }) => {
    const id = `wh-${crypto.randomUUID()}`;
    await sendOne(sql, id);
    const result = await dispatch();
    assertEquals([result.delivered, receiver.received.length], [1, 1]);
    const [r] = receiver.received;
    const verified = new Webhook(endpoint.secret).verify(r.body, {
      "webhook-id": r.headers.get("webhook-id")!,
      "webhook-timestamp": r.headers.get("webhook-timestamp")!,
      "webhook-signature": r.headers.get("webhook-signature")!,
    }) as { type: string; timestamp: string; data: Record<string, unknown> };
    assertEquals(verified.type, "email.sent");
    assertEquals(verified.data, {
      delivery_id: id,
      workflow: "invite",
      status: "sent",
      previous_status: "in_progress",
      attempt: 1,
      error_code: null,
    });
    assertMatch(verified.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assertMatch(r.headers.get("webhook-id")!, /^msg_\d+$/);
    assertEquals(r.headers.get("content-type"), "application/json");
    const [row] = await outbox(sql, endpoint.id);
    assertEquals([row.status, row.attempts, row.last_status_code], ["delivered", 1, 204]);
  });
});

Deno.test("a signature made with another secret is refused by standardwebhooks", async () => {
  const good = `whsec_${btoa("0123456789abcdef0123456789abcdef")}`;
  const other = `whsec_${btoa("fedcba9876543210fedcba9876543210")}`;
  const timestamp = Math.floor(Date.now() / 1000);
  const body = '{"type":"email.sent"}';
  const headers = {
    "webhook-id": "msg_1",
    "webhook-timestamp": String(timestamp),
    "webhook-signature": await signWebhook([other], { id: "msg_1", timestamp, body }),
  };
  let refused = false;
  try {
    new Webhook(good).verify(body, headers);
  } catch {
    refused = true;
  }
  assert(refused, "a wrong signature must not verify");
  assertEquals(new Webhook(other).verify(body, headers), { type: "email.sent" });
});

Deno.test("during a secret rotation both the old and the new secret verify the same request", async () => {
  await withEndpoint(["email.sent"], async ({ sql, receiver, endpoint, dispatch }) => {
    const [rotated] = await sql<
      { secret: string }[]
    >`select secret from email.rotate_webhook_secret(${endpoint.id}::uuid)`;
    await sendOne(sql, `wh-${crypto.randomUUID()}`);
    await dispatch();
    const [r] = receiver.received;
    const headers = Object.fromEntries(
      ["webhook-id", "webhook-timestamp", "webhook-signature"].map((h) => [h, r.headers.get(h)!]),
    );
    assertEquals(headers["webhook-signature"].split(" ").length, 2);
    for (const secret of [endpoint.secret, rotated.secret]) {
      assertEquals((new Webhook(secret).verify(r.body, headers) as { type: string }).type, "email.sent");
    }
  });
});

Deno.test("a receiver that fails, times out, then recovers gets the message under one webhook-id", async () => {
  await withEndpoint(["email.sent"], async ({ sql, receiver, endpoint, dispatch, makeDue }) => {
    await sendOne(sql, `wh-${crypto.randomUUID()}`);

    receiver.reply = () => new Response("boom", { status: 500 });
    assertEquals((await dispatch()).retrying, 1);
    let [row] = await outbox(sql, endpoint.id);
    assertEquals([row.status, row.attempts, row.last_status_code, row.last_error], [
      "pending",
      1,
      500,
      "HTTP 500 Internal Server Error",
    ]);
    const delay = (row.next_attempt_at.getTime() - Date.now()) / 1000;
    assert(delay > 3 && delay <= 5.5, `first retry after about 5 s, got ${delay}`);

    await makeDue();
    receiver.reply = () =>
      new Promise((resolve) => setTimeout(() => resolve(new Response(null, { status: 204 })), 1500));
    assertEquals((await dispatch(300)).retrying, 1);
    [row] = await outbox(sql, endpoint.id);
    assertEquals([row.status, row.attempts, row.last_status_code, row.last_error], [
      "pending",
      2,
      null,
      "timeout after 300 ms",
    ]);
    const delay2 = (row.next_attempt_at.getTime() - Date.now()) / 1000;
    assert(delay2 > 290 && delay2 <= 300, `second retry after about 5 min, got ${delay2}`);

    await makeDue();
    receiver.reply = () => new Response("ok", { status: 200 });
    assertEquals((await dispatch()).delivered, 1);
    [row] = await outbox(sql, endpoint.id);
    assertEquals([row.status, row.attempts, row.last_status_code], ["delivered", 3, 200]);

    const ids = new Set(receiver.received.map((r) => r.headers.get("webhook-id")));
    assertEquals([receiver.received.length, ids.size], [3, 1]);
    const bodies = new Set(receiver.received.map((r) => r.body));
    assertEquals(bodies.size, 1);
    const [ep] = await sql`select failing_since from email.webhook_endpoints where id = ${endpoint.id}::uuid`;
    assertEquals(ep.failing_since, null);
  });
});

Deno.test("Retry-After from the receiver decides when the next attempt is due", async () => {
  await withEndpoint(["email.sent"], async ({ sql, receiver, endpoint, dispatch }) => {
    await sendOne(sql, `wh-${crypto.randomUUID()}`);
    receiver.reply = () => new Response(null, { status: 429, headers: { "retry-after": "90" } });
    await dispatch();
    const [row] = await outbox(sql, endpoint.id);
    const delay = (row.next_attempt_at.getTime() - Date.now()) / 1000;
    assert(delay > 85 && delay <= 90, `due after about 90 s, got ${delay}`);
    assert(
      (parseRetryAfter(new Date(Date.now() + 60_000).toUTCString()) ?? 0) >= 58,
      "an HTTP-date Retry-After is understood",
    );
  });
});

Deno.test("410 Gone disables the endpoint with a reason and nothing more is sent to it", async () => {
  await withEndpoint(["email.queued", "email.sent"], async ({ sql, receiver, endpoint, dispatch }) => {
    await sql`select email.record_queued(${`wh-${crypto.randomUUID()}`}, 'invite', 'gone@example.com', '{}')`;
    receiver.reply = () => new Response(null, { status: 410 });
    const result = await dispatch();
    assertEquals([result.failed, result.disabled], [1, 1]);
    const [ep] =
      await sql`select enabled, disabled_reason from email.webhook_endpoints where id = ${endpoint.id}::uuid`;
    assertEquals([ep.enabled, ep.disabled_reason], [false, "the endpoint answered 410 Gone"]);
    await sendOne(sql, `wh-${crypto.randomUUID()}`);
    await dispatch();
    assertEquals(receiver.received.length, 1);
    const rows = await outbox(sql, endpoint.id);
    assertEquals(rows.map((r) => r.status), ["failed"]);
  });
});

Deno.test("a transition that rolls back writes no webhook message; a committed one does", async () => {
  await withEndpoint(["email.queued"], async ({ sql, endpoint }) => {
    const rolledBack = `wh-${crypto.randomUUID()}`;
    const committed = `wh-${crypto.randomUUID()}`;
    await sql.begin(async (tx) => {
      await tx`select email.record_queued(${rolledBack}, 'invite', 'rb@example.com', '{}')`;
      await tx`select 1/0`;
    }).catch(() => {});
    await sql.begin(async (tx) => {
      await tx`select email.record_queued(${committed}, 'invite', 'ok@example.com', '{}')`;
    });
    const rows =
      await sql`select body #>> '{data,delivery_id}' as id from email.webhook_outbox where endpoint_id = ${endpoint.id}::uuid`;
    assertEquals(rows.map((r) => r.id), [committed]);
  });
});

Deno.test("replay sends one message again, and a time range to an endpoint added later", async () => {
  await withEndpoint(["email.sent"], async ({ sql, receiver, endpoint, dispatch }) => {
    const id = `wh-${crypto.randomUUID()}`;
    const before = new Date(Date.now() - 1000);
    await sendOne(sql, id);
    await dispatch();
    const [msg] = await sql`select message_id from email.webhook_outbox where endpoint_id = ${endpoint.id}::uuid`;
    await sql`select email.replay_webhook_message(${msg.message_id}, ${endpoint.id}::uuid)`;
    await dispatch();
    assertEquals(receiver.received.map((r) => r.headers.get("webhook-id")), [msg.message_id, msg.message_id]);

    const [late] = await sql<{ id: string }[]>`
      select id::text from email.add_webhook_endpoint(${receiver.url}, '{email.sent}', 'webhooks_test')`;
    try {
      const [{ n }] =
        await sql`select email.replay_webhook_messages(${before}, now() + interval '1 second', ${late.id}::uuid) as n`;
      assert(n >= 1);
      const [row] = await sql`select message_id, body #>> '{data,delivery_id}' as id from email.webhook_outbox
        where endpoint_id = ${late.id}::uuid and body #>> '{data,delivery_id}' = ${id}`;
      assertEquals(row.message_id, msg.message_id);
    } finally {
      await sql`select email.remove_webhook_endpoint(${late.id}::uuid)`;
    }
  });
});

/** Runs `email-status webhooks <args>` and returns its exit code and output. */
function cli(args: string[]): Promise<CapturedRun> {
  return captureOutput(() => webhooksCommand(args, { DATABASE_URL: databaseUrl, WEBHOOK_ALLOW_PRIVATE: "true" }));
}

Deno.test("operators manage endpoints and replay messages with the CLI", async () => {
  const receiver = startReceiver();
  const sql = postgres(databaseUrl!, { max: 2, onnotice: () => {} });
  try {
    assertEquals((await cli(["add", "ftp://x"])).code, 2);
    assertEquals((await cli(["disable", crypto.randomUUID()])).code, 2, "disable needs --reason");
    const added = await cli([
      "add",
      receiver.url,
      "--events",
      "email.sent",
      "--description",
      "webhooks_test",
      "--json",
    ]);
    assertEquals(added.code, 0, added.err);
    const endpoint = JSON.parse(added.out);
    assertMatch(endpoint.secret, /^whsec_/);
    assertEquals(endpoint.event_types, ["email.sent"]);
    try {
      assertEquals(
        (await cli(["add", receiver.url, "--events", "email.opened"])).code,
        1,
        "unknown event types are refused",
      );
      const listed = await cli(["list"]);
      assert(listed.out.includes(endpoint.id) && listed.out.includes("email.sent"), listed.out);

      await sendOne(sql, `wh-cli-${crypto.randomUUID()}`);
      await dispatchWebhooks(sql, { batchSize: 100, timeoutMs: 2000, allowPrivate: true });
      const messages = JSON.parse((await cli(["messages", "--endpoint", endpoint.id, "--json"])).out);
      assertEquals(messages.map((m: { status: string }) => m.status), ["delivered"]);

      const replayed = await cli(["replay", messages[0].message_id, "--endpoint", endpoint.id]);
      assertEquals([replayed.code, replayed.out], [0, "1 webhook message due again"]);
      const ranged = await cli(["replay", "--since", "1h", "--endpoint", endpoint.id, "--json"]);
      assertEquals(JSON.parse(ranged.out).replayed >= 1, true);
      assertEquals((await cli(["replay", "msg_0"])).code, 3, "an unknown message is not found");

      const rotated = JSON.parse((await cli(["rotate-secret", endpoint.id, "--keep", "1h", "--json"])).out);
      assert(rotated.secret !== endpoint.secret);
      const disabled = JSON.parse((await cli(["disable", endpoint.id, "--reason", "maintenance", "--json"])).out);
      assertEquals([disabled.enabled, disabled.disabled_reason], [false, "maintenance"]);
      assertEquals(JSON.parse((await cli(["enable", endpoint.id, "--json"])).out).enabled, true);
    } finally {
      assertEquals((await cli(["remove", endpoint.id])).code, 0);
      assertEquals((await cli(["remove", endpoint.id])).code, 3);
    }
  } finally {
    await receiver.close();
    await sql.end({ timeout: 2 });
  }
});
