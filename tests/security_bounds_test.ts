/**
 * Input that would bypass the rules: an event nested so deep (or so large) that Postgres cannot take
 * it must be refused at validation and stored, never sent untracked, and a deterministic SQL error
 * must never look like an outage (which in TRACKING_MODE=required would answer 503 for ever).
 */
import { loadConfig } from "../functions/_shared/config.ts";
import { createLogger } from "../functions/_shared/log.ts";
import { eventBounds } from "../functions/_shared/pubsub.ts";
import { createStatusTracker } from "../functions/_shared/tracker.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { test, withHarness } from "./support/harness.ts";
import { base64, envelope, newDeliveryId, newRecipient } from "./support/pubsub.ts";
import { databaseUrl } from "./support/worker.ts";

/** `levels` nested arrays as JSON text: [[[...]]]. */
function nested(levels: number): string {
  return "[".repeat(levels) + "]".repeat(levels);
}

/** A valid verification event as JSON text with `extra` spliced in as the last properties. */
function eventJson(deliveryId: string, extra: string): string {
  return `{"deliveryId":"${deliveryId}","workflow":"verification-code","recipient":"${newRecipient()}",` +
    `"data":{"code":"493817","expiresInMinutes":10}${extra}}`;
}

for (
  const c of [
    { where: "metadata", extra: `,"metadata":{"x":${nested(50_000)}}` },
    { where: "data", extra: `,"data":{"code":"493817","expiresInMinutes":10,"x":${nested(50_000)}}` },
  ]
) {
  test(`an event whose ${c.where} nests 50,000 levels deep, pushed 3 times (TRACKING_MODE=required), sends nothing and is stored 3 times as too_deep`, async () => {
    await withHarness(async ({ smtp, worker, db, token }) => {
      const id = newDeliveryId("deep");
      const body = envelope(null, { rawData: base64(eventJson(id, c.extra)) });
      for (let i = 1; i <= 3; i++) {
        const res = await worker.push(body, { token });
        assertEquals(res.status, 200, `push ${i} is acked`);
        const reply = await res.json();
        assertEquals([reply.status, reply.reasonCode], ["rejected", "too_deep"]);
        assertMatch(
          reply.reason,
          new RegExp(`${c.where}\\.x(\\.0)*: nested deeper than ${eventBounds.maxDepth} levels`),
        );
      }
      assertEquals(smtp.attempts, 0);
      assertEquals(await db.delivery(id), undefined);
      const rows = await db.rejected({ deliveryId: id });
      assertEquals(rows.map((r) => r.reason_code), ["too_deep", "too_deep", "too_deep"]);
      // Stored for debugging: the first 64 KiB of the body (its code redacted), with its full size.
      assert(rows.every((r) => r.body_bytes > 100_000 && r.raw_body!.length === 64 * 1024));
    }, { env: { TRACKING_MODE: "required" } });
  });
}

test("nesting up to the bound is accepted and sent; one level more is refused", async () => {
  await withHarness(async ({ smtp, worker, token }) => {
    // metadata itself is level 0, so x at depth 1 holds maxDepth - 1 arrays at most.
    const ok = newDeliveryId("deep-ok");
    const atBound = await (await worker.push(
      envelope(null, { rawData: base64(eventJson(ok, `,"metadata":{"x":${nested(eventBounds.maxDepth - 1)}}`)) }),
      { token },
    )).json();
    assertEquals(atBound.status, "sent");
    const tooDeep = await (await worker.push(
      envelope(null, {
        rawData: base64(eventJson(newDeliveryId("deep-no"), `,"metadata":{"x":${nested(eventBounds.maxDepth)}}`)),
      }),
      { token },
    )).json();
    assertEquals([tooDeep.status, tooDeep.reasonCode], ["rejected", "too_deep"]);
    assertEquals(smtp.attempts, 1);
  });
});

test("metadata larger than the bound is refused as too_large and stored, nothing is sent", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    const id = newDeliveryId("large");
    const big = "x".repeat(eventBounds.maxJsonLength);
    const res = await worker.push(envelope(null, { rawData: base64(eventJson(id, `,"metadata":{"note":"${big}"}`)) }), {
      token,
    });
    const reply = await res.json();
    assertEquals([res.status, reply.status, reply.reasonCode], [200, "rejected", "too_large"]);
    assertEquals((await db.rejected({ deliveryId: id })).map((r) => r.reason_code), ["too_large"]);
    assertEquals(smtp.attempts, 0);
  });
});

test("a deterministic SQL error in queue-and-claim (54001 stack depth) is a refusal, not an outage: the breaker stays closed", async () => {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger("tracker", { sink: (l) => lines.push(JSON.parse(l)) });
  const config = loadConfig({
    SMTP_HOST: "127.0.0.1",
    SMTP_FROM: "x@worker.test",
    PUBSUB_VERIFY: "false",
    DELIVERY_STATUS_DATABASE_URL: databaseUrl(),
    TRACKER_BREAKER_THRESHOLD: "1",
  });
  const tracker = createStatusTracker(config.tracking, { logger });
  try {
    const id = newDeliveryId("refused");
    // Past the validation bound on purpose: what the tracker does when Postgres itself refuses.
    const deep = JSON.parse(nested(50_000));
    for (let i = 0; i < 3; i++) {
      const r = await tracker.queueAndClaim({
        deliveryId: id,
        workflow: "verification-code",
        recipient: newRecipient(),
        payload: { code: "493817", expiresInMinutes: 10 },
        metadata: { x: deep },
      }, 30);
      assertEquals(r.kind, "refused");
      assertEquals(r.kind === "refused" && r.sqlstate, "54001");
    }
    assertEquals(tracker.health(), { state: "closed", consecutiveFailures: 0 });
    // And the tracker still works for the next event.
    const next = await tracker.queueAndClaim({
      deliveryId: newDeliveryId("after-refusal"),
      workflow: "verification-code",
      recipient: newRecipient(),
      payload: { code: "493817", expiresInMinutes: 10 },
      metadata: {},
    }, 30);
    assertEquals(next.kind, "claimed");
  } finally {
    await tracker.close();
  }
});
