// Part (c) of `npm run bench`, metrics: email_api.metrics over 1, 7 and 30 days answered from the
// rollups (supabase/migrations/20261129000300_email_rollups.sql) against the exact query it replaced
// (the released email_api.metrics of 20261128000400_email_api.sql, installed as bench_exact.metrics),
// on a database already loaded with history (growth.mjs loadHistory).
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { median, round, table } from "./stats.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The released email_api.metrics (the exact query over the rows), as bench_exact.metrics. */
function exactMetricsSql() {
  const text = readFileSync(path.join(root, "supabase/migrations/20261128000400_email_api.sql"), "utf8");
  const start = text.indexOf("create or replace function email_api.metrics(");
  const end = text.indexOf("$$;", text.indexOf("as $$", start)) + 3;
  if (start < 0 || end < 3) throw new Error("email_api.metrics not found in the api migration");
  return text.slice(start, end).replace("function email_api.metrics(", "function bench_exact.metrics(");
}

/** The document without what only the rollups answer has (domains, relays, source) and without latency. */
function counts(doc) {
  const strip = (w) => {
    const { latency_ms: _l, ...rest } = w;
    return rest;
  };
  return JSON.stringify({
    totals: strip(doc.totals),
    workflows: doc.workflows.map(strip),
    errors: doc.errors,
    dead_letter_queue: doc.dead_letter_queue.size,
  });
}

/** The largest relative difference of the rollups' percentiles from the exact ones (0.01 = 1 %). */
function percentileError(rolled, exact) {
  let worst = 0;
  for (const [a, b] of [[rolled.totals, exact.totals], ...rolled.workflows.map((w, i) => [w, exact.workflows[i]])]) {
    for (const p of ["p50", "p95", "p99"]) {
      const x = Number(a.latency_ms[p]);
      const y = Number(b.latency_ms[p]);
      if (y > 0) worst = Math.max(worst, Math.abs(x - y) / y);
    }
  }
  return worst;
}

/**
 * Builds the rollups for the loaded history (email.rebuild_metric_rollups(true): the history counts as
 * folded, as it would after months of folds), folds what is left, then times email_api.metrics and the
 * exact query for windows of 1, 7 and 30 days ending now (`times` runs each, median and max), checks
 * that they give the same counts and how far apart their percentiles are, and prints a table.
 */
export async function timeMetrics(url, { log = console.log, times = 5 } = {}) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`create schema if not exists bench_exact`);
    await sql.unsafe(exactMetricsSql());

    const t0 = performance.now();
    const [{ rebuilt }] = await sql`select email.rebuild_metric_rollups(true) as rebuilt`;
    const rebuildSeconds = (performance.now() - t0) / 1000;
    let folded = 0;
    for (let n = -1; n !== 0;) {
      [{ n }] = await sql`select email.fold_metric_events() as n`;
      folded += n;
    }
    await sql.unsafe(`analyze email.metric_rollups, email.metric_latency_rollups, email.metric_outcome_rollups`);
    const [sizes] = await sql`
      select (select count(*) from email.metric_rollups)::int as rollup_rows,
             (select count(*) from email.metric_latency_rollups)::int as latency_rows,
             (select count(*) from email.metric_outcome_rollups)::int as outcome_rows,
             (pg_total_relation_size('email.metric_rollups') + pg_total_relation_size('email.metric_latency_rollups')
               + pg_total_relation_size('email.metric_outcome_rollups'))::bigint as bytes`;
    log(
      `  rollups built in ${round(rebuildSeconds, 1)} s (${sizes.rollup_rows} + ${sizes.latency_rows} + ` +
        `${sizes.outcome_rows} rows, ${round(Number(sizes.bytes) / 2 ** 20, 1)} MiB); ${folded} events folded after`,
    );

    const windows = {};
    for (const days of [1, 7, 30]) {
      const until = new Date();
      const since = new Date(until.getTime() - days * 86400_000);
      const run = async (fn) => {
        const ms = [];
        let doc;
        for (let i = 0; i < times; i++) {
          const t = performance.now();
          [{ doc }] = await sql.unsafe(`select ${fn}($1, $2, null) as doc`, [since, until]);
          ms.push(performance.now() - t);
        }
        return { doc, median_ms: round(median(ms), 1), max_ms: round(Math.max(...ms), 1) };
      };
      const rolled = await run("email_api.metrics");
      const exact = await run("bench_exact.metrics");
      windows[`${days}d`] = {
        deliveries: Number(rolled.doc.totals.total),
        rollups_median_ms: rolled.median_ms,
        rollups_max_ms: rolled.max_ms,
        exact_median_ms: exact.median_ms,
        exact_max_ms: exact.max_ms,
        speedup: round(exact.median_ms / rolled.median_ms, 1),
        same_counts: counts(rolled.doc) === counts(exact.doc),
        max_percentile_error: round(percentileError(rolled.doc, exact.doc), 5),
        latency: rolled.doc.source.latency,
        source: rolled.doc.source,
      };
    }
    log(table(
      [
        "window",
        "deliveries",
        "rollups ms (median/max)",
        "exact ms (median/max)",
        "x faster",
        "same counts",
        "max pct error",
      ],
      Object.entries(windows).map(([name, w]) => [
        name,
        w.deliveries,
        `${w.rollups_median_ms} / ${w.rollups_max_ms}`,
        `${w.exact_median_ms} / ${w.exact_max_ms}`,
        w.speedup,
        w.same_counts ? "yes" : "NO",
        `${round(w.max_percentile_error * 100, 3)} %`,
      ]),
    ));
    const month = windows["30d"];
    log(
      `target: 30 days <= 200 ms from the rollups: ${month.rollups_median_ms} ms ${
        month.rollups_median_ms <= 200 ? "MET" : "MISSED"
      }; exact counts: ${Object.values(windows).every((w) => w.same_counts) ? "MET" : "MISSED"}; ` +
        `percentiles within 1 %: ${
          Object.values(windows).every((w) => w.max_percentile_error <= 0.01) ? "MET" : "MISSED"
        }`,
    );
    await sql.unsafe(`drop schema bench_exact cascade`);
    return { rebuild_seconds: round(rebuildSeconds, 1), rebuilt, folded_after: folded, sizes, windows };
  } finally {
    await sql.end();
  }
}
