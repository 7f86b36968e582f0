/**
 * Fuzz of the push endpoint: 2,000 generated bodies (seeded, so a failure reproduces) through the
 * real handler over HTTP with a valid token. No crash, no unhandled 5xx, every rejection stored in
 * email.rejected_messages with its reason, and nothing with an injected header reaches SMTP.
 */
import { assert, assertEquals } from "./support/assert.ts";
import { test, withHarness } from "./support/harness.ts";
import { base64, envelope } from "./support/pubsub.ts";

const total = 2000;

/** mulberry32: a small seeded generator, so every run pushes the same bodies. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const odd = [
  "\u0000",
  "\u202e",
  "\ud83d\ude00",
  "\ufeff",
  "\u200b",
  "\r\n",
  "\n.\n",
  "\ud800",
  "ß",
  "İ",
  "\u0085",
  "%0d%0a",
];
const injections = [
  "victim@example.com\r\nBcc: attacker@evil.test",
  "victim@example.com\nBcc: attacker@evil.test",
  "victim@example.com%0d%0aBcc:attacker@evil.test",
  "victim@example.com,attacker@evil.test",
  '"a\r\nBcc: x@evil.test" <victim@example.com>',
];

function generate(random: () => number, i: number): string | Uint8Array<ArrayBuffer> {
  const pick = <T>(xs: T[]) => xs[Math.floor(random() * xs.length)];
  const str = (n: number) =>
    Array.from({ length: n }, () => pick(odd) + String.fromCharCode(32 + random() * 90)).join("");
  const id = `fuzz-${i}-${Math.floor(random() * 1e9)}`;
  const event = () => ({
    deliveryId: id,
    workflow: "verification-code",
    recipient: `fuzz-${i}@example.com`,
    data: { code: "123456", expiresInMinutes: 10 },
  });
  switch (i % 12) {
    case 0: // random bytes
      return crypto.getRandomValues(new Uint8Array(1 + Math.floor(random() * 2048)));
    case 1: // invalid base64 in message.data
      return envelope(null, { rawData: pick(["!!!", "QUJD=\u00e9", "a", "====", str(20), "YWJj ZGVm"]) });
    case 2: // valid base64 of invalid JSON
      return envelope(null, { rawData: base64(pick(["{", "{'a':1}", "[1,2", str(30), "nul", "\u0000{}"])) });
    case 3: { // wrong types
      const e: Record<string, unknown> = event();
      e[pick(["deliveryId", "workflow", "recipient", "data", "metadata", "userId"])] = pick([
        42,
        null,
        true,
        [],
        { a: 1 },
        "",
        -1.5e308,
        "not-a-uuid",
      ]);
      return envelope(e as never);
    }
    case 4: { // deep nesting, in the envelope or in data
      const depth = 100 + Math.floor(random() * 5000);
      const deep = "[".repeat(depth) + "]".repeat(depth);
      return random() < 0.5 ? `{"message":{"data":${deep}}}` : envelope(null, {
        rawData: base64(`{"workflow":"verification-code","recipient":"d@example.com","data":{"x":${deep}}}`),
      });
    }
    case 5: // odd Unicode in every string
      return envelope({ ...event(), workflow: str(5), data: { code: str(6), name: str(40) } } as never);
    case 6: // header injection in the recipient, the id or the template data
      return envelope({
        ...event(),
        recipient: pick(injections),
        deliveryId: random() < 0.3 ? `x\r\nBcc: a@evil.test` : id,
        data: { code: "1\r\nBcc: attacker@evil.test", expiresInMinutes: 10 },
      } as never);
    case 7: // the envelope's shape wrong
      return JSON.stringify(pick([[], "message", { message: [] }, { message: { data: 7 } }, { message: null }, 1e400]));
    case 8: // unknown workflow or missing fields
      return envelope(
        pick([{ workflow: "no-such-flow", recipient: "a@example.com" }, { recipient: "a@example.com" }, {}]) as never,
      );
    case 9: // duplicated keys, prototype pollution attempts
      return envelope(null, {
        rawData: base64(
          `{"__proto__":{"admin":true},"constructor":{"prototype":{"x":1}},"workflow":"verification-code",` +
            `"workflow":"x","recipient":"p@example.com"}`,
        ),
      });
    case 10: // empty and whitespace bodies
      return pick(["", " ", "\n", "null", "{}", '{"message":{}}']);
    default: // large bodies, some over 1 MB
      return i % 48 === 11 ? envelope(null, { rawData: "A".repeat(1_100_000 + Math.floor(random() * 100)) }) : envelope(
        null,
        { rawData: base64("x".repeat(Math.floor(random() * 200_000))) },
      );
  }
}

test("fuzz: 2,000 generated push bodies, no crash, no unhandled 5xx, every rejection stored with its reason", async () => {
  await withHarness(async ({ smtp, worker, token, db }) => {
    const random = rng(20261128);
    const bodies = Array.from({ length: total }, (_, i) => generate(random, i));
    const replies: { i: number; status: number; body: Record<string, unknown> }[] = [];
    let next = 0;
    await Promise.all(Array.from({ length: 6 }, async () => {
      while (next < bodies.length) {
        const i = next++;
        const res = await fetch(`${worker.url}/email-worker`, {
          method: "POST",
          body: bodies[i],
          headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        });
        replies.push({ i, status: res.status, body: await res.json() });
      }
    }));
    assertEquals(replies.length, total);
    const unhandled = replies.filter((r) => r.status >= 500);
    assertEquals(unhandled.map((r) => [r.i, r.status, r.body]), []);
    assertEquals(worker.logs.filter((l) => l.action === "unhandled").length, 0);

    const rejected = replies.filter((r) => r.body.status === "rejected");
    assert(rejected.length > total * 0.8, `most fuzz bodies are rejected (${rejected.length})`);
    const ids = rejected.map((r) => Number(r.body.rejectedId));
    assert(ids.every((id) => Number.isInteger(id) && id > 0), "every rejection names its stored row");
    const stored = await db.sql<{ id: string; reason_code: string; reason: string; body_bytes: number }[]>`
      select id, reason_code, reason, body_bytes from email.rejected_messages where id = any(string_to_array(${
      ids.join(",")
    }, ',')::bigint[])`;
    assertEquals(stored.length, new Set(ids).size);
    for (const row of stored) {
      assert(row.reason_code.length > 0 && row.reason.length > 0, JSON.stringify(row));
    }
    const large = stored.filter((r) => r.body_bytes > 1_000_000);
    assert(large.length >= 10, `bodies over 1 MB were stored truncated with their full size (${large.length})`);

    // Anything accepted was sent once to its own recipient, and no header was injected.
    for (const mail of smtp.received) {
      assertEquals(mail.headers.has("bcc"), false);
      const to = Array.isArray(mail.to) ? mail.to : [mail.to];
      assertEquals(to.flatMap((a) => a?.value ?? []).length, 1);
      assert(!/evil\.test/.test(String(mail.headerLines.map((h) => h.line).join("\n"))));
    }
    const health = await worker.health();
    assertEquals(health.status, 200);
    await health.body?.cancel();
  });
});
