import { assertEquals } from "./support/assert.ts";
import { test, withHarness } from "./support/harness.ts";
import { testServiceAccount } from "./support/jwks.ts";
import { envelope, verificationEvent } from "./support/pubsub.ts";

test("a push signed by the trusted key for the right audience and service account is accepted", async () => {
  await withHarness(async ({ worker, token }) => {
    const res = await worker.push(envelope(verificationEvent()), { token });
    assertEquals([res.status, (await res.json()).status], [200, "sent"]);
  });
});

test("the issuer without https:// (accounts.google.com) is accepted too", async () => {
  await withHarness(async ({ worker, jwks }) => {
    const token = await jwks.sign({ iss: "accounts.google.com" });
    assertEquals((await worker.push(envelope(verificationEvent()), { token })).status, 200);
  });
});

const refused: {
  name: string;
  status: number;
  code: string;
  token: (j: Awaited<ReturnType<typeof import("./support/jwks.ts").startJwks>>) => Promise<string | undefined>;
}[] = [
  { name: "no Authorization header", status: 401, code: "missing_token", token: () => Promise.resolve(undefined) },
  { name: "a wrong audience", status: 401, code: "invalid_token", token: (j) => j.sign({ aud: "https://other.test" }) },
  { name: "a wrong issuer", status: 401, code: "invalid_token", token: (j) => j.sign({ iss: "https://evil.test" }) },
  {
    name: "an expired token",
    status: 401,
    code: "invalid_token",
    token: (j) => j.sign({ exp: Math.floor(Date.now() / 1000) - 3600, iat: Math.floor(Date.now() / 1000) - 7200 }),
  },
  {
    name: "a key the JWKS does not publish",
    status: 401,
    code: "invalid_token",
    token: (j) => j.sign({}, { key: "unknown" }),
  },
  { name: "alg: none", status: 401, code: "invalid_token", token: (j) => Promise.resolve(j.unsigned()) },
  {
    name: "an HS256 token",
    status: 401,
    code: "invalid_token",
    token: (j) => j.hs256("a-shared-secret-0123456789abcdef"),
  },
  {
    name: "a tampered payload",
    status: 401,
    code: "invalid_token",
    token: async (j) => {
      const [h, , s] = (await j.sign()).split(".");
      const p = btoa(JSON.stringify({ iss: "https://accounts.google.com", aud: "x", email: testServiceAccount }))
        .replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
      return `${h}.${p}.${s}`;
    },
  },
  {
    name: "an unverified email",
    status: 403,
    code: "email_not_verified",
    token: (j) => j.sign({ email_verified: false }),
  },
  {
    name: "a service account that is not allowed",
    status: 403,
    code: "service_account_not_allowed",
    token: (j) => j.sign({ email: "someone-else@test-project.iam.gserviceaccount.com" }),
  },
];

for (const c of refused) {
  test(`a push with ${c.name} is refused with ${c.status} and nothing is stored or sent`, async () => {
    await withHarness(async ({ smtp, worker, jwks, db }) => {
      const event = verificationEvent();
      const res = await worker.push(envelope(event), { token: await c.token(jwks) });
      assertEquals(res.status, c.status);
      assertEquals((await res.json()).error.code, c.code);
      assertEquals(smtp.attempts, 0);
      assertEquals(await db.delivery(event.deliveryId!), undefined);
      assertEquals((await db.rejected({ deliveryId: event.deliveryId })).length, 0);
    });
  });
}

test("the JWKS is fetched once and cached across pushes", async () => {
  await withHarness(async ({ worker, jwks, token }) => {
    for (let i = 0; i < 3; i++) await (await worker.push(envelope(verificationEvent()), { token })).body?.cancel();
    assertEquals(jwks.fetches, 1);
  });
});

test("PUBSUB_VERIFY=false accepts pushes without a token and warns once at start", async () => {
  await withHarness(async ({ worker }) => {
    const res = await worker.push(envelope(verificationEvent()));
    assertEquals(res.status, 200);
    await res.body?.cancel();
    assertEquals(worker.logs.filter((l) => l.action === "pubsub_verify_off" && l.level === "warn").length, 1);
  }, { env: { PUBSUB_VERIFY: "false" } });
});
