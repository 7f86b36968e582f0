/**
 * The frame shared by the subcommands that need a direct Postgres connection (`webhooks`,
 * `suppressions`): parse the arguments, answer --help, connect with the actor set for the audit
 * trail, print JSON or text, turn errors into messages and exit codes, and close the connection.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import postgres from "postgres";
import { cliActor, CliError, connectionFromEnv, explainError } from "./email_status.ts";
import { safeText } from "./terminal.ts";

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

/** Opens a Postgres connection for the CLI (a postgres:// URL is required: schema email is not exposed). */
export function cliSql(env: Record<string, string | undefined>): postgres.Sql {
  const conn = connectionFromEnv(env);
  if (conn.kind !== "postgres") {
    throw new CliError(
      "this command needs DATABASE_URL (or DELIVERY_STATUS_DATABASE_URL): schema email is not exposed over PostgREST",
      2,
    );
  }
  return postgres(conn.url, {
    max: 1,
    connect_timeout: 5,
    idle_timeout: 5,
    onnotice: () => {},
    connection: { application_name: "email-status" },
  });
}

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
      print: (value, human) => console.log(json ? JSON.stringify(value, null, 2) : human()),
      async connect() {
        if (!sql) {
          sql = cliSql(env);
          await sql`select set_config('email.actor', ${cliActor()}, false)`;
        }
        return sql;
      },
    });
  } catch (e) {
    const err = e instanceof CliError ? e : explainError(e, "the database");
    if (json) console.log(JSON.stringify({ error: { message: err.message, exit_code: err.exitCode } }));
    console.error(`email-status ${spec.name}: ${safeText(err.message, { keepNewlines: true })}`);
    return err.exitCode;
  } finally {
    await sql?.end({ timeout: 2 }).catch(() => {});
  }
}
