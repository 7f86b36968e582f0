/**
 * The webhook dispatcher: sends the messages of `email.webhook_outbox` to their endpoints, signed per
 * the Standard Webhooks spec, and reports every outcome to the database, which decides what follows
 * (delivered, retry after the schedule or Retry-After, given up, endpoint disabled). Run by the sweep.
 *
 * Each request: `POST <url>` with the stored JSON body and the headers
 * - `webhook-id`: `msg_<event id>`, the same on every retry (receivers dedup on it);
 * - `webhook-timestamp`: seconds since the epoch, when this attempt was made;
 * - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` for each valid secret
 *   (the current one and rotated ones not yet expired), separated by spaces.
 */
import type { Sql } from "postgres";
import type { Logger } from "./log.ts";
import { guardedFetch, loadRefusedNetworks, RefusedTarget } from "./net_guard.ts";

/** Options of one dispatch run. */
export type DispatchOptions = {
  /** Messages claimed per round (default 50). */
  batchSize?: number;
  /** Rounds at most; a round shorter than batchSize ends the run (default 1). */
  maxRounds?: number;
  /** Requests in flight at once (default 8). */
  concurrency?: number;
  /** Timeout of one request in ms (default 15000). */
  timeoutMs?: number;
  /** The fetch to use (default: fetch behind the target guard of net_guard.ts). */
  fetch?: typeof fetch;
  /** Let webhooks reach private, loopback and link-local addresses (local development; default false). */
  allowPrivate?: boolean;
  /** Where to log outcomes (no secrets, no bodies). */
  logger?: Logger;
};

/**
 * What one dispatch run did. `stale`: messages another dispatcher claimed again meanwhile, skipped
 * before their request (the usual case) or whose report came back late; that dispatcher owns them.
 */
export type DispatchResult = {
  claimed: number;
  delivered: number;
  retrying: number;
  failed: number;
  disabled: number;
  stale: number;
};

type Claimed = {
  outbox_id: string;
  attempt: number;
  endpoint_id: string;
  url: string;
  secrets: string[];
  message_id: string;
  event_type: string;
  body: string;
};

const encoder = new TextEncoder();

/** Decodes a `whsec_...` secret into its key bytes. */
function secretKey(secret: string): Uint8Array {
  const b64 = secret.startsWith("whsec_") ? secret.slice("whsec_".length) : secret;
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/** The `webhook-signature` header: `v1,<base64 HMAC-SHA256>` per secret, space-separated. */
export async function signWebhook(
  secrets: string[],
  message: { id: string; timestamp: number; body: string },
): Promise<string> {
  const content = encoder.encode(`${message.id}.${message.timestamp}.${message.body}`);
  const signatures = await Promise.all(secrets.map(async (secret) => {
    const key = await crypto.subtle.importKey(
      "raw",
      secretKey(secret) as BufferSource,
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, content));
    return `v1,${btoa(String.fromCharCode(...mac))}`;
  }));
  return signatures.join(" ");
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date), or null. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | null {
  if (value === null || value.trim() === "") return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000));
}

type Outcome = { statusCode: number | null; error: string | null; retryAfter: number | null };

async function post(message: Claimed, timeoutMs: number, doFetch: typeof fetch): Promise<Outcome> {
  const timestamp = Math.floor(Date.now() / 1000);
  const headers = {
    "content-type": "application/json",
    "user-agent": "email-worker-webhooks/1",
    "webhook-id": message.message_id,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": await signWebhook(message.secrets, { id: message.message_id, timestamp, body: message.body }),
  };
  try {
    const response = await doFetch(message.url, {
      method: "POST",
      headers,
      body: message.body,
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs),
    });
    await response.body?.cancel().catch(() => {});
    const ok = response.status >= 200 && response.status < 300;
    return {
      statusCode: response.status,
      error: ok ? null : `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}`,
      retryAfter: ok ? null : parseRetryAfter(response.headers.get("retry-after")),
    };
  } catch (e) {
    const name = (e as Error)?.name;
    const error = e instanceof RefusedTarget
      ? "target refused: not a public address" // where it points stays out of the table
      : name === "TimeoutError" || name === "AbortError"
      ? `timeout after ${timeoutMs} ms`
      : `request failed: ${String((e as Error)?.message ?? e).slice(0, 300)}`;
    return { statusCode: null, error, retryAfter: null };
  }
}

/** Runs `work` over `items` with at most `limit` running at once. */
async function eachLimited<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++]);
  });
  await Promise.all(lanes);
}

/** Whether a database error is EM003: the attempt is stale (another dispatcher claimed the message again). */
function isStale(error: unknown): boolean {
  return (error as { code?: unknown })?.code === "EM003";
}

/**
 * Claims due webhook messages and sends them; each outcome goes to `email.record_webhook_result`.
 * Each message's claim is renewed right before its request (`email.renew_webhook_claim`), so a
 * message whose claim ran out while the batch ran in waves, and that another dispatcher claimed
 * again, is skipped rather than sent twice; a report that comes back stale (EM003) is counted and
 * the batch goes on. Never throws for a receiver's failure (that is recorded); throws only when the
 * database does.
 */
export async function dispatchWebhooks(sql: Sql, opts: DispatchOptions = {}): Promise<DispatchResult> {
  const batchSize = opts.batchSize ?? 50;
  const maxRounds = opts.maxRounds ?? 1;
  const concurrency = Math.max(1, opts.concurrency ?? 8);
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const doFetch = opts.fetch ??
    guardedFetch({ allowPrivate: opts.allowPrivate === true, networks: () => loadRefusedNetworks(sql) });
  // A claim must outlast the request, so no other sweep re-sends a message still in flight: renewed
  // right before the request, it does (the request is aborted after timeoutMs).
  const lockSeconds = Math.ceil(timeoutMs / 1000) + 30;
  const result: DispatchResult = { claimed: 0, delivered: 0, retrying: 0, failed: 0, disabled: 0, stale: 0 };
  const staleLog = (message: Claimed, when: "before_request" | "late_report") =>
    opts.logger?.warn("webhook_stale", {
      webhookId: message.message_id,
      endpointId: message.endpoint_id,
      attempt: message.attempt,
      when,
    });

  for (let round = 0; round < maxRounds; round++) {
    const claimed = await sql<Claimed[]>`
      select outbox_id::text, attempt, endpoint_id::text, url, secrets, message_id, event_type, body
      from email.claim_webhook_messages(${batchSize}, ${lockSeconds})`;
    result.claimed += claimed.length;
    await eachLimited(claimed, concurrency, async (message) => {
      try {
        await sql`select email.renew_webhook_claim(${message.outbox_id}::bigint, ${message.attempt}, ${lockSeconds})`;
      } catch (error) {
        if (!isStale(error)) throw error;
        result.stale++;
        staleLog(message, "before_request");
        return;
      }
      const outcome = await post(message, timeoutMs, doFetch);
      let r: { status: string; next_attempt_at: Date | null; endpoint_disabled: boolean };
      try {
        [r] = await sql<{ status: string; next_attempt_at: Date | null; endpoint_disabled: boolean }[]>`
          select * from email.record_webhook_result(
            ${message.outbox_id}::bigint, ${message.attempt}, ${outcome.statusCode}::integer,
            ${outcome.error}, ${outcome.retryAfter}::integer)`;
      } catch (error) {
        if (!isStale(error)) throw error;
        result.stale++;
        staleLog(message, "late_report");
        return;
      }
      if (r.status === "delivered") result.delivered++;
      else if (r.status === "pending") result.retrying++;
      else result.failed++;
      if (r.endpoint_disabled) result.disabled++;
      const log = r.status === "delivered" ? opts.logger?.info : opts.logger?.warn;
      log?.("webhook_" + (r.status === "pending" ? "retrying" : r.status), {
        webhookId: message.message_id,
        endpointId: message.endpoint_id,
        eventType: message.event_type,
        attempt: message.attempt,
        statusCode: outcome.statusCode,
        error: outcome.error,
        nextAttemptAt: r.next_attempt_at?.toISOString() ?? null,
        endpointDisabled: r.endpoint_disabled,
      });
    });
    if (claimed.length < batchSize) break;
  }
  return result;
}
