/**
 * POST /email-worker/sweep (Bearer SWEEP_SECRET, called every 30 s by pg_cron + pg_net): reaps expired
 * leases, claims due deliveries (retries, requeued, and queued ones no push claimed) one at a time per
 * lane, sends them and records the outcomes, for at most SWEEP_BATCH_SIZE deliveries and
 * SWEEP_TIME_BUDGET_MS; answers with counts. Sweeps may overlap: every claim is its own lease.
 */
import type { Config } from "../_shared/config.ts";
import { json, jsonError } from "../_shared/http.ts";
import type { Logger } from "../_shared/log.ts";
import type { Mailer } from "../_shared/mailer.ts";
import type { StatusTracker, Unavailable } from "../_shared/tracker.ts";
import type { Sql } from "postgres";
import { type DispatchResult, dispatchWebhooks } from "../_shared/webhooks.ts";
import { checkWorkflow } from "../_shared/workflows/registry.ts";
import { attemptDelivery } from "./deliver.ts";
import { secretsEqual } from "../_shared/auth.ts";
import { isStatus, type Status, statusNames } from "../_shared/statuses.gen.ts";

/** What the sweep needs. */
export type SweepDeps = { config: Config; tracker: StatusTracker; mailer: Mailer; logger: Logger; sql?: Sql };

/** Deliveries sent at the same time within one sweep. */
const concurrency = 4;

/** Creates the sweep route's handler. */
export function createSweepHandler(deps: SweepDeps): (request: Request) => Promise<Response> {
  const { config, tracker, logger } = deps;
  return async (request) => {
    const secret = config.sweep.secret;
    if (!secret) return jsonError(403, "sweep_disabled", "SWEEP_SECRET is not set");
    const given = /^Bearer (.+)$/i.exec(request.headers.get("authorization")?.trim() ?? "")?.[1] ?? "";
    if (!(await secretsEqual(given, secret))) return jsonError(401, "unauthorized", "a valid sweep secret is required");
    await request.body?.cancel();

    const reaped = await tracker.reapExpiredLeases();
    if (reaped.kind === "unavailable") {
      return jsonError(503, "tracking_unavailable", `the tracking database is unavailable (${reaped.reason})`);
    }
    // What the claimed attempts led to, by the status each recorded (email.statuses: the sweep names none).
    const recorded: Partial<Record<Status, number>> = {};
    const counts = { reaped: reaped.count, claimed: 0, stale: 0, unrecorded: 0 };
    // Each lane claims one delivery and sends it at once, so no claim waits for a free lane while its
    // lease runs out; lanes stop claiming at the batch size or when the time budget is spent.
    const started = Date.now();
    let taken = 0;
    let unavailable: Unavailable | undefined;
    const lane = async () => {
      while (taken < config.sweep.batchSize && Date.now() - started < config.sweep.timeBudgetMs) {
        taken++;
        const claimed = await tracker.claimDue(1, config.leaseSeconds);
        if (claimed.kind === "unavailable") unavailable ??= claimed;
        const d = claimed.kind === "claimed" ? claimed.deliveries[0] : undefined;
        if (!d) return;
        counts.claimed++;
        // A stored payload is checked here, once: it may predate a change to its workflow's schema.
        const content = checkWorkflow(d.workflow, d.payload);
        const r = await attemptDelivery(deps, { ...d, content });
        if (r.recorded === "stale") counts.stale++;
        else if (r.recorded === "no") counts.unrecorded++;
        else if (r.status && isStatus(r.status)) recorded[r.status] = (recorded[r.status] ?? 0) + 1;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, lane));
    if (unavailable && counts.claimed === 0) {
      return jsonError(503, "tracking_unavailable", `the tracking database is unavailable (${unavailable.reason})`);
    }
    const webhooks = await sweepWebhooks(deps);
    const byStatus = Object.fromEntries(statusNames.map((s) => [s, recorded[s] ?? 0]));
    logger.info("sweep", { ...counts, ...byStatus, webhooks: JSON.stringify(webhooks) });
    return json({ ...counts, ...byStatus, webhooks });
  };
}

/** Sends the webhook messages that are due (the outbox is filled by the audit trail); errors are reported, not thrown. */
async function sweepWebhooks(deps: SweepDeps): Promise<DispatchResult | { error: string } | null> {
  if (!deps.sql) return null;
  const { timeoutMs, concurrency, batchSize, allowPrivate } = deps.config.webhooks;
  try {
    return await dispatchWebhooks(deps.sql, {
      timeoutMs,
      concurrency,
      batchSize,
      allowPrivate,
      logger: deps.logger.child("webhooks"),
    });
  } catch (error) {
    deps.logger.warn("webhooks_failed", { error: error instanceof Error ? error.message.slice(0, 200) : "unknown" });
    return { error: "webhook dispatch failed; it is retried at the next sweep" };
  }
}
