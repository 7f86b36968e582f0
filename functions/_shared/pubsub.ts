/**
 * Google Cloud Pub/Sub push, in: the envelope (wrapped, and the no-wrapper form with metadata in
 * `x-goog-pubsub-*` headers), the event inside it, and the OIDC token Google attaches.
 */
import { createRemoteJWKSet, errors as joseErrors, jwtVerify } from "jose";
import { z } from "zod";
import { bearerToken } from "./auth.ts";
import type { Config } from "./config.ts";
import { deliveryIdPattern, deliveryIdRule, isDeliveryId } from "./ids.ts";

/** The event inside `message.data`. */
export const eventSchema = z.object({
  deliveryId: z.string().regex(deliveryIdPattern, `must be ${deliveryIdRule}`).optional(),
  workflow: z.string().min(1).max(63),
  recipient: z.string().max(320).refine((v) => !/[\r\n]/.test(v), "must not contain CR or LF").pipe(
    z.email({ message: "must be one valid email address" }),
  ),
  userId: z.uuid().optional(),
  data: z.record(z.string(), z.unknown()).default({}),
  metadata: z.record(z.string(), z.unknown()).default({}),
});

/** A validated event. */
export type PushEvent = z.infer<typeof eventSchema>;

/** Pub/Sub's metadata about a pushed message. */
export type PushMeta = { messageId?: string; subscription?: string; deliveryAttempt?: number; publishTime?: string };

/**
 * Bounds on an event's `data` and `metadata` (each): how deep objects and arrays may nest, and how
 * large the value may be as JSON (in UTF-16 code units, about bytes for ASCII). Deeper or larger
 * values are refused before they reach Postgres, whose jsonb parser would fail on them (SQLSTATE
 * 54001 at a few thousand levels) or which would store them in every row.
 */
export const eventBounds = { maxDepth: 32, maxJsonLength: 64 * 1024 } as const;

/** Why input was refused; reasonCode is what email.rejected_messages stores. */
export type InputRejection = {
  ok: false;
  reasonCode: "invalid_envelope" | "invalid_encoding" | "invalid_json" | "invalid_event" | "too_deep" | "too_large";
  reason: string;
  meta: PushMeta;
  deliveryId?: string;
};

/** A parsed push: the event with its delivery id settled, and Pub/Sub's metadata. */
export type ParsedPush = { ok: true; event: PushEvent & { deliveryId: string }; meta: PushMeta } | InputRejection;

const envelopeSchema = z.object({
  message: z.object({
    data: z.string().optional(),
    attributes: z.record(z.string(), z.string()).optional(),
    messageId: z.string().optional(),
    message_id: z.string().optional(),
    publishTime: z.string().optional(),
    publish_time: z.string().optional(),
    orderingKey: z.string().optional(),
  }),
  subscription: z.string().optional(),
  deliveryAttempt: z.number().int().optional(),
});

/** Parses a push body (wrapped envelope, or no-wrapper with x-goog-pubsub-* headers) into an event. */
export function parsePush(body: Uint8Array, headers: Headers): ParsedPush {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    return reject("invalid_json", "the body is not JSON", {});
  }
  const wrapped = typeof json === "object" && json !== null && "message" in json;
  if (!wrapped) {
    const meta: PushMeta = {
      messageId: headers.get("x-goog-pubsub-message-id") ?? undefined,
      subscription: headers.get("x-goog-pubsub-subscription-name") ?? undefined,
      publishTime: headers.get("x-goog-pubsub-publish-time") ?? undefined,
    };
    return toEvent(json, meta);
  }
  const envelope = envelopeSchema.safeParse(json);
  if (!envelope.success) return reject("invalid_envelope", `invalid envelope: ${issues(envelope.error)}`, {});
  const m = envelope.data.message;
  const meta: PushMeta = {
    messageId: m.messageId ?? m.message_id,
    subscription: envelope.data.subscription,
    deliveryAttempt: envelope.data.deliveryAttempt,
    publishTime: m.publishTime ?? m.publish_time,
  };
  if (m.data === undefined || m.data === "") return reject("invalid_envelope", "message.data is missing", meta);
  const bytes = decodeBase64(m.data);
  if (!bytes) return reject("invalid_encoding", "message.data is not valid base64", meta);
  let event: unknown;
  try {
    event = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return reject("invalid_json", "message.data is not JSON", meta);
  }
  return toEvent(event, meta);
}

function toEvent(json: unknown, meta: PushMeta): ParsedPush {
  const parsed = eventSchema.safeParse(json);
  const claimedId = typeof (json as { deliveryId?: unknown })?.deliveryId === "string"
    ? (json as { deliveryId: string }).deliveryId
    : undefined;
  if (!parsed.success) return reject("invalid_event", `invalid event: ${issues(parsed.error)}`, meta, claimedId);
  const unstorable = unstorableTextPath(parsed.data);
  if (unstorable !== undefined) {
    return reject(
      "invalid_event",
      `invalid event: ${unstorable || "(root)"}: contains U+0000 or a lone surrogate, which cannot be stored`,
      meta,
      claimedId,
    );
  }
  for (const field of ["data", "metadata"] as const) {
    const problem = outOfBounds(parsed.data[field], field);
    if (problem) return reject(problem.reasonCode, `invalid event: ${problem.reason}`, meta, claimedId);
  }
  const deliveryId = parsed.data.deliveryId ?? meta.messageId;
  if (!deliveryId || !isDeliveryId(deliveryId)) {
    return reject("invalid_event", "invalid event: no deliveryId and no usable Pub/Sub messageId", meta);
  }
  return { ok: true, event: { ...parsed.data, deliveryId }, meta };
}

/** Whether Postgres text and jsonb can hold `s` (they cannot hold U+0000 or lone surrogates). */
function storableText(s: string): boolean {
  return !s.includes("\u0000") && s.isWellFormed();
}

/**
 * The path of the first string or key Postgres cannot store (U+0000, lone surrogates), or undefined.
 * Iterative, so arbitrarily deep input cannot overflow the stack.
 */
function unstorableTextPath(root: unknown): string | undefined {
  const stack: [unknown, string][] = [[root, ""]];
  for (let item = stack.pop(); item; item = stack.pop()) {
    const [value, path] = item;
    if (typeof value === "string") {
      if (!storableText(value)) return path;
    } else if (typeof value === "object" && value !== null) {
      for (const [key, inner] of Object.entries(value)) {
        const at = path ? `${path}.${key}` : key;
        if (!storableText(key)) return at;
        stack.push([inner, at]);
      }
    }
  }
  return undefined;
}

/**
 * Whether `root` (the event's `field`) nests deeper than eventBounds.maxDepth or is longer than
 * eventBounds.maxJsonLength as JSON; the first bound it breaks, with the path. Iterative, and it
 * stops as soon as a bound is passed, so no input can make it slow or overflow the stack.
 */
function outOfBounds(
  root: unknown,
  field: string,
): { reasonCode: "too_deep" | "too_large"; reason: string } | undefined {
  const stack: [unknown, string, number][] = [[root, field, 0]];
  let length = 0;
  for (let item = stack.pop(); item; item = stack.pop()) {
    const [value, path, depth] = item;
    if (typeof value === "object" && value !== null) {
      if (depth >= eventBounds.maxDepth) {
        return {
          reasonCode: "too_deep",
          reason: `${path}: nested deeper than ${eventBounds.maxDepth} levels of objects and arrays`,
        };
      }
      length += 2;
      for (const [key, inner] of Object.entries(value)) {
        length += (Array.isArray(value) ? 0 : key.length + 3) + 1;
        stack.push([inner, `${path}.${key}`, depth + 1]);
      }
    } else {
      length += typeof value === "string" ? value.length + 2 : String(value).length;
    }
    if (length > eventBounds.maxJsonLength) {
      return {
        reasonCode: "too_large",
        reason: `${field}: larger than ${eventBounds.maxJsonLength} characters as JSON`,
      };
    }
  }
  return undefined;
}

function reject(
  reasonCode: InputRejection["reasonCode"],
  reason: string,
  meta: PushMeta,
  deliveryId?: string,
): InputRejection {
  return { ok: false, reasonCode, reason, meta, deliveryId };
}

function issues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
}

/** Strict base64 (standard or URL-safe alphabet, padding optional); undefined when invalid. */
export function decodeBase64(s: string): Uint8Array | undefined {
  const normalized = s.replace(/-/g, "+").replace(/_/g, "/");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(normalized) || normalized.replace(/=+$/, "").length % 4 === 1) return undefined;
  const padded = normalized.replace(/=+$/, "").padEnd(Math.ceil(normalized.replace(/=+$/, "").length / 4) * 4, "=");
  try {
    const binary = atob(padded);
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
}

/** The outcome of checking a push's token. */
export type TokenCheck = { ok: true; email?: string } | {
  ok: false;
  status: 401 | 403 | 503;
  code: string;
  message: string;
};

/** Verifies the OIDC token on a push request. */
export type PushVerifier = (request: Request) => Promise<TokenCheck>;

const issuers = ["https://accounts.google.com", "accounts.google.com"];

/** Creates the verifier: RS256 signature against the (cached) JWKS, issuer, audience, expiry, email. */
export function createPushVerifier(pubsub: Config["pubsub"]): PushVerifier {
  if (!pubsub.verify) return () => Promise.resolve({ ok: true });
  const jwks = createRemoteJWKSet(new URL(pubsub.jwksUrl), { timeoutDuration: 5000, cooldownDuration: 30_000 });
  const allowed = new Set(pubsub.serviceAccounts);
  return async (request) => {
    const token = bearerToken(request.headers);
    if (!token) return { ok: false, status: 401, code: "missing_token", message: "a Bearer token is required" };
    let payload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        algorithms: ["RS256"],
        issuer: issuers,
        audience: pubsub.audience,
        requiredClaims: ["exp", "iat"],
        clockTolerance: 30,
      }));
    } catch (error) {
      if (error instanceof joseErrors.JWKSTimeout || !(error instanceof joseErrors.JOSEError)) {
        return { ok: false, status: 503, code: "jwks_unavailable", message: "the signing keys could not be fetched" };
      }
      return { ok: false, status: 401, code: "invalid_token", message: `invalid token (${error.code})` };
    }
    const email = typeof payload.email === "string" ? payload.email.toLowerCase() : undefined;
    if (payload.email_verified !== true || !email) {
      return { ok: false, status: 403, code: "email_not_verified", message: "the token's email is not verified" };
    }
    if (!allowed.has(email)) {
      return {
        ok: false,
        status: 403,
        code: "service_account_not_allowed",
        message: "the token's account may not push",
      };
    }
    return { ok: true, email };
  };
}
