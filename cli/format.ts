/**
 * How the CLI shows deliveries, timelines, metrics and tables on a terminal. Stored text (SMTP
 * replies, error messages, reasons, addresses) goes through safeValue first, so its control
 * characters are shown, not obeyed (cli/terminal.ts); --json output does not come through here.
 */
import { safeValue } from "./terminal.ts";
import type { Delivery, DeliveryEvent } from "./transports.ts";
import { type CountsAs, isStatus, type Status, statuses } from "../functions/_shared/statuses.gen.ts";

/** Colours, or none when stdout is not a terminal or NO_COLOR is set. */
export function palette(enabled: boolean) {
  const c = (code: string) => (s: string) => enabled ? `\x1b[${code}m${s}\x1b[0m` : s;
  return { bold: c("1"), dim: c("2"), red: c("31"), green: c("32"), yellow: c("33"), cyan: c("36"), gray: c("90") };
}
/** The colours of `palette`. */
export type Palette = ReturnType<typeof palette>;

/** Every status of email.statuses has its colour (the Status type makes a missing one a type error). */
const statusColours: Record<Status, (p: Palette) => (s: string) => string> = {
  sent: (p) => p.green,
  queued: (p) => p.cyan,
  in_progress: (p) => p.cyan,
  retrying: (p) => p.yellow,
  failed: (p) => p.red,
  dead_letter: (p) => p.red,
  suppressed: (p) => p.cyan,
  purged: (p) => p.gray,
};

function statusColour(p: Palette, status: string): string {
  return (isStatus(status) ? statusColours[status](p) : p.cyan)(status);
}

/** How many of `by_status` count in a metrics column (email.statuses.counts_as). */
function countIn(byStatus: Record<string, number>, column: CountsAs): number {
  return statuses.filter((s) => s.countsAs === column).reduce((n, s) => n + (byStatus[s.status] ?? 0), 0);
}

function when(ts: string | null): string {
  if (!ts) return "-";
  return new Date(ts).toISOString().replace("T", " ").replace(/\.(\d{3})Z$/, ".$1Z");
}

/** A timestamp as UTC to the second (2026-11-29 19:33:08), or "-". */
export function whenToSecond(ts: Date | string | null): string {
  return ts === null ? "-" : new Date(ts).toISOString().slice(0, 19).replace("T", " ");
}

function ago(ts: string | null, now = Date.now()): string {
  if (!ts) return "";
  const s = Math.round((now - new Date(ts).getTime()) / 1000);
  if (Math.abs(s) < 90) return `${s}s ago`;
  if (Math.abs(s) < 5400) return `${Math.round(s / 60)}m ago`;
  if (Math.abs(s) < 172800) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

/** Rows as aligned columns, the first row (the header) in bold; colour codes take no width. */
export function table(rows: string[][], p: Palette = palette(false)): string {
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
    String(countIn(x.by_status, "sent")),
    String(countIn(x.by_status, "failed")),
    String(countIn(x.by_status, "dead_letter")),
    String(countIn(x.by_status, "suppressed")),
    String(countIn(x.by_status, "open")),
    pct(x.success_rate),
    x.avg_attempts === null ? "-" : Number(x.avg_attempts).toFixed(2),
    ms(x.latency_ms.p50),
    ms(x.latency_ms.p95),
    ms(x.latency_ms.p99),
  ];
  const outcomes = (kind: "domain" | "relay") => {
    const list = (m[`${kind}s`] ?? []) as (Record<string, string | number> & { deferral_rate: number })[];
    if (!list.length) return [p.dim("no attempts in this window")];
    return [table([
      [kind.toUpperCase(), "ATTEMPTS", "SENT", "RETRYING", "FAILED", "DEAD", "DEFERRED"],
      ...list.map((o) => [
        String(o[kind]),
        String(o.outcomes),
        String(o.sent),
        String(o.retrying),
        String(o.failed),
        String(o.dead_letter),
        Number(o.deferral_rate) >= 0.2 ? p.red(pct(o.deferral_rate)) : pct(o.deferral_rate),
      ]),
    ], p)];
  };
  const out = [
    p.bold(`deliveries queued ${when(w.since)} .. ${when(w.until)}${w.workflow ? ` (workflow ${w.workflow})` : ""}`),
    table([
      ["WORKFLOW", "TOTAL", "SENT", "FAILED", "DEAD", "SUPPRESSED", "OPEN", "SUCCESS", "ATTEMPTS", "P50", "P95", "P99"],
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
    p.bold("attempt outcomes by recipient domain"),
    ...outcomes("domain"),
    "",
    p.bold("attempt outcomes by SMTP relay"),
    ...outcomes("relay"),
    "",
    `${p.bold("dead-letter queue")}  ${dlq.size} ${dlq.size ? p.dim(`(oldest ${age(dlq.oldest_age_seconds)})`) : ""}`
      .trimEnd(),
  ];
  for (const q of dlq.workflows) {
    out.push(`  ${q.workflow}  ${q.size}  ${p.dim(`oldest ${age(q.oldest_age_seconds)}`)}`);
  }
  return out.join("\n");
}
