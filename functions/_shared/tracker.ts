/**
 * The status tracker (the seed's createStatusTracker): records every transition by calling the
 * lifecycle RPCs in schema `email`, and nothing else. The pool, its timeouts, its recycling and the
 * circuit breaker live in tracker_pool.ts; this module maps each RPC's answer to a typed result:
 * - no database URL: a no-op tracker (one info line);
 * - the pool's `unavailable` (no connection, a timeout, the breaker open, the schema missing) passes
 *   through: the tracker degrades gracefully and never blocks a send for long;
 * - SQLSTATE EM002 (idempotency conflict) is `conflict`, EM003 (stale attempt) is `stale`, where the
 *   RPC can raise them; any other SQL error is deterministic: `refused` for queue-and-claim (never
 *   "unavailable"), `unavailable` with reason "error" (and one error line) for the others;
 * - anything else is a bug and is thrown (the route's top-level catch answers 500, Pub/Sub redelivers):
 *   a TypeError is never recorded as a conflict, a stale attempt or an outage.
 * - text handed to Postgres has U+0000 and lone surrogates replaced (text and jsonb cannot hold
 *   NUL: SQLSTATE 22021), so a poison message can always be stored; raw bodies stay bytes.
 * Round trips per pushed delivery: one to queue and claim (recording that the send starts), one to
 * record the outcome (plus a lease heartbeat while a send or an outcome write takes long). Both are
 * batched (tracker_batch.ts): calls made while every connection is busy share one statement and one
 * commit (email.queue_and_claim_many, email.mark_sent_many), each answered on its own.
 */
import type postgres from "postgres";
import type { BreakerState } from "./circuit_breaker.ts";
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";
import { type Answer, createTrackerPool, type Pending, type Unavailable } from "./tracker_pool.ts";
import { createBatcher } from "./tracker_batch.ts";

/** A row of a *_many function: the call's place in the batch, and its answer or its error. */
type BatchRow = { ord: number; error_state: string | null; error_message: string | null };

/** One call for a batch: its JSON text for the *_many function, and itself when it goes alone. */
type BatchedCall<T> = { json: string; one: (db: postgres.Sql) => Pending<readonly T[]> };

export type { Unavailable } from "./tracker_pool.ts";

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
  | { kind: "claimed"; attempt: number; sendStarted: boolean }
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
export type OutcomeResult = { kind: "recorded"; status: string; nextAttemptAt?: Date | null; errorCode?: string } | {
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
  /**
   * queue_and_claim: a new delivery is born in_progress at attempt 1 (one round trip); a known one is
   * claimed as record_queued + mark_in_progress would. `startingSend`: the SMTP conversation starts
   * as soon as the claim is answered, and the claim records that (as renewLease with startingSend
   * would); leaseSeconds should then cover the send (sendingLeaseSeconds).
   */
  queueAndClaim(
    request: QueueRequest,
    leaseSeconds: number,
    options?: { startingSend?: boolean },
  ): Promise<QueueResult>;
  /** mark_sent; the outcome's event records the relay (tracking.relay, from SMTP_HOST) as detail.relay. */
  markSent(deliveryId: string, attempt: number, sent: { messageId: string; response: string }): Promise<OutcomeResult>;
  /**
   * record_failure with the facts of a failed send: the database's failure rules decide retrying,
   * failed or dead_letter, and the error code it records (returned as errorCode); the event records the
   * relay as detail.relay.
   */
  recordFailure(
    deliveryId: string,
    attempt: number,
    failure: { message: string; replyCode?: number; enhancedCode?: string; transportCode?: string },
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
  const pool = createTrackerPool(tracking, options);
  // The relay each attempt's outcome went through, in the outcome's audit event (detail->>'relay').
  const relay = tracking.relay === undefined ? null : storable(tracking.relay, 255);

  const claimBatch = batchedCall<{ status: string; attempt: number | null }>(
    "queue_and_claim",
    (db, calls) =>
      db`select ord, status, attempt, error_state, error_message from email.queue_and_claim_many(${calls}::text::jsonb)`,
  );
  const sentBatch = batchedCall<{ status: string }>(
    "mark_sent",
    (db, calls) => db`select ord, status, error_state, error_message from email.mark_sent_many(${calls}::text::jsonb)`,
  );

  /**
   * One kind of call, in batches (tracker_batch.ts). A call alone is made as itself (`one`: the
   * single-call function, no subtransaction); several go to the kind's *_many function as one
   * statement (`many`, given the calls' JSON texts as one array), and each is answered its own row,
   * or its own SQL error. A batch the pool could not make answers every call of it alike; a deadlock
   * or serialization failure (which *_many raises for the whole batch) counts as the database's
   * trouble: "unavailable", to be made again.
   */
  function batchedCall<T>(
    action: string,
    many: (db: postgres.Sql, calls: string) => Pending<readonly BatchRow[]>,
  ): (call: BatchedCall<T>) => Promise<Answer<T>> {
    return createBatcher<BatchedCall<T>, Answer<T>>({
      maxInFlight: tracking.poolSize,
      maxBatch: tracking.batchMax,
      send: async (calls) => {
        if (calls.length === 1) {
          const r = await pool.call(action, calls[0].one);
          if (r.kind === "sql_error" && /^40/.test(r.sqlstate)) return [transient(action, r.sqlstate, 1)];
          return [r.kind === "ok" ? { kind: "ok", value: r.value[0] } : r];
        }
        const r = await pool.call(action, (db) => many(db, `[${calls.map((c) => c.json).join(",")}]`));
        if (r.kind === "sql_error" && /^40/.test(r.sqlstate)) {
          return calls.map(() => transient(action, r.sqlstate, calls.length));
        }
        if (r.kind !== "ok") return calls.map(() => r);
        const rows = new Map(r.value.map((row) => [row.ord, row]));
        return calls.map((_, i): Answer<T> => {
          const row = rows.get(i + 1);
          if (!row) throw new Error(`${action}: no answer for call ${i + 1} of ${calls.length}`);
          if (row.error_state !== null) {
            return { kind: "sql_error", sqlstate: row.error_state, message: String(row.error_message ?? "") };
          }
          return { kind: "ok", value: row as unknown as T };
        });
      },
    });
  }

  /** A deadlock or serialization failure: the database's trouble, not the call's answer. */
  function transient(action: string, sqlstate: string, calls: number): Unavailable {
    log.warn("tracker_call_failed", { call: action, code: sqlstate, calls });
    return { kind: "unavailable", reason: "failed" };
  }

  /** An SQL error other than the ones the RPC's result type names: deterministic, logged once. */
  function sqlError(action: string, e: { sqlstate: string; message: string }) {
    log.error("tracker_call_error", { call: action, sqlstate: e.sqlstate, message: e.message });
  }

  /** An answer without SQL errors the caller expects: a deterministic one is "unavailable", reason "error". */
  function plain<T>(action: string, r: Answer<T>): { kind: "ok"; value: T } | Unavailable {
    if (r.kind !== "sql_error") return r;
    sqlError(action, r);
    return { kind: "unavailable", reason: "error" };
  }

  /** A call fenced by the attempt: EM003 (a newer attempt owns the delivery, or its lease is gone) is `stale`. */
  async function fencedCall<T>(
    action: string,
    run: (db: postgres.Sql) => Pending<T>,
  ): Promise<{ kind: "ok"; value: T } | { kind: "stale"; message: string } | Unavailable> {
    return fencedAnswer(action, await pool.call(action, run));
  }

  /** fencedCall's reading of an answer, however it was made (alone or in a batch). */
  function fencedAnswer<T>(
    action: string,
    r: Answer<T>,
  ): { kind: "ok"; value: T } | { kind: "stale"; message: string } | Unavailable {
    if (r.kind === "sql_error" && r.sqlstate === "EM003") return { kind: "stale", message: r.message };
    return plain(action, r);
  }

  type OutcomeRow = { status: string; next_attempt_at?: Date | null; error_code?: string };

  /** An outcome write: the status the database recorded (and when a retry is due). */
  async function fenced(
    action: string,
    run: (db: postgres.Sql) => Pending<OutcomeRow[]>,
  ): Promise<OutcomeResult> {
    const r = await fencedCall(action, run);
    return r.kind === "ok" ? recordedOutcome(r.value[0]) : r;
  }

  function recordedOutcome(row: OutcomeRow | undefined): OutcomeResult {
    return {
      kind: "recorded",
      status: row?.status as string,
      nextAttemptAt: row?.next_attempt_at ?? null,
      errorCode: row?.error_code ?? undefined,
    };
  }

  return {
    async queueAndClaim(q, leaseSeconds, options = {}) {
      const lease = Math.max(1, Math.ceil(leaseSeconds));
      const startingSend = options.startingSend ?? false;
      const r = await claimBatch({
        json: callJson({
          delivery_id: q.deliveryId,
          workflow: q.workflow,
          recipient: q.recipient,
          payload: q.payload,
          metadata: q.metadata,
          user_id: q.userId ?? null,
          lease_seconds: lease,
          starting_send: startingSend,
        }),
        one: (db) =>
          db<{ status: string; attempt: number | null }[]>`
            select status, attempt from email.queue_and_claim(
              ${q.deliveryId}, ${q.workflow}, ${q.recipient}, ${db.json(q.payload as postgres.JSONValue)},
              ${db.json(q.metadata as postgres.JSONValue)}, ${
            q.userId ?? null
          }::uuid, ${lease}::integer, ${startingSend}
            )`,
      });
      if (r.kind === "sql_error") {
        if (r.sqlstate === "EM002") return { kind: "conflict", message: r.message };
        // Deterministic: the same event would be refused again; a refusal, never an outage.
        sqlError("queue_and_claim", r);
        return { kind: "refused", sqlstate: r.sqlstate, message: r.message };
      }
      if (r.kind !== "ok") return r;
      const row = r.value;
      if (row.attempt !== null) {
        return { kind: "claimed", attempt: row.attempt, sendStarted: startingSend };
      }
      return { kind: "not_claimable", status: row.status };
    },
    async markSent(id, attempt, sent) {
      const messageId = storable(sent.messageId, 998);
      const response = storable(sent.response, 512);
      const r = await sentBatch({
        json: callJson({
          delivery_id: id,
          attempt,
          provider_message_id: messageId,
          provider_response: response,
          relay,
        }),
        one: (db) =>
          db<{ status: string }[]>`select status from email.mark_sent(
            ${id}, ${attempt}::integer, ${messageId}, ${response}, ${relay}::text)`,
      });
      const f = fencedAnswer("mark_sent", r);
      return f.kind === "ok" ? recordedOutcome(f.value) : f;
    },
    recordFailure: (id, attempt, f) =>
      fenced("record_failure", (db) =>
        db`select status, next_attempt_at, error_code from email.record_failure(
          ${id}, ${attempt}::integer, ${storable(f.message, 512)}, ${f.replyCode ?? null}::integer,
          ${f.enhancedCode ?? null}, ${f.transportCode ?? null}, ${relay}::text)`),
    markFailed: (id, attempt, f) =>
      fenced("mark_failed", (db) =>
        db`select status from email.mark_failed(
          ${id}, ${attempt}::integer, ${storable(f.code, 64)}, ${storable(f.message, 512)})`),
    async claimDue(maxCount, leaseSeconds) {
      const r = plain(
        "claim_due",
        await pool.call("claim_due", (db) =>
          db<ClaimedDelivery[]>`
            select delivery_id as "deliveryId", attempt, workflow, recipient, payload, user_id as "userId", metadata
            from email.claim_due(${maxCount}::integer, ${leaseSeconds}::integer)`),
      );
      return r.kind === "ok" ? { kind: "claimed", deliveries: [...r.value] } : r;
    },
    async renewLease(id, attempt, leaseSeconds, options = {}) {
      const r = await fencedCall("renew_lease", (db) =>
        db<{ lease_expires_at: Date }[]>`select email.renew_lease(
          ${id}, ${attempt}::integer, ${Math.max(1, Math.ceil(leaseSeconds))}::integer, ${options.startingSend ?? false}
        ) as lease_expires_at`);
      return r.kind === "ok" ? { kind: "renewed", leaseExpiresAt: new Date(r.value[0].lease_expires_at) } : r;
    },
    async reapExpiredLeases() {
      const r = plain(
        "reap_expired_leases",
        await pool.call("reap_expired_leases", (db) => db<{ n: number }[]>`select email.reap_expired_leases() as n`),
      );
      return r.kind === "ok" ? { kind: "reaped", count: r.value[0].n } : r;
    },
    async recordRejected(x) {
      // Rejected input is whatever arrived: only the raw body (bytea) keeps it, byte for byte but for
      // the redacted secrets.
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(x.headers ?? {})) headers[storable(k, 200)] = storable(v, 2000);
      const r = plain(
        "record_rejected",
        await pool.call("record_rejected", (db) =>
          db<{ id: string }[]>`select email.record_rejected(
            ${storable(x.reasonCode, 200)}, ${storable(x.reason, 2000)}, ${x.rawBody ?? null}::bytea,
            ${x.deliveryId === undefined ? null : storable(x.deliveryId, 200)},
            ${x.messageId === undefined ? null : storable(x.messageId, 200)}, ${db.json(headers)},
            ${x.bodyBytes ?? null}::integer, array(select jsonb_array_elements_text(${
            db.json((x.redacted ?? []).map((p) => storable(p, 200)))
          }))
          ) as id`),
      );
      return r.kind === "ok" ? { kind: "stored", id: Number(r.value[0].id) } : r;
    },
    health: () => pool.health(),
    close: () => pool.close(),
  };
}

/**
 * One call of a batch as JSON text, made by its caller (a value JSON cannot hold throws there, not in
 * the batch): each field stringified on its own, so a nested payload is no deeper than it was.
 */
function callJson(fields: Record<string, unknown>): string {
  return `{${Object.entries(fields).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v ?? null)}`).join(",")}}`;
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
