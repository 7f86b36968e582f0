/**
 * The Pub/Sub ack policy of the push route, in one place. Pub/Sub acks 102, 200, 201, 202 and 204 and
 * redelivers on anything else, so every answer decides whether the message comes back:
 * - acked (200): whatever is settled: sent, a duplicate, a permanent failure, a transient failure the
 *   database recorded (it owns the retry schedule), a lost lease (another attempt owns the delivery),
 *   invalid input once stored, or when there is nowhere to store it (tracking off or absent, optional mode);
 * - redelivered (5xx): whatever nobody has recorded and a redelivery can still do: invalid input that
 *   could not be stored, tracking unavailable in required mode, a claim whose lease could not be
 *   renewed before the send (nothing sent), a transient failure nobody recorded;
 * - refused (401/403): a push without a valid token.
 */
import type { Unavailable } from "../_shared/tracker.ts";
import type { AttemptResult } from "./deliver.ts";

/** What became of one push, as far as the answer to Pub/Sub is concerned. */
export type PushOutcome =
  | { kind: "unauthorized"; status: number; code: string; message: string }
  | {
    kind: "rejected";
    reasonCode: string;
    reason: string;
    /** Where the rejection went: its row, or why the tracker could not store it. */
    stored: { kind: "stored"; id: number } | Unavailable;
    required: boolean;
  }
  | { kind: "duplicate"; deliveryId: string; deliveryStatus: string }
  | { kind: "tracking_unavailable" }
  | { kind: "attempted"; deliveryId: string; attempt?: number; result: AttemptResult };

/** The answer to a push: its HTTP status and JSON body. */
export type Ack = { status: number; body: Record<string, unknown> };

const redeliverLater = "the tracking database is unavailable; redeliver later";

/** The status and body that answer a push with `outcome`: the whole ack policy. */
export function ackStatus(outcome: PushOutcome): Ack {
  switch (outcome.kind) {
    case "unauthorized":
      return error(outcome.status, outcome.code, outcome.message);
    case "rejected": {
      const { reasonCode, reason, stored } = outcome;
      if (stored.kind === "stored") return ok({ status: "rejected", reasonCode, reason, rejectedId: stored.id });
      // Tracking is switched off or absent on purpose: there is nowhere to store it, and redelivery cannot help.
      if ((stored.reason === "off" || stored.reason === "disabled") && !outcome.required) {
        return ok({ status: "rejected", reasonCode, reason, stored: false });
      }
      return error(503, "rejection_not_stored", "the input was invalid and could not be stored; redeliver later", {
        reasonCode,
      });
    }
    case "duplicate":
      return ok({ deliveryId: outcome.deliveryId, status: "duplicate", deliveryStatus: outcome.deliveryStatus });
    case "tracking_unavailable":
      return error(503, "tracking_unavailable", redeliverLater);
    case "attempted": {
      const { result } = outcome;
      const reply = {
        deliveryId: outcome.deliveryId,
        attempt: outcome.attempt,
        outcome: result.outcome,
        status: result.status,
        tracked: result.recorded === "yes",
        errorCode: result.errorCode,
        nextAttemptAt: result.nextAttemptAt ?? undefined,
      };
      if (result.outcome === "not_sent" && result.recorded === "no") {
        // Claimed, but the lease could not be renewed before the send: nothing went out; the reaper
        // frees the claim (lease_expired) and a redelivery or the sweep sends it.
        return error(503, "tracking_unavailable", redeliverLater, reply);
      }
      if (result.outcome === "transient_failure" && result.recorded !== "yes") {
        // Nobody recorded the retry: let Pub/Sub redeliver.
        return error(503, "transient_failure", "the send failed and will be redelivered", reply);
      }
      return ok(reply);
    }
  }
}

function ok(body: Record<string, unknown>): Ack {
  return { status: 200, body };
}

function error(status: number, code: string, message: string, extra: Record<string, unknown> = {}): Ack {
  return { status, body: { error: { code, message }, ...extra } };
}
