/**
 * `email-status list --status S` takes the statuses of email.statuses, read from the database when it
 * runs, not a list of its own: `suppressed` (which the CLI's own list once lacked, so it exited 2)
 * lists the suppressed deliveries, a status added to the table is accepted with no change to the CLI,
 * and an unknown one is refused with the statuses the database has. On a private Postgres server,
 * because the test adds a status.
 */
import postgres from "postgres";
import { assert, assertEquals } from "./support/assert.ts";
import { type CliRun, runCli } from "./support/cli.ts";
import { startPrivatePostgres } from "./support/postgres.ts";

/** Runs the CLI as a subprocess against `url`, stdin from /dev/null. */
function cli(url: string, args: string[]): Promise<CliRun> {
  return runCli(args, { DATABASE_URL: url }, "null");
}

// npm:postgres keeps sockets and timers across awaits in ways the sanitizers misread.
Deno.test({
  name: "list --status takes the statuses of email.statuses, suppressed included",
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const pg = await startPrivatePostgres();
  const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
  const vocabulary = async () =>
    (await sql<{ status: string }[]>`select status from email.statuses order by terminal, status`).map((r) => r.status);
  try {
    await sql`select email.add_suppression('gone@example.com', 'hard bounce last week')`;
    await sql`select email.record_queued('cli-suppressed', 'welcome', 'Gone@example.com', '{}'::jsonb)`;
    await sql`select email.record_queued('cli-queued', 'welcome', 'ada@example.com', '{}'::jsonb)`;
    const [d] = await sql`select status from email.deliveries where delivery_id = 'cli-suppressed'`;
    assertEquals(d.status, "suppressed");

    await t.step("list --status suppressed lists the suppressed delivery", async () => {
      const r = await cli(pg.url, ["list", "--status", "suppressed", "--json"]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(JSON.parse(r.stdout).map((x: { delivery_id: string }) => x.delivery_id), ["cli-suppressed"]);
      const human = await cli(pg.url, ["list", "--status", "suppressed"]);
      assertEquals(human.code, 0, human.stderr);
      assert(/cli-suppressed\s+suppressed\s+welcome/.test(human.stdout), human.stdout);
      assert(!human.stdout.includes("cli-queued"), human.stdout);
    });

    await t.step("an unknown status is refused, naming the statuses the database has", async () => {
      const known = await vocabulary();
      assert(known.includes("suppressed") && known.includes("purged"), known.join(", "));
      const r = await cli(pg.url, ["list", "--status", "bounced"]);
      assertEquals(r.code, 2, r.stderr);
      assert(
        r.stderr.includes(`--status must be one of ${known.join(", ")} (email.statuses), not "bounced"`),
        r.stderr,
      );
      const json = await cli(pg.url, ["list", "--status", "bounced", "--json"]);
      assertEquals(json.code, 2, json.stderr);
      assertEquals(JSON.parse(json.stdout).error.exit_code, 2);
    });

    await t.step("a status added to email.statuses is accepted with no change to the CLI", async () => {
      const before = await cli(pg.url, ["list", "--status", "on_hold"]);
      assertEquals(before.code, 2, before.stderr);
      await sql`insert into email.statuses (status, terminal, waiting, failing, counts_as, position, description)
        values ('on_hold', false, false, false, 'open', 90, 'test only')`;
      const after = await cli(pg.url, ["list", "--status", "on_hold", "--json"]);
      assertEquals(after.code, 0, after.stderr);
      assertEquals(JSON.parse(after.stdout), []);
      const refused = await cli(pg.url, ["list", "--status", "bounced"]);
      assert(refused.stderr.includes((await vocabulary()).join(", ")), refused.stderr);
      assert(refused.stderr.includes("on_hold"), refused.stderr);
    });
  } finally {
    await sql.end();
    await pg.destroy();
  }
});
