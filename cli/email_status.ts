/**
 * email-status: look up and act on email deliveries from a terminal (support staff and operators).
 *
 *   deno task email-status <delivery_id>                       the delivery and its timeline
 *   deno task email-status list [--status S] [--workflow W] [--recipient R] [--since 24h] [--limit N]
 *   deno task email-status requeue <delivery_id>... [--reason R] [--yes]
 *   deno task email-status requeue --dead-letters [--workflow W] [--since 7d] [--reason R] [--yes]
 *   deno task email-status purge [--older-than 30d] [--reason R] [--yes]   (default: email.settings retention)
 *   deno task email-status metrics [--since 24h] [--workflow W]
 *   deno task email-status webhooks ... | suppressions ...   (cli/webhooks.ts, cli/suppressions.ts; Postgres only)
 *   deno task email-status dashboard [--url <function URL>] [--port N]   the dashboard on 127.0.0.1 (cli/dashboard.ts)
 *   --json on every command prints JSON for scripts; colour only on a terminal (and never with NO_COLOR).
 *
 * Connection, read once from the environment: DELIVERY_STATUS_DATABASE_URL or DATABASE_URL (Postgres,
 * directly), else SUPABASE_URL with SUPABASE_SERVICE_ROLE_KEY (PostgREST, schema email_api). Every
 * command goes through the email_api schema, so both paths do the same thing. Requeue and purge are
 * recorded in the audit trail with the actor `cli:<os user>` and the reason.
 * Exit codes: 0 done, 1 error, 2 bad usage, 3 not found.
 */
import { parseArgs } from "node:util";
import { userInfo } from "node:os";
import postgres from "postgres";
import { z } from "zod";
import { dashboardCommand } from "./dashboard.ts";
import { cliSql } from "./sql_subcommand.ts";
import { suppressionsCommand } from "./suppressions.ts";
import { webhooksCommand } from "./webhooks.ts";
import { safeText, safeValue } from "./terminal.ts";

/** A delivery as the API lists it (email_api.deliveries). */
export type Delivery = {
  delivery_id: string;
  workflow: string;
  recipient: string;
  user_id: string | null;
  status: string;
  attempts: number;
  max_attempts: number;
  last_error_code: string | null;
  last_error_message: string | null;
  queued_at: string;
  last_attempted_at: string | null;
  next_attempt_at: string | null;
  sent_at: string | null;
  completed_at: string | null;
  provider_message_id: string | null;
  provider_response: string | null;
};

/** One event of a delivery's timeline. */
export type DeliveryEvent = {
  id: number;
  from_status: string | null;
  to_status: string;
  attempt: number;
  error_code: string | null;
  error_message: string | null;
  detail: Record<string, unknown>;
  actor: string;
  created_at: string;
};

/** Filters of `list`. */
export type ListFilters = { status?: string; workflow?: string; recipient?: string; since?: Date; limit: number };

/** What the CLI asks of the database; the same over Postgres and over PostgREST. */
export type Api = {
  getDelivery(id: string): Promise<(Delivery & { events: DeliveryEvent[] }) | null>;
  list(filters: ListFilters): Promise<Delivery[]>;
  requeue(ids: string[], reason: string): Promise<Delivery[]>;
  requeueDeadLetters(filter: { workflow?: string; since?: Date; reason: string }): Promise<Delivery[]>;
  purgeDeadLetters(filter: { olderThanSeconds?: number; reason: string }): Promise<Delivery[]>;
  metrics(filter: { since: Date; until: Date; workflow?: string }): Promise<Record<string, unknown>>;
  close(): Promise<void>;
};

/** An error the CLI explains to the user and exits with. */
export class CliError extends Error {
  /** Creates an error with its exit code. */
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}

const optional = z.string().optional().transform((v) => (v && v.trim() !== "" ? v.trim() : undefined));
const envSchema = z.object({
  DELIVERY_STATUS_DATABASE_URL: optional,
  DATABASE_URL: optional,
  SUPABASE_URL: optional,
  SUPABASE_SERVICE_ROLE_KEY: optional,
});

/** Picks the connection from the environment: a Postgres URL, else PostgREST with the service key. */
export function connectionFromEnv(env: Record<string, string | undefined>):
  | { kind: "postgres"; url: string }
  | { kind: "rest"; url: string; key: string } {
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

// ---------------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------------

/** The API over a direct Postgres connection (npm:postgres). */
export function postgresApi(url: string, actor: string): Api {
  const sql = postgres(url, { max: 1, connect_timeout: 5, idle_timeout: 5, onnotice: () => {}, fetch_types: false });
  let prepared = false;
  const ready = async () => {
    if (!prepared) {
      await sql`select set_config('email.actor', ${actor}, false), set_config('application_name', 'email-status', false)`;
      prepared = true;
    }
  };
  const rows = (r: readonly unknown[]) => [...r] as Delivery[];
  return {
    async getDelivery(id) {
      await ready();
      const [row] = await sql`select email_api.get_delivery(${id}) as doc`;
      return row?.doc ?? null;
    },
    async list(f) {
      await ready();
      return rows(
        await sql`select * from email_api.deliveries where true
          ${f.status ? sql`and status = ${f.status}` : sql``}
          ${f.workflow ? sql`and workflow = ${f.workflow}` : sql``}
          ${f.recipient ? sql`and lower(recipient) = lower(${f.recipient})` : sql``}
          ${f.since ? sql`and queued_at >= ${f.since}` : sql``}
          order by queued_at desc, delivery_id limit ${f.limit}`,
      );
    },
    async requeue(ids, reason) {
      await ready();
      return rows(
        await sql`select * from email_api.requeue(
          array(select jsonb_array_elements_text(${JSON.stringify(ids)}::text::jsonb)), ${reason}, ${actor})`,
      );
    },
    async requeueDeadLetters(f) {
      await ready();
      return rows(
        await sql`select * from email_api.requeue_dead_letters(${f.workflow ?? null}, ${
          f.since ?? null
        }::timestamptz, ${f.reason}, ${actor})`,
      );
    },
    async purgeDeadLetters(f) {
      await ready();
      const olderThan = f.olderThanSeconds === undefined ? null : `${f.olderThanSeconds} seconds`;
      return rows(await sql`select * from email_api.purge_dead_letters(${olderThan}::interval, ${f.reason}, ${actor})`);
    },
    async metrics(f) {
      await ready();
      const [row] = await sql`select email_api.metrics(${f.since}, ${f.until}, ${f.workflow ?? null}) as doc`;
      return row.doc;
    },
    async close() {
      await sql.end({ timeout: 2 });
    },
  };
}

/** The API over PostgREST (`<SUPABASE_URL>/rest/v1`, profile email_api) with the service role key. */
export function restApi(baseUrl: string, key: string, actor: string): Api {
  const headers = {
    apikey: key,
    authorization: `Bearer ${key}`,
    "accept-profile": "email_api",
    "content-profile": "email_api",
    "content-type": "application/json",
    accept: "application/json",
  };
  const call = async (path: string, init: RequestInit = {}) => {
    let res: Response;
    try {
      res = await fetch(`${baseUrl}/rest/v1/${path}`, { ...init, headers, signal: AbortSignal.timeout(15_000) });
    } catch (e) {
      throw new CliError(`cannot reach ${baseUrl}: ${e instanceof Error ? e.message : e}`);
    }
    const text = await res.text();
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = { message: text };
    }
    if (!res.ok) {
      const b = (body ?? {}) as { code?: string; message?: string; hint?: string };
      throw Object.assign(new Error(b.message ?? `HTTP ${res.status}`), {
        code: b.code,
        hint: b.hint,
        status: res.status,
      });
    }
    return body;
  };
  const rpc = (name: string, args: Record<string, unknown>) =>
    call(`rpc/${name}`, { method: "POST", body: JSON.stringify(args) });
  return {
    async getDelivery(id) {
      return (await rpc("get_delivery", { delivery_id: id })) as Awaited<ReturnType<Api["getDelivery"]>>;
    },
    async list(f) {
      const q = new URLSearchParams({ select: "*", order: "queued_at.desc,delivery_id", limit: String(f.limit) });
      if (f.status) q.set("status", `eq.${f.status}`);
      if (f.workflow) q.set("workflow", `eq.${f.workflow}`);
      if (f.recipient) q.set("recipient", `ilike.${f.recipient.replace(/[%_*\\]/g, "\\$&")}`);
      if (f.since) q.set("queued_at", `gte.${f.since.toISOString()}`);
      return (await call(`deliveries?${q}`)) as Delivery[];
    },
    async requeue(ids, reason) {
      return (await rpc("requeue", { delivery_ids: ids, reason, actor })) as Delivery[];
    },
    async requeueDeadLetters(f) {
      return (await rpc("requeue_dead_letters", {
        workflow: f.workflow ?? null,
        since: f.since?.toISOString() ?? null,
        reason: f.reason,
        actor,
      })) as Delivery[];
    },
    async purgeDeadLetters(f) {
      const olderThan = f.olderThanSeconds === undefined ? null : `${f.olderThanSeconds} seconds`;
      return (await rpc("purge_dead_letters", { older_than: olderThan, reason: f.reason, actor })) as Delivery[];
    },
    async metrics(f) {
      return (await rpc("metrics", {
        since: f.since.toISOString(),
        until: f.until.toISOString(),
        workflow: f.workflow ?? null,
      })) as Record<string, unknown>;
    },
    async close() {},
  };
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

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

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

const deliveryIdPattern = /^[A-Za-z0-9._:-]{1,200}$/;
const statuses = ["queued", "in_progress", "retrying", "sent", "failed", "dead_letter", "purged"];

function checkId(id: string): string {
  if (!deliveryIdPattern.test(id)) {
    throw new CliError(`not a delivery id: ${JSON.stringify(id)} (1 to 200 characters of A-Z a-z 0-9 . _ : -)`, 2);
  }
  return id;
}

const usage = `usage:
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

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/** Colours, or none when stdout is not a terminal or NO_COLOR is set. */
export function palette(enabled: boolean) {
  const c = (code: string) => (s: string) => enabled ? `\x1b[${code}m${s}\x1b[0m` : s;
  return { bold: c("1"), dim: c("2"), red: c("31"), green: c("32"), yellow: c("33"), cyan: c("36"), gray: c("90") };
}
type Palette = ReturnType<typeof palette>;

function statusColour(p: Palette, status: string): string {
  const f = { sent: p.green, failed: p.red, dead_letter: p.red, retrying: p.yellow, purged: p.gray }[status] ?? p.cyan;
  return f(status);
}

function when(ts: string | null): string {
  if (!ts) return "-";
  return new Date(ts).toISOString().replace("T", " ").replace(/\.(\d{3})Z$/, ".$1Z");
}

function ago(ts: string | null, now = Date.now()): string {
  if (!ts) return "";
  const s = Math.round((now - new Date(ts).getTime()) / 1000);
  if (Math.abs(s) < 90) return `${s}s ago`;
  if (Math.abs(s) < 5400) return `${Math.round(s / 60)}m ago`;
  if (Math.abs(s) < 172800) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

function table(rows: string[][], p: Palette): string {
  // deno-lint-ignore no-control-regex
  const visible = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, "").length;
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => visible(r[i] ?? ""))));
  return rows.map((r, ri) =>
    r.map((cell, i) => {
      const padded = cell + " ".repeat(widths[i] - visible(cell));
      return ri === 0 ? p.bold(padded) : padded;
    }).join("  ").trimEnd()
  ).join("\n");
}

/** The delivery and its timeline, readable at a glance (stored text with its control characters shown, not obeyed). */
export function formatDelivery(delivery: Delivery & { events: DeliveryEvent[] }, p: Palette): string {
  const d = safeValue(delivery);
  const lines = [
    `${p.bold("delivery")}   ${d.delivery_id}`,
    `${p.bold("status")}     ${statusColour(p, d.status)}  (attempt ${d.attempts} of ${d.max_attempts})`,
    `${p.bold("workflow")}   ${d.workflow}`,
    `${p.bold("recipient")}  ${d.recipient}${d.user_id ? p.dim(`  user ${d.user_id}`) : ""}`,
    `${p.bold("queued")}     ${when(d.queued_at)}  ${p.dim(ago(d.queued_at))}`,
  ];
  if (d.sent_at) lines.push(`${p.bold("sent")}       ${when(d.sent_at)}  ${p.dim(ago(d.sent_at))}`);
  if (d.next_attempt_at) lines.push(`${p.bold("next try")}   ${when(d.next_attempt_at)}`);
  if (d.last_error_code) {
    lines.push(`${p.bold("last error")} ${p.red(d.last_error_code)}: ${d.last_error_message ?? ""}`);
  }
  if (d.provider_message_id) {
    lines.push(`${p.bold("provider")}   ${d.provider_message_id} ${p.dim(d.provider_response ?? "")}`);
  }
  lines.push("", p.bold("timeline"));
  for (const e of d.events) {
    const move = `${e.from_status ? statusColour(p, e.from_status) : "·"} → ${statusColour(p, e.to_status)}`;
    const extra: string[] = [];
    if (e.error_code) extra.push(p.red(`${e.error_code}: ${e.error_message ?? ""}`));
    if (typeof e.detail?.reason === "string") extra.push(`reason: ${e.detail.reason}`);
    if (typeof e.detail?.provider_message_id === "string") extra.push(p.dim(String(e.detail.provider_message_id)));
    lines.push(
      `  ${p.dim(when(e.created_at))}  ${move}  #${e.attempt}  ${p.dim(e.actor)}${
        extra.length ? "  " + extra.join("  ") : ""
      }`,
    );
  }
  return lines.join("\n");
}

/** Deliveries as a table (stored text with its control characters shown, not obeyed). */
export function formatList(deliveries: Delivery[], p: Palette): string {
  if (deliveries.length === 0) return p.dim("no deliveries match");
  const rows = safeValue(deliveries);
  return table([
    ["DELIVERY", "STATUS", "WORKFLOW", "RECIPIENT", "ATTEMPTS", "QUEUED", "LAST ERROR"],
    ...rows.map((d) => [
      d.delivery_id,
      statusColour(p, d.status),
      d.workflow,
      d.recipient,
      `${d.attempts}/${d.max_attempts}`,
      `${when(d.queued_at)} ${p.dim(ago(d.queued_at))}`,
      d.last_error_code ?? "",
    ]),
  ], p);
}

type WorkflowMetrics = {
  workflow?: string;
  total: number;
  by_status: Record<string, number>;
  success_rate: number | null;
  avg_attempts: number | null;
  latency_ms: { p50: number | null; p95: number | null; p99: number | null };
};

/** Metrics as tables (stored text with its control characters shown, not obeyed). */
export function formatMetrics(metrics: Record<string, unknown>, p: Palette): string {
  const m = safeValue(metrics);
  const w = m.window as { since: string; until: string; workflow: string | null };
  const totals = m.totals as WorkflowMetrics;
  const flows = m.workflows as WorkflowMetrics[];
  const errors = m.errors as { workflow: string; error_code: string; deliveries: number }[];
  const dlq = m.dead_letter_queue as {
    size: number;
    oldest_age_seconds: number | null;
    workflows: { workflow: string; size: number; oldest_age_seconds: number }[];
  };
  const pct = (v: number | null) => v === null ? "-" : `${(v * 100).toFixed(1)}%`;
  const ms = (v: number | null) => v === null ? "-" : v >= 1000 ? `${(v / 1000).toFixed(1)}s` : `${Math.round(v)}ms`;
  const age = (s: number | null) =>
    s === null ? "-" : ago(new Date(Date.now() - s * 1000).toISOString()).replace(" ago", "");
  const row = (name: string, x: WorkflowMetrics) => [
    name,
    String(x.total),
    String(x.by_status.sent ?? 0),
    String(x.by_status.failed ?? 0),
    String((x.by_status.dead_letter ?? 0) + (x.by_status.purged ?? 0)),
    String((x.by_status.queued ?? 0) + (x.by_status.in_progress ?? 0) + (x.by_status.retrying ?? 0)),
    pct(x.success_rate),
    x.avg_attempts === null ? "-" : Number(x.avg_attempts).toFixed(2),
    ms(x.latency_ms.p50),
    ms(x.latency_ms.p95),
    ms(x.latency_ms.p99),
  ];
  const out = [
    p.bold(`deliveries queued ${when(w.since)} .. ${when(w.until)}${w.workflow ? ` (workflow ${w.workflow})` : ""}`),
    table([
      ["WORKFLOW", "TOTAL", "SENT", "FAILED", "DEAD", "OPEN", "SUCCESS", "ATTEMPTS", "P50", "P95", "P99"],
      ...flows.map((x) => row(x.workflow ?? "", x)),
      row("(all)", totals),
    ], p),
    "",
    p.bold("errors by code"),
    errors.length
      ? table([
        ["WORKFLOW", "ERROR", "DELIVERIES"],
        ...errors.map((e) => [e.workflow, p.red(e.error_code), String(e.deliveries)]),
      ], p)
      : p.dim("none"),
    "",
    `${p.bold("dead-letter queue")}  ${dlq.size} ${dlq.size ? p.dim(`(oldest ${age(dlq.oldest_age_seconds)})`) : ""}`
      .trimEnd(),
  ];
  for (const q of dlq.workflows) {
    out.push(`  ${q.workflow}  ${q.size}  ${p.dim(`oldest ${age(q.oldest_age_seconds)}`)}`);
  }
  return out.join("\n");
}

/**
 * Asks `question` on stderr (stdout carries only the command's output, JSON included) and reads the
 * answer from a terminal. Without a terminal nobody can answer: it refuses (--yes confirms up front).
 */
async function confirm(question: string): Promise<boolean> {
  if (!Deno.stdin.isTerminal()) {
    throw new CliError(`${question} Not done: stdin is not a terminal to answer on; pass --yes to confirm`, 2);
  }
  await Deno.stderr.write(new TextEncoder().encode(`${safeText(question)} [y/N] `));
  const buf = new Uint8Array(1024);
  const n = await Deno.stdin.read(buf);
  const answer = n === null ? "" : new TextDecoder().decode(buf.subarray(0, n)).trim().toLowerCase();
  return answer === "y" || answer === "yes";
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/** Runs the CLI with `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  if (args[0] === "webhooks") return await webhooksCommand(args.slice(1));
  if (args[0] === "suppressions") return await suppressionsCommand(args.slice(1));
  if (args[0] === "dashboard") {
    return await dashboardCommand(args.slice(1), { connect: () => cliSql(Deno.env.toObject()) });
  }
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        json: { type: "boolean", default: false },
        yes: { type: "boolean", short: "y", default: false },
        status: { type: "string" },
        workflow: { type: "string" },
        recipient: { type: "string" },
        since: { type: "string" },
        limit: { type: "string" },
        reason: { type: "string" },
        "dead-letters": { type: "boolean", default: false },
        "older-than": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    console.error(`email-status: ${e instanceof Error ? e.message : e}\n${usage}`);
    return 2;
  }
  const { values: o, positionals } = parsed;
  if (o.help || positionals.length === 0) {
    (o.help ? console.log : console.error)(usage);
    return o.help ? 0 : 2;
  }
  const p = palette(Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR"));
  const print = (value: unknown, human: () => string) => console.log(o.json ? JSON.stringify(value, null, 2) : human());
  const fail = (e: CliError) => {
    if (o.json) console.log(JSON.stringify({ error: { message: e.message, exit_code: e.exitCode } }));
    console.error(`email-status: ${safeText(e.message, { keepNewlines: true })}`);
    return e.exitCode;
  };

  let api: Api | undefined;
  let where = "";
  try {
    const [command, ...rest] = positionals;
    const known = ["list", "requeue", "purge", "metrics", "show"];
    // Validate the arguments before connecting, so usage errors never need a database.
    if (!known.includes(command)) {
      if (rest.length) throw new CliError(`unknown command ${JSON.stringify(command)}\n${usage}`, 2);
      checkId(command);
    }
    if (command === "show") checkId(rest[0] ?? "");
    if (o.status && !statuses.includes(o.status)) {
      throw new CliError(`--status must be one of ${statuses.join(", ")}`, 2);
    }
    const limit = o.limit === undefined ? 50 : Number(o.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 10000) throw new CliError("--limit must be 1 to 10000", 2);
    const since = o.since === undefined ? undefined : parseSince(o.since);
    const olderThan = o["older-than"] === undefined ? undefined : parseDuration(o["older-than"]);
    if (command === "requeue") {
      if (o["dead-letters"] === (rest.length > 0)) {
        throw new CliError("requeue takes delivery ids or --dead-letters (with --workflow/--since), not both", 2);
      }
      rest.forEach(checkId);
    }

    const conn = connectionFromEnv(Deno.env.toObject());
    const actor = cliActor();
    where = conn.kind === "postgres" ? describeUrl(conn.url) : conn.url;
    api = conn.kind === "postgres" ? postgresApi(conn.url, actor) : restApi(conn.url, conn.key, actor);
    const reason = o.reason?.trim() || `email-status ${command} by ${actor}`;

    if (!known.includes(command) || command === "show") {
      const id = command === "show" ? rest[0] : command;
      const d = await api.getDelivery(id);
      if (!d) throw new CliError(`delivery ${id} not found`, 3);
      print(d, () => formatDelivery(d, p));
    } else if (command === "list") {
      const rows = await api.list({ status: o.status, workflow: o.workflow, recipient: o.recipient, since, limit });
      print(rows, () => formatList(rows, p));
    } else if (command === "metrics") {
      const m = await api.metrics({
        since: since ?? new Date(Date.now() - 86400_000),
        until: new Date(Date.now() + 1000),
        workflow: o.workflow,
      });
      print(m, () => formatMetrics(m, p));
    } else if (command === "requeue") {
      const what = rest.length
        ? `Requeue ${rest.length} deliver${rest.length === 1 ? "y" : "ies"} (${rest.join(", ")})?`
        : `Requeue every dead letter${o.workflow ? ` of workflow ${o.workflow}` : ""}${
          since ? ` dead-lettered since ${since.toISOString()}` : ""
        }?`;
      if (!o.yes && !(await confirm(what))) throw new CliError("nothing requeued", 1);
      const done = rest.length
        ? await api.requeue(rest, reason)
        : await api.requeueDeadLetters({ workflow: o.workflow, since, reason });
      print(done, () => `requeued ${done.length}\n${done.length ? formatList(done, p) : ""}`.trimEnd());
    } else if (command === "purge") {
      const what = `Purge dead letters older than ${
        o["older-than"] ?? "the retention setting (email.settings)"
      }? Their payloads are erased for good.`;
      if (!o.yes && !(await confirm(what))) throw new CliError("nothing purged", 1);
      const done = await api.purgeDeadLetters({ olderThanSeconds: olderThan, reason });
      print(done, () => `purged ${done.length}\n${done.length ? formatList(done, p) : ""}`.trimEnd());
    }
    return 0;
  } catch (e) {
    return fail(explainError(e, where));
  } finally {
    await api?.close().catch(() => {});
  }
}

function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return "(unparsable URL)";
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
