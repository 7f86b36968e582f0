/**
 * The status tracker (the seed's createStatusTracker): records every transition by calling the
 * lifecycle RPCs in schema `email` over a small Postgres pool, and nothing else. It degrades
 * gracefully and never blocks a send for long:
 * - no database URL: a no-op tracker (one info line);
 * - schema `email` missing (SQLSTATE 42P01, 42704, 3F000, 42883): disabled for good, one warning;
 * - connection failures, sessions the server refuses to start, and timeouts: a circuit breaker opens
 *   after consecutive failures and lets
 *   one trial call through after a cooldown;
 * - every call has a timeout (the query is cancelled when it passes);
 * - the pool is replaced by a fresh one whenever the breaker opens, and whenever a call timed out
 *   before its query reached a connection. npm:postgres 3.4.9 cannot be trusted after that: a
 *   query cancelled while its connection is still connecting stays that connection's `initial`
 *   query; when the connection comes up it "executes" the cancelled query (a no-op) and never
 *   leaves the pool's `connecting` queue, so once every connection went that way every later call
 *   waits in the queue until it times out, for good (until max_lifetime). Its reconnect backoff,
 *   shared by the pool, also grows to 10-20 s after a few refused connects; a fresh pool starts at 0.
 * - text handed to Postgres has U+0000 and lone surrogates replaced (text and jsonb cannot hold
 *   NUL: SQLSTATE 22021), so a poison message can always be stored; raw bodies stay bytes.
 * EM002 (idempotency conflict) and EM003 (stale attempt) come back as typed results, and so does any
 * other deterministic SQL error of queue-and-claim (`refused`): it is never "unavailable".
 * Round trips per pushed delivery: one to queue and claim, one to renew the lease as the send starts,
 * one to record the outcome (plus a lease heartbeat while a send or an outcome write takes long).
 */
import postgres from "postgres";
import { type BreakerState, createCircuitBreaker } from "./circuit_breaker.ts";
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";

/** Why the tracker could not record something. */
export type Unavailable = { kind: "unavailable"; reason: "off" | "disabled" | "open" | "failed" | "error" };

/** The event to record as queued. */
export type QueueRequest = {
  deliveryId: string;
  workflow: string;
  recipient: string;
  payload: Record<string, unknown>;
  metadata: Record<string, unknown>;
  userId?: string;
};

/**
 * The database refused the call for good: a deterministic SQL error (bad data, a limit such as
 * SQLSTATE 54001 stack depth), which the same call would raise again. Never "unavailable".
 */
export type Refused = { kind: "refused"; sqlstate: string; message: string };

/** What queue-and-claim found: an attempt to make, a delivery that is not claimable, a conflict, or a refusal. */
export type QueueResult =
  | { kind: "claimed"; attempt: number }
  | { kind: "not_claimable"; status: string }
  | { kind: "conflict"; message: string }
  | Refused
  | Unavailable;

/** A delivery claimed by the sweep. */
export type ClaimedDelivery = {
  deliveryId: string;
  attempt: number;
  workflow: string;
  recipient: string;
  payload: Record<string, unknown>;
  userId: string | null;
  metadata: Record<string, unknown>;
};

/** An outcome write that may be fenced off by a newer attempt. */
export type OutcomeResult = { kind: "recorded"; status: string; nextAttemptAt?: Date | null } | {
  kind: "stale";
  message: string;
} | Unavailable;

/** A lease renewal: when the lease now ends, or stale (expired, or a newer attempt owns the delivery). */
export type LeaseResult = { kind: "renewed"; leaseExpiresAt: Date } | { kind: "stale"; message: string } | Unavailable;

/** Rejected input to store with its reason. */
export type Rejection = {
  reasonCode: string;
  reason: string;
  rawBody?: Uint8Array;
  /** Where rawBody had secrets replaced before it got here (email.rejected_messages.redacted). */
  redacted?: string[];
  bodyBytes?: number;
  deliveryId?: string;
  messageId?: string;
  headers?: Record<string, string>;
};

/** The tracker's state for health checks (no secrets). */
export type TrackerHealth = {
  state: "off" | "disabled" | BreakerState;
  consecutiveFailures: number;
};

/** Records delivery transitions through the lifecycle RPCs. */
export type StatusTracker = {
  /** record_queued, then mark_in_progress, in one round trip. */
  queueAndClaim(request: QueueRequest, leaseSeconds: number): Promise<QueueResult>;
  markSent(deliveryId: string, attempt: number, sent: { messageId: string; response: string }): Promise<OutcomeResult>;
  recordFailure(
    deliveryId: string,
    attempt: number,
    failure: { code: string; message: string; permanent: boolean },
  ): Promise<OutcomeResult>;
  /** mark_failed from queued or in_progress (a render failure after enqueue). */
  markFailed(deliveryId: string, attempt: number, failure: { code: string; message: string }): Promise<OutcomeResult>;
  claimDue(
    maxCount: number,
    leaseSeconds: number,
  ): Promise<{ kind: "claimed"; deliveries: ClaimedDelivery[] } | Unavailable>;
  reapExpiredLeases(): Promise<{ kind: "reaped"; count: number } | Unavailable>;
  /**
   * renew_lease: keeps the attempt's live lease for `leaseSeconds` more; `startingSend` records that
   * the SMTP conversation starts now (the reaper then says outcome_unknown, not lease_expired).
   */
  renewLease(
    deliveryId: string,
    attempt: number,
    leaseSeconds: number,
    options?: { startingSend?: boolean },
  ): Promise<LeaseResult>;
  recordRejected(rejection: Rejection): Promise<{ kind: "stored"; id: number } | Unavailable>;
  health(): TrackerHealth;
  close(): Promise<void>;
};

const missingSchema = new Set(["42P01", "42704", "3F000", "42883"]);
// SQLSTATEs that mean the server, not our call, is the problem: count them against the breaker.
const serverTrouble = /^(08|53|57P0)/;

class TimeoutError extends Error {
  code = "TRACKER_TIMEOUT";
}

/** Creates the tracker from the tracking config; a no-op tracker when there is no URL. */
export function createStatusTracker(
  tracking: Config["tracking"],
  options: { logger: Logger; now?: () => number },
): StatusTracker {
  const log = options.logger;
  if (!tracking.databaseUrl) {
    log.info("tracking_off", { reason: "no DELIVERY_STATUS_DATABASE_URL or SUPABASE_DB_URL" });
    return noopTracker();
  }
  const connect = () =>
    postgres(tracking.databaseUrl!, {
      max: tracking.poolSize,
      connection: { application_name: "email-worker" },
      connect_timeout: Math.max(1, Math.ceil(tracking.timeoutMs / 1000)),
      idle_timeout: 30,
      max_lifetime: 30 * 60,
      // The default backoff (3^retries / 100 s, up to 20 s) outlasts any sensible call timeout.
      backoff: (retries: number) => Math.min(0.05 * 2 ** retries, tracking.timeoutMs / 4000),
      prepare: false,
      fetch_types: false,
      onnotice: () => {},
    });
  let sql = connect();
  const retiring = new Set<Promise<void>>();
  /** Swaps in a fresh pool; the old one gets one call timeout to finish its queries, then is destroyed. */
  function recycle(reason: string) {
    const old = sql;
    sql = connect();
    const ended: Promise<void> = old.end({ timeout: tracking.timeoutMs / 1000 }).catch(() => {}).finally(() =>
      retiring.delete(ended)
    );
    retiring.add(ended);
    log.info("tracker_pool_recycled", { reason });
  }
  const breaker = createCircuitBreaker({
    threshold: tracking.breakerThreshold,
    cooldownMs: tracking.breakerCooldownMs,
    now: options.now,
    onChange: (state) => {
      (state === "open" ? log.warn : log.info)("tracker_breaker", { state, threshold: tracking.breakerThreshold });
      if (state === "open") recycle("breaker_open");
    },
  });
  let disabled = false;

  type Pending<T> = Promise<T> & { cancel?: () => unknown; state?: unknown };
  async function call<T>(action: string, run: (db: postgres.Sql) => Pending<T>): Promise<T | Unavailable> {
    if (disabled) return { kind: "unavailable", reason: "disabled" };
    if (!breaker.allow()) return { kind: "unavailable", reason: "open" };
    const db = sql;
    // A call that ends after its pool was replaced says nothing about the current one.
    const current = () => db === sql;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const query = run(db);
    try {
      const result = await Promise.race([
        query,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            try {
              query.cancel?.();
            } catch { /* the connection may be gone already */ }
            reject(new TimeoutError(`tracker call ${action} timed out after ${tracking.timeoutMs} ms`));
          }, tracking.timeoutMs);
        }),
      ]);
      if (current()) breaker.success();
      return result;
    } catch (error) {
      query.catch(() => {});
      const code = errorCode(error);
      if (code === "EM002" || code === "EM003") {
        if (current()) breaker.success();
        throw error;
      }
      if (missingSchema.has(code)) {
        disabled = true;
        breaker.success();
        log.warn("tracking_disabled", {
          reason: "schema email or its functions are missing",
          call: action,
          sqlstate: code,
        });
        return { kind: "unavailable", reason: "disabled" };
      }
      if (isPostgresError(error) && !serverTrouble.test(code) && !sessionEnded(error)) {
        if (current()) breaker.success();
        log.error("tracker_call_error", { call: action, sqlstate: code, message: oneLine(error) });
        // Deterministic: the caller of queue_and_claim turns it into a refusal, not an outage.
        if (action === "queue_and_claim") throw error;
        return { kind: "unavailable", reason: "error" };
      }
      if (current()) {
        breaker.failure();
        // `state` is set by npm:postgres once the query is written to a connection (its own
        // cancel() tells queued from sent queries the same way). Unsent means no connection came up
        // in time, and the one it waited on would be wedged by the cancel: drop the pool.
        if (error instanceof TimeoutError && !query.state && current()) recycle("timeout_before_send");
      }
      log.warn("tracker_call_failed", { call: action, code, breaker: breaker.state() });
      return { kind: "unavailable", reason: "failed" };
    } finally {
      clearTimeout(timer);
    }
  }

  async function fenced(
    action: string,
    run: (db: postgres.Sql) => Pending<{ status: string; next_attempt_at?: Date | null }[]>,
  ) {
    try {
      const r = await call(action, run);
      if (!Array.isArray(r)) return r;
      return { kind: "recorded" as const, status: r[0]?.status, nextAttemptAt: r[0]?.next_attempt_at ?? null };
    } catch (error) {
      return { kind: "stale" as const, message: oneLine(error) };
    }
  }

  return {
    async queueAndClaim(q, leaseSeconds) {
      try {
        const r = await call("queue_and_claim", (db) =>
          db<{ status: string; attempt: number | null }[]>`
            select q.status, email.mark_in_progress(q.delivery_id, ${leaseSeconds}::integer) as attempt
            from email.record_queued(
              ${q.deliveryId}, ${q.workflow}, ${q.recipient}, ${db.json(q.payload as postgres.JSONValue)},
              ${db.json(q.metadata as postgres.JSONValue)}, ${q.userId ?? null}::uuid
            ) q`);
        if (!Array.isArray(r)) return r;
        const row = r[0];
        if (row.attempt !== null) return { kind: "claimed", attempt: row.attempt };
        return { kind: "not_claimable", status: row.status };
      } catch (error) {
        if (errorCode(error) === "EM002") return { kind: "conflict", message: oneLine(error) };
        return { kind: "refused", sqlstate: errorCode(error), message: oneLine(error) };
      }
    },
    markSent: (id, attempt, sent) =>
      fenced("mark_sent", (db) =>
        db`select status from email.mark_sent(
          ${id}, ${attempt}::integer, ${storable(sent.messageId, 998)}, ${storable(sent.response, 512)})`),
    recordFailure: (id, attempt, f) =>
      fenced("record_failure", (db) =>
        db`select status, next_attempt_at from email.record_failure(
          ${id}, ${attempt}::integer, ${storable(f.code, 64)}, ${storable(f.message, 512)}, ${f.permanent})`),
    markFailed: (id, attempt, f) =>
      fenced("mark_failed", (db) =>
        db`select status from email.mark_failed(
          ${id}, ${attempt}::integer, ${storable(f.code, 64)}, ${storable(f.message, 512)})`),
    async claimDue(maxCount, leaseSeconds) {
      const r = await call("claim_due", (db) =>
        db<
          {
            delivery_id: string;
            attempt: number;
            workflow: string;
            recipient: string;
            payload: Record<string, unknown>;
            user_id: string | null;
            metadata: Record<string, unknown>;
          }[]
        >`select * from email.claim_due(${maxCount}::integer, ${leaseSeconds}::integer)`);
      if (!Array.isArray(r)) return r;
      return {
        kind: "claimed",
        deliveries: r.map((d) => ({
          deliveryId: d.delivery_id,
          attempt: d.attempt,
          workflow: d.workflow,
          recipient: d.recipient,
          payload: d.payload,
          userId: d.user_id,
          metadata: d.metadata,
        })),
      };
    },
    async renewLease(id, attempt, leaseSeconds, options = {}) {
      try {
        const r = await call("renew_lease", (db) =>
          db<{ lease_expires_at: Date }[]>`select email.renew_lease(
            ${id}, ${attempt}::integer, ${Math.max(1, Math.ceil(leaseSeconds))}::integer, ${
            options.startingSend ?? false
          }
          ) as lease_expires_at`);
        return Array.isArray(r) ? { kind: "renewed", leaseExpiresAt: new Date(r[0].lease_expires_at) } : r;
      } catch (error) {
        return { kind: "stale", message: oneLine(error) };
      }
    },
    async reapExpiredLeases() {
      const r = await call("reap_expired_leases", (db) => db<{ n: number }[]>`select email.reap_expired_leases() as n`);
      return Array.isArray(r) ? { kind: "reaped", count: r[0].n } : r;
    },
    async recordRejected(x) {
      // Rejected input is whatever arrived: only the raw body (bytea) keeps it, byte for byte but for
      // the redacted secrets.
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(x.headers ?? {})) headers[storable(k, 200)] = storable(v, 2000);
      const r = await call("record_rejected", (db) =>
        db<{ id: string }[]>`select email.record_rejected(
          ${storable(x.reasonCode, 200)}, ${storable(x.reason, 2000)}, ${x.rawBody ?? null}::bytea,
          ${x.deliveryId === undefined ? null : storable(x.deliveryId, 200)},
          ${x.messageId === undefined ? null : storable(x.messageId, 200)}, ${db.json(headers)},
          ${x.bodyBytes ?? null}::integer, array(select jsonb_array_elements_text(${
          db.json((x.redacted ?? []).map((p) => storable(p, 200)))
        }))
        ) as id`);
      return Array.isArray(r) ? { kind: "stored", id: Number(r[0].id) } : r;
    },
    health: () => ({
      state: disabled ? "disabled" : breaker.state(),
      consecutiveFailures: breaker.consecutiveFailures(),
    }),
    close: async () => {
      await Promise.all([sql.end({ timeout: 2 }), ...retiring]);
    },
  };
}

/**
 * `value` cut to `max` UTF-16 units and made storable in text and jsonb: U+0000 (which neither can
 * hold, SQLSTATE 22021 / 22P05) and lone surrogates (which jsonb refuses as escapes) become U+FFFD.
 */
export function storable(value: string, max: number): string {
  return value.slice(0, max).replaceAll("\u0000", "\ufffd").toWellFormed();
}

function noopTracker(): StatusTracker {
  const off: Unavailable = { kind: "unavailable", reason: "off" };
  return {
    queueAndClaim: () => Promise.resolve(off),
    markSent: () => Promise.resolve(off),
    recordFailure: () => Promise.resolve(off),
    markFailed: () => Promise.resolve(off),
    claimDue: () => Promise.resolve(off),
    reapExpiredLeases: () => Promise.resolve(off),
    renewLease: () => Promise.resolve(off),
    recordRejected: () => Promise.resolve(off),
    health: () => ({ state: "off", consecutiveFailures: 0 }),
    close: () => Promise.resolve(),
  };
}

function errorCode(error: unknown): string {
  const code = (error as { code?: unknown })?.code;
  return typeof code === "string" ? code : "unknown";
}

/**
 * A FATAL (or PANIC) error ends the session: the server refused to start it or threw it out (e.g.
 * 55000 "database is not currently accepting connections" while ALLOW_CONNECTIONS is false, during
 * maintenance or a failover), whatever its SQLSTATE class. The database is unavailable; an error
 * about our query is only ever an ERROR.
 */
function sessionEnded(error: unknown): boolean {
  const severity = (error as { severity?: unknown })?.severity;
  return severity === "FATAL" || severity === "PANIC";
}

function isPostgresError(error: unknown): boolean {
  return (error as { name?: unknown })?.name === "PostgresError";
}

function oneLine(error: unknown): string {
  const message = (error as { message?: unknown })?.message ?? error;
  return String(message).replace(/[\r\n]+/g, " ").slice(0, 500);
}
