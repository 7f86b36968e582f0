// PgBouncer (Debian's `pgbouncer`) in front of a local Postgres, the way a Supabase project's
// transaction-mode pooler sits in front of its database: for running the worker's tests through it.
import { chownSync, existsSync, rmSync, writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import path from "node:path";
import { freePort, postgresUser, scratchDir } from "./postgres.mjs";

/**
 * Starts pgbouncer on a free 127.0.0.1 port, pooling every database of the server at `serverUrl`
 * (whose user and password it also accepts from clients) in `poolMode`. Returns the URL of
 * `database` through the pooler and a stop function.
 */
export async function startPgBouncer(serverUrl, { poolMode = "transaction", log = console.log } = {}) {
  const server = new URL(serverUrl);
  const user = decodeURIComponent(server.username);
  const password = decodeURIComponent(server.password);
  const owner = postgresUser(); // pgbouncer refuses to run as root
  const dir = scratchDir("email-worker-pgbouncer-");
  const port = await freePort();
  const quote = (s) => `"${s.replace(/"/g, '""')}"`;
  writeFileSync(path.join(dir, "userlist.txt"), `${quote(user)} ${quote(password)}\n`, { mode: 0o600 });
  writeFileSync(
    path.join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      `* = host=${server.hostname} port=${server.port}`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = scram-sha-256",
      `auth_file = ${path.join(dir, "userlist.txt")}`,
      `pool_mode = ${poolMode}`,
      "max_client_conn = 1000",
      "default_pool_size = 40", // several worker processes at once (the fault tests) without queueing
      "server_reset_query =",
      // Startup parameters clients send that PgBouncer does not track itself.
      "ignore_startup_parameters = extra_float_digits,options",
      "",
    ].join("\n"),
    { mode: 0o600 },
  );
  if (owner.uid !== undefined) {
    for (const f of ["userlist.txt", "pgbouncer.ini"]) chownSync(path.join(dir, f), owner.uid, owner.gid);
  }
  const bin = existsSync("/usr/sbin/pgbouncer") ? "/usr/sbin/pgbouncer" : "pgbouncer";
  const child = spawn(bin, [path.join(dir, "pgbouncer.ini")], {
    ...owner,
    cwd: dir,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let output = "";
  await new Promise((resolve, reject) => {
    child.stderr.on("data", (chunk) => {
      output = (output + chunk.toString("utf8")).slice(-4000);
      if (/process up|listening on 127\.0\.0\.1/.test(output)) resolve();
    });
    child.on("error", (e) => reject(new Error(`could not run pgbouncer: ${e.message}`)));
    child.on("exit", (code) => reject(new Error(`pgbouncer exited (code ${code}):\n${output.trim()}`)));
  });
  const exitHook = () => {
    child.kill("SIGINT");
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("exit", exitHook);
  log(`pgbouncer (${poolMode} mode) on 127.0.0.1:${port} in front of ${server.hostname}:${server.port}`);
  return {
    port,
    /** The URL of `database` through the pooler. */
    url(database) {
      const u = new URL(serverUrl);
      u.port = String(port);
      u.pathname = "/" + database;
      return u.toString();
    },
    async stop() {
      process.off("exit", exitHook);
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGINT");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
