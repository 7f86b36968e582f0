// `npm run mutants`: plants each plausible bug of tests/mutants/mutants.json, one at a time, in a scratch
// copy of the repository and runs only the tests that cover it; a mutant is killed when a test fails.
// Prints each result, the kill rate over the non-equivalent mutants, and the survivors.
//
//   npm run mutants                      every mutant
//   npm run mutants -- sql-transition-guard webhook-3xx   only these ids
//   npm run mutants -- --area webhooks   only one area (repeatable)
//   npm run mutants -- --list            list the mutants and their state (stale or not), run nothing
//   options: --no-baseline (skip the unmutated run of the covering tests), --keep (keep the scratch copy),
//            --timeout 300 (seconds per mutant; a mutant that hangs the tests counts as killed)
//
// One embedded Postgres serves the whole run (a free port, or MUTANTS_PG_PORT; or DATABASE_URL's
// server): the unmutated migrations once as a template database, then a database per mutant, copied
// from the template, or migrated afresh from the mutated copy when the mutant changes a migration.
// A mutant whose original snippet is no longer found (or found more than once) is "stale": the run
// says so and exits non-zero, so the list is updated with the code instead of silently shrinking.
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { databaseUrl, installPgTap, pgBinaries, root, startServer } from "./lib/postgres.mjs";
import { ensureTestPrereqs } from "./lib/prereqs.mjs";

const listFile = path.join(root, "tests/mutants/mutants.json");
const goal = 95;

const { values: opts, positionals: ids } = parseArgs({
  allowPositionals: true,
  options: {
    area: { type: "string", multiple: true },
    list: { type: "boolean", default: false },
    "no-baseline": { type: "boolean", default: false },
    keep: { type: "boolean", default: false },
    timeout: { type: "string", default: "300" },
  },
});
const timeoutMs = Number(opts.timeout) * 1000;
const log = (m) => console.log(`[mutants] ${m}`);

// ---------------------------------------------------------------------------------------------
// The list
// ---------------------------------------------------------------------------------------------

const all = JSON.parse(readFileSync(listFile, "utf8")).mutants;
const problems = validateList(all);
if (problems.length) {
  for (const p of problems) console.error(`[mutants] ${listFile}: ${p}`);
  process.exit(2);
}
const unknown = ids.filter((id) => !all.some((m) => m.id === id));
if (unknown.length) {
  console.error(`[mutants] unknown mutant id(s): ${unknown.join(", ")}`);
  process.exit(2);
}
const selected = all.filter((m) =>
  (ids.length === 0 && !opts.area) || ids.includes(m.id) || (opts.area ?? []).includes(m.area)
);
if (selected.length === 0) {
  console.error(`[mutants] no mutant matches (areas: ${[...new Set(all.map((m) => m.area))].join(", ")})`);
  process.exit(2);
}

/** Checks the shape of the list: unique ids, every field, covering tests that exist. */
function validateList(list) {
  const out = [];
  const seen = new Set();
  for (const [i, m] of list.entries()) {
    const at = `mutant ${m.id ?? `#${i}`}`;
    if (!m.id || seen.has(m.id)) out.push(`${at}: missing or duplicate id`);
    seen.add(m.id);
    for (const k of ["area", "file", "original", "replacement"]) {
      if (typeof m[k] !== "string") out.push(`${at}: "${k}" must be a string`);
    }
    if (m.original === m.replacement) out.push(`${at}: the replacement is the original`);
    if (!Array.isArray(m.tests) || m.tests.length === 0) out.push(`${at}: "tests" must name the covering tests`);
    for (const t of m.tests ?? []) {
      if (!/^(supabase\/tests\/.+\.sql|tests\/.+_test\.ts|functions\/.+_test\.ts)$/.test(t)) {
        out.push(`${at}: "${t}" is neither a pgTAP file nor a deno test file`);
      } else if (!exists(path.join(root, t))) {
        out.push(`${at}: covering test ${t} does not exist`);
      }
    }
    if (m.equivalent !== undefined && (typeof m.equivalent !== "string" || m.equivalent.trim() === "")) {
      out.push(`${at}: "equivalent" must give the reason`);
    }
  }
  return out;
}

function exists(p) {
  try {
    readFileSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Where the original snippet is: "ok", or "stale" (not found) / "ambiguous" (found more than once). */
function locate(m, text) {
  const first = text.indexOf(m.original);
  if (first < 0) return "stale";
  if (text.indexOf(m.original, first + 1) >= 0) return "ambiguous";
  return "ok";
}

const sources = new Map();
const source = (file) => {
  if (!sources.has(file)) {
    sources.set(file, exists(path.join(root, file)) ? readFileSync(path.join(root, file), "utf8") : null);
  }
  return sources.get(file);
};
const state = new Map(selected.map((m) => [m.id, source(m.file) === null ? "stale" : locate(m, source(m.file))]));

if (opts.list) {
  for (const m of selected) {
    const s = state.get(m.id);
    console.log(
      `${s === "ok" ? (m.equivalent ? "equivalent" : "ok") : s.toUpperCase()}\t${m.area}\t${m.id}\t${m.file}`,
    );
  }
  process.exit([...state.values()].some((s) => s !== "ok") ? 1 : 0);
}

// ---------------------------------------------------------------------------------------------
// The scratch copy, the server, the databases
// ---------------------------------------------------------------------------------------------

ensureTestPrereqs({ log });
const started = Date.now();
// Under /var/tmp, 0755: as root, the embedded Postgres runs as user postgres and must reach it.
const scratchBase = mkdtempSync(path.join(existsSync("/var/tmp") ? "/var/tmp" : tmpdir(), "email-worker-mutants-"));
chmodSync(scratchBase, 0o755);
const scratch = path.join(scratchBase, "repo");
copyRepo(root, scratch);
log(`scratch copy ${scratch}`);

/** Copies the tracked (and new, not ignored) files of the repository; node_modules is a symlink. */
function copyRepo(from, to) {
  const r = spawnSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], {
    cwd: from,
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`git ls-files failed: ${r.stderr}`);
  for (const f of r.stdout.split("\0").filter(Boolean)) {
    if (!exists(path.join(from, f))) continue; // deleted in the work tree
    mkdirSync(path.dirname(path.join(to, f)), { recursive: true, mode: 0o755 });
    copyFileSync(path.join(from, f), path.join(to, f));
  }
  symlinkSync(path.join(from, "node_modules"), path.join(to, "node_modules"));
  spawnSync("chmod", ["-R", "a+rX", to]);
}

// A throwaway server (a free port unless MUTANTS_PG_PORT names one), or DATABASE_URL's server.
const port = process.env.MUTANTS_PG_PORT ? Number(process.env.MUTANTS_PG_PORT) : undefined;
const server = await startServer({ port, log, flags: ["-c", "fsync=off"] });
let running; // the test process in flight, so an interrupted run leaves nothing behind
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    log(`${signal}: stopping`);
    try {
      if (running) process.kill(-running.pid, "SIGKILL");
    } catch { /* gone already */ }
    await server.stop().catch(() => {});
    if (!opts.keep) rmSync(scratchBase, { recursive: true, force: true });
    process.exit(130);
  });
}
if (server.embedded) installPgTap(pgBinaries(15));
// The scratch copy's own migrate: it applies the scratch copy's (possibly mutated) migrations.
const { migrate } = await import(path.join(scratch, "scripts/lib/postgres.mjs"));
const admin = postgres(server.url, { max: 1, onnotice: () => {} });
const template = "email_mutants_template";

async function dropDatabase(name) {
  await admin.unsafe(`drop database if exists "${name}" with (force)`);
}

/** A migrated database with pgTAP: a copy of the template, or migrated afresh from the scratch copy. */
async function freshDatabase(name, { fromTemplate }) {
  await dropDatabase(name);
  if (fromTemplate) {
    await admin.unsafe(`create database "${name}" template "${template}"`);
    return databaseUrl(server.url, name);
  }
  await admin.unsafe(`create database "${name}"`);
  const url = databaseUrl(server.url, name);
  await migrate(url, { log: () => {} });
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  await sql`create extension if not exists pgtap with schema extensions`;
  await sql.end();
  return url;
}

// ---------------------------------------------------------------------------------------------
// Running the covering tests
// ---------------------------------------------------------------------------------------------

/** Runs a command in the scratch copy (its own process group, killed on timeout); resolves with what happened. */
function run(cmd, args, env) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      cwd: scratch,
      env: { ...process.env, NO_COLOR: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    running = child;
    let output = "";
    const keep = (b) => {
      output = (output + b.toString()).slice(-500_000);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch { /* gone already */ }
      resolve({ ok: false, timedOut: true, output });
    }, timeoutMs);
    child.on("close", (code) => {
      running = undefined;
      clearTimeout(timer);
      resolve({ ok: code === 0, timedOut: false, output });
    });
  });
}

/** Runs the given pgTAP and deno test files against `url`; the first failing group ends the run. */
async function runTests(tests, url) {
  const pgtap = tests.filter((t) => t.endsWith(".sql"));
  const deno = tests.filter((t) => t.endsWith(".ts"));
  const failed = [];
  let timedOut = false;
  let output = "";
  if (pgtap.length) {
    const r = await run("pg_prove", ["--dbname", url, "--ext", ".sql", ...pgtap], {
      PGOPTIONS: "-c search_path=public,extensions",
    });
    if (!r.ok) {
      failed.push(...failingFiles(r.output, pgtap));
      timedOut ||= r.timedOut;
      output += r.output;
    }
  }
  if (deno.length && failed.length === 0) {
    const r = await run(path.join(scratch, "node_modules/.bin/deno"), ["test", "-A", "--no-check", ...deno], {
      DATABASE_URL: url,
      TEST_SERVER_URL: server.url,
    });
    if (!r.ok) {
      failed.push(...failingFiles(r.output, deno));
      timedOut ||= r.timedOut;
      output += r.output;
    }
  }
  return { ok: failed.length === 0, failed, timedOut, output };
}

/** The files a test output names as failing (all of them when it names none). */
function failingFiles(output, files) {
  const failed = new Set();
  // pg_prove's summary report: "<file>  (Wstat: ... Failed: n)".
  for (const f of files) if (new RegExp(`^${escape(f)}\\s+\\(Wstat`, "m").test(output)) failed.add(f);
  // deno test: "running n tests from ./<file>", then "<name> ... FAILED" under it.
  let current;
  for (const line of output.split("\n")) {
    const from = /^running \d+ tests? from \.\/(\S+)/.exec(line);
    if (from) current = from[1];
    else if (current && /\.\.\. FAILED\b/.test(line)) failed.add(current);
  }
  const named = files.filter((f) => failed.has(f));
  return named.length ? named : files;
}
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

const results = [];
const flaky = new Set();
let exitCode = 0;
try {
  await freshDatabase(template, { fromTemplate: false });
  const runnable = selected.filter((m) => state.get(m.id) === "ok");

  if (!opts["no-baseline"]) {
    const tests = [...new Set(runnable.flatMap((m) => m.tests))].sort();
    log(`baseline: the ${tests.length} covering test files, unmutated`);
    const t0 = Date.now();
    const url = await freshDatabase("email_mutants_baseline", { fromTemplate: true });
    const r = await runTests(tests, url);
    await dropDatabase("email_mutants_baseline");
    if (!r.ok) {
      // Once more, alone: a timing test can fail on a loaded machine and pass the next time.
      const again = await runTests(tests, await freshDatabase("email_mutants_baseline", { fromTemplate: true }));
      await dropDatabase("email_mutants_baseline");
      if (!again.ok) {
        console.log(again.output);
        throw new Error(
          `the unmutated code fails ${again.failed.join(", ")}: fix that first (a mutant cannot be judged)`,
        );
      }
      for (const f of r.failed) flaky.add(f);
      log(
        `flaky: ${r.failed.join(", ")} failed once and passed when run again; a mutant they alone kill is re-checked`,
      );
    }
    log(`baseline passes (${seconds(Date.now() - t0)})`);
  }

  for (const [i, m] of selected.entries()) {
    const tag = `${String(i + 1).padStart(String(selected.length).length)}/${selected.length}`;
    const s = state.get(m.id);
    if (s !== "ok") {
      results.push({ m, outcome: "stale" });
      console.log(
        `${tag} STALE     ${m.id}  ${m.file}: the original snippet is ${
          s === "stale" ? "no longer found" : "found more than once"
        }; update tests/mutants/mutants.json`,
      );
      continue;
    }
    const file = path.join(scratch, m.file);
    const original = readFileSync(file, "utf8");
    writeFileSync(file, original.replace(m.original, () => m.replacement));
    const t0 = Date.now();
    let outcome;
    let detail = "";
    try {
      const sqlChanged = m.file.startsWith("supabase/migrations/") || m.file.startsWith("sql/");
      let url;
      try {
        url = await freshDatabase("email_mutants_run", { fromTemplate: !sqlChanged });
      } catch (e) {
        // The mutated migrations do not even apply: the suite's first step fails.
        outcome = "killed";
        detail = `by the migration: ${String(e?.message ?? e).split("\n").find((l) => /ERROR/.test(l)) ?? "failed"}`;
      }
      if (url) {
        let r = await runTests(m.tests, url);
        if (!r.ok && !r.timedOut && r.failed.every((f) => flaky.has(f))) {
          // Only a test that failed once unmutated: it must fail again to count.
          const again = await runTests(
            r.failed,
            await freshDatabase("email_mutants_run", { fromTemplate: !sqlChanged }),
          );
          if (again.ok) r = again;
        }
        outcome = r.ok ? "survived" : "killed";
        detail = r.ok ? "" : r.timedOut ? `by a timeout (${m.tests.join(", ")})` : `by ${r.failed.join(", ")}`;
      }
    } finally {
      writeFileSync(file, original);
    }
    await dropDatabase("email_mutants_run");
    results.push({ m, outcome, detail, ms: Date.now() - t0 });
    const label = m.equivalent
      ? (outcome === "survived" ? "EQUIV     " : "EQUIV?!   ")
      : (outcome === "killed" ? "killed    " : "SURVIVED  ");
    console.log(`${tag} ${label}${m.id}  [${m.area}] (${seconds(Date.now() - t0)}) ${detail}`.trimEnd());
    if (m.equivalent && outcome === "killed") {
      console.log(
        `          marked equivalent ("${m.equivalent}") but a test fails: it is not equivalent, remove the mark`,
      );
    }
  }
} catch (e) {
  console.error(`[mutants] ${e?.message ?? e}`);
  exitCode = 2;
} finally {
  await dropDatabase(template).catch(() => {});
  await admin.end();
  await server.stop();
  if (!opts.keep) rmSync(scratchBase, { recursive: true, force: true });
  else log(`kept ${scratch}`);
}

// ---------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------

function seconds(ms) {
  return `${(ms / 1000).toFixed(1)} s`;
}

if (exitCode === 0) {
  const judged = results.filter((r) => !r.m.equivalent && r.outcome !== "stale");
  const killed = judged.filter((r) => r.outcome === "killed");
  const survivors = judged.filter((r) => r.outcome === "survived");
  const stale = results.filter((r) => r.outcome === "stale");
  const equivalent = results.filter((r) => r.m.equivalent && r.outcome !== "stale");
  const rate = judged.length ? (100 * killed.length) / judged.length : 100;
  console.log("");
  console.log(`per area (killed/non-equivalent):`);
  for (const area of [...new Set(judged.map((r) => r.m.area))].sort()) {
    const a = judged.filter((r) => r.m.area === area);
    console.log(`  ${area.padEnd(14)} ${a.filter((r) => r.outcome === "killed").length}/${a.length}`);
  }
  console.log("");
  console.log(
    `mutants: ${results.length} run or checked, ${equivalent.length} marked equivalent, ${stale.length} stale` +
      `; killed ${killed.length} of ${judged.length} non-equivalent: kill rate ${rate.toFixed(1)} % (goal ${goal} %)`,
  );
  if (survivors.length) {
    console.log("survivors (add a test that fails on them, or mark them equivalent with the reason):");
    for (const r of survivors) {
      console.log(`  ${r.m.id}  ${r.m.file}: ${JSON.stringify(r.m.original)} -> ${JSON.stringify(r.m.replacement)}`);
    }
  }
  if (stale.length) {
    console.log("stale (the code changed: update the snippet in tests/mutants/mutants.json):");
    for (const r of stale) console.log(`  ${r.m.id}  ${r.m.file}`);
  }
  console.log(`time: ${seconds(Date.now() - started)}`);
  exitCode = stale.length || rate < goal ? 1 : 0;
}
process.exit(exitCode);
