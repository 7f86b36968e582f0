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
 *   --status takes the statuses of email.statuses (checked there over Postgres).
 *
 * Connection, read once from the environment: DELIVERY_STATUS_DATABASE_URL or DATABASE_URL (Postgres,
 * directly), else SUPABASE_URL with SUPABASE_SERVICE_ROLE_KEY (PostgREST, schema email_api). Every
 * command goes through the email_api schema, so both paths do the same thing. Requeue and purge are
 * recorded in the audit trail with the actor `cli:<os user>` and the reason.
 * Exit codes: 0 done, 1 error, 2 bad usage, 3 not found.
 *
 * This file is only the entry point: it hands each subcommand to its module (cli/deliveries.ts,
 * cli/webhooks.ts, cli/suppressions.ts, cli/dashboard.ts), which build on cli/common.ts (errors,
 * arguments, connection settings), cli/transports.ts (Postgres and PostgREST) and cli/format.ts
 * (text output). Nothing imports this file back.
 */
import { dashboardCommand } from "./dashboard.ts";
import { deliveriesCommand } from "./deliveries.ts";
import { suppressionsCommand } from "./suppressions.ts";
import { cliSql } from "./transports.ts";
import { webhooksCommand } from "./webhooks.ts";

/** The PostgREST transport, for scripts and tests that import it from the entry point. */
export { restApi } from "./transports.ts";

/** Runs the CLI with `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [subcommand, ...rest] = args;
  if (subcommand === "webhooks") return await webhooksCommand(rest);
  if (subcommand === "suppressions") return await suppressionsCommand(rest);
  if (subcommand === "dashboard") return await dashboardCommand(rest, { connect: () => cliSql(Deno.env.toObject()) });
  return await deliveriesCommand(args);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
