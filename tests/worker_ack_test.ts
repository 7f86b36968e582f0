/**
 * The push route's ack policy (functions/email-worker/ack.ts), every outcome kind: Pub/Sub acks 2xx
 * and redelivers anything else, so each row says whether a message comes back.
 */
import type { Unavailable } from "../functions/_shared/tracker.ts";
import { ackStatus, type PushOutcome } from "../functions/email-worker/ack.ts";
import type { AttemptResult } from "../functions/email-worker/deliver.ts";
import { assertEquals } from "./support/assert.ts";
import { test } from "./support/harness.ts";

const reasons: Unavailable["reason"][] = ["off", "disabled", "open", "failed", "error"];

test("rejected input: 200 once stored; unstored, 200 only when tracking is off or absent in optional mode, else 503", () => {
  const rejected = (stored: Extract<PushOutcome, { kind: "rejected" }>["stored"], required: boolean) =>
    ackStatus({ kind: "rejected", reasonCode: "invalid_json", reason: "the body is not JSON", stored, required });
  for (const required of [false, true]) {
    assertEquals(rejected({ kind: "stored", id: 7 }, required), {
      status: 200,
      body: { status: "rejected", reasonCode: "invalid_json", reason: "the body is not JSON", rejectedId: 7 },
    });
  }
  const expected: Record<string, [number, number]> = {
    // reason: [optional, required]
    off: [200, 503],
    disabled: [200, 503],
    open: [503, 503],
    failed: [503, 503],
    error: [503, 503],
  };
  for (const reason of reasons) {
    for (const [i, required] of [false, true].entries()) {
      const ack = rejected({ kind: "unavailable", reason }, required);
      assertEquals(ack.status, expected[reason][i], `${reason}, required ${required}`);
      assertEquals(
        ack.body,
        ack.status === 200
          ? { status: "rejected", reasonCode: "invalid_json", reason: "the body is not JSON", stored: false }
          : {
            error: {
              code: "rejection_not_stored",
              message: "the input was invalid and could not be stored; redeliver later",
            },
            reasonCode: "invalid_json",
          },
      );
    }
  }
});

test("a duplicate is acked with the delivery's status; tracking unavailable in required mode is 503", () => {
  assertEquals(ackStatus({ kind: "duplicate", deliveryId: "d-1", deliveryStatus: "sent" }), {
    status: 200,
    body: { deliveryId: "d-1", status: "duplicate", deliveryStatus: "sent" },
  });
  assertEquals(ackStatus({ kind: "tracking_unavailable" }), {
    status: 503,
    body: {
      error: { code: "tracking_unavailable", message: "the tracking database is unavailable; redeliver later" },
    },
  });
});

test("a push without a valid token is refused with the verifier's status and code", () => {
  for (const status of [401, 403]) {
    assertEquals(ackStatus({ kind: "unauthorized", status, code: "bad_token", message: "no" }), {
      status,
      body: { error: { code: "bad_token", message: "no" } },
    });
  }
});

test("an attempt: every outcome by how it was recorded (yes, stale, no)", () => {
  // outcome: [status when recorded yes, stale, no]
  const table: Record<AttemptResult["outcome"], [number, number, number]> = {
    sent: [200, 200, 200], // sent mail is never sent again by a redelivery
    permanent_failure: [200, 200, 200], // nothing a redelivery could change
    render_failed: [200, 200, 200],
    transient_failure: [200, 503, 503], // acked once the database owns the retry, else redelivered
    not_sent: [200, 200, 503], // stale: another attempt owns it; no: nothing sent, nothing recorded
  };
  const recordedAs: AttemptResult["recorded"][] = ["yes", "stale", "no"];
  for (const [outcome, statuses] of Object.entries(table) as [AttemptResult["outcome"], number[]][]) {
    for (const [i, recorded] of recordedAs.entries()) {
      const result: AttemptResult = { outcome, recorded, status: "retrying", errorCode: "x", nextAttemptAt: null };
      const ack = ackStatus({ kind: "attempted", deliveryId: "d-2", attempt: 3, result });
      const reply = {
        deliveryId: "d-2",
        attempt: 3,
        outcome,
        status: "retrying",
        tracked: recorded === "yes",
        errorCode: "x",
        nextAttemptAt: undefined,
      };
      assertEquals(ack.status, statuses[i], `${outcome}, recorded ${recorded}`);
      const error = ack.status === 200
        ? undefined
        : outcome === "not_sent"
        ? { code: "tracking_unavailable", message: "the tracking database is unavailable; redeliver later" }
        : { code: "transient_failure", message: "the send failed and will be redelivered" };
      assertEquals(ack.body, error ? { error, ...reply } : reply, `${outcome}, recorded ${recorded}`);
    }
  }
});

test("an untracked attempt's reply has no attempt number, and a due retry's time is in the reply", () => {
  const at = new Date("2026-01-02T03:04:05Z");
  const ack = ackStatus({
    kind: "attempted",
    deliveryId: "d-3",
    result: { outcome: "transient_failure", recorded: "yes", status: "retrying", nextAttemptAt: at },
  });
  assertEquals([ack.status, ack.body.attempt, ack.body.nextAttemptAt, ack.body.tracked], [200, undefined, at, true]);
});
