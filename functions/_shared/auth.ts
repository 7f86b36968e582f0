/**
 * Credentials on a request: the token of an `Authorization: Bearer` header, and a given secret
 * compared with the configured one in constant time.
 */
import { timingSafeEqual } from "node:crypto";

/** The token of `Authorization: Bearer <token>` (one run of non-space characters), or null. */
export function bearerToken(headers: Headers): string | null {
  const match = /^Bearer\s+(\S+)$/i.exec(headers.get("authorization")?.trim() ?? "");
  return match ? match[1] : null;
}

/** Compares two secrets in constant time (over their SHA-256 digests, so lengths do not leak). */
export async function secretsEqual(given: string, expected: string): Promise<boolean> {
  const digest = async (s: string) =>
    new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
  const [a, b] = await Promise.all([digest(given), digest(expected)]);
  return timingSafeEqual(a, b) && given.length === expected.length;
}
