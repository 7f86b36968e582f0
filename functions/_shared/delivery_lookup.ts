/**
 * `GET /email-worker/deliveries/:delivery_id`: a delivery and its timeline for the holder of a
 * Supabase user JWT, read under that user's RLS exactly as PostgREST would read it.
 *
 * The token is verified with the project's JWT secret (HS256, `JWT_SECRET`) or its JWKS (asymmetric
 * signing keys, `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`), and must carry `aud`
 * "authenticated", the project's `iss` (`<SUPABASE_URL>/auth/v1`) when known, and a UUID `sub`. Then, in one
 * transaction: `set local role authenticated`, `request.jwt.claims` = the verified claims, and
 * `email_api.get_delivery`, which answers null for a delivery that is missing or not visible, so
 * both are a 404. Replies: 200 with the document, 400 malformed id, 401 missing or bad token,
 * 403 a valid token that is not a user's (anon or service key), 404, 500.
 */
import { createRemoteJWKSet, decodeProtectedHeader, type JWTPayload, jwtVerify } from "jose";
import type { Sql } from "postgres";
import { bearerToken } from "./auth.ts";
import { json, jsonError } from "./http.ts";
import { deliveryIdRule, isDeliveryId } from "./ids.ts";

/**
 * How user tokens are verified: the project's HS256 secret, its JWKS URL, or both; `issuer` is the
 * `iss` they must carry (unchecked when undefined).
 */
export type JwtVerification = { secret?: string; jwksUrl?: string; issuer?: string };

/** What handleGetDelivery needs: a postgres.js client and how to verify tokens. */
export type DeliveryLookupDeps = { sql: Sql; jwt: JwtVerification };

const asymmetricAlgorithms = ["RS256", "ES256", "EdDSA"];
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const jwksSets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();

/** Answers `GET /email-worker/deliveries/:delivery_id` for a Supabase user JWT. */
export async function handleGetDelivery(req: Request, deliveryId: string, deps: DeliveryLookupDeps): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    return jsonError(405, "method_not_allowed", `${req.method} is not allowed here`);
  }
  const token = bearerToken(req.headers);
  if (!token) return unauthorized("missing_token", "an Authorization: Bearer <user JWT> header is required");

  let claims: JWTPayload;
  try {
    claims = await verifyUserJwt(token, deps.jwt);
  } catch {
    return unauthorized("invalid_token", "the token is not valid (signature, expiry or format)");
  }
  if (claims.role !== "authenticated" || typeof claims.sub !== "string") {
    return jsonError(403, "user_token_required", "this endpoint needs a signed-in user's token");
  }

  let id: string;
  try {
    id = decodeURIComponent(deliveryId);
  } catch {
    id = "";
  }
  if (!isDeliveryId(id)) {
    return jsonError(400, "invalid_delivery_id", `a delivery id is ${deliveryIdRule}`);
  }

  let doc: unknown;
  try {
    doc = await deps.sql.begin(async (tx) => {
      await tx`set local role authenticated`;
      await tx`select set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`;
      const [row] = await tx`select email_api.get_delivery(${id}) as doc`;
      return row?.doc ?? null;
    });
  } catch {
    return jsonError(500, "lookup_failed", "the delivery could not be read; try again later");
  }
  if (doc === null) return jsonError(404, "not_found", `delivery ${id} not found`);
  return json(doc, 200, { "cache-control": "no-store" });
}

/**
 * Verifies a Supabase user JWT with the HS256 secret or the JWKS, by the token's algorithm: the
 * signature, `exp`, `aud` "authenticated", `iss` when configured, and a UUID `sub` (what
 * `auth.uid()` casts it to). Throws on any failure; callers answer 401.
 */
export async function verifyUserJwt(token: string, jwt: JwtVerification): Promise<JWTPayload> {
  const { alg } = decodeProtectedHeader(token);
  const options = { audience: "authenticated", issuer: jwt.issuer, requiredClaims: ["exp", "sub"] };
  let payload: JWTPayload;
  if (alg === "HS256" && jwt.secret) {
    ({ payload } = await jwtVerify(token, new TextEncoder().encode(jwt.secret), { ...options, algorithms: ["HS256"] }));
  } else if (alg && asymmetricAlgorithms.includes(alg) && jwt.jwksUrl) {
    ({ payload } = await jwtVerify(token, jwksFor(jwt.jwksUrl), { ...options, algorithms: asymmetricAlgorithms }));
  } else {
    throw new Error(`no key to verify a ${alg ?? "unsigned"} token`);
  }
  if (typeof payload.sub !== "string" || !uuidPattern.test(payload.sub)) throw new Error("sub is not a UUID");
  return payload;
}

function jwksFor(url: string): ReturnType<typeof createRemoteJWKSet> {
  let set = jwksSets.get(url);
  if (!set) {
    set = createRemoteJWKSet(new URL(url), { timeoutDuration: 5000, cooldownDuration: 30_000 });
    jwksSets.set(url, set);
  }
  return set;
}

function unauthorized(code: string, message: string): Response {
  const res = jsonError(401, code, message);
  res.headers.set(
    "www-authenticate",
    `Bearer error="${code === "missing_token" ? "invalid_request" : "invalid_token"}"`,
  );
  return res;
}
