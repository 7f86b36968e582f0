// `npm test`: brings up everything the suite needs, then runs the whole of it:
// pgTAP (pg_prove) against a fresh database migrated with the Supabase CLI, deno test, deno fmt --check,
// deno lint and deno check. Exits non-zero when any part fails.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { readdirSync } from "node:fs";
import { installPgTapInto, migrate, recreateDatabase, root, startServer } from "./lib/postgres.mjs";
import { ensureTestPrereqs } from "./lib/prereqs.mjs";
import postgres from "postgres";

const deno = path.join(root, "node_modules/.bin/deno");
const log = (m) => console.log(`[test] ${m}`);
const only = process.argv.slice(2); // e.g. `npm test -- pgtap deno`
const want = (part) => only.length === 0 || only.includes(part);

function run(name, cmd, args, env = {}) {
  log(`${name}: ${[path.basename(cmd), ...args].join(" ")}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit", env: { ...process.env, ...env } });
  return { name, ok: r.status === 0, status: r.status };
}

ensureTestPrereqs({ log });
const port = Number(process.env.TEST_PG_PORT ?? 54339);
const server = await startServer({ name: `pg-test-${port}`, port, log });
installPgTapInto(server);
const results = [];
try {
  const url = await recreateDatabase(server.url, "email_worker_test");
  log(`database ${url.replace(/:[^:@/]*@/, ":***@")}`);
  await migrate(url, { log });
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  await sql`create extension if not exists pgtap with schema extensions`;
  await sql.end();

  if (want("pgtap")) {
    const files = readdirSync(path.join(root, "supabase/tests")).filter((f) => f.endsWith(".sql")).sort()
      .map((f) => path.join("supabase/tests", f));
    results.push(
      run("pgtap", "pg_prove", ["--dbname", url, "--ext", ".sql", ...files], {
        PGOPTIONS: "-c search_path=public,extensions",
      }),
    );
  }
  const denoEnv = { DATABASE_URL: url, TEST_SERVER_URL: server.url, NO_COLOR: process.stdout.isTTY ? "" : "1" };
  if (want("deno")) {
    results.push(run("deno test", deno, ["test", "-A", "--no-check=remote", "tests/", "functions/"], denoEnv));
  }
  if (want("deploy")) results.push(run("deploy sim", process.execPath, ["scripts/deploy_sim.mjs"], denoEnv));
  if (want("fmt")) results.push(run("deno fmt", deno, ["fmt", "--check"]));
  if (want("lint")) results.push(run("deno lint", deno, ["lint"]));
  if (want("check")) results.push(run("deno check", deno, ["check", "functions/", "tests/", "cli/"]));
} finally {
  await server.stop();
}
const failed = results.filter((r) => !r.ok);
for (const r of results) log(`${r.ok ? "ok  " : "FAIL"} ${r.name}`);
console.log(`${results.length - failed.length} passed, ${failed.length} failed`);
process.exit(failed.length ? 1 : 0);
