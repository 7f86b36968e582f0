/**
 * The frame shared by the subcommands that need a direct Postgres connection (`webhooks`,
 * `suppressions`): parse the arguments, answer --help, connect with the actor set for the audit
 * trail, print JSON or text, turn errors into messages and exit codes, and close the connection.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import type postgres from "postgres";
import { cliActor, explainError, printer, reportError } from "./common.ts";
import { cliSql } from "./transports.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;
type Values<T extends Options> = ReturnType<typeof parseArgs<{ options: T; allowPositionals: true }>>["values"];

/** What a subcommand's body gets. */
export type SubcommandContext<T extends Options> = {
  /** The parsed options. */
  o: Values<T>;
  command: string;
  rest: string[];
  /** Prints `value` as JSON with --json, else the text `human()` returns. */
  print(value: unknown, human: () => string): void;
  /** Connects (once per run), with email.actor set for the audit trail. */
  connect(): Promise<postgres.Sql>;
};

/** Runs `email-status <name> <args>` with `body`; returns the exit code (0 done, 1 error, 2 bad usage, 3 not found). */
export async function runSqlSubcommand<const T extends Options>(
  spec: { name: string; usage: string; options: T },
  args: string[],
  env: Record<string, string | undefined>,
  body: (ctx: SubcommandContext<T>) => Promise<number>,
): Promise<number> {
  const options: Options = {
    ...spec.options,
    json: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  };
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, options });
  } catch (e) {
    console.error(`email-status ${spec.name}: ${e instanceof Error ? e.message : e}\n${spec.usage}`);
    return 2;
  }
  const { values, positionals: [command, ...rest] } = parsed;
  const flags = values as Record<string, unknown>;
  const json = flags.json === true;
  if (flags.help === true) {
    console.log(spec.usage);
    return 0;
  }
  let sql: postgres.Sql | undefined;
  try {
    return await body({
      o: values as unknown as Values<T>,
      command: command ?? "",
      rest,
      print: printer(json),
      async connect() {
        if (!sql) {
          sql = cliSql(env);
          await sql`select set_config('email.actor', ${cliActor()}, false)`;
        }
        return sql;
      },
    });
  } catch (e) {
    return reportError(explainError(e, "the database"), { command: `email-status ${spec.name}`, json });
  } finally {
    await sql?.end({ timeout: 2 }).catch(() => {});
  }
}
