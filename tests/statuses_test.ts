/**
 * One status vocabulary: email.statuses is the authority, and functions/_shared/statuses.gen.ts (what
 * the sweep, the dashboard and the CLI read) is generated from it by scripts/gen_statuses.mjs. The
 * checked-in module must be exactly what the migrated database renders, so a status, or a change to
 * one's sets, made on one side only fails here (and the Status type makes `deno check` fail on any map
 * that then misses a status).
 */
import postgres from "postgres";
import { assert, assertEquals } from "./support/assert.ts";
import { statuses, statusNames } from "../functions/_shared/statuses.gen.ts";
import {
  failureRulesQuery,
  modulePath,
  renderFailureRulesModule,
  renderStatusesModule,
  rulesModulePath,
  statusesQuery,
} from "../scripts/gen_statuses.mjs";

const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");
const root = new URL("../", import.meta.url);

type Row = {
  status: string;
  terminal: boolean;
  waiting: boolean;
  failing: boolean;
  counts_as: string;
  description: string;
};

// npm:postgres keeps sockets and timers across awaits in ways the sanitizers misread.
const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "statuses.gen.ts is what email.statuses says (run node scripts/gen_statuses.mjs after a change)",
  ...opts,
}, async () => {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql.unsafe<Row[]>(statusesQuery);
    const current = await Deno.readTextFile(new URL(modulePath, root));
    assert(
      current === renderStatusesModule(rows),
      `${modulePath} differs from email.statuses: run node scripts/gen_statuses.mjs`,
    );
    assertEquals(statusNames, rows.map((r) => r.status));
    assert(statusNames.includes("suppressed") && statusNames.includes("purged"), "statuses of later migrations are in");
  } finally {
    await sql.end();
  }
});

Deno.test({
  name: "failure_rules.gen.ts is what email.failure_rules says (run node scripts/gen_statuses.mjs after a change)",
  ...opts,
}, async () => {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const current = await Deno.readTextFile(new URL(rulesModulePath, root));
    // deno-lint-ignore no-explicit-any
    const rows = await sql.unsafe<any[]>(failureRulesQuery);
    assert(current === renderFailureRulesModule(rows), `${rulesModulePath} differs from email.failure_rules`);
  } finally {
    await sql.end();
  }
});

Deno.test({ name: "a drift on either side is caught: a status added or changed in SQL only", ...opts }, async () => {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  const current = await Deno.readTextFile(new URL(modulePath, root));
  try {
    // Rolled back: the check above sees what the database would say after such a migration.
    for (
      const drift of [
        `insert into email.statuses (status, terminal, waiting, failing, counts_as, position, description)
         values ('on_hold', false, false, false, 'open', 35, 'held by an operator')`,
        `update email.statuses set terminal = false, counts_as = 'open' where status = 'suppressed'`,
        `update email.statuses set failing = false where status = 'retrying'`,
      ]
    ) {
      const rendered = await sql.begin(async (tx) => {
        await tx.unsafe(drift);
        const text = renderStatusesModule(await tx.unsafe<Row[]>(statusesQuery));
        throw Object.assign(new Error("rollback"), { text });
      }).catch((e: { text?: string }) => {
        if (e.text === undefined) throw e;
        return e.text;
      });
      assert(rendered !== current, `the check does not see: ${drift}`);
    }
  } finally {
    await sql.end();
  }
});

Deno.test("the sets hold together: open is exactly the non-terminal statuses; waiting ones are open", () => {
  for (const s of statuses) {
    assertEquals(s.countsAs === "open", !s.terminal, s.status);
    assert(!s.waiting || !s.terminal, s.status);
  }
});
