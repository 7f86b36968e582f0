/**
 * POST /email-worker: a Pub/Sub push. Pub/Sub acks on 102, 200, 201, 202 and 204 and redelivers on
 * anything else, so: invalid input is stored (its secrets redacted) in email.rejected_messages and
 * acked (a poison message never gets better), unless it could not be stored (5xx, so nothing is
 * lost); duplicates are acked without sending; transient SMTP failures are acked once recorded, since the database owns the
 * retry schedule; when tracking is unreachable, TRACKING_MODE decides (optional: send anyway, 5xx on a
 * transient failure; required: 503 without sending). Once claimed, a send only starts on a renewed
 * lease (503 without sending when it cannot be renewed; 200 `not_sent` when another attempt owns the
 * delivery), and the answer waits while the outcome write is retried (see deliver.ts).
 */
import type { Config } from "../_shared/config.ts";
import { json, jsonError } from "../_shared/http.ts";
import { type Logger, maskEmail } from "../_shared/log.ts";
import type { Mailer } from "../_shared/mailer.ts";
import { parsePush, type PushVerifier } from "../_shared/pubsub.ts";
import { redactPushBody } from "../_shared/redaction.ts";
import type { Rejection, StatusTracker } from "../_shared/tracker.ts";
import { checkWorkflow } from "../_shared/workflows/registry.ts";
import { attemptDelivery } from "./deliver.ts";

/** Raw bodies larger than this are stored truncated (body_bytes keeps the full length, after redaction). */
export const maxStoredBodyBytes = 64 * 1024;

const storedHeaders = [
  "content-type",
  "user-agent",
  "x-goog-pubsub-message-id",
  "x-goog-pubsub-subscription-name",
  "x-goog-pubsub-publish-time",
];

/** What the push route needs. */
export type PushDeps = {
  config: Config;
  tracker: StatusTracker;
  mailer: Mailer;
  logger: Logger;
  verifier: PushVerifier;
};

/** Creates the push route's handler. */
export function createPushHandler(deps: PushDeps): (request: Request) => Promise<Response> {
  const { config, tracker, logger } = deps;
  const required = config.tracking.mode === "required";

  async function rejectInput(
    rejection: Omit<Rejection, "rawBody" | "bodyBytes" | "headers">,
    body: Uint8Array,
    headers: Headers,
  ) {
    const kept: Record<string, string> = {};
    for (const name of storedHeaders) {
      const v = headers.get(name);
      if (v !== null) kept[name] = v.slice(0, 500);
    }
    // Codes and links never reach the table: the stored body is the received one with each
    // workflow's secret fields replaced, and the row says where (email.rejected_messages.redacted).
    const { body: stored, redacted } = redactPushBody(body);
    const r = await tracker.recordRejected({
      ...rejection,
      rawBody: stored.subarray(0, maxStoredBodyBytes),
      bodyBytes: stored.length,
      redacted,
      headers: kept,
    });
    const fields = { deliveryId: rejection.deliveryId, reasonCode: rejection.reasonCode };
    if (r.kind === "stored") {
      logger.info("input_rejected", { ...fields, rejectedId: r.id });
      return json({ status: "rejected", reasonCode: rejection.reasonCode, reason: rejection.reason, rejectedId: r.id });
    }
    if ((r.reason === "off" || r.reason === "disabled") && !required) {
      // Tracking is switched off or absent on purpose: there is nowhere to store it, and redelivery cannot help.
      logger.warn("input_rejected_unstored", { ...fields, tracker: r.reason });
      return json({ status: "rejected", reasonCode: rejection.reasonCode, reason: rejection.reason, stored: false });
    }
    logger.error("input_rejected_not_stored", { ...fields, tracker: r.reason });
    return jsonError(503, "rejection_not_stored", "the input was invalid and could not be stored; redeliver later", {
      reasonCode: rejection.reasonCode,
    });
  }

  return async (request) => {
    const auth = await deps.verifier(request);
    if (!auth.ok) {
      logger.warn("push_unauthorized", { code: auth.code, status: auth.status });
      return jsonError(auth.status, auth.code, auth.message);
    }
    const body = new Uint8Array(await request.arrayBuffer());
    const parsed = parsePush(body, request.headers);
    if (!parsed.ok) {
      return rejectInput(
        {
          reasonCode: parsed.reasonCode,
          reason: parsed.reason,
          deliveryId: parsed.deliveryId,
          messageId: parsed.meta.messageId,
        },
        body,
        request.headers,
      );
    }
    const { event, meta } = parsed;
    const check = checkWorkflow(event.workflow, event.data);
    if (!check.ok) {
      return rejectInput(
        { reasonCode: check.reasonCode, reason: check.reason, deliveryId: event.deliveryId, messageId: meta.messageId },
        body,
        request.headers,
      );
    }
    const ctx = { deliveryId: event.deliveryId, workflow: event.workflow, deliveryAttempt: meta.deliveryAttempt };
    logger.info("push_received", { ...ctx, recipient: maskEmail(event.recipient) });

    const queued = await tracker.queueAndClaim({
      deliveryId: event.deliveryId,
      workflow: event.workflow,
      recipient: event.recipient,
      payload: event.data,
      metadata: { ...event.metadata, ...(meta.messageId ? { pubsubMessageId: meta.messageId } : {}) },
      userId: event.userId,
    }, config.leaseSeconds);

    if (queued.kind === "conflict") {
      return rejectInput(
        {
          reasonCode: "idempotency_conflict",
          reason: queued.message,
          deliveryId: event.deliveryId,
          messageId: meta.messageId,
        },
        body,
        request.headers,
      );
    }
    if (queued.kind === "refused") {
      // The same event would be refused again: store it and ack, never send it untracked.
      return rejectInput(
        {
          reasonCode: "refused_by_database",
          reason: `the database refused the event (SQLSTATE ${queued.sqlstate}): ${queued.message}`,
          deliveryId: event.deliveryId,
          messageId: meta.messageId,
        },
        body,
        request.headers,
      );
    }
    if (queued.kind === "not_claimable") {
      logger.info("duplicate", { ...ctx, status: queued.status });
      return json({ deliveryId: event.deliveryId, status: "duplicate", deliveryStatus: queued.status });
    }
    if (queued.kind === "unavailable" && required) {
      logger.warn("tracking_unavailable", { ...ctx, reason: queued.reason, mode: "required" });
      return jsonError(503, "tracking_unavailable", "the tracking database is unavailable; redeliver later");
    }
    const attempt = queued.kind === "claimed" ? queued.attempt : undefined;
    if (attempt === undefined) {
      logger.warn("sending_untracked", { ...ctx, reason: queued.kind === "unavailable" ? queued.reason : "" });
    }

    const result = await attemptDelivery(deps, {
      deliveryId: event.deliveryId,
      attempt,
      workflow: event.workflow,
      recipient: event.recipient,
      data: check.data,
    });
    const reply = {
      deliveryId: event.deliveryId,
      attempt,
      outcome: result.outcome,
      status: result.status,
      tracked: result.recorded === "yes",
      errorCode: result.errorCode,
      nextAttemptAt: result.nextAttemptAt ?? undefined,
    };
    if (result.outcome === "not_sent" && result.recorded === "no") {
      // Claimed, but the lease could not be renewed before the send: nothing went out; the reaper
      // frees the claim (lease_expired) and a redelivery or the sweep sends it.
      return jsonError(503, "tracking_unavailable", "the tracking database is unavailable; redeliver later", reply);
    }
    if (result.outcome === "transient_failure" && result.recorded !== "yes") {
      // Nobody recorded the retry: let Pub/Sub redeliver.
      return json({
        error: { code: "transient_failure", message: "the send failed and will be redelivered" },
        ...reply,
      }, 503);
    }
    return json(reply);
  };
}
