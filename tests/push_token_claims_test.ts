/**
 * The push token's email must be verified: only `email_verified: true` passes (issue 14, point 7).
 * A token that leaves the claim out, or carries it as a string, is refused like an explicit false.
 */
import { assertEquals } from "./support/assert.ts";
import { test, withHarness } from "./support/harness.ts";
import { envelope, verificationEvent } from "./support/pubsub.ts";

const unverified: { name: string; claims: Record<string, unknown> }[] = [
  { name: "without email_verified", claims: { email_verified: undefined } },
  { name: 'with email_verified as the string "true"', claims: { email_verified: "true" } },
  { name: "with email_verified: null", claims: { email_verified: null } },
];

for (const c of unverified) {
  test(`a push token ${c.name} is refused with 403 and nothing is stored or sent`, async () => {
    await withHarness(async ({ smtp, worker, jwks, db }) => {
      const event = verificationEvent();
      const res = await worker.push(envelope(event), { token: await jwks.sign(c.claims) });
      assertEquals(res.status, 403);
      assertEquals((await res.json()).error.code, "email_not_verified");
      assertEquals(smtp.attempts, 0);
      assertEquals(await db.delivery(event.deliveryId!), undefined);
    });
  });
}
