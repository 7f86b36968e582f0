// `npm test -- clone`: the suite works from a fresh clone anywhere, as root and as an ordinary user, and
// two clones can run it at the same time.
//
// Makes fresh clones of this checkout (HEAD plus its uncommitted changes) in 0700 temporary folders,
// the way `mktemp -d` or a private home does it, with a copy of node_modules (what `npm ci` would
// put there; the clone's `npm test` would otherwise reinstall it). As root it makes two clones: one
// run by root and one owned and run by an ordinary user (`nobody`, or CLONE_TEST_USER), started at
// the same time; otherwise one run by the current user. Each runs `npm test` on a slice of the
// suite: Postgres start, migrations, one pgTAP file and one end-to-end deno test file (CLONE_TEST_PARTS
// overrides the slice). Passes when every run passes; the folders are removed afterwards.
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, utimesSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { root } from "./lib/postgres.mjs";

const parts = (process.env.CLONE_TEST_PARTS ??
  "pgtap=supabase/tests/030_rpcs.test.sql deno=tests/worker_push_test.ts").split(" ");
const isRoot = process.getuid?.() === 0;
const log = (m) => console.log(`[clone] ${m}`);
const git = (args, opts = {}) => execFileSync("git", args, { encoding: "utf8", maxBuffer: 1 << 28, ...opts });

/** Clones this checkout with its uncommitted changes into a new 0700 folder; returns the clone's path. */
function makeClone(label) {
  const dir = mkdtempSync(path.join(isRoot ? "/tmp" : os.tmpdir(), `email-worker-clone-${label}-`));
  chmodSync(dir, 0o700);
  const clone = path.join(dir, "email-worker");
  git(["clone", "-q", "--no-hardlinks", root, clone]);
  const diff = git(["-C", root, "diff", "HEAD", "--binary"]);
  if (diff) git(["-C", clone, "apply", "--binary", "-"], { input: diff });
  const untracked = git(["-C", root, "ls-files", "--others", "--exclude-standard", "-z"]).split("\0").filter(Boolean);
  for (const f of untracked) cpSync(path.join(root, f), path.join(clone, f));
  cpSync(path.join(root, "node_modules"), path.join(clone, "node_modules"), {
    recursive: true,
    verbatimSymlinks: true,
  });
  // What `npm ci` leaves behind: installed after the lock file was written, so `npm test` keeps it.
  const now = new Date();
  utimesSync(path.join(clone, "node_modules", ".package-lock.json"), now, now);
  return { dir, clone };
}

/** Runs `npm test -- <parts>` in `clone`, as `user` when given; resolves to the exit code. */
function npmTest(label, clone, { user, home } = {}) {
  const env = {
    PATH: process.env.PATH,
    HOME: home ?? process.env.HOME,
    LANG: process.env.LANG ?? "C.UTF-8",
    npm_config_update_notifier: "false",
  };
  const npmArgs = ["test", "--", ...parts];
  const [cmd, args] = user
    ? ["runuser", ["-u", user, "--", "env", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), "npm", ...npmArgs]]
    : ["npm", npmArgs];
  log(`${label}: npm ${npmArgs.join(" ")} in ${clone}${user ? ` as ${user}` : ""}`);
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: clone, env, stdio: ["ignore", "pipe", "pipe"] });
    const relay = (from, to) => {
      let partial = "";
      from.on("data", (chunk) => {
        const lines = (partial + chunk.toString("utf8")).split("\n");
        partial = lines.pop();
        for (const l of lines) to.write(`[clone ${label}] ${l}\n`);
      });
      from.on("end", () => partial && to.write(`[clone ${label}] ${partial}\n`));
    };
    relay(child.stdout, process.stdout);
    relay(child.stderr, process.stderr);
    child.on("close", (code) => resolve(code ?? 1));
  });
}

const started = Date.now();
const runs = [];
const dirs = [];
try {
  const own = makeClone(isRoot ? "root" : "user");
  dirs.push(own.dir);
  runs.push({ label: isRoot ? "root" : os.userInfo().username, clone: own.clone });
  if (isRoot) {
    const user = process.env.CLONE_TEST_USER ?? "nobody";
    const other = makeClone(user);
    dirs.push(other.dir);
    const home = path.join(other.dir, "home");
    mkdirSync(home);
    execFileSync("chown", ["-R", `${user}:`, other.dir]);
    runs.push({ label: user, clone: other.clone, user, home });
  }
  log(`clones ready in ${Math.round((Date.now() - started) / 1000)} s; running them at the same time`);
  const codes = await Promise.all(runs.map((r) => npmTest(r.label, r.clone, r)));
  runs.forEach((r, i) => log(`${codes[i] === 0 ? "ok  " : "FAIL"} ${r.label} (exit ${codes[i]})`));
  log(`total ${Math.round((Date.now() - started) / 1000)} s`);
  process.exitCode = codes.every((c) => c === 0) ? 0 : 1;
} finally {
  if (!process.env.CLONE_TEST_KEEP && dirs.length) execFileSync("rm", ["-rf", ...dirs]);
}
