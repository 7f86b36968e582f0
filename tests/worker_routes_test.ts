/**
 * The routes the worker serves beside push and sweep, through the real handler and HTTP server:
 * `GET /email-worker/deliveries/:id` with real signed user tokens, the dashboard, and webhook
 * dispatch by the sweep to a real receiver, verified with the independent `standardwebhooks` library.
 */
import { Webhook } from "standardwebhooks";
import { assert, assertEquals } from "./support/assert.ts";
import { pushOwnedDelivery, test, withHarness } from "./support/harness.ts";
import { envelope, newDeliveryId, newRecipient, verificationEvent } from "./support/pubsub.ts";
import { signUserToken } from "./support/user_tokens.ts";

const jwtSecret = "test-project-jwt-secret-with-at-least-32-characters";
const dashboardToken = "dashboard-token-0123456789abcdef";
const env = { SUPABASE_JWT_SECRET: jwtSecret, DASHBOARD_TOKEN: dashboardToken };

/** The access token of user `sub` (with `extra` claims) in this project. */
function userToken(sub: string, extra: Record<string, unknown> = {}): Promise<string> {
  return signUserToken({ sub, ...extra }, jwtSecret, "10m");
}

test("a signed-in user reads their own delivery and its timeline; another user gets 404; no token gets 401", async () => {
  await withHarness(async (h) => {
    const { worker } = h;
    const { owner, id } = await pushOwnedDelivery(h, "routes");

    const url = `${worker.url}/email-worker/deliveries/${id}`;
    const own = await fetch(url, { headers: { authorization: `Bearer ${await userToken(owner)}` } });
    assertEquals(own.status, 200);
    const doc = await own.json();
    assertEquals(doc.delivery_id, id);
    assertEquals(doc.status, "sent");
    assertEquals(doc.events.map((e: { to_status: string }) => e.to_status), ["in_progress", "sent"]);
    assert(!JSON.stringify(doc).includes('"code"'), "no payload in the document");

    const other = await fetch(url, { headers: { authorization: `Bearer ${await userToken(crypto.randomUUID())}` } });
    assertEquals(other.status, 404);
    await other.body?.cancel();
    const missing = await fetch(`${worker.url}/email-worker/deliveries/${newDeliveryId("none")}`, {
      headers: { authorization: `Bearer ${await userToken(owner)}` },
    });
    assertEquals(missing.status, 404, "a missing delivery answers like an invisible one");
    await missing.body?.cancel();
    const anonymous = await fetch(url);
    assertEquals(anonymous.status, 401);
    await anonymous.body?.cancel();
  }, { env });
});

test("the dashboard page is served and its data needs the dashboard token or a support user", async () => {
  await withHarness(async ({ worker }) => {
    const page = await fetch(`${worker.url}/email-worker/dashboard`);
    assertEquals(page.status, 200);
    assert((page.headers.get("content-type") ?? "").startsWith("text/html"));
    await page.body?.cancel();

    const data = `${worker.url}/email-worker/dashboard/data?window=24h`;
    const none = await fetch(data);
    assertEquals(none.status, 401);
    await none.body?.cancel();
    const endUser = await fetch(data, { headers: { authorization: `Bearer ${await userToken(crypto.randomUUID())}` } });
    assertEquals(endUser.status, 403);
    await endUser.body?.cancel();
    const support = await fetch(data, {
      headers: {
        authorization: `Bearer ${await userToken(crypto.randomUUID(), { app_metadata: { role: "support" } })}`,
      },
    });
    assertEquals(support.status, 200);
    await support.body?.cancel();
    const withToken = await fetch(data, { headers: { authorization: `Bearer ${dashboardToken}` } });
    assertEquals(withToken.status, 200);
    assert(typeof (await withToken.json()) === "object");
  }, { env });
});

test("the sweep dispatches the webhook of a sent delivery, signed so standardwebhooks verifies it", async () => {
  await withHarness(async ({ worker, db, token }) => {
    const received: { headers: Headers; body: string }[] = [];
    const receiver = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
      received.push({ headers: req.headers, body: await req.text() });
      return new Response(null, { status: 204 });
    });
    const [endpoint] = await db.sql<{ id: string; secret: string }[]>`
      select id, secret from email.add_webhook_endpoint(${`http://127.0.0.1:${receiver.addr.port}/hooks`}, array['email.sent'])`;
    try {
      const id = newDeliveryId("routes-webhook");
      const push = await worker.push(envelope(verificationEvent({ deliveryId: id, recipient: newRecipient() })), {
        token,
      });
      assertEquals(push.status, 200);
      await push.body?.cancel();

      const sweep = await worker.sweep();
      assertEquals(sweep.status, 200);
      const counts = await sweep.json();
      assert(
        counts.webhooks && counts.webhooks.delivered >= 1,
        `the sweep reports webhooks: ${JSON.stringify(counts)}`,
      );

      const ours = received.filter((r) => JSON.parse(r.body).data?.delivery_id === id);
      assertEquals(ours.length, 1, "one email.sent message for the delivery");
      const headers = Object.fromEntries(ours[0].headers.entries());
      const verified = new Webhook(endpoint.secret).verify(ours[0].body, headers) as {
        type: string;
        data: { status: string };
      };
      assertEquals(verified.type, "email.sent");
      assertEquals(verified.data.status, "sent");
    } finally {
      await db.sql`select email.remove_webhook_endpoint(${endpoint.id}::uuid)`;
      await receiver.shutdown();
    }
  }, { env: { ...env, WEBHOOK_ALLOW_PRIVATE: "true" } }); // the receiver is on loopback
});
