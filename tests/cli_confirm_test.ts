/**
 * Destructive CLI commands need an explicit yes (issue 14, point 5): requeue and purge, run as a
 * subprocess against a private, migrated database, with the answer on stdin. An empty answer, EOF
 * (stdin closed, as in cron) and stdin from /dev/null are all "no"; purge asks like requeue does.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import postgres from "postgres";

const serverUrl = Deno.env.get("TEST_SERVER_URL");
if (!serverUrl) throw new Error("TEST_SERVER_URL must be a superuser URL of the test server");
const root = new URL("../", import.meta.url);

// Only what Deno itself needs, so the CLI sees no DATABASE_URL unless the test gives it one.
const passThrough = Object.fromEntries(
  ["HOME", "PATH", "DENO_DIR", "TMPDIR"].flatMap((k) => Deno.env.get(k) ? [[k, Deno.env.get(k)!]] : []),
);

type Run = { code: number; stdout: string; stderr: string };

/** Runs the CLI; `stdin` is text written then closed, "eof" closes it at once, "null" is /dev/null. */
async function cli(args: string[], env: Record<string, string>, stdin: string | "eof" | "null"): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/email_status.ts", ...args],
    cwd: root,
    env: { ...passThrough, NO_COLOR: "1", USER: "tester", ...env },
    clearEnv: true,
    stdin: stdin === "null" ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== "null") {
    const writer = child.stdin.getWriter();
    if (stdin !== "eof") await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

async function createPrivateDatabase(name: string): Promise<string> {
  const admin = postgres(serverUrl!, { max: 1, onnotice: () => {} });
  await admin.unsafe(`drop database if exists "${name}" with (force)`);
  await admin.unsafe(`create database "${name}"`);
  await admin.end();
  const url = new URL(serverUrl!);
  url.pathname = `/${name}`;
  const sql = postgres(url.toString(), { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(await Deno.readTextFile(new URL("sql/bootstrap_supabase_compat.sql", root))).simple();
    const dir = new URL("supabase/migrations/", root);
    const files = [...Deno.readDirSync(dir)].map((f) => f.name).filter((f) => f.endsWith(".sql")).sort();
    for (const f of files) await sql.unsafe(await Deno.readTextFile(new URL(f, dir))).simple();
  } finally {
    await sql.end();
  }
  return url.toString();
}

async function dropDatabase(name: string): Promise<void> {
  const admin = postgres(serverUrl!, { max: 1, onnotice: () => {} });
  await admin.unsafe(`drop database if exists "${name}" with (force)`);
  await admin.end();
}

const noAnswers: { name: string; stdin: string | "eof" | "null" }[] = [
  { name: "an empty answer", stdin: "\n" },
  { name: "EOF", stdin: "eof" },
  { name: "stdin from /dev/null", stdin: "null" },
  { name: "an answer of n", stdin: "n\n" },
  { name: "anything but y or yes", stdin: "sure\n" },
];

// npm:postgres keeps sockets and timers across awaits in ways the sanitizers misread.
Deno.test({
  name: "destructive CLI commands need an explicit yes",
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const dbName = `email_cli_confirm_${crypto.randomUUID().slice(0, 8)}`;
  const url = await createPrivateDatabase(dbName);
  const env = { DATABASE_URL: url };
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const status = async (id: string) =>
    (await sql`select status from email.deliveries where delivery_id = ${id}`)[0]?.status;
  const payloadKept = async (id: string) =>
    (await sql`select count(*)::int as n from email.delivery_payloads where delivery_id = ${id}`)[0].n === 1;
  try {
    await sql`insert into email.retry_policies (workflow, max_attempts) values ('confirm', 1)`;
    for (const id of ["confirm-dead", "confirm-old"]) {
      await sql`select email.record_queued(${id}, 'confirm', ${id + "@example.com"}, '{"code":"482913"}'::jsonb)`;
      await sql`select email.mark_in_progress(${id})`;
      await sql`select * from email.record_failure(${id}, 1, 'smtp_timeout', 'the relay timed out', false)`;
    }
    await sql`update email.deliveries set completed_at = now() - interval '40 days' where delivery_id = 'confirm-old'`;

    for (const c of noAnswers) {
      await t.step(`requeue: ${c.name} is no`, async () => {
        const r = await cli(["requeue", "confirm-dead"], env, c.stdin);
        assert(r.code !== 0, `exit code ${r.code}: ${r.stdout}${r.stderr}`);
        assertEquals(await status("confirm-dead"), "dead_letter");
      });
      await t.step(`requeue --dead-letters: ${c.name} is no`, async () => {
        const r = await cli(["requeue", "--dead-letters", "--workflow", "confirm"], env, c.stdin);
        assert(r.code !== 0, `exit code ${r.code}: ${r.stdout}${r.stderr}`);
        assertEquals(await status("confirm-dead"), "dead_letter");
        assertEquals(await status("confirm-old"), "dead_letter");
      });
      await t.step(`purge: ${c.name} is no, and the payload stays`, async () => {
        const r = await cli(["purge", "--older-than", "30d"], env, c.stdin);
        assert(r.code !== 0, `exit code ${r.code}: ${r.stdout}${r.stderr}`);
        assertEquals(await status("confirm-old"), "dead_letter");
        assert(await payloadKept("confirm-old"), "the payload is not erased");
      });
    }

    await t.step("purge asks before erasing, and erases on y", async () => {
      const asked = await cli(["purge", "--older-than", "30d"], env, "n\n");
      assert(/\[y\/N\]/.test(asked.stdout + asked.stderr), `no question asked: ${asked.stdout}${asked.stderr}`);
      const r = await cli(["purge", "--older-than", "30d", "--json"], env, "y\n");
      assertEquals(r.code, 0, r.stderr);
      assertEquals(await status("confirm-old"), "purged");
      assert(!(await payloadKept("confirm-old")), "the payload is erased");
      assertEquals(await status("confirm-dead"), "dead_letter", "a younger dead letter is not purged");
    });

    await t.step("requeue on yes", async () => {
      const r = await cli(["requeue", "confirm-dead"], env, "yes\n");
      assertEquals(r.code, 0, r.stderr);
      assertEquals(await status("confirm-dead"), "queued");
    });
  } finally {
    await sql.end();
    await dropDatabase(dbName);
  }
});
