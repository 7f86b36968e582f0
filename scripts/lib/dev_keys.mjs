// The local stand-in for Google's Pub/Sub OIDC signer: an RS256 key pair kept in .data/dev/, its JWKS, and a
// token signer. `npm start` serves the JWKS and the worker trusts it; `npm run publish` signs its pushes with it.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { exportJWK, generateKeyPair, importJWK, SignJWT } from "jose";
import { root } from "./postgres.mjs";

export const devDir = path.join(root, ".data", "dev");
const statePath = path.join(devDir, "state.json");

export const PUBLISHER = "local-publisher@email-worker-dev.iam.gserviceaccount.com";

/** Loads (or creates once) the local signing key, the sweep secret and the dashboard token. */
export async function loadDevState() {
  if (existsSync(statePath)) {
    const state = JSON.parse(readFileSync(statePath, "utf8"));
    if (!state.dashboardToken) {
      state.dashboardToken = randomBytes(24).toString("base64url");
      writeFileSync(statePath, JSON.stringify(state, null, 2), { mode: 0o600 });
    }
    return state;
  }
  mkdirSync(devDir, { recursive: true });
  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  const kid = randomBytes(8).toString("hex");
  const state = {
    kid,
    privateJwk: { ...(await exportJWK(privateKey)), kid, alg: "RS256", use: "sig" },
    publicJwk: { ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" },
    sweepSecret: randomBytes(24).toString("base64url"),
    dashboardToken: randomBytes(24).toString("base64url"),
  };
  writeFileSync(statePath, JSON.stringify(state, null, 2), { mode: 0o600 });
  return state;
}

/** Saves what `npm start` is running, so `npm run publish` can find it. */
export function saveRuntime(runtime) {
  mkdirSync(devDir, { recursive: true });
  writeFileSync(path.join(devDir, "runtime.json"), JSON.stringify(runtime, null, 2), { mode: 0o600 });
}

/** Reads what `npm start` saved, or null when it never ran. */
export function loadRuntime() {
  const p = path.join(devDir, "runtime.json");
  return existsSync(p) ? JSON.parse(readFileSync(p, "utf8")) : null;
}

/** Signs an OIDC token shaped like the one Pub/Sub attaches to a push. */
export async function signPushToken(state, audience, { email = PUBLISHER, ttlSeconds = 3600 } = {}) {
  const key = await importJWK(state.privateJwk, "RS256");
  return await new SignJWT({ email, email_verified: true, azp: "1234567890" })
    .setProtectedHeader({ alg: "RS256", kid: state.kid, typ: "JWT" })
    .setIssuer("https://accounts.google.com")
    .setAudience(audience)
    .setSubject("1234567890")
    .setIssuedAt()
    .setExpirationTime(`${ttlSeconds}s`)
    .sign(key);
}
