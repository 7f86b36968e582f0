/**
 * Destructive CLI commands need an explicit yes (issue 14, point 5): requeue and purge, run as a
 * subprocess against a private, migrated database. At a terminal only "y" or "yes" confirms: an empty
 * answer, EOF (Ctrl-D) or anything else is no, and purge asks like requeue does. Without a terminal
 * (cron, a pipe, `</dev/null`) nobody can answer: without --yes nothing is done, whatever stdin holds.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import postgres from "postgres";
import { createMigratedDatabase, dropDatabase, runCli, runCliOnTty } from "./support/cli.ts";

const serverUrl = Deno.env.get("TEST_SERVER_URL");
if (!serverUrl) throw new Error("TEST_SERVER_URL must be a superuser URL of the test server");

const typedNo: { name: string; typed: string }[] = [
  { name: "an empty answer", typed: "\n" },
  { name: "EOF (Ctrl-D)", typed: "\x04" },
  { name: "n", typed: "n\n" },
  { name: "anything but y or yes", typed: "sure\n" },
];

const noTerminal: { name: string; stdin: string }[] = [
  { name: "y piped in", stdin: "y\n" },
  { name: "EOF", stdin: "eof" },
  { name: "stdin from /dev/null", stdin: "null" },
];

// npm:postgres keeps sockets and timers across awaits in ways the sanitizers misread.
Deno.test({
  name: "destructive CLI commands need an explicit yes",
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const dbName = `email_cli_confirm_${crypto.randomUUID().slice(0, 8)}`;
  const url = await createMigratedDatabase(serverUrl, dbName);
  const env = { DATABASE_URL: url };
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const status = async (id: string) =>
    (await sql`select status from email.deliveries where delivery_id = ${id}`)[0]?.status;
  const payloadKept = async (id: string) =>
    (await sql`select count(*)::int as n from email.delivery_payloads where delivery_id = ${id}`)[0].n === 1;
  const unchanged = async () => {
    assertEquals(await status("confirm-dead"), "dead_letter");
    assertEquals(await status("confirm-old"), "dead_letter");
    assert(await payloadKept("confirm-old"), "the payload is not erased");
  };
  const commands = [
    ["requeue", "confirm-dead"],
    ["requeue", "--dead-letters", "--workflow", "confirm"],
    ["purge", "--older-than", "30d"],
  ];
  try {
    await sql`insert into email.retry_policies (workflow, max_attempts) values ('confirm', 1)`;
    for (const id of ["confirm-dead", "confirm-old"]) {
      await sql`select email.record_queued(${id}, 'confirm', ${id + "@example.com"}, '{"code":"482913"}'::jsonb)`;
      await sql`select email.mark_in_progress(${id})`;
      await sql`select * from email.record_failure(${id}, 1, 'the relay timed out', null, null, 'ETIMEDOUT')`;
    }
    await sql`update email.deliveries set completed_at = now() - interval '40 days' where delivery_id = 'confirm-old'`;

    for (const c of typedNo) {
      await t.step(`at a terminal, ${c.name} is no for requeue, requeue --dead-letters and purge`, async () => {
        for (const args of commands) {
          const r = await runCliOnTty(args, env, c.typed);
          assert(r.code !== 0, `${args.join(" ")}: exit code ${r.code}: ${r.stdout}${r.stderr}`);
          assert(r.stderr.includes("[y/N]"), `${args.join(" ")}: no question asked: ${r.stderr}`);
          await unchanged();
        }
      });
    }

    for (const c of noTerminal) {
      await t.step(`without a terminal, ${c.name} does nothing without --yes`, async () => {
        for (const args of commands) {
          const r = await runCli(args, env, c.stdin);
          assert(r.code !== 0, `${args.join(" ")}: exit code ${r.code}: ${r.stdout}${r.stderr}`);
          await unchanged();
        }
      });
    }

    await t.step("purge asks before erasing, and erases on y", async () => {
      const r = await runCliOnTty(["purge", "--older-than", "30d", "--json"], env, "y\n");
      assertEquals(r.code, 0, r.stderr);
      assert(r.stderr.includes("Purge dead letters older than 30d?"), r.stderr);
      assertEquals(await status("confirm-old"), "purged");
      assert(!(await payloadKept("confirm-old")), "the payload is erased");
      assertEquals(await status("confirm-dead"), "dead_letter", "a younger dead letter is not purged");
    });

    await t.step("requeue on yes", async () => {
      const r = await runCliOnTty(["requeue", "confirm-dead"], env, "yes\n");
      assertEquals(r.code, 0, r.stderr);
      assertEquals(await status("confirm-dead"), "queued");
    });
  } finally {
    await sql.end();
    await dropDatabase(serverUrl, dbName);
  }
});
