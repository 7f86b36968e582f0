/**
 * The real email-worker handler behind a real HTTP server (Deno.serve on port 0), configured like
 * production through loadConfig, with a real tracker on the test database, a real mailer pointed at
 * the test SMTP server, and a logger whose JSON lines the test can read.
 */
import { type Config, loadConfig } from "../../functions/_shared/config.ts";
import { createLogger } from "../../functions/_shared/log.ts";
import { createMailer } from "../../functions/_shared/mailer.ts";
import { createServiceDb } from "../../functions/_shared/service_db.ts";
import { createStatusTracker, type StatusTracker } from "../../functions/_shared/tracker.ts";
import { createHandler } from "../../functions/email-worker/handler.ts";
import { testAudience, testServiceAccount } from "./jwks.ts";

/** The sweep secret test workers use. */
export const testSweepSecret = "test-sweep-secret-0123456789";

/** A running worker. */
export type TestWorker = {
  url: string;
  config: Config;
  tracker: StatusTracker;
  /** Every JSON log line, parsed. */
  logs: Record<string, unknown>[];
  /** Every log line as written. */
  rawLogs: string[];
  push(body: string, options?: { token?: string; headers?: Record<string, string> }): Promise<Response>;
  sweep(secret?: string): Promise<Response>;
  health(): Promise<Response>;
  close(): Promise<void>;
};

/** The test database URL (a migrated database, from `npm test` or scripts/dev_db.mjs). */
export function databaseUrl(): string {
  const url = Deno.env.get("DATABASE_URL");
  if (!url) throw new Error("DATABASE_URL must point at a migrated database (npm test sets it)");
  return url;
}

/**
 * The URL the worker under test connects with: TEST_WORKER_DATABASE_URL (the same database through a
 * pooler, as `npm test` sets it for its PgBouncer run) or DATABASE_URL.
 */
export function workerDatabaseUrl(): string {
  return Deno.env.get("TEST_WORKER_DATABASE_URL") ?? databaseUrl();
}

/** Starts a worker; `env` overrides the test environment (undefined removes a variable). */
export function startWorker(
  options: { smtpPort: number; jwksUrl?: string; env?: Record<string, string | undefined> },
): TestWorker {
  const env: Record<string, string | undefined> = {
    PUBSUB_VERIFY: options.jwksUrl ? "true" : "false",
    PUBSUB_JWKS_URL: options.jwksUrl,
    PUBSUB_AUDIENCE: testAudience,
    PUBSUB_SERVICE_ACCOUNTS: testServiceAccount,
    SMTP_HOST: "127.0.0.1",
    SMTP_PORT: String(options.smtpPort),
    SMTP_SECURE: "false",
    SMTP_REQUIRE_TLS: "false", // a local sink without STARTTLS
    SMTP_FROM: "Email Worker Test <no-reply@worker.test>",
    SMTP_CONNECTION_TIMEOUT_MS: "2000",
    SMTP_GREETING_TIMEOUT_MS: "2000",
    SMTP_SOCKET_TIMEOUT_MS: "5000",
    DELIVERY_STATUS_DATABASE_URL: workerDatabaseUrl(),
    TRACKER_TIMEOUT_MS: "3000",
    SWEEP_SECRET: testSweepSecret,
    SWEEP_BATCH_SIZE: "50",
    LOG_LEVEL: "debug",
    ...options.env,
  };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const config = loadConfig(env);
  const logs: Record<string, unknown>[] = [];
  const rawLogs: string[] = [];
  const logger = createLogger("email-worker", {
    level: config.logLevel,
    sink: (line) => {
      rawLogs.push(line);
      logs.push(JSON.parse(line));
    },
  });
  const tracker = createStatusTracker(config.tracking, { logger: logger.child("tracker") });
  const mailer = createMailer(config.smtp);
  const sql = createServiceDb(config.tracking);
  const handler = createHandler({ config, tracker, mailer, logger, sql });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, handler);
  const url = `http://127.0.0.1:${server.addr.port}`;
  return {
    url,
    config,
    tracker,
    logs,
    rawLogs,
    push: (body, o = {}) =>
      fetch(`${url}/email-worker`, {
        method: "POST",
        body,
        headers: {
          "content-type": "application/json",
          ...(o.token ? { authorization: `Bearer ${o.token}` } : {}),
          ...o.headers,
        },
      }),
    sweep: (secret = testSweepSecret) =>
      fetch(`${url}/email-worker/sweep`, { method: "POST", headers: { authorization: `Bearer ${secret}` } }),
    health: () => fetch(`${url}/email-worker/health`),
    async close() {
      await server.shutdown();
      mailer.close();
      await tracker.close();
      await sql?.end({ timeout: 1 });
    },
  };
}
