/**
 * Google's side of Pub/Sub push auth, for tests: an RS256 key pair, a JWKS served over real HTTP,
 * and a signer for OIDC tokens like the ones Pub/Sub attaches (plus the bad ones it must refuse).
 */
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT, UnsecuredJWT } from "jose";

/** The audience and service account the test worker trusts. */
export const testAudience = "https://worker.test/email-worker";
export const testServiceAccount = "pubsub-push@test-project.iam.gserviceaccount.com";

/** A JWKS server with a signer. */
export type TestJwks = {
  url: string;
  /** A valid token, with claims overridden or removed (undefined) as the test wants. */
  sign(
    claims?: Record<string, unknown>,
    options?: { key?: "trusted" | "unknown"; expiresIn?: string },
  ): Promise<string>;
  /** An `alg: none` token with valid claims. */
  unsigned(): string;
  /** An HS256 token with valid claims, signed with the given secret. */
  hs256(secret: string): Promise<string>;
  /** How many times the JWKS was fetched. */
  fetches: number;
  close(): Promise<void>;
};

// RSA key generation is slow; one pair of keys serves every test in the process.
const keys = Promise.all([
  generateKeyPair("RS256", { extractable: true }),
  generateKeyPair("RS256", { extractable: true }),
]);

/** Starts a JWKS server on a free port with one trusted key; the "unknown" key is not published. */
export async function startJwks(): Promise<TestJwks> {
  const [trusted, unknown] = await keys;
  const jwk = { ...(await exportJWK(trusted.publicKey)), kid: "test-key-1", alg: "RS256", use: "sig" };
  const state = { fetches: 0 };
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, () => {
    state.fetches++;
    return Response.json({ keys: [jwk] });
  });
  const claims = (): JWTPayload & Record<string, unknown> => ({
    iss: "https://accounts.google.com",
    aud: testAudience,
    sub: "112233445566778899",
    email: testServiceAccount,
    email_verified: true,
  });
  const merged = (overrides: Record<string, unknown>) => {
    const c: Record<string, unknown> = { ...claims(), ...overrides };
    for (const k of Object.keys(c)) if (c[k] === undefined) delete c[k];
    return c;
  };
  return {
    url: `http://127.0.0.1:${server.addr.port}/oauth2/v3/certs`,
    get fetches() {
      return state.fetches;
    },
    async sign(overrides = {}, options = {}) {
      const c = merged(overrides);
      const jwt = new SignJWT(c as JWTPayload)
        .setProtectedHeader({ alg: "RS256", kid: options.key === "unknown" ? "unknown-key" : "test-key-1", typ: "JWT" })
        .setIssuedAt();
      if (!("exp" in c)) jwt.setExpirationTime(options.expiresIn ?? "10m");
      return await jwt.sign(options.key === "unknown" ? unknown.privateKey : trusted.privateKey);
    },
    unsigned() {
      return new UnsecuredJWT(claims()).setIssuedAt().setExpirationTime("10m").encode();
    },
    async hs256(secret) {
      return await new SignJWT(claims()).setProtectedHeader({ alg: "HS256", kid: "test-key-1" }).setIssuedAt()
        .setExpirationTime("10m").sign(new TextEncoder().encode(secret));
    },
    close: () => server.shutdown(),
  };
}
