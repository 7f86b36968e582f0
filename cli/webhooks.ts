/**
 * `email-status webhooks`: webhook endpoints and their messages.
 *
 *   email-status webhooks list
 *   email-status webhooks add <url> [--events email.sent,email.failed] [--description D]   prints the secret once
 *   email-status webhooks remove <endpoint_id>
 *   email-status webhooks enable <endpoint_id>
 *   email-status webhooks disable <endpoint_id> --reason R
 *   email-status webhooks rotate-secret <endpoint_id> [--keep 24h]       the old secret stays valid for --keep
 *   email-status webhooks messages [--endpoint ID] [--status pending|delivered|failed] [--limit N]
 *   email-status webhooks replay <message_id> [--endpoint ID]             one message again (same webhook-id)
 *   email-status webhooks replay --since T [--until T] [--endpoint ID]    every event of a time range again
 *   --json prints JSON. Needs a Postgres URL (DATABASE_URL or DELIVERY_STATUS_DATABASE_URL).
 *   `add` refuses a URL that is, or resolves to, a private, loopback, link-local or other
 *   special-purpose address, unless WEBHOOK_ALLOW_PRIVATE=true (local development).
 *   Exit codes: 0 done, 1 error, 2 bad usage, 3 not found.
 */
import { CliError, parseDuration, parseLimit, parseSince } from "./common.ts";
import { table, whenToSecond } from "./format.ts";
import { runSqlSubcommand } from "./sql_subcommand.ts";
import { safeValue } from "./terminal.ts";
import { checkTarget, loadRefusedNetworks, RefusedTarget } from "../functions/_shared/net_guard.ts";

/** An endpoint as listed (the secret only when it was just created or rotated). */
export type WebhookEndpoint = {
  id: string;
  url: string;
  description: string | null;
  event_types: string[];
  enabled: boolean;
  disabled_reason: string | null;
  failing_since: Date | null;
  created_at: Date;
  secret?: string;
  pending?: number;
  failed?: number;
};

/** Usage of `email-status webhooks`. */
export const webhooksUsage = `usage:
  email-status webhooks list [--json]
  email-status webhooks add <url> [--events email.sent,email.failed] [--description D] [--json]
  email-status webhooks remove <endpoint_id>
  email-status webhooks enable <endpoint_id>
  email-status webhooks disable <endpoint_id> --reason R
  email-status webhooks rotate-secret <endpoint_id> [--keep 24h] [--json]
  email-status webhooks messages [--endpoint ID] [--status pending|delivered|failed] [--limit N] [--json]
  email-status webhooks replay <message_id> [--endpoint ID]
  email-status webhooks replay --since T [--until T] [--endpoint ID]      (T: 24h, 7d or an ISO date)`;

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function checkUuid(id: string | undefined, what = "endpoint id"): string {
  if (!id || !uuid.test(id)) throw new CliError(`not an ${what}: ${JSON.stringify(id ?? "")}`, 2);
  return id;
}

/** Formats endpoints as a table (stored text with its control characters shown, not obeyed). */
export function formatEndpoints(endpoints: WebhookEndpoint[]): string {
  if (endpoints.length === 0) return "no webhook endpoints";
  const rows = safeValue(endpoints);
  return table([
    ["ID", "URL", "EVENTS", "STATE", "PENDING", "FAILED"],
    ...rows.map((w) => [
      w.id,
      w.url,
      w.event_types.length ? w.event_types.join(",") : "(all)",
      w.enabled
        ? (w.failing_since ? `enabled, failing since ${whenToSecond(w.failing_since)}` : "enabled")
        : `disabled: ${w.disabled_reason}`,
      String(w.pending ?? 0),
      String(w.failed ?? 0),
    ]),
  ]);
}

/** Runs `email-status webhooks <args>`; returns the exit code. */
export function webhooksCommand(
  args: string[],
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Promise<number> {
  const options = {
    events: { type: "string" },
    description: { type: "string" },
    reason: { type: "string" },
    keep: { type: "string" },
    endpoint: { type: "string" },
    status: { type: "string" },
    limit: { type: "string" },
    since: { type: "string" },
    until: { type: "string" },
  } as const;
  return runSqlSubcommand({ name: "webhooks", usage: webhooksUsage, options }, args, env, async (
    { o, command, rest, print, connect },
  ) => {
    // Validate everything before connecting, so usage errors never need a database.
    const arity: Record<string, number> = {
      list: 0,
      add: 1,
      remove: 1,
      enable: 1,
      disable: 1,
      "rotate-secret": 1,
      messages: 0,
      replay: o.since ? 0 : 1,
    };
    if (!(command in arity) || rest.length !== arity[command]) throw new CliError(webhooksUsage, 2);
    if (["remove", "enable", "disable", "rotate-secret"].includes(command)) checkUuid(rest[0]);
    if (o.endpoint !== undefined) checkUuid(o.endpoint);
    if (command === "disable" && !o.reason?.trim()) throw new CliError("disable needs --reason", 2);
    if (command === "add" && !/^https?:\/\/\S+$/.test(rest[0])) throw new CliError("the URL must be http(s)", 2);
    const events = o.events?.split(",").map((s) => s.trim()).filter((s) => s !== "") ?? [];
    const keepSeconds = o.keep === undefined ? 86400 : parseDuration(o.keep);
    if (o.status !== undefined && !["pending", "delivered", "failed"].includes(o.status)) {
      throw new CliError("--status must be pending, delivered or failed", 2);
    }
    const limit = parseLimit(o.limit, 50, 10000);
    const since = o.since === undefined ? undefined : parseSince(o.since);
    const until = o.until === undefined ? new Date(Date.now() + 1000) : parseSince(o.until);

    const sql = await connect();
    const endpointColumns =
      sql`id::text, url, description, event_types, enabled, disabled_reason, failing_since, created_at`;

    if (command === "list") {
      const rows = await sql<WebhookEndpoint[]>`
      select ${endpointColumns},
        (select count(*)::int from email.webhook_outbox o where o.endpoint_id = w.id and o.status = 'pending') as pending,
        (select count(*)::int from email.webhook_outbox o where o.endpoint_id = w.id and o.status = 'failed') as failed
      from email.webhook_endpoints w order by created_at`;
      print(rows, () => formatEndpoints(rows));
    } else if (command === "add") {
      // Webhooks reach public addresses only: the name is resolved and every address checked here,
      // the database checks the URL itself, the dispatcher checks again at send time.
      const target = new URL(rest[0]);
      if (env.WEBHOOK_ALLOW_PRIVATE === "true") {
        await sql`select set_config('email.webhook_allow_private', 'on', false)`;
      } else {
        const networks = await loadRefusedNetworks(sql);
        try {
          await checkTarget(target, { networks });
        } catch (e) {
          const why = e instanceof RefusedTarget ? e.message : `cannot resolve ${target.hostname}`;
          throw new CliError(`refusing ${target.href}: ${why} (WEBHOOK_ALLOW_PRIVATE=true allows it in development)`);
        }
      }
      const [w] = await sql<WebhookEndpoint[]>`
      select ${endpointColumns}, secret
      from email.add_webhook_endpoint(${target.href}, ${events}::text[], ${o.description ?? null})`;
      print(w, () => `${formatEndpoints([w])}\n\nsigning secret (shown once; give it to the receiver):\n${w.secret}`);
    } else if (command === "remove") {
      const [{ removed }] = await sql<{ removed: boolean }[]>`select email.remove_webhook_endpoint(${
        rest[0]
      }::uuid) as removed`;
      if (!removed) throw new CliError(`webhook endpoint ${rest[0]} not found`, 3);
      print({ id: rest[0], removed }, () => `removed ${rest[0]}`);
    } else if (command === "enable" || command === "disable") {
      const [w] = await sql<WebhookEndpoint[]>`
      select ${endpointColumns}
      from email.set_webhook_endpoint_enabled(${rest[0]}::uuid, ${command === "enable"}, ${o.reason?.trim() ?? null})`;
      print(w, () => formatEndpoints([w]));
    } else if (command === "rotate-secret") {
      const [w] = await sql<WebhookEndpoint[]>`
      select ${endpointColumns}, secret
      from email.rotate_webhook_secret(${rest[0]}::uuid, make_interval(secs => ${keepSeconds}))`;
      print(w, () => `new signing secret (the old one stays valid for ${o.keep ?? "24h"}):\n${w.secret}`);
    } else if (command === "messages") {
      const rows = await sql`
      select o.id::text, o.message_id, o.endpoint_id::text, o.event_type, o.body #>> '{data,delivery_id}' as delivery_id,
        o.status, o.attempts, o.next_attempt_at, o.last_status_code, o.last_error, o.delivered_at, o.created_at
      from email.webhook_outbox o
      where (${o.endpoint ?? null}::uuid is null or o.endpoint_id = ${o.endpoint ?? null}::uuid)
        and (${o.status ?? null}::text is null or o.status = ${o.status ?? null}::text)
      order by o.id desc limit ${limit}`;
      print(rows, () =>
        rows.length === 0 ? "no webhook messages" : table([
          ["WEBHOOK-ID", "TYPE", "DELIVERY", "STATUS", "ATTEMPTS", "NEXT", "LAST"],
          ...safeValue(rows).map((m) => [
            m.message_id,
            m.event_type,
            m.delivery_id,
            m.status,
            String(m.attempts),
            m.status === "pending" ? whenToSecond(m.next_attempt_at) : "-",
            m.last_error ?? (m.last_status_code ? String(m.last_status_code) : "-"),
          ]),
        ]));
    } else if (command === "replay") {
      const [{ n }] = since
        ? await sql<{ n: number }[]>`select email.replay_webhook_messages(${since}, ${until}, ${
          o.endpoint ?? null
        }::uuid) as n`
        : await sql<{ n: number }[]>`select email.replay_webhook_message(${rest[0]}, ${o.endpoint ?? null}::uuid) as n`;
      print({ replayed: n }, () => `${n} webhook message${n === 1 ? "" : "s"} due again`);
    }
    return 0;
  });
}
