/**
 * Retry-After as the dispatcher reads it: delta-seconds or an HTTP date; a date in the past means
 * "now" (0), never a negative delay, which the database would take as "no Retry-After" and fall
 * back to the longer schedule.
 */
import { assertEquals } from "./support/assert.ts";
import { parseRetryAfter } from "../functions/_shared/webhooks.ts";

Deno.test("Retry-After with a date in the past is 0 seconds, not negative", () => {
  const now = Date.parse("2026-11-29T12:00:00Z");
  assertEquals(parseRetryAfter("Sun, 29 Nov 2026 11:59:00 GMT", now), 0);
  assertEquals(parseRetryAfter("Sun, 29 Nov 2026 12:00:30 GMT", now), 30);
  assertEquals(parseRetryAfter("120", now), 120);
  assertEquals(parseRetryAfter("soon", now), null);
  assertEquals(parseRetryAfter(null, now), null);
});
