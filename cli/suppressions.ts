/**
 * `email-status suppressions`: the suppression list (addresses never sent to again).
 *
 *   email-status suppressions list [--search TEXT] [--limit N]
 *   email-status suppressions check <address>
 *   email-status suppressions add <address> --reason R
 *   email-status suppressions remove <address>
 *   --json prints JSON. Needs a Postgres URL (DATABASE_URL or DELIVERY_STATUS_DATABASE_URL): the list
 *   lives in schema `email`, which PostgREST does not expose. Exit codes: 0 done, 1 error, 2 bad usage,
 *   3 not found.
 */
import { CliError, parseLimit } from "./common.ts";
import { table, whenToSecond } from "./format.ts";
import { runSqlSubcommand } from "./sql_subcommand.ts";
import { safeText, safeValue } from "./terminal.ts";

/** One entry of the suppression list. */
export type Suppression = {
  address: string;
  reason: string;
  source: "operator" | "hard_bounce";
  delivery_id: string | null;
  error_code: string | null;
  created_at: Date;
  created_by: string;
};

/** Usage of `email-status suppressions`. */
export const suppressionsUsage = `usage:
  email-status suppressions list [--search TEXT] [--limit N] [--json]
  email-status suppressions check <address> [--json]
  email-status suppressions add <address> --reason R [--json]
  email-status suppressions remove <address> [--json]`;

/** Formats suppressions as a table (stored text with its control characters shown, not obeyed). */
export function formatSuppressions(suppressions: Suppression[]): string {
  if (suppressions.length === 0) return "no suppressed addresses";
  const rows = safeValue(suppressions);
  return table([
    ["ADDRESS", "SOURCE", "SINCE", "DELIVERY", "REASON"],
    ...rows.map((s) => [
      s.address,
      s.source,
      whenToSecond(s.created_at),
      s.delivery_id ?? "-",
      s.reason,
    ]),
  ]);
}

/** Runs `email-status suppressions <args>`; returns the exit code. */
export function suppressionsCommand(
  args: string[],
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Promise<number> {
  const options = {
    reason: { type: "string" },
    search: { type: "string" },
    limit: { type: "string" },
  } as const;
  return runSqlSubcommand({ name: "suppressions", usage: suppressionsUsage, options }, args, env, async (
    { o, command, rest, print, connect },
  ) => {
    const needsAddress = ["check", "add", "remove"].includes(command);
    if (!["list", ...(needsAddress ? [command] : [])].includes(command) || (needsAddress && rest.length !== 1)) {
      throw new CliError(suppressionsUsage, 2);
    }
    if (command === "add" && !o.reason?.trim()) throw new CliError("add needs --reason", 2);
    const limit = parseLimit(o.limit, 100, 100000);

    const sql = await connect();
    if (command === "list") {
      const search = o.search?.trim().toLowerCase() ?? "";
      const rows = await sql<Suppression[]>`
      select * from email.suppressions
      where ${search} = '' or strpos(address, ${search}) > 0
      order by created_at desc, address limit ${limit}`;
      print(rows, () => formatSuppressions(rows));
    } else if (command === "check") {
      const rows = await sql<Suppression[]>`
      select * from email.suppressions where address = email.normalize_address(${rest[0]})`;
      print(
        { address: rest[0], suppressed: rows.length > 0, entry: rows[0] ?? null },
        () => rows.length ? `suppressed\n${formatSuppressions(rows)}` : `${safeText(rest[0])} is not suppressed`,
      );
      return rows.length ? 0 : 3;
    } else if (command === "add") {
      const [row] = await sql<Suppression[]>`select * from email.add_suppression(${rest[0]}, ${o.reason!.trim()})`;
      print(row, () => `suppressed ${safeText(row.address)}`);
    } else {
      const [{ removed }] = await sql<{ removed: boolean }[]>`select email.remove_suppression(${rest[0]}) as removed`;
      print(
        { address: rest[0], removed },
        () => removed ? `removed ${safeText(rest[0])}` : `${safeText(rest[0])} was not suppressed`,
      );
      return removed ? 0 : 3;
    }
    return 0;
  });
}
