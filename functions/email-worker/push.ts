/**
 * POST /email-worker: a Pub/Sub push. Pub/Sub acks on 102, 200, 201, 202 and 204 and redelivers on
 * anything else; every answer comes from ack.ts's ackStatus, the one statement of that policy:
 * invalid input is stored (its secrets redacted) in email.rejected_messages and
 * acked (a poison message never gets better), unless it could not be stored (5xx, so nothing is
 * lost); duplicates are acked without sending; transient SMTP failures are acked once recorded, since the database owns the
 * retry schedule; when tracking is unreachable, TRACKING_MODE decides (optional: send anyway, 5xx on a
 * transient failure; required: 503 without sending). Once claimed, a send only starts on a renewed
 * lease (503 without sending when it cannot be renewed; 200 `not_sent` when another attempt owns the
 * delivery), and the answer waits while the outcome write is retried (see deliver.ts).
 */
import type { Config } from "../_shared/config.ts";
import { json } from "../_shared/http.ts";
import { type Logger, maskEmail } from "../_shared/log.ts";
import type { Mailer } from "../_shared/mailer.ts";
import { parsePush, type PushVerifier } from "../_shared/pubsub.ts";
import { redactPushBody } from "../_shared/redaction.ts";
import type { Rejection, StatusTracker } from "../_shared/tracker.ts";
import { checkWorkflow } from "../_shared/workflows/registry.ts";
import { ackStatus, type PushOutcome } from "./ack.ts";
import { attemptDelivery, sendingLeaseSeconds } from "./deliver.ts";

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
  const answer = (outcome: PushOutcome) => {
    const ack = ackStatus(outcome);
    return json(ack.body, ack.status);
  };

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
    const outcome: PushOutcome = {
      kind: "rejected",
      reasonCode: rejection.reasonCode,
      reason: rejection.reason,
      stored: r,
      required,
    };
    const fields = { deliveryId: rejection.deliveryId, reasonCode: rejection.reasonCode };
    const ack = ackStatus(outcome);
    if (r.kind === "stored") logger.info("input_rejected", { ...fields, rejectedId: r.id });
    else if (ack.status === 200) logger.warn("input_rejected_unstored", { ...fields, tracker: r.reason });
    else logger.error("input_rejected_not_stored", { ...fields, tracker: r.reason });
    return json(ack.body, ack.status);
  }

  return async (request) => {
    const auth = await deps.verifier(request);
    if (!auth.ok) {
      logger.warn("push_unauthorized", { code: auth.code, status: auth.status });
      return answer({ kind: "unauthorized", status: auth.status, code: auth.code, message: auth.message });
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
    // The one validation of the workflow's data on this path: deliver.ts renders the checked email.
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

    // The claim records that the send starts, under the sending lease: the send follows at once.
    const claimedSending = { askedAt: Date.now(), leaseSeconds: sendingLeaseSeconds(config) };
    const queued = await tracker.queueAndClaim(
      {
        deliveryId: event.deliveryId,
        workflow: event.workflow,
        recipient: event.recipient,
        payload: event.data,
        metadata: { ...event.metadata, ...(meta.messageId ? { pubsubMessageId: meta.messageId } : {}) },
        userId: event.userId,
      },
      claimedSending.leaseSeconds,
      { startingSend: true },
    );

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
      return answer({ kind: "duplicate", deliveryId: event.deliveryId, deliveryStatus: queued.status });
    }
    if (queued.kind === "unavailable" && required) {
      logger.warn("tracking_unavailable", { ...ctx, reason: queued.reason, mode: "required" });
      return answer({ kind: "tracking_unavailable" });
    }
    const attempt = queued.kind === "claimed" ? queued.attempt : undefined;
    if (attempt === undefined) {
      logger.warn("sending_untracked", { ...ctx, reason: queued.kind === "unavailable" ? queued.reason : "" });
    }

    const result = await attemptDelivery(deps, {
      deliveryId: event.deliveryId,
      attempt,
      claimedSending: queued.kind === "claimed" && queued.sendStarted ? claimedSending : undefined,
      workflow: event.workflow,
      recipient: event.recipient,
      content: check,
    });
    return answer({ kind: "attempted", deliveryId: event.deliveryId, attempt, result });
  };
}
