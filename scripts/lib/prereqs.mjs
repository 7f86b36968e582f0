// System prerequisites the test suite needs beyond npm: pgTAP and pg_prove (and psql, which pg_prove
// drives), Chromium for the dashboard's browser test, PgBouncer for running the worker through a
// transaction-mode pooler and promtool (prometheus) for checking the metrics route's format. Installed with apt where we run as root on Debian/Ubuntu; otherwise one line names them.
import { existsSync } from "node:fs";
import { spawnSync } from "node:child_process";

const PACKAGES = {
  "/usr/bin/pg_prove": "libtap-parser-sourcehandler-pgtap-perl",
  "/usr/bin/psql": "postgresql-client-15",
  "/usr/share/postgresql/15/extension/pgtap.control": "postgresql-15-pgtap",
  "/usr/bin/chromium": "chromium",
  "/usr/sbin/pgbouncer": "pgbouncer",
  "/usr/bin/promtool": "prometheus",
};

/** Makes sure pg_prove, psql and the pgTAP extension files exist, installing them when we can. */
export function ensureTestPrereqs({ extra = {}, log = console.log } = {}) {
  const wanted = { ...PACKAGES, ...extra };
  const missing = [...new Set(Object.entries(wanted).filter(([f]) => !existsSync(f)).map(([, p]) => p))];
  if (missing.length === 0) return;
  const isRoot = process.getuid?.() === 0;
  if (!isRoot || !existsSync("/usr/bin/apt-get")) {
    throw new Error(
      `missing system packages: install ${missing.join(" ")} (Debian/Ubuntu: apt-get install -y ${missing.join(" ")})`,
    );
  }
  log(`installing ${missing.join(", ")} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const run = (args) => {
    const r = spawnSync("apt-get", args, { stdio: ["ignore", "ignore", "inherit"], env });
    if (r.status !== 0) throw new Error(`apt-get ${args.join(" ")} failed (exit ${r.status})`);
  };
  run(["update", "-qq"]);
  run(["install", "-y", "-qq", "--no-install-recommends", ...missing]);
}
