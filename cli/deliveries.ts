/**
 * The delivery commands of `email-status`: show a delivery, list, requeue, purge and metrics, over
 * either transport (cli/transports.ts). Arguments are checked before connecting, so usage errors
 * never need a database, except `--status`, which is checked against email.statuses once connected.
 */
import { parseArgs } from "node:util";
import {
  checkDeliveryId,
  cliActor,
  CliError,
  confirm,
  connectionFromEnv,
  describeConnection,
  explainError,
  parseDuration,
  parseLimit,
  parseSince,
  printer,
  reportError,
  usage,
} from "./common.ts";
import { formatDelivery, formatList, formatMetrics, palette } from "./format.ts";
import { type Api, openApi } from "./transports.ts";

const commands = ["list", "requeue", "purge", "metrics", "show"];

/** Runs `email-status <delivery_id> | show | list | requeue | purge | metrics ...`; returns the exit code. */
export async function deliveriesCommand(args: string[]): Promise<number> {
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
  const print = printer(o.json);

  let api: Api | undefined;
  let where = "";
  try {
    const [command, ...rest] = positionals;
    // Validate the arguments before connecting, so usage errors never need a database.
    if (!commands.includes(command)) {
      if (rest.length) throw new CliError(`unknown command ${JSON.stringify(command)}\n${usage}`, 2);
      checkDeliveryId(command);
    }
    if (command === "show") checkDeliveryId(rest[0] ?? "");
    const limit = parseLimit(o.limit, 50, 10000);
    const since = o.since === undefined ? undefined : parseSince(o.since);
    const olderThan = o["older-than"] === undefined ? undefined : parseDuration(o["older-than"]);
    if (command === "requeue") {
      if (o["dead-letters"] === (rest.length > 0)) {
        throw new CliError("requeue takes delivery ids or --dead-letters (with --workflow/--since), not both", 2);
      }
      rest.forEach(checkDeliveryId);
    }

    const conn = connectionFromEnv(Deno.env.toObject());
    const actor = cliActor();
    where = describeConnection(conn);
    api = openApi(conn, actor);
    if (o.status !== undefined) await checkStatus(api, o.status);
    const reason = o.reason?.trim() || `email-status ${command} by ${actor}`;

    if (!commands.includes(command) || command === "show") {
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
    return reportError(explainError(e, where), { command: "email-status", json: o.json });
  } finally {
    await api?.close().catch(() => {});
  }
}

/**
 * Checks --status against the statuses the database knows (email.statuses), so a status added there
 * is accepted here with no change to the CLI. Over PostgREST, where email.statuses is not exposed,
 * the filter goes to the database unchecked.
 */
async function checkStatus(api: Api, status: string): Promise<void> {
  const known = await api.statuses();
  if (known && !known.some((s) => s.status === status)) {
    throw new CliError(
      `--status must be one of ${known.map((s) => s.status).join(", ")} (email.statuses), not ${
        JSON.stringify(status)
      }`,
      2,
    );
  }
}
