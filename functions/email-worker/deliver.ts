/**
 * One attempt at one delivery: render, send, record the outcome. Shared by the push and the sweep.
 * The database decides what a failure leads to (record_failure); this only reports it.
 *
 * The lease (docs/architecture.md, "Delivery guarantee"): an attempt claimed by the sweep with a short
 * lease renews it right before the SMTP conversation starts (email.renew_lease with starting_send),
 * for the send's timeout plus LEASE_SECONDS, and sends nothing when the lease is gone or the database
 * cannot say (no SMTP conversation on a lease that has expired or could expire mid-send). The push
 * path claims with that lease and the start recorded at once (queue_and_claim with starting_send) and
 * sends right after its claim is answered. A heartbeat keeps
 * the lease alive while the send and the outcome write take long, and the outcome write is retried
 * while the database is unreachable, until the lease runs out: a mail that went out is recorded as
 * soon as the database is back within that time, so the sweep never sends it again.
 */
import type { Config } from "../_shared/config.ts";
import { type Logger, maskEmail } from "../_shared/log.ts";
import { type Mailer, sendBoundMs, SmtpError, type SmtpFailure } from "../_shared/mailer.ts";
import { classifyUnrecorded } from "../_shared/failure_rules.ts";
import type { LeaseResult, OutcomeResult, StatusTracker } from "../_shared/tracker.ts";
import type { RenderedEmail } from "../_shared/workflows/common.ts";
import { renderEmail, type WorkflowCheck } from "../_shared/workflows/registry.ts";

/**
 * What an attempt needs; `attempt` is absent when the tracker could not claim it (untracked send).
 * `content` is the one check of the workflow's data on the attempt's path (checkWorkflow: the push
 * checks the event, the sweep the stored payload); a failed check ends the attempt `render_failed`.
 */
export type AttemptInput = {
  deliveryId: string;
  attempt?: number;
  /**
   * The claim already recorded that the send starts (queue_and_claim with starting_send, asked at
   * `askedAt` on the local clock for `leaseSeconds`): no renewal before the send.
   */
  claimedSending?: { askedAt: number; leaseSeconds: number };
  workflow: string;
  recipient: string;
  content: WorkflowCheck;
};

/**
 * What happened: the send's outcome, the status the database recorded, and whether it was recorded.
 * `not_sent`: the attempt's lease was gone (recorded "stale") or could not be renewed (recorded "no")
 * before the SMTP conversation, so nothing was sent.
 */
export type AttemptResult = {
  outcome: "sent" | "transient_failure" | "permanent_failure" | "render_failed" | "not_sent";
  status?: string;
  recorded: "yes" | "stale" | "no";
  errorCode?: string;
  nextAttemptAt?: Date | null;
};

/** Dependencies of an attempt: the lease it holds and the send's timeouts come from the config. */
export type AttemptDeps = {
  tracker: StatusTracker;
  mailer: Mailer;
  logger: Logger;
  config: Pick<Config, "leaseSeconds" | "smtp">;
};

/**
 * How long one send may take before the mailer gives up on a silent relay (sendBoundMs: the SMTP
 * timeouts one after the other; pooled, also the wait for a free connection and one re-queued try).
 */
export function sendTimeoutMs(smtp: Config["smtp"]): number {
  return sendBoundMs(smtp);
}

/** The lease an attempt holds from the start of its send: the send's timeout, then LEASE_SECONDS to record the outcome. */
export function sendingLeaseSeconds(config: AttemptDeps["config"]): number {
  return Math.ceil(sendTimeoutMs(config.smtp) / 1000) + config.leaseSeconds;
}

/** Renders, sends and records one attempt. Throws only on a bug (the tracker lets those through). */
export async function attemptDelivery(deps: AttemptDeps, input: AttemptInput): Promise<AttemptResult> {
  const { tracker, mailer, logger } = deps;
  const ctx = { deliveryId: input.deliveryId, attempt: input.attempt, workflow: input.workflow };
  const rendered = render(input.content);
  if ("failure" in rendered) {
    const message = rendered.failure;
    logger.error("render_failed", ctx);
    if (input.attempt === undefined) return { outcome: "render_failed", recorded: "no", errorCode: "render_failed" };
    const r = await tracker.markFailed(input.deliveryId, input.attempt, { code: "render_failed", message });
    return { outcome: "render_failed", errorCode: "render_failed", ...recorded(r, logger, ctx) };
  }
  const email = { to: input.recipient, ...rendered, headers: { "X-Email-Delivery-Id": input.deliveryId } };

  if (input.attempt === undefined) {
    try {
      await mailer.send(email);
      logger.info("sent", { ...ctx, recipient: maskEmail(input.recipient) });
      return { outcome: "sent", status: "sent", recorded: "no" };
    } catch (error) {
      // Without tracking the database cannot decide: its rules' generated copy does (failure_rules.ts).
      const failure = facts(error);
      const verdict = classifyUnrecorded(failure);
      const outcome = verdict.transient ? "transient_failure" : "permanent_failure";
      logger.warn("send_failed", { ...ctx, recipient: maskEmail(input.recipient), ...factsToLog(failure), outcome });
      return { outcome, recorded: "no", errorCode: verdict.errorCode };
    }
  }

  const attempt = input.attempt;
  const lease = await startSending(deps, input.deliveryId, attempt, input.claimedSending);
  if (lease.kind === "stale") {
    logger.warn("lease_lost", { ...ctx, reason: "the lease expired or a newer attempt owns the delivery: not sent" });
    return { outcome: "not_sent", recorded: "stale" };
  }
  if (lease.kind === "unavailable") {
    logger.warn("send_not_started", { ...ctx, reason: lease.reason });
    return { outcome: "not_sent", recorded: "no" };
  }
  try {
    let failure: SmtpFailure | undefined;
    let write: () => Promise<OutcomeResult>;
    try {
      const sent = await mailer.send(email);
      logger.info("sent", { ...ctx, recipient: maskEmail(input.recipient) });
      write = () => tracker.markSent(input.deliveryId, attempt, sent);
    } catch (error) {
      const f = failure = facts(error);
      logger.warn("send_failed", { ...ctx, recipient: maskEmail(input.recipient), ...factsToLog(f) });
      write = () => tracker.recordFailure(input.deliveryId, attempt, f);
    }
    const r = await recordOutcome(write, lease, logger, ctx);
    if (!failure) return { outcome: "sent", ...recorded(r, logger, ctx) };
    // Recorded, the database decided (email.failure_rules): failed is permanent, retrying or
    // dead_letter transient. Unrecorded, the rules' generated copy says what the ack policy should do.
    if (r.kind === "recorded") {
      return {
        outcome: r.status === "failed" ? "permanent_failure" : "transient_failure",
        errorCode: r.errorCode,
        ...recorded(r, logger, ctx),
      };
    }
    const verdict = classifyUnrecorded(failure);
    return {
      outcome: verdict.transient ? "transient_failure" : "permanent_failure",
      errorCode: verdict.errorCode,
      ...recorded(r, logger, ctx),
    };
  } finally {
    lease.stop();
  }
}

/** The checked email rendered, or why there is nothing to send (a failed check, or a subject the renderer broke). */
function render(content: WorkflowCheck): RenderedEmail | { failure: string } {
  if (!content.ok) return { failure: content.reason };
  try {
    return renderEmail(content.email);
  } catch (error) {
    return { failure: error instanceof Error ? error.message : String(error) };
  }
}

/** The facts of a send error (an error that is not an SmtpError has none but its message). */
function facts(error: unknown): SmtpFailure {
  return error instanceof SmtpError ? error.failure : { message: String((error as Error)?.message ?? error) };
}

/** The codes of a failure, for the log (its message may name the recipient: not logged). */
function factsToLog(f: SmtpFailure) {
  return { replyCode: f.replyCode, enhancedCode: f.enhancedCode, transportCode: f.transportCode };
}

/** A lease held while sending: when it ends at the latest (local clock), and the heartbeat to stop. */
type HeldLease = { kind: "held"; deadline(): number; stop(): void };

/**
 * Renews the claim's lease as the SMTP conversation starts (fenced; it must still be live), unless
 * the claim itself recorded the start under the sending lease (the push path), then renews it every
 * third of LEASE_SECONDS until stopped. A renewal that finds the lease gone stops the heartbeat; one
 * that cannot reach the database leaves the deadline where it was.
 */
async function startSending(
  deps: AttemptDeps,
  deliveryId: string,
  attempt: number,
  claimedSending?: AttemptInput["claimedSending"],
): Promise<HeldLease | Exclude<LeaseResult, { kind: "renewed" }>> {
  const seconds = sendingLeaseSeconds(deps.config);
  let deadline: number;
  if (claimedSending) {
    deadline = claimedSending.askedAt + claimedSending.leaseSeconds * 1000;
  } else {
    const asked = Date.now();
    const first = await deps.tracker.renewLease(deliveryId, attempt, seconds, { startingSend: true });
    if (first.kind !== "renewed") return first;
    deadline = asked + seconds * 1000;
  }
  let busy = false;
  let stopped = false;
  const stop = () => {
    stopped = true;
    clearInterval(timer);
  };
  const timer = setInterval(async () => {
    if (busy || stopped) return;
    busy = true;
    const at = Date.now();
    let r: LeaseResult;
    try {
      r = await deps.tracker.renewLease(deliveryId, attempt, seconds);
    } catch (error) {
      // A bug (the tracker throws only those): no caller awaits a timer, and an unhandled rejection
      // would end the process mid-send. Stop renewing; the send and its outcome write go on.
      stop();
      deps.logger.error("heartbeat_failed", {
        deliveryId,
        attempt,
        error: error instanceof Error ? error.name : "unknown",
      });
      return;
    } finally {
      busy = false;
    }
    if (stopped) return; // the outcome was written meanwhile: the lease is over anyway
    if (r.kind === "renewed") deadline = Math.max(deadline, at + seconds * 1000);
    else if (r.kind === "stale") {
      stop();
      deps.logger.warn("lease_lost", { deliveryId, attempt, reason: "a heartbeat found the lease gone" });
    }
  }, Math.max(250, (deps.config.leaseSeconds * 1000) / 3));
  return { kind: "held", deadline: () => deadline, stop };
}

/**
 * Writes the outcome; while the database is unreachable (the call failed, or the breaker is open)
 * tries again, backing off up to 1 s, until the lease's deadline. Other answers are final.
 */
async function recordOutcome(
  write: () => Promise<OutcomeResult>,
  lease: HeldLease,
  logger: Logger,
  ctx: Record<string, string | number | undefined>,
): Promise<OutcomeResult> {
  let wait = 100;
  for (let tries = 1;; tries++) {
    const r = await write();
    if (r.kind !== "unavailable" || (r.reason !== "failed" && r.reason !== "open")) return r;
    if (Date.now() + wait >= lease.deadline()) return r;
    if (tries === 1) {
      logger.warn("outcome_retrying", { ...ctx, reason: r.reason, until: new Date(lease.deadline()).toISOString() });
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
    wait = Math.min(wait * 2, 1000);
  }
}

function recorded(
  r: OutcomeResult,
  logger: Logger,
  ctx: Record<string, string | number | undefined>,
): Pick<AttemptResult, "status" | "recorded" | "nextAttemptAt"> {
  if (r.kind === "recorded") {
    logger.info("recorded", { ...ctx, status: r.status });
    return { status: r.status, recorded: "yes", nextAttemptAt: r.nextAttemptAt };
  }
  if (r.kind === "stale") {
    logger.warn("outcome_stale", { ...ctx, reason: "a newer attempt owns the delivery" });
    return { recorded: "stale" };
  }
  logger.warn("outcome_not_recorded", { ...ctx, reason: r.reason });
  return { recorded: "no" };
}
