/**
 * A 3xx from a webhook receiver is a failure (issue 14, point 4): the dispatcher does not follow the
 * redirect (a receiver could point it anywhere), and the database does not count an unfollowed
 * redirect as delivered, so the message is retried instead of lost. Real HTTP on loopback.
 */
import postgres from "postgres";
import { assertEquals } from "./support/assert.ts";
import { dispatchWebhooks } from "../functions/_shared/webhooks.ts";

const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

function startReceiver(reply: (hits: number) => Response) {
  let hits = 0;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    await req.text();
    return reply(++hits);
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/hooks`,
    get hits() {
      return hits;
    },
    close: () => server.shutdown(),
  };
}

for (const status of [301, 302, 307, 308]) {
  Deno.test({
    name: `a ${status} redirect from a receiver is not followed and the message is retried, not delivered`,
    sanitizeOps: false,
    sanitizeResources: false,
  }, async () => {
    // The receivers listen on loopback: this test opts in, as local development does.
    const sql = postgres(databaseUrl!, {
      max: 4,
      onnotice: () => {},
      connection: { "email.webhook_allow_private": "on" },
    });
    const target = startReceiver(() => new Response(null, { status: 204 }));
    const redirector = startReceiver(() => new Response(null, { status, headers: { location: target.url } }));
    const [endpoint] = await sql<{ id: string }[]>`
      select id::text from email.add_webhook_endpoint(${redirector.url}, '{email.sent}', 'webhooks_redirect_test')`;
    try {
      const id = `redirect-${status}-${crypto.randomUUID().slice(0, 8)}`;
      await sql`select email.record_queued(${id}, 'invite', ${`${id}@example.com`}, '{}')`;
      await sql`select email.mark_in_progress(${id})`;
      await sql`select email.mark_sent(${id}, 1, 'mid', '250 ok')`;
      // Only this endpoint's message is due: other endpoints in the database are not this test's.
      await sql`update email.webhook_outbox set next_attempt_at = now() + interval '1 hour'
        where endpoint_id <> ${endpoint.id}::uuid and status = 'pending' and next_attempt_at <= now()`;

      const result = await dispatchWebhooks(sql, { batchSize: 100, timeoutMs: 5000, allowPrivate: true });
      assertEquals([result.claimed, result.delivered, result.retrying], [1, 0, 1]);
      assertEquals([redirector.hits, target.hits], [1, 0], "the redirect is not followed");
      const [row] = await sql`select status, last_status_code, delivered_at from email.webhook_outbox
        where endpoint_id = ${endpoint.id}::uuid`;
      assertEquals(row, { status: "pending", last_status_code: status, delivered_at: null });
    } finally {
      await sql`select email.remove_webhook_endpoint(${endpoint.id}::uuid)`;
      await redirector.close();
      await target.close();
      await sql.end({ timeout: 2 });
    }
  });
}
