/**
 * One attempt at one delivery: render, send, record the outcome. Shared by the push and the sweep.
 * The database decides what a failure leads to (record_failure); this only reports it.
 */
import { type Logger, maskEmail } from "../_shared/log.ts";
import { type Mailer, SmtpError } from "../_shared/mailer.ts";
import type { OutcomeResult, StatusTracker } from "../_shared/tracker.ts";
import { renderEmail } from "../_shared/workflows/registry.ts";

/** What an attempt needs; `attempt` is absent when the tracker could not claim it (untracked send). */
export type AttemptInput = {
  deliveryId: string;
  attempt?: number;
  workflow: string;
  recipient: string;
  data: unknown;
};

/** What happened: the send's outcome, the status the database recorded, and whether it was recorded. */
export type AttemptResult = {
  outcome: "sent" | "transient_failure" | "permanent_failure" | "render_failed";
  status?: string;
  recorded: "yes" | "stale" | "no";
  errorCode?: string;
  nextAttemptAt?: Date | null;
};

/** Dependencies of an attempt. */
export type AttemptDeps = { tracker: StatusTracker; mailer: Mailer; logger: Logger };

/** Renders, sends and records one attempt. Never throws. */
export async function attemptDelivery(deps: AttemptDeps, input: AttemptInput): Promise<AttemptResult> {
  const { tracker, mailer, logger } = deps;
  const ctx = { deliveryId: input.deliveryId, attempt: input.attempt, workflow: input.workflow };
  let rendered;
  try {
    rendered = renderEmail(input.workflow, input.data);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    logger.error("render_failed", ctx);
    if (input.attempt === undefined) return { outcome: "render_failed", recorded: "no", errorCode: "render_failed" };
    const r = await tracker.markFailed(input.deliveryId, input.attempt, { code: "render_failed", message });
    return { outcome: "render_failed", errorCode: "render_failed", ...recorded(r, logger, ctx) };
  }

  try {
    const sent = await mailer.send({
      to: input.recipient,
      ...rendered,
      headers: { "X-Email-Delivery-Id": input.deliveryId },
    });
    logger.info("sent", { ...ctx, recipient: maskEmail(input.recipient) });
    if (input.attempt === undefined) return { outcome: "sent", status: "sent", recorded: "no" };
    const r = await tracker.markSent(input.deliveryId, input.attempt, sent);
    return { outcome: "sent", ...recorded(r, logger, ctx) };
  } catch (error) {
    const failure = error instanceof SmtpError
      ? error.failure
      : { transient: true, code: "unknown", message: String((error as Error)?.message ?? error) };
    const outcome = failure.transient ? "transient_failure" : "permanent_failure";
    logger.warn("send_failed", { ...ctx, recipient: maskEmail(input.recipient), errorCode: failure.code, outcome });
    if (input.attempt === undefined) return { outcome, recorded: "no", errorCode: failure.code };
    const r = await tracker.recordFailure(input.deliveryId, input.attempt, {
      code: failure.code,
      message: failure.message,
      permanent: !failure.transient,
    });
    return { outcome, errorCode: failure.code, ...recorded(r, logger, ctx) };
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
