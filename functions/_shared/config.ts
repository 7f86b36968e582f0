/**
 * The email-worker's configuration: one zod schema over the environment, read once at start.
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | PORT | 8000 | port `deno run` listens on locally (Supabase ignores it) |
 * | PUBSUB_VERIFY | true | verify the OIDC token Pub/Sub attaches; only the string "false" turns it off (a warning is logged at start); any value other than true or false stops start-up |
 * | PUBSUB_JWKS_URL | https://www.googleapis.com/oauth2/v3/certs | where Google's signing keys are published (cached) |
 * | PUBSUB_AUDIENCE | (required when verifying) | the audience the push subscription puts in its token (`--push-auth-token-audience`) |
 * | PUBSUB_SERVICE_ACCOUNTS | (required when verifying) | comma-separated service-account emails allowed to push (`--push-auth-service-account`) |
 * | SMTP_HOST | (required) | SMTP relay host |
 * | SMTP_PORT | 465 | SMTP port (Supabase blocks outbound 25 and 587) |
 * | SMTP_SECURE | true | implicit TLS from the first byte; the string "false" means STARTTLS (required unless SMTP_REQUIRE_TLS=false) |
 * | SMTP_USER | (none) | SMTP user; no authentication when unset |
 * | SMTP_PASSWORD | (none) | SMTP password (never logged) |
 * | SMTP_FROM | (required) | the From header, e.g. `Acme <no-reply@acme.test>` |
 * | SMTP_FAMILY | 4 | address family used to reach SMTP_HOST: `4` (IPv4 only), `6` (IPv6 only) or `auto` (both, IPv6 first); on the Edge Runtime an unanswered IPv6 address can hang the send instead of falling back to IPv4 |
 * | SMTP_CONNECTION_TIMEOUT_MS | 10000 | how long to wait for the TCP/TLS connection |
 * | SMTP_GREETING_TIMEOUT_MS | 10000 | how long to wait for the server's greeting |
 * | SMTP_SOCKET_TIMEOUT_MS | 30000 | idle time on an open connection before giving up |
 * | SMTP_POOL_MAX_CONNECTIONS | 5 | SMTP connections one isolate keeps open and reuses at most (sends beyond that wait for a free one); `0` opens a new connection (and TLS handshake) per message |
 * | SMTP_POOL_MAX_MESSAGES | 100 | messages one pooled connection carries before it is closed and replaced |
 * | SMTP_POOL_IDLE_MS | 5000 | a pooled connection unused this long is closed (QUIT); keep it below the relay's own idle timeout |
 * | TRACKING_MODE | optional | `optional`: when the tracking database is unreachable send anyway (2xx when sent, 5xx on a transient failure); `required`: answer 503 without sending |
 * | DELIVERY_STATUS_DATABASE_URL | (none) | Postgres URL of the database holding schema `email`; wins over SUPABASE_DB_URL |
 * | SUPABASE_DB_URL | (injected by Supabase) | used when DELIVERY_STATUS_DATABASE_URL is unset; no URL at all means no tracking |
 * | TRACKER_POOL_SIZE | 3 | connections in the tracker's pool |
 * | TRACKER_BATCH_MAX | 20 | queue-and-claim or sent calls the tracker makes in one statement at most, when more arrive while its connections are busy (group commit; `1`: one statement per call) |
 * | TRACKER_TIMEOUT_MS | 5000 | timeout of every tracker call (and of connecting) |
 * | TRACKER_BREAKER_THRESHOLD | 3 | consecutive connection failures that open the circuit breaker |
 * | TRACKER_BREAKER_COOLDOWN_MS | 30000 | how long the breaker stays open before one trial call (half-open) |
 * | SWEEP_SECRET | (none) | bearer secret of `POST /email-worker/sweep`; the sweep is refused while unset |
 * | SWEEP_BATCH_SIZE | 20 | deliveries one sweep claims at most |
 * | SWEEP_TIME_BUDGET_MS | 20000 | a sweep claims no further delivery after this long (sends already started finish) |
 * | LEASE_SECONDS | 60 | lease a claim holds; from the start of a send the lease covers the SMTP timeouts plus LEASE_SECONDS (renewed by a heartbeat), and the sweep reaps attempts that outlive it |
 * | LOG_LEVEL | info | debug, info, warn or error |
 * | SUPABASE_URL | (injected by Supabase) | the project URL; its JWKS (`/auth/v1/.well-known/jwks.json`) verifies user tokens for `GET /email-worker/deliveries/:id` and the dashboard |
 * | JWT_SECRET | (none) | the project's legacy HS256 JWT secret, for projects that still sign user tokens with it (`supabase secrets set` refuses names starting with SUPABASE_) |
 * | SUPABASE_JWT_SECRET | (none) | the same, under its old name; used when JWT_SECRET is unset (local runs) |
 * | USER_JWT_ISSUER | `<SUPABASE_URL>/auth/v1` | the `iss` user tokens must carry; unchecked when neither it nor SUPABASE_URL is set |
 * | DASHBOARD_TOKEN | (none) | a shared secret (at least 16 characters) that opens the dashboard besides a support or admin user's token |
 * | WEBHOOK_TIMEOUT_MS | 15000 | how long a webhook receiver has to answer |
 * | WEBHOOK_CONCURRENCY | 8 | webhook requests in flight at once during a sweep |
 * | WEBHOOK_BATCH_SIZE | 50 | webhook messages one sweep claims at most |
 * | SMTP_REQUIRE_TLS | true | with SMTP_SECURE=false, insist on STARTTLS: no TLS, no AUTH and no message; "false" allows plain text, for a local sink (credentials then only to a loopback host; a warning is logged at start) |
 * | SMTP_CA_CERT | (none) | PEM certificate(s) of a private CA to trust for the relay, besides the public roots |
 * | WEBHOOK_ALLOW_PRIVATE | false | "true" lets webhooks reach private, loopback, link-local and other special-purpose addresses (local development only; a warning is logged at start) |
 * | METRICS_TOKEN | (none) | bearer token (at least 16 characters) of `GET /email-worker/metrics` (Prometheus); the route answers 403 while unset |
 */
import { z } from "zod";

const bool = (fallback: boolean) =>
  z.enum(["true", "false", "1", "0", ""]).optional().transform((v) =>
    v === undefined || v === "" ? fallback : v === "true" || v === "1"
  );
/** A strict boolean: "true" or "false" (unset or empty is the fallback); anything else is an error. */
const strictBool = (fallback: boolean) =>
  z.enum(["true", "false", ""], { message: 'must be "true" or "false"' }).optional().transform((v) =>
    v === undefined || v === "" ? fallback : v === "true"
  );
const int = (fallback: number, min: number, max: number) =>
  z.string().optional().transform((v, ctx) => {
    if (v === undefined || v.trim() === "") return fallback;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      ctx.addIssue({ code: "custom", message: `must be an integer between ${min} and ${max}, got "${v}"` });
      return z.NEVER;
    }
    return n;
  });
const optionalText = z.string().optional().transform((v) => (v === undefined || v.trim() === "" ? undefined : v));
const postgresUrl = optionalText.refine((v) => v === undefined || /^postgres(ql)?:\/\//.test(v), {
  message: "must be a postgres:// or postgresql:// URL",
});

/** How the mailer reuses SMTP connections within an isolate (SMTP_POOL_*). */
export type SmtpPool = { maxConnections: number; maxMessages: number; idleMs: number };

/** The SMTP_POOL_* defaults. */
export const smtpPoolDefaults: SmtpPool = { maxConnections: 5, maxMessages: 100, idleMs: 5000 };

const envSchema = z.object({
  PORT: int(8000, 0, 65535),
  PUBSUB_VERIFY: strictBool(true),
  PUBSUB_JWKS_URL: z.url({ protocol: /^https?$/ }).default("https://www.googleapis.com/oauth2/v3/certs"),
  PUBSUB_AUDIENCE: optionalText,
  PUBSUB_SERVICE_ACCOUNTS: optionalText.transform((v) =>
    (v ?? "").split(",").map((s) => s.trim().toLowerCase()).filter((s) => s !== "")
  ),
  SMTP_HOST: z.string().trim().min(1, "is required"),
  SMTP_PORT: int(465, 1, 65535),
  SMTP_SECURE: bool(true),
  SMTP_USER: optionalText,
  SMTP_PASSWORD: optionalText,
  SMTP_FROM: z.string().trim().min(3, "is required").refine((v) => !/[\r\n]/.test(v), "must be one line"),
  SMTP_FAMILY: z.enum(["4", "6", "auto", ""], { message: 'must be "4", "6" or "auto"' }).optional().transform((v) =>
    v === "6" ? 6 as const : v === "auto" ? "auto" as const : 4 as const
  ),
  SMTP_CONNECTION_TIMEOUT_MS: int(10_000, 100, 600_000),
  SMTP_GREETING_TIMEOUT_MS: int(10_000, 100, 600_000),
  SMTP_SOCKET_TIMEOUT_MS: int(30_000, 100, 600_000),
  SMTP_POOL_MAX_CONNECTIONS: int(smtpPoolDefaults.maxConnections, 0, 100),
  SMTP_POOL_MAX_MESSAGES: int(smtpPoolDefaults.maxMessages, 1, 100_000),
  SMTP_POOL_IDLE_MS: int(smtpPoolDefaults.idleMs, 100, 600_000),
  TRACKING_MODE: z.enum(["optional", "required"]).default("optional"),
  DELIVERY_STATUS_DATABASE_URL: postgresUrl,
  SUPABASE_DB_URL: postgresUrl,
  TRACKER_POOL_SIZE: int(3, 1, 50),
  TRACKER_BATCH_MAX: int(20, 1, 50),
  TRACKER_TIMEOUT_MS: int(5_000, 50, 120_000),
  TRACKER_BREAKER_THRESHOLD: int(3, 1, 1000),
  TRACKER_BREAKER_COOLDOWN_MS: int(30_000, 10, 3_600_000),
  SWEEP_SECRET: optionalText.refine((v) => v === undefined || v.length >= 16, "must be at least 16 characters"),
  SWEEP_BATCH_SIZE: int(20, 1, 500),
  SWEEP_TIME_BUDGET_MS: int(20_000, 100, 600_000),
  LEASE_SECONDS: int(60, 1, 3600),
  LOG_LEVEL: z.enum(["debug", "info", "warn", "error"]).default("info"),
  SUPABASE_URL: optionalText.refine((v) => v === undefined || /^https?:\/\//.test(v), "must be an http(s) URL"),
  JWT_SECRET: optionalText,
  SUPABASE_JWT_SECRET: optionalText,
  USER_JWT_ISSUER: optionalText.refine((v) => v === undefined || /^https?:\/\//.test(v), "must be an http(s) URL"),
  DASHBOARD_TOKEN: optionalText.refine((v) => v === undefined || v.length >= 16, "must be at least 16 characters"),
  WEBHOOK_TIMEOUT_MS: int(15_000, 100, 120_000),
  WEBHOOK_CONCURRENCY: int(8, 1, 64),
  WEBHOOK_BATCH_SIZE: int(50, 1, 1000),
  // Transport security (issue 10 items 7 and 8): TLS to the relay, webhook targets.
  SMTP_REQUIRE_TLS: bool(true),
  SMTP_CA_CERT: optionalText.refine((v) => v === undefined || v.includes("-----BEGIN CERTIFICATE-----"), {
    message: "must be PEM (-----BEGIN CERTIFICATE-----)",
  }),
  WEBHOOK_ALLOW_PRIVATE: bool(false),
  METRICS_TOKEN: optionalText.refine((v) => v === undefined || v.length >= 16, "must be at least 16 characters"),
});

/** The validated configuration the worker runs with. */
export type Config = {
  port: number;
  pubsub: { verify: boolean; jwksUrl: string; audience?: string; serviceAccounts: string[] };
  smtp: {
    host: string;
    port: number;
    secure: boolean;
    user?: string;
    password?: string;
    from: string;
    /** The address family used to reach the relay: IPv4 only (the default), IPv6 only, or both (IPv6 first). */
    family?: 4 | 6 | "auto";
    connectionTimeoutMs: number;
    greetingTimeoutMs: number;
    socketTimeoutMs: number;
    /** STARTTLS is mandatory when not `secure` (false only for a local sink). */
    requireTls: boolean;
    /** Extra CA certificate(s), PEM, trusted for the relay. */
    caCert?: string;
    /** Connection reuse within the isolate (smtpPoolDefaults when absent); maxConnections 0: none. */
    pool?: SmtpPool;
  };
  tracking: {
    mode: "optional" | "required";
    databaseUrl?: string;
    poolSize: number;
    /** Calls of one kind made in one statement at most (tracker_batch.ts). */
    batchMax: number;
    timeoutMs: number;
    breakerThreshold: number;
    breakerCooldownMs: number;
    /** The SMTP relay host (SMTP_HOST) the tracker records with each attempt's outcome. */
    relay?: string;
  };
  sweep: { secret?: string; batchSize: number; timeBudgetMs: number };
  leaseSeconds: number;
  logLevel: "debug" | "info" | "warn" | "error";
  /** How user tokens are verified (the deliveries endpoint and the dashboard), and the dashboard token. */
  api: { jwtSecret?: string; jwksUrl?: string; jwtIssuer?: string; dashboardToken?: string };
  webhooks: { timeoutMs: number; concurrency: number; batchSize: number; allowPrivate: boolean };
  /** The bearer token of the Prometheus route (none: the route answers 403). */
  metrics: { token?: string };
};

/** A configuration error; its message names every variable that is wrong. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Reads and validates the environment once; throws ConfigError naming each wrong variable. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join(".") || "environment"} ${i.message}`);
    throw new ConfigError(`invalid configuration: ${problems.join("; ")}`);
  }
  const e = parsed.data;
  const problems: string[] = [];
  if (e.PUBSUB_VERIFY && !e.PUBSUB_AUDIENCE) problems.push("PUBSUB_AUDIENCE is required unless PUBSUB_VERIFY=false");
  if (e.PUBSUB_VERIFY && e.PUBSUB_SERVICE_ACCOUNTS.length === 0) {
    problems.push("PUBSUB_SERVICE_ACCOUNTS is required unless PUBSUB_VERIFY=false");
  }
  if (e.SMTP_USER && !e.SMTP_PASSWORD) problems.push("SMTP_PASSWORD is required when SMTP_USER is set");
  if (e.SMTP_USER && !e.SMTP_SECURE && !e.SMTP_REQUIRE_TLS && !isLoopbackHost(e.SMTP_HOST)) {
    problems.push("SMTP_REQUIRE_TLS=false with SMTP_USER would send the credentials in clear: only to a loopback host");
  }
  const databaseUrl = e.DELIVERY_STATUS_DATABASE_URL ?? e.SUPABASE_DB_URL;
  if (e.TRACKING_MODE === "required" && !databaseUrl) {
    problems.push("DELIVERY_STATUS_DATABASE_URL (or SUPABASE_DB_URL) is required when TRACKING_MODE=required");
  }
  if (problems.length > 0) throw new ConfigError(`invalid configuration: ${problems.join("; ")}`);
  const supabaseUrl = e.SUPABASE_URL?.replace(/\/+$/, "");
  return {
    port: e.PORT,
    pubsub: {
      verify: e.PUBSUB_VERIFY,
      jwksUrl: e.PUBSUB_JWKS_URL,
      audience: e.PUBSUB_AUDIENCE,
      serviceAccounts: e.PUBSUB_SERVICE_ACCOUNTS,
    },
    smtp: {
      host: e.SMTP_HOST,
      port: e.SMTP_PORT,
      secure: e.SMTP_SECURE,
      user: e.SMTP_USER,
      password: e.SMTP_PASSWORD,
      from: e.SMTP_FROM,
      family: e.SMTP_FAMILY,
      connectionTimeoutMs: e.SMTP_CONNECTION_TIMEOUT_MS,
      greetingTimeoutMs: e.SMTP_GREETING_TIMEOUT_MS,
      socketTimeoutMs: e.SMTP_SOCKET_TIMEOUT_MS,
      requireTls: e.SMTP_REQUIRE_TLS,
      caCert: e.SMTP_CA_CERT,
      pool: {
        maxConnections: e.SMTP_POOL_MAX_CONNECTIONS,
        maxMessages: e.SMTP_POOL_MAX_MESSAGES,
        idleMs: e.SMTP_POOL_IDLE_MS,
      },
    },
    tracking: {
      mode: e.TRACKING_MODE,
      databaseUrl,
      poolSize: e.TRACKER_POOL_SIZE,
      batchMax: e.TRACKER_BATCH_MAX,
      timeoutMs: e.TRACKER_TIMEOUT_MS,
      breakerThreshold: e.TRACKER_BREAKER_THRESHOLD,
      breakerCooldownMs: e.TRACKER_BREAKER_COOLDOWN_MS,
      relay: e.SMTP_HOST,
    },
    sweep: { secret: e.SWEEP_SECRET, batchSize: e.SWEEP_BATCH_SIZE, timeBudgetMs: e.SWEEP_TIME_BUDGET_MS },
    leaseSeconds: e.LEASE_SECONDS,
    logLevel: e.LOG_LEVEL,
    api: {
      jwtSecret: e.JWT_SECRET ?? e.SUPABASE_JWT_SECRET,
      jwksUrl: supabaseUrl ? `${supabaseUrl}/auth/v1/.well-known/jwks.json` : undefined,
      jwtIssuer: e.USER_JWT_ISSUER ?? (supabaseUrl ? `${supabaseUrl}/auth/v1` : undefined),
      dashboardToken: e.DASHBOARD_TOKEN,
    },
    webhooks: {
      timeoutMs: e.WEBHOOK_TIMEOUT_MS,
      concurrency: e.WEBHOOK_CONCURRENCY,
      batchSize: e.WEBHOOK_BATCH_SIZE,
      allowPrivate: e.WEBHOOK_ALLOW_PRIVATE,
    },
    metrics: { token: e.METRICS_TOKEN },
  };
}

/** Whether an SMTP host is this machine (traffic that never crosses a network). */
function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, "$1");
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
