/**
 * GET /email-worker/deliveries/:delivery_id over real HTTP, against the real database, with real
 * signed tokens: HS256 with the project secret, and ES256 from a JWKS served over HTTP.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import postgres from "postgres";
import { handleGetDelivery } from "../functions/_shared/delivery_lookup.ts";
import { signHs256 } from "./support/user_tokens.ts";

const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

const secret = "test-jwt-secret-with-at-least-32-characters!";
const run = crypto.randomUUID().slice(0, 8);
const ada = { sub: crypto.randomUUID(), email: `ada-${run}@example.com` };
const bob = { sub: crypto.randomUUID(), email: `bob-${run}@example.com` };
const adaDelivery = `lookup-${run}-ada`;
const bobDelivery = `lookup-${run}-bob`;

type Claims = Record<string, unknown>;

/** `claims` signed with HS256 under the project secret (or `key`). */
function hs256(claims: Claims, key = secret, expiresIn = "5m"): Promise<string> {
  return signHs256(claims, key, expiresIn);
}

function user(u: { sub: string; email: string }, extra: Claims = {}): Claims {
  return { sub: u.sub, email: u.email, role: "authenticated", aud: "authenticated", ...extra };
}

// npm:postgres keeps sockets and timers across awaits in ways the sanitizers misread.
Deno.test({
  name: "deliveries endpoint answers under the caller's RLS",
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const sql = postgres(databaseUrl, { max: 2, onnotice: () => {} });
  const keys = await generateKeyPair("ES256");
  const otherKeys = await generateKeyPair("ES256");
  const jwk = { ...(await exportJWK(keys.publicKey)), kid: `k-${run}`, alg: "ES256", use: "sig" };
  const jwksServer = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    () => Response.json({ keys: [jwk] }),
  );
  const jwksUrl = `http://127.0.0.1:${jwksServer.addr.port}/auth/v1/.well-known/jwks.json`;

  const deps = { sql, jwt: { secret, jwksUrl } };
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, (req) => {
    const match = new URLPattern({ pathname: "/email-worker/deliveries/:delivery_id" }).exec(req.url);
    if (!match) return new Response("no route", { status: 404 });
    return handleGetDelivery(req, match.pathname.groups.delivery_id!, deps);
  });
  const base = `http://127.0.0.1:${server.addr.port}/email-worker/deliveries/`;
  const get = (id: string, token?: string, init: RequestInit = {}) =>
    fetch(base + encodeURIComponent(id), {
      ...init,
      headers: token ? { authorization: `Bearer ${token}` } : {},
    });

  try {
    await sql`select email.record_queued(${adaDelivery}, 'lookup-test', ${ada.email}, '{"code":"482913"}'::jsonb, '{}'::jsonb, ${ada.sub}::uuid)`;
    await sql`select email.mark_in_progress(${adaDelivery})`;
    await sql`select email.mark_sent(${adaDelivery}, 1, '<m@example.com>', '250 ok')`;
    await sql`select email.record_queued(${bobDelivery}, 'lookup-test', ${bob.email}, '{}'::jsonb, '{}'::jsonb, ${bob.sub}::uuid)`;

    await t.step("the owner gets the delivery and its timeline, without the payload", async () => {
      const res = await get(adaDelivery, await hs256(user(ada)));
      assertEquals(res.status, 200);
      assertEquals(res.headers.get("cache-control"), "no-store");
      const body = await res.json();
      assertEquals(body.delivery_id, adaDelivery);
      assertEquals(body.status, "sent");
      assertEquals(body.events.map((e: { to_status: string }) => e.to_status), ["queued", "in_progress", "sent"]);
      assert(!JSON.stringify(body).includes("482913"), "the payload must not be in the answer");
    });

    await t.step("someone else's delivery and a missing one give the same 404", async () => {
      const token = await hs256(user(bob));
      const hidden = await get(adaDelivery, token);
      const missing = await get(`lookup-${run}-missing`, token);
      assertEquals([hidden.status, missing.status], [404, 404]);
      const [a, b] = [await hidden.json(), await missing.json()];
      assertEquals(a.error.code, "not_found");
      assertEquals(a.error.code, b.error.code);
      assertEquals(a.error.message.replace(adaDelivery, "ID"), b.error.message.replace(`lookup-${run}-missing`, "ID"));
    });

    await t.step("support staff see every delivery", async () => {
      const res = await get(
        bobDelivery,
        await hs256(user(bob, { sub: crypto.randomUUID(), app_metadata: { role: "support" } })),
      );
      assertEquals(res.status, 200);
      assertEquals((await res.json()).status, "queued");
    });

    await t.step("a token signed by a JWKS key is accepted", async () => {
      const token = await new SignJWT(user(ada)).setProtectedHeader({ alg: "ES256", kid: jwk.kid }).setIssuedAt()
        .setExpirationTime("5m").sign(keys.privateKey);
      const res = await get(adaDelivery, token);
      assertEquals(res.status, 200);
      assertEquals((await res.json()).delivery_id, adaDelivery);
    });

    await t.step("no token, a wrong secret, an expired token, a foreign key or alg none are 401", async () => {
      const foreign = await new SignJWT(user(ada)).setProtectedHeader({ alg: "ES256", kid: jwk.kid }).setIssuedAt()
        .setExpirationTime("5m").sign(otherKeys.privateKey);
      const header = btoa(JSON.stringify({ alg: "none", typ: "JWT" })).replace(/=+$/, "");
      const payload = btoa(JSON.stringify({ ...user(ada), exp: Math.floor(Date.now() / 1000) + 300 })).replace(
        /=+$/,
        "",
      );
      const cases: [string, string | undefined][] = [
        ["no token", undefined],
        ["wrong secret", await hs256(user(ada), "another-secret-another-secret-another-secret")],
        ["expired", await hs256(user(ada), secret, "-1m")],
        ["foreign key", foreign],
        ["alg none", `${header}.${payload}.`],
        ["garbage", "not-a-jwt"],
      ];
      for (const [name, token] of cases) {
        const res = await get(adaDelivery, token);
        assertEquals(res.status, 401, name);
        const body = await res.json();
        assert(["missing_token", "invalid_token"].includes(body.error.code), `${name}: ${body.error.code}`);
        assert(res.headers.get("www-authenticate")?.startsWith("Bearer"), name);
      }
    });

    await t.step("a signed token for another role is not a user token: 403", async () => {
      const res = await get(adaDelivery, await hs256({ role: "anon", aud: "authenticated", sub: crypto.randomUUID() }));
      assertEquals(res.status, 403);
      assertEquals((await res.json()).error.code, "user_token_required");
    });

    await t.step("a legacy anon or service key (no sub, no aud) is refused with 401", async () => {
      for (const role of ["anon", "service_role"]) {
        const res = await get(adaDelivery, await hs256({ iss: "supabase", ref: "abcdefghijklmnopqrst", role }));
        assertEquals(res.status, 401, role);
        await res.body?.cancel();
      }
    });

    await t.step("a user token without aud authenticated is 401", async () => {
      for (const aud of [undefined, "anon", "https://other.test"]) {
        const res = await get(adaDelivery, await hs256(user(ada, { aud })));
        assertEquals(res.status, 401, String(aud));
        assertEquals((await res.json()).error.code, "invalid_token");
      }
    });

    await t.step("a sub that is not a UUID is 401, not a database error", async () => {
      for (const sub of ["ada", "1234", `${ada.sub}x`]) {
        const res = await get(adaDelivery, await hs256(user({ ...ada, sub })));
        assertEquals(res.status, 401, sub);
        assertEquals((await res.json()).error.code, "invalid_token");
      }
    });

    await t.step("with the project's issuer known, only tokens from it pass", async () => {
      const issuer = "https://abcdefghijklmnopqrst.supabase.co/auth/v1";
      const strict = { sql, jwt: { secret, jwksUrl, issuer } };
      const ask = async (token: string) => {
        const res = await handleGetDelivery(
          new Request(base + adaDelivery, { headers: { authorization: `Bearer ${token}` } }),
          adaDelivery,
          strict,
        );
        await res.body?.cancel();
        return res.status;
      };
      assertEquals(await ask(await hs256(user(ada, { iss: issuer }))), 200);
      assertEquals(await ask(await hs256(user(ada, { iss: "https://zyxwvutsrqponmlkjihg.supabase.co/auth/v1" }))), 401);
      assertEquals(await ask(await hs256(user(ada))), 401);
      const es256 = await new SignJWT(user(ada, { iss: "https://evil.test/auth/v1" }))
        .setProtectedHeader({ alg: "ES256", kid: jwk.kid }).setIssuedAt().setExpirationTime("5m").sign(keys.privateKey);
      assertEquals(await ask(es256), 401);
    });

    await t.step("a malformed id is 400 and another method 405", async () => {
      const token = await hs256(user(ada));
      const bad = await get("bad id/../x", token);
      assertEquals(bad.status, 400);
      assertEquals((await bad.json()).error.code, "invalid_delivery_id");
      const post = await get(adaDelivery, token, { method: "POST" });
      assertEquals(post.status, 405);
      await post.body?.cancel();
    });

    await t.step("a database failure is a 500 in the house error shape", async () => {
      const broken = postgres("postgres://nobody:wrong@127.0.0.1:1/none", {
        max: 1,
        connect_timeout: 2,
        onnotice: () => {},
      });
      try {
        const res = await handleGetDelivery(
          new Request(base + adaDelivery, { headers: { authorization: `Bearer ${await hs256(user(ada))}` } }),
          adaDelivery,
          { sql: broken, jwt: { secret } },
        );
        assertEquals(res.status, 500);
        assertEquals((await res.json()).error.code, "lookup_failed");
      } finally {
        await broken.end({ timeout: 1 });
      }
    });
  } finally {
    await server.shutdown();
    await jwksServer.shutdown();
    await sql.end();
  }
});
