// `npm run bench`: how fast is the tracked email path, measured side by side in one run.
//   (a)+(d) end to end through the real HTTP handler to a local SMTP sink, tracking on and off, the
//           SMTP leg alone, pooled and per-message SMTP connections, at 8 and 32 in flight; database
//           round trips and added latency per delivery (bench/e2e.ts, run with Deno)
//   (b)     complete lifecycles per second in Postgres at 1, 8 and 32 clients vs a plain baseline
//   (c)     the same with a million deliveries already stored (--rows=10000000 for the 10M scale proof);
//           sweep and metrics query times; the retention job removing the oldest month under load
// Prints tables and ratios and writes everything to bench/results/<timestamp>.json.
//
// Options (flags or environment):
//   --parts=lifecycle,growth,e2e   BENCH_PARTS      which parts to run (default: all)
//   --seconds=3                    BENCH_SECONDS    length of each lifecycle measurement
//   --rounds=2                     BENCH_ROUNDS     alternating rounds per measurement
//   --clients=1,8,32               BENCH_CLIENTS    concurrency levels
//   --rows=1000000                 BENCH_ROWS       history size for (c)
//   --deliveries=300               BENCH_DELIVERIES deliveries per end-to-end run
//   BENCH_PG_PORT (default: a free port): the embedded Postgres port (DATABASE_URL, when set, is used instead)
import { mkdirSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import os from "node:os";
import path from "node:path";
import postgres from "postgres";
import { migrate, recreateDatabase, root, startServer } from "./lib/postgres.mjs";
import { createBaseline, leanReport, measureMatrix, VARIANTS } from "../bench/lib/lifecycle.mjs";
import {
  interleavedGrowth,
  loadHistory,
  reportInterleavedGrowth,
  reportRetention,
  retentionAtScale,
  timeSweepAndMetrics,
} from "../bench/lib/growth.mjs";
import { timeMetrics } from "../bench/lib/metrics_bench.mjs";
import { round, table } from "../bench/lib/stats.mjs";
import { reportEndToEnd } from "../bench/lib/e2e_report.mjs";

const flags = Object.fromEntries(
  process.argv.slice(2).filter((a) => a.startsWith("--")).map((a) => {
    const [k, v] = a.slice(2).split("=");
    return [k, v ?? "true"];
  }),
);
const opt = (flag, env, def) => flags[flag] ?? process.env[env] ?? def;
const parts = opt("parts", "BENCH_PARTS", "lifecycle,growth,e2e").split(",");
const seconds = Number(opt("seconds", "BENCH_SECONDS", "3"));
const rounds = Number(opt("rounds", "BENCH_ROUNDS", "2"));
const clientsList = opt("clients", "BENCH_CLIENTS", "1,8,32").split(",").map(Number);
const rows = Number(opt("rows", "BENCH_ROWS", "1000000"));
const deliveries = Number(opt("deliveries", "BENCH_DELIVERIES", "300"));
const port = process.env.BENCH_PG_PORT ? Number(process.env.BENCH_PG_PORT) : undefined;
const log = (m) => console.log(m);

const started = new Date();
const results = {
  started_at: started.toISOString(),
  machine: {
    cpus: os.cpus().length,
    cpu_model: os.cpus()[0]?.model,
    memory_gb: round(os.totalmem() / 2 ** 30, 1),
    node: process.version,
  },
  options: { parts, seconds, rounds, clients: clientsList, rows, deliveries },
};

const server = await startServer({ name: "pg-bench", port, log });
try {
  const admin = postgres(server.url, { max: 1, onnotice: () => {} });
  const [v] =
    await admin`select current_setting('server_version') as version, current_setting('synchronous_commit') as sc,
                                 current_setting('shared_buffers') as sb, current_setting('fsync') as fsync`;
  await admin.end();
  results.postgres = v;
  log(
    `Postgres ${v.version} (synchronous_commit=${v.sc}, fsync=${v.fsync}, shared_buffers=${v.sb}) on ${results.machine.cpus} cores`,
  );

  if (parts.includes("lifecycle") || parts.includes("growth")) {
    const url = await recreateDatabase(server.url, "email_bench");
    await migrate(url, { log: () => {} });
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    await createBaseline(sql);
    await sql.end();

    log(`\n(b) lifecycles per second on empty tables (${seconds} s x ${rounds} rounds each)`);
    const empty = await measureMatrix(url, { clientsList, seconds, rounds, label: "empty", log });
    results.lifecycle = empty;

    if (parts.includes("growth")) {
      log(`\n(c) loading ${rows} deliveries of history`);
      results.growth = { history: await loadHistory(url, { rows, log }) };
      log(`(c) lifecycles per second with the history in place`);
      // pg-boss has no history to grow: the growth part compares the email variants with themselves.
      const variants = VARIANTS.filter((v) => v !== "pg-boss");
      results.growth.lifecycle = await measureMatrix(url, { clientsList, seconds, rounds, label: "1M", log, variants });
      log(`(c) email_api.metrics from the rollups vs the exact query`);
      results.growth.metrics = await timeMetrics(url, { log });
      log(`(c) the same interleaved with an empty database`);
      results.growth.interleaved = await interleavedGrowth(server.url, url, { clients: 8, seconds, log });
      results.growth.queries = await timeSweepAndMetrics(url);
      log(`(c) the retention job under a concurrent lifecycle load`);
      results.growth.retention = await retentionAtScale(url, { log });
    }
  }

  if (parts.includes("e2e")) {
    const url = await recreateDatabase(server.url, "email_bench_e2e");
    await migrate(url, { log: () => {} });
    log(`\n(a)(d) end to end: ${deliveries} deliveries through the HTTP handler, tracking on and off`);
    const deno = path.join(root, "node_modules/.bin/deno");
    const out = path.join(os.tmpdir(), `email-bench-e2e-${process.pid}.json`);
    const e2eArgs = [`--deliveries=${deliveries}`, `--rounds=${rounds}`, `--out=${out}`];
    const r = spawnSync(deno, ["run", "-A", "bench/e2e.ts", ...e2eArgs], {
      cwd: root,
      stdio: ["ignore", "inherit", "inherit"],
      env: { ...process.env, DATABASE_URL: url, NO_COLOR: "1" },
    });
    if (r.status !== 0) {
      results.e2e = { error: `bench/e2e.ts exited ${r.status}` };
    } else {
      const { readFileSync } = await import("node:fs");
      results.e2e = JSON.parse(readFileSync(out, "utf8"));
    }
  }
} finally {
  await server.stop();
}

report(results);
results.finished_at = new Date().toISOString();
const dir = path.join(root, "bench/results");
mkdirSync(dir, { recursive: true });
const file = path.join(dir, `${started.toISOString().replace(/[:.]/g, "-")}.json`);
writeFileSync(file, JSON.stringify(results, null, 2) + "\n");
log(`\nresults written to ${path.relative(root, file)}`);
if (results.e2e?.error) process.exit(1);

function report(r) {
  log("\n================ results ================");
  const byKey = (list) => new Map(list.map((x) => [`${x.variant}/${x.clients}`, x]));
  if (r.lifecycle) {
    const e = byKey(r.lifecycle);
    const g = r.growth?.lifecycle ? byKey(r.growth.lifecycle) : null;
    const rowsOut = [];
    for (const c of clientsList) {
      const em = e.get(`email/${c}`),
        e2 = e.get(`email-2rt/${c}`),
        pl = e.get(`plain/${c}`),
        pa = e.get(`plain+audit/${c}`);
      const gm = g?.get(`email/${c}`), g2 = g?.get(`email-2rt/${c}`);
      rowsOut.push([
        c,
        pl.per_second,
        pa.per_second,
        em.per_second,
        e2.per_second,
        round(em.per_second / pl.per_second, 2),
        round(e2.per_second / pl.per_second, 2),
        em.p50_ms,
        em.p99_ms,
        gm?.per_second ?? null,
        gm ? round(gm.per_second / em.per_second, 2) : null,
        g2 ? round(g2.per_second / e2.per_second, 2) : null,
      ]);
    }
    log("\nlifecycles/s (record_queued -> mark_in_progress -> mark_sent, 3 transactions each)");
    log(
      table([
        "clients",
        "plain",
        "plain+audit",
        "email",
        "email-2rt",
        "email/plain",
        "email-2rt/plain",
        "email p50 ms",
        "email p99 ms",
        `email @${r.growth?.history?.deliveries ?? "-"} rows`,
        "growth email",
        "growth email-2rt",
      ], rowsOut),
    );
    const walRows = [];
    for (const variant of ["plain", "plain+audit", "email", "email-2rt"]) {
      const x = e.get(`${variant}/8`) ?? e.get(`${variant}/${clientsList[0]}`);
      walRows.push([variant, x.wal_bytes_per_lifecycle, x.wal_syncs_per_lifecycle, variant === "email-2rt" ? 2 : 3]);
    }
    log("\nper lifecycle (at 8 clients): WAL bytes, WAL fsyncs, round trips");
    log(table(["variant", "WAL bytes", "WAL fsyncs", "round trips"], walRows));
    const at8 = e.get("email/8") && round(e.get("email/8").per_second / e.get("plain/8").per_second, 2);
    if (at8 !== undefined) {
      log(`\ntarget (b): email >= 0.7 x plain at 8 clients: ${at8} ${at8 >= 0.7 ? "MET" : "MISSED"}`);
    }
    const w8 = e.get("email-2rt/8") && round(e.get("email-2rt/8").per_second / e.get("plain/8").per_second, 2);
    if (w8 !== undefined) {
      log(`target (b), as the worker calls it (2 round trips): ${w8} ${w8 >= 0.7 ? "MET" : "MISSED"}`);
    }
    if (g) {
      const gr = round(g.get("email/8").per_second / e.get("email/8").per_second, 2);
      log(`target (c): email with history >= 0.9 x empty at 8 clients: ${gr} ${gr >= 0.9 ? "MET" : "MISSED"}`);
    }
  }
  if (r.lifecycle) r.lean = leanReport(r, { log });
  if (r.growth?.queries) {
    const q = r.growth.queries;
    log(
      `\nat ${r.growth.history.deliveries} deliveries / ${r.growth.history.events} events ` +
        `(${round(r.growth.history.email_total_bytes / 2 ** 20, 0)} MiB):`,
    );
    const qrows = [
      ["email.claim_due(100)", q.claim_due_100.median_ms, q.claim_due_100.max_ms, q.claim_due_100.rows],
      ["due select (partial index)", q.due_select.median_ms, q.due_select.max_ms, q.due_select.rows],
      ["email.reap_expired_leases()", q.reap_expired_leases.median_ms, q.reap_expired_leases.max_ms, null],
    ];
    for (const [name, m] of Object.entries(q.metrics)) {
      qrows.push([name, m.median_ms ?? m.error, m.max_ms ?? null, m.rows ?? null]);
    }
    log(table(["query", "median ms", "max ms", "rows"], qrows));
    if (!q.metrics_present) log("metrics functions: not present in this schema (no email_api metrics migration yet)");
    log("due select plan:\n  " + q.due_plan.join("\n  "));
  }
  if (r.growth?.interleaved) reportInterleavedGrowth(r.growth.interleaved, r.growth.history.deliveries, log);
  if (r.growth?.retention) reportRetention(r.growth.retention, log);
  reportEndToEnd(r.e2e, log);
}
