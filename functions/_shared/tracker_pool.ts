/**
 * The tracker's connection pool and its one primitive, `call(action, run)`: a small npm:postgres pool
 * behind a circuit breaker and a timeout on every call. It knows nothing of the RPCs (tracker.ts maps
 * their answers); it only tells the server's answers from the server's trouble, and bugs from both.
 * - schema `email` missing (SQLSTATE 42P01, 42704, 3F000, 42883): disabled for good, one warning;
 * - connection failures, sessions the server refuses to start or ends (FATAL, PANIC, classes 08, 53,
 *   57P0), and timeouts are server trouble: a circuit breaker opens after consecutive failures and
 *   lets one trial call through after a cooldown;
 * - every call has a timeout (the query is cancelled when it passes);
 * - the pool is replaced by a fresh one whenever the breaker opens, and whenever a call timed out
 *   before its query reached a connection. npm:postgres 3.4.9 cannot be trusted after that: a
 *   query cancelled while its connection is still connecting stays that connection's `initial`
 *   query; when the connection comes up it "executes" the cancelled query (a no-op) and never
 *   leaves the pool's `connecting` queue, so once every connection went that way every later call
 *   waits in the queue until it times out, for good (until max_lifetime). Its reconnect backoff,
 *   shared by the pool, also grows to 10-20 s after a few refused connects; a fresh pool starts at 0.
 * - any other ERROR from the server is its answer to our call (`sql_error`, with its SQLSTATE): the
 *   server is fine, the same call would fail again.
 * - a programming error (a TypeError or another of JavaScript's own error classes, a query the
 *   builder throws on, npm:postgres's usage errors such as UNDEFINED_VALUE) is not the database's
 *   answer and not its trouble: it is thrown to the caller, and the breaker does not count it.
 */
import postgres from "postgres";
import { type BreakerState, createCircuitBreaker } from "./circuit_breaker.ts";
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";

/** Why the tracker could not record something. */
export type Unavailable = { kind: "unavailable"; reason: "off" | "disabled" | "open" | "failed" | "error" };

/** The server answered the call with an ERROR (not server trouble): its SQLSTATE and message. */
export type SqlError = { kind: "sql_error"; sqlstate: string; message: string };

/** What a call came to: the query's result, the server's error, or no answer. */
export type Answer<T> = { kind: "ok"; value: T } | SqlError | Unavailable;

/** A query that npm:postgres can cancel; `state` is set once it was written to a connection. */
export type Pending<T> = Promise<T> & { cancel?: () => unknown; state?: unknown };

/** The pool: calls, its health, and closing it. */
export type TrackerPool = {
  /** Runs one query built by `run` on the current pool, within the call timeout and the breaker. */
  call<T>(action: string, run: (db: postgres.Sql) => Pending<T>): Promise<Answer<T>>;
  health(): { state: "disabled" | BreakerState; consecutiveFailures: number };
  close(): Promise<void>;
};

const missingSchema = new Set(["42P01", "42704", "3F000", "42883"]);
// SQLSTATEs that mean the server, not our call, is the problem: count them against the breaker.
const serverTrouble = /^(08|53|57P0)/;
// npm:postgres's errors for a query it could not have sent as written (our code's fault).
const usageErrors = new Set(["UNDEFINED_VALUE", "MAX_PARAMETERS_EXCEEDED", "NOT_TAGGED_CALL", "UNSAFE_TRANSACTION"]);

class TimeoutError extends Error {
  code = "TRACKER_TIMEOUT";
}

/** Creates the pool for `tracking.databaseUrl` (which must be set). */
export function createTrackerPool(
  tracking: Config["tracking"],
  options: { logger: Logger; now?: () => number },
): TrackerPool {
  const log = options.logger;
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

  async function call<T>(action: string, run: (db: postgres.Sql) => Pending<T>): Promise<Answer<T>> {
    if (disabled) return { kind: "unavailable", reason: "disabled" };
    if (!breaker.allow()) return { kind: "unavailable", reason: "open" };
    const db = sql;
    // A call that ends after its pool was replaced says nothing about the current one.
    const current = () => db === sql;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let query: Pending<T> | undefined;
    try {
      query = run(db); // a throw here is ours: nothing reached the server
      const pending = query;
      const value = await Promise.race([
        pending,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            try {
              pending.cancel?.();
            } catch { /* the connection may be gone already */ }
            reject(new TimeoutError(`tracker call ${action} timed out after ${tracking.timeoutMs} ms`));
          }, tracking.timeoutMs);
        }),
      ]);
      if (current()) breaker.success();
      return { kind: "ok", value };
    } catch (error) {
      query?.catch(() => {});
      if (query === undefined || isBug(error)) {
        // Says nothing about the server; a trial call of the half-open breaker lets the next one try.
        if (current()) breaker.release();
        throw error;
      }
      const code = errorCode(error);
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
        return { kind: "sql_error", sqlstate: code, message: oneLine(error) };
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

  return {
    call,
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
 * A programming error: one of JavaScript's own error classes (a TypeError from serialising a value
 * JSON cannot hold, a property of undefined, ...) or npm:postgres refusing a query as written.
 * Network and server failures are plain Errors with a code (ECONNREFUSED, CONNECTION_CLOSED, ...) or
 * PostgresErrors, never these.
 */
function isBug(error: unknown): boolean {
  return error instanceof TypeError || error instanceof RangeError || error instanceof ReferenceError ||
    error instanceof SyntaxError || error instanceof EvalError || error instanceof URIError ||
    usageErrors.has(errorCode(error));
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

/** An error's message on one line, at most 500 characters. */
function oneLine(error: unknown): string {
  const message = (error as { message?: unknown })?.message ?? error;
  return String(message).replace(/[\r\n]+/g, " ").slice(0, 500);
}
