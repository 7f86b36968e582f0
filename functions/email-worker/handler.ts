/**
 * The email-worker's request handler, built from its dependencies so tests run it with real ones and
 * test config: config, the status tracker, the mailer and the logger (and optionally the verifier).
 */
import type { Sql } from "postgres";
import type { Config } from "../_shared/config.ts";
import { handleDashboard } from "../_shared/dashboard.ts";
import { handleGetDelivery } from "../_shared/delivery_lookup.ts";
import { json, jsonError } from "../_shared/http.ts";
import type { Logger } from "../_shared/log.ts";
import type { Mailer } from "../_shared/mailer.ts";
import { createPushVerifier, type PushVerifier } from "../_shared/pubsub.ts";
import type { StatusTracker } from "../_shared/tracker.ts";
import { createMetricsHandler } from "./metrics.ts";
import { createPushHandler } from "./push.ts";
import { createRouter } from "./router.ts";
import { createSweepHandler } from "./sweep.ts";

/** What the handler is built from. */
export type HandlerDeps = {
  config: Config;
  tracker: StatusTracker;
  mailer: Mailer;
  logger: Logger;
  verifier?: PushVerifier;
  /** A client of the tracking database for the read API, the dashboard and webhooks (none: those answer 503). */
  sql?: Sql;
};

/** Creates the handler for `Deno.serve`: push, sweep, health, metrics, the deliveries endpoint and the dashboard. */
export function createHandler(deps: HandlerDeps): (request: Request) => Promise<Response> {
  const { config, tracker, logger } = deps;
  if (!config.pubsub.verify) {
    logger.warn("pubsub_verify_off", { reason: "PUBSUB_VERIFY=false: pushes are not authenticated" });
  }
  if (!config.smtp.secure && !config.smtp.requireTls) {
    logger.warn("smtp_tls_optional", { reason: "SMTP_REQUIRE_TLS=false: mail may reach the relay in plain text" });
  }
  if (config.webhooks.allowPrivate) {
    logger.warn("webhooks_private_allowed", {
      reason: "WEBHOOK_ALLOW_PRIVATE=true: webhooks may reach internal addresses",
    });
  }
  const verifier = deps.verifier ?? createPushVerifier(config.pubsub);
  const route = createRouter([
    { method: "POST", path: "/email-worker", handle: createPushHandler({ ...deps, verifier }) },
    { method: "POST", path: "/email-worker/sweep", handle: createSweepHandler(deps) },
    { method: "GET", path: "/email-worker/health", handle: () => health(config, tracker) },
    { method: "GET", path: "/email-worker/metrics", handle: createMetricsHandler(deps) },
    {
      method: "GET",
      path: "/email-worker/deliveries/:delivery_id",
      handle: (req, p) =>
        deps.sql ? handleGetDelivery(req, p.delivery_id ?? "", { sql: deps.sql, jwt: jwt(config) }) : noDatabase(),
    },
    // GET, and OPTIONS for the CORS preflight of `email-status dashboard`'s local page.
    ...["/email-worker/dashboard", "/email-worker/dashboard/*"].flatMap((path) =>
      ["GET", "OPTIONS"].map((method) => ({
        method,
        path,
        handle: (req: Request) =>
          deps.sql
            ? handleDashboard(req, {
              sql: deps.sql,
              jwt: jwt(config),
              dashboardToken: config.api.dashboardToken,
              logger: logger.child("dashboard"),
            })
            : noDatabase(),
      }))
    ),
  ]);
  return async (request) => {
    try {
      return await route(request);
    } catch (error) {
      logger.error("unhandled", { error: error instanceof Error ? error.name : "unknown" });
      return jsonError(500, "internal", "internal error");
    }
  };
}

function jwt(config: Config) {
  return { secret: config.api.jwtSecret, jwksUrl: config.api.jwksUrl, issuer: config.api.jwtIssuer };
}

function noDatabase(): Response {
  return jsonError(
    503,
    "no_database",
    "no tracking database is configured (DELIVERY_STATUS_DATABASE_URL or SUPABASE_DB_URL)",
  );
}

function health(config: Config, tracker: StatusTracker): Response {
  const t = tracker.health();
  const degraded = config.tracking.mode === "required" && t.state !== "closed";
  return json({
    status: degraded ? "degraded" : "ok",
    tracking: { mode: config.tracking.mode, ...t },
    pubsubVerify: config.pubsub.verify,
  }, degraded ? 503 : 200);
}
