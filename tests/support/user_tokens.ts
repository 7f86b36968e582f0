/**
 * Access tokens as Supabase Auth signs them with a project's JWT secret (HS256), for the routes end
 * users and support staff call (delivery lookup, the dashboard) and the checks of what they refuse.
 */
import { SignJWT } from "jose";

/** Signs `claims` with HS256 under `secret`, issued now and expiring after `expiresIn` (a jose span: "5m", "-1m"). */
export function signHs256(claims: Record<string, unknown>, secret: string, expiresIn = "5m"): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setIssuedAt().setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(secret));
}

/** A signed-in user's access token: role and aud `authenticated`, then `claims` (`sub`, `app_metadata`, ...). */
export function signUserToken(claims: Record<string, unknown>, secret: string, expiresIn = "5m"): Promise<string> {
  return signHs256({ role: "authenticated", aud: "authenticated", ...claims }, secret, expiresIn);
}
