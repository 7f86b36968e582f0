// Checks (or with --write, updates) supabase/schema.sql, the snapshot of the schema the migrations build.
//   node scripts/schema_snapshot.mjs [--write] [--database-url URL]
// With --database-url it reads that database, which must be freshly migrated (`npm test` passes its test
// database before any test runs); without, it migrates a database of its own on a throwaway embedded
// Postgres 15 (on TEST_PG_PORT when set, else a free port) or on the server in DATABASE_URL.
// Exit code 1, with a unified diff, when the checked-in file differs.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { migrate, recreateDatabase, root, startServer } from "./lib/postgres.mjs";
import { snapshot } from "./lib/schema_dump.mjs";

const file = path.join(root, "supabase/schema.sql");
const args = process.argv.slice(2);
const write = args.includes("--write");
const urlAt = args.indexOf("--database-url");
const log = (m) => console.log(`[schema snapshot] ${m}`);

let actual;
if (urlAt >= 0) {
  actual = snapshot(args[urlAt + 1]);
} else {
  const port = process.env.TEST_PG_PORT ? Number(process.env.TEST_PG_PORT) : undefined;
  const server = await startServer({ port, log });
  try {
    const url = await recreateDatabase(server.url, "email_worker_schema_snapshot");
    await migrate(url, { log: () => {} });
    actual = snapshot(url);
  } finally {
    await server.stop();
  }
}

if (write) {
  writeFileSync(file, actual);
  log(`wrote ${path.relative(root, file)} (${actual.split("\n").length - 1} lines)`);
  process.exit(0);
}
let expected = "";
try {
  expected = readFileSync(file, "utf8");
} catch {
  // A missing file is a difference like any other.
}
if (expected === actual) {
  log(`${path.relative(root, file)} matches the migrated database`);
  process.exit(0);
}
const dir = mkdtempSync(path.join(os.tmpdir(), "schema-snapshot-"));
try {
  const fresh = path.join(dir, "schema.sql");
  writeFileSync(fresh, actual);
  spawnSync(
    "diff",
    ["-u", "--label", "supabase/schema.sql (checked in)", "--label", "migrated database", file, fresh],
    {
      stdio: "inherit",
    },
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.error(
  "[schema snapshot] supabase/schema.sql differs from what the migrations build (diff above). If the change is" +
    " intended, run `npm run schema:snapshot` and commit supabase/schema.sql with the migration.",
);
process.exit(1);
