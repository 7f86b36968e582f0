/**
 * What every `email-status` command shares: its errors and exit codes, the connection settings read
 * from the environment, the actor written to the audit trail, durations and timestamps in arguments,
 * delivery ids, and the yes/no question before a change.
 */
import { userInfo } from "node:os";
import { z } from "zod";
import { deliveryIdRule, isDeliveryId } from "../functions/_shared/ids.ts";
import { safeText } from "./terminal.ts";

/** An error the CLI explains to the user and exits with. */
export class CliError extends Error {
  /** Creates an error with its exit code. */
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}

/** The usage of the whole CLI (each subcommand has its own --help). */
export const usage = `usage:
  email-status <delivery_id> [--json]
  email-status list [--status S] [--workflow W] [--recipient R] [--since 24h] [--limit 50] [--json]
  email-status requeue <delivery_id>... [--reason R] [--yes] [--json]
  email-status requeue --dead-letters [--workflow W] [--since 7d] [--reason R] [--yes] [--json]
  email-status purge [--older-than 30d] [--reason R] [--yes] [--json]
  email-status metrics [--since 24h] [--workflow W] [--json]
  email-status webhooks list|add|remove|enable|disable|rotate-secret|messages|replay ...   (--help for each)
  email-status suppressions list|check|add|remove ...
  email-status dashboard [--url https://<ref>.supabase.co/functions/v1/email-worker] [--port 8788]
environment: DATABASE_URL or DELIVERY_STATUS_DATABASE_URL, or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY`;

const optional = z.string().optional().transform((v) => (v && v.trim() !== "" ? v.trim() : undefined));
const envSchema = z.object({
  DELIVERY_STATUS_DATABASE_URL: optional,
  DATABASE_URL: optional,
  SUPABASE_URL: optional,
  SUPABASE_SERVICE_ROLE_KEY: optional,
});

/** Where the CLI connects: a Postgres URL, or PostgREST with the service role key. */
export type Connection = { kind: "postgres"; url: string } | { kind: "rest"; url: string; key: string };

/** Picks the connection from the environment: a Postgres URL, else PostgREST with the service key. */
export function connectionFromEnv(env: Record<string, string | undefined>): Connection {
  const e = envSchema.parse(env);
  const dbUrl = e.DELIVERY_STATUS_DATABASE_URL ?? e.DATABASE_URL;
  if (dbUrl) {
    if (!/^postgres(ql)?:\/\//.test(dbUrl)) {
      const name = e.DELIVERY_STATUS_DATABASE_URL ? "DELIVERY_STATUS_DATABASE_URL" : "DATABASE_URL";
      throw new CliError(`${name} must be a postgres:// URL`, 2);
    }
    return { kind: "postgres", url: dbUrl };
  }
  if (e.SUPABASE_URL) {
    if (!e.SUPABASE_SERVICE_ROLE_KEY) throw new CliError("SUPABASE_URL is set but SUPABASE_SERVICE_ROLE_KEY is not", 2);
    if (!URL.canParse(e.SUPABASE_URL)) throw new CliError("SUPABASE_URL is not a URL", 2);
    return { kind: "rest", url: e.SUPABASE_URL.replace(/\/+$/, ""), key: e.SUPABASE_SERVICE_ROLE_KEY };
  }
  throw new CliError(
    "no database: set DATABASE_URL (or DELIVERY_STATUS_DATABASE_URL), or SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY",
    2,
  );
}

/** The connection as error messages name it: host, port and database of a Postgres URL, or the PostgREST URL. */
export function describeConnection(conn: Connection): string {
  if (conn.kind === "rest") return conn.url;
  try {
    const u = new URL(conn.url);
    return `${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return "(unparsable URL)";
  }
}

/** The actor recorded in the audit trail for this CLI's actions. */
export function cliActor(): string {
  let name = Deno.env.get("USER") ?? Deno.env.get("USERNAME");
  try {
    name ??= userInfo().username;
  } catch {
    // no passwd entry: fall through
  }
  return `cli:${name ?? "unknown"}`;
}

/** Turns a database or PostgREST error into a message a person can act on. */
export function explainError(e: unknown, where: string): CliError {
  if (e instanceof CliError) return e;
  const err = e as { code?: string; message?: string; hint?: string; errno?: string };
  const code = err?.code ?? "";
  const message = err?.message ?? String(e);
  if (["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ETIMEDOUT", "CONNECT_TIMEOUT", "ECONNRESET"].includes(code)) {
    return new CliError(`cannot reach the database at ${where} (${code}): is it running, and is the URL right?`);
  }
  if (code === "28P01" || code === "28000") return new CliError(`the database at ${where} refused the credentials`);
  if (code === "3D000") return new CliError(`the database at ${where} does not exist`);
  if (
    code === "3F000" || code === "42P01" || code === "42883" || code === "PGRST106" || code === "PGRST202" ||
    code === "PGRST205"
  ) {
    return new CliError(
      `the email_api schema is missing or not exposed at ${where} (${message}): apply the migrations ` +
        "(supabase db push) and list email_api in [api] schemas",
    );
  }
  if (code === "42501") return new CliError(`permission denied (${message}): use a service_role key or connection`);
  if (code === "EM004") return new CliError(message, 3);
  if (/^EM00\d$/.test(code)) return new CliError(message + (err.hint ? ` (${err.hint})` : ""));
  return new CliError(`${code ? code + ": " : ""}${message}`);
}

const units: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** Parses a duration like 90s, 15m, 24h, 30d or 2w into seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*([smhdw])$/.exec(text.trim());
  if (!m) throw new CliError(`not a duration: ${JSON.stringify(text)} (use e.g. 90s, 15m, 24h, 30d, 2w)`, 2);
  return Number(m[1]) * units[m[2]];
}

/** Parses --since: a duration back from now, or an ISO timestamp. */
export function parseSince(text: string, now = new Date()): Date {
  if (/^\d+\s*[smhdw]$/.test(text.trim())) return new Date(now.getTime() - parseDuration(text) * 1000);
  const t = Date.parse(text);
  if (Number.isNaN(t)) {
    throw new CliError(`--since takes a duration (24h, 7d) or a timestamp, not ${JSON.stringify(text)}`, 2);
  }
  return new Date(t);
}

/** Parses --limit: a whole number from 1 to `max`, `fallback` when not given. */
export function parseLimit(text: string | undefined, fallback: number, max: number): number {
  const limit = text === undefined ? fallback : Number(text);
  if (!Number.isInteger(limit) || limit < 1 || limit > max) throw new CliError(`--limit must be 1 to ${max}`, 2);
  return limit;
}

/** `id` if it is a delivery id; a usage error otherwise. */
export function checkDeliveryId(id: string): string {
  if (!isDeliveryId(id)) throw new CliError(`not a delivery id: ${JSON.stringify(id)} (${deliveryIdRule})`, 2);
  return id;
}

/** Prints a command's result: `value` as JSON with --json, else the text `human()` returns. */
export function printer(json: boolean): (value: unknown, human: () => string) => void {
  return (value, human) => console.log(json ? JSON.stringify(value, null, 2) : human());
}

/**
 * Reports `error` for `command` (e.g. "email-status webhooks"): on stderr with its control characters
 * shown, not obeyed, and with --json also as `{ "error": ... }` on stdout; returns its exit code.
 */
export function reportError(error: CliError, options: { command: string; json: boolean }): number {
  if (options.json) console.log(JSON.stringify({ error: { message: error.message, exit_code: error.exitCode } }));
  console.error(`${options.command}: ${safeText(error.message, { keepNewlines: true })}`);
  return error.exitCode;
}

/**
 * Asks `question` on stderr (stdout carries only the command's output, JSON included) and reads the
 * answer from a terminal. Without a terminal nobody can answer: it refuses (--yes confirms up front).
 */
export async function confirm(question: string): Promise<boolean> {
  if (!Deno.stdin.isTerminal()) {
    throw new CliError(`${question} Not done: stdin is not a terminal to answer on; pass --yes to confirm`, 2);
  }
  await Deno.stderr.write(new TextEncoder().encode(`${safeText(question)} [y/N] `));
  const buf = new Uint8Array(1024);
  const n = await Deno.stdin.read(buf);
  const answer = n === null ? "" : new TextDecoder().decode(buf.subarray(0, n)).trim().toLowerCase();
  return answer === "y" || answer === "yes";
}
