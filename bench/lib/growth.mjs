// Part (c) of `npm run bench`: a history of `rows` deliveries and their audit trail, loaded in bulk,
// then the time of the sweep's queries and of the metrics functions at that size, and the retention
// job removing the oldest month of it under a concurrent lifecycle load (retentionAtScale).
import postgres from "postgres";
import { runLifecycles } from "./lifecycle.mjs";
import { migrate, recreateDatabase } from "../../scripts/lib/postgres.mjs";
import { median, quantile, round, table } from "./stats.mjs";

/**
 * Loads `rows` finished and open deliveries spread over `days` days (120 by default, so the retention
 * of 90 days has a month to remove), with the events the lifecycle would have written for each, into
 * email.* (and, up to a million rows, the same rows into bench_baseline.*: the plain variants are not
 * compared at larger sizes). Set-based SQL (generate_series), as superuser, with
 * session_replication_role = replica so the triggers do not fire: the events are written here
 * instead, one row per transition, as the audit trigger would, routed into the weekly partitions of
 * email.delivery_events (created first for the whole period, as the retention job keeps them).
 * Secondary indexes are dropped for the load and rebuilt after it, then everything is vacuumed and
 * analysed, as autovacuum would have. Nothing else is turned off.
 *
 * Mix: 96.9% sent, 1.5% failed (permanent), 0.5% dead_letter (5 attempts), 1% retrying (due in the
 * next hour), 0.1% in_progress (live lease).
 */
export async function loadHistory(url, { rows, days = 120, log }) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const t0 = performance.now();
    await sql.begin(async (tx) => {
      await tx.unsafe(`set local session_replication_role = replica`);
      await tx.unsafe(`set local synchronous_commit = off`);
      await tx.unsafe(`set local maintenance_work_mem = '512MB'`);
      await tx.unsafe(`select email.ensure_event_partitions(now() - interval '${days} days', now())`);
      const indexes = await tx`
        select i.indexrelid::regclass::text as name, pg_get_indexdef(i.indexrelid) as def
        from pg_index i
        where i.indrelid in ('email.deliveries'::regclass, 'email.delivery_events'::regclass, 'email.delivery_payloads'::regclass)
          and not i.indisprimary and not i.indisunique`;
      for (const ix of indexes) await tx.unsafe(`drop index ${ix.name}`);

      await tx.unsafe(`
        create temporary table bulk on commit drop as
        select g,
               'hist-' || g as delivery_id,
               (array['signup-code', 'password-reset', 'magic-link', 'invoice'])[1 + g % 4] as workflow,
               'user' || (g % 200000) || '@example.com' as recipient,
               case when g % 10 < 8 then md5('u' || (g % 150000))::uuid end as user_id,
               case
                 when g % 1000 < 969 then 'sent'
                 when g % 1000 < 984 then 'failed'
                 when g % 1000 < 989 then 'dead_letter'
                 when g % 1000 < 999 then 'retrying'
                 else 'in_progress'
               end as status,
               now() - interval '${days} days' * (g::float8 / ${rows}) as t0
        from generate_series(1, ${rows}) g;

        insert into email.deliveries (
          delivery_id, workflow, recipient, user_id, status, attempts, max_attempts,
          last_error_code, last_error_message, queued_at, last_attempted_at, next_attempt_at, lease_expires_at,
          sent_at, completed_at, provider_message_id, provider_response, request_hash, metadata, created_at, updated_at)
        select delivery_id, workflow, recipient, user_id, status,
               case when status = 'dead_letter' then 5 else 1 end, 5,
               case status when 'failed' then 'smtp_550' when 'dead_letter' then 'smtp_timeout' when 'retrying' then 'smtp_421' end,
               case status when 'failed' then '550 5.1.1 mailbox unavailable' when 'dead_letter' then 'timed out after 30000 ms'
                           when 'retrying' then '421 4.7.0 try again later' end,
               t0, t0 + interval '40 ms',
               case when status = 'retrying' then now() + interval '1 hour' * random() end,
               case when status = 'in_progress' then now() + interval '60 seconds' end,
               case when status = 'sent' then t0 + interval '300 ms' end,
               case when status in ('sent', 'failed', 'dead_letter') then t0 + interval '300 ms' end,
               case when status = 'sent' then '<' || md5(delivery_id) || '@smtp.example.com>' end,
               case when status = 'sent' then '250 2.0.0 OK queued as ' || left(md5(delivery_id), 10) end,
               md5(delivery_id) || md5(workflow), '{}', t0, t0 + interval '300 ms'
        from bulk;

        insert into email.delivery_payloads (delivery_id, payload, created_at)
        select delivery_id, jsonb_build_object('code', (g % 900000 + 100000)::text, 'name', 'Ada Lovelace',
                                               'link', 'https://app.example.com/verify?t=' || md5(delivery_id)), t0
        from bulk where status in ('dead_letter', 'retrying', 'in_progress');

        insert into email.delivery_events (delivery_id, from_status, to_status, attempt, error_code, error_message, detail, actor, created_at)
        select b.delivery_id, e.from_status, e.to_status, e.attempt, e.error_code, e.error_message, e.detail,
               case when e.to_status = 'queued' then 'service_role@email-worker' else 'service_role@email-worker' end,
               b.t0 + e.at
        from bulk b
        cross join lateral (
          select null::text as from_status, 'queued'::text as to_status, 0 as attempt, null::text as error_code,
                 null::text as error_message, '{}'::jsonb as detail, interval '0' as at
          union all
          select case when a = 1 then 'queued' else 'retrying' end, 'in_progress', a, null, null,
                 jsonb_build_object('lease_expires_at', b.t0 + interval '60 seconds'), interval '40 ms' * a
          from generate_series(1, case when b.status = 'dead_letter' then 5 else 1 end) a
          union all
          select 'in_progress', case when b.status = 'dead_letter' and a < 5 then 'retrying' else b.status end, a,
                 case when b.status = 'sent' then null when b.status = 'failed' then 'smtp_550' else 'smtp_timeout' end,
                 case when b.status = 'sent' then null else 'failure detail' end,
                 case when b.status = 'sent' then jsonb_build_object('provider_message_id', '<' || md5(b.delivery_id) || '@smtp.example.com>')
                      else '{}'::jsonb end,
                 interval '40 ms' * a + interval '200 ms'
          from generate_series(1, case when b.status = 'dead_letter' then 5 else 1 end) a
          where b.status <> 'in_progress'
        ) e;
      `);
      // A partitioned table's index definition reads "ON ONLY" (the parent alone): rebuild it on every partition.
      for (const ix of indexes) await tx.unsafe(ix.def.replace(" ON ONLY ", " ON "));
    });
    const loadSeconds = (performance.now() - t0) / 1000;
    log(`  loaded ${rows} deliveries and their events in ${round(loadSeconds, 1)} s`);

    const t1 = performance.now();
    if (rows <= 1_000_000) {
      await sql.unsafe(`
        insert into bench_baseline.deliveries select * from email.deliveries where delivery_id like 'hist-%';
        insert into bench_baseline.delivery_payloads select * from email.delivery_payloads where delivery_id like 'hist-%';
        insert into bench_baseline.delivery_events overriding system value
          select * from email.delivery_events where delivery_id like 'hist-%';
        select setval(pg_get_serial_sequence('bench_baseline.delivery_events', 'id'), (select max(id) from bench_baseline.delivery_events));
      `).simple();
    }
    await sql.unsafe(`vacuum (analyze) email.deliveries, email.delivery_events, email.delivery_payloads,
                      bench_baseline.deliveries, bench_baseline.delivery_events, bench_baseline.delivery_payloads`);
    await sql.unsafe(`checkpoint`);
    const sizes = await storage(sql);
    log(
      `  ${rows <= 1_000_000 ? "copied to the baseline, " : ""}vacuumed and analysed in ${
        round((performance.now() - t1) / 1000, 1)
      } s`,
    );
    return {
      load_seconds: round(loadSeconds, 1),
      days,
      deliveries: sizes.deliveries,
      events: sizes.events,
      payloads: sizes.payloads,
      email_total_bytes: sizes.total_bytes,
      partitions: sizes.partitions,
    };
  } finally {
    await sql.end();
  }
}

/**
 * Rows and bytes (heap with TOAST and free space, indexes) of deliveries, the trail (every partition)
 * and payloads.
 */
async function storage(sql) {
  const [s] = await sql.unsafe(`
    with leaves as (select t.relid from pg_partition_tree('email.delivery_events') t where t.isleaf)
    select (select count(*) from email.deliveries) as deliveries,
           (select count(*) from email.delivery_events) as events,
           (select count(*) from email.delivery_payloads) as payloads,
           pg_table_size('email.deliveries') as deliveries_table_bytes,
           pg_indexes_size('email.deliveries') as deliveries_index_bytes,
           (select sum(pg_table_size(l.relid)) from leaves l) as events_table_bytes,
           (select sum(pg_indexes_size(l.relid)) from leaves l) as events_index_bytes,
           pg_total_relation_size('email.delivery_payloads') as payloads_bytes,
           (select count(*) from leaves) as partitions`);
  const n = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, Number(v)]));
  n.total_bytes = n.deliveries_table_bytes + n.deliveries_index_bytes + n.events_table_bytes + n.events_index_bytes +
    n.payloads_bytes;
  return n;
}

/** Times `query` (run inside a transaction that is rolled back) `times` times; median and max ms. */
async function timeQuery(sql, query, times = 7, setup = null) {
  const ms = [];
  let rows = null;
  for (let i = 0; i < times; i++) {
    try {
      await sql.begin(async (tx) => {
        if (setup) await tx.unsafe(setup);
        const t = performance.now();
        const r = await tx.unsafe(query);
        ms.push(performance.now() - t);
        rows = r.length;
        throw new Rollback();
      });
    } catch (e) {
      if (!(e instanceof Rollback)) throw e;
    }
  }
  return { median_ms: round(median(ms), 2), max_ms: round(Math.max(...ms), 2), rows };
}

class Rollback extends Error {}

/**
 * Times the sweep's queries (claim_due and its "what is due" select, reap_expired_leases) and, when
 * the email_api metrics migration is present, each metrics function that can be called without
 * arguments; also returns the plan of the due select, to show it uses the partial index.
 */
export async function timeSweepAndMetrics(url) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const out = {};
    out.claim_due_100 = await timeQuery(sql, `select * from email.claim_due(100, 60)`);
    out.due_select = await timeQuery(
      sql,
      `select x.delivery_id from email.deliveries x where x.status in ('queued', 'retrying') and x.next_attempt_at <= now()
       order by x.next_attempt_at limit 100 for update skip locked`,
    );
    out.reap_expired_leases = await timeQuery(sql, `select email.reap_expired_leases()`);
    const plan = await sql.unsafe(`explain (analyze, buffers, costs off, timing off, summary off)
      select x.delivery_id from email.deliveries x where x.status in ('queued', 'retrying') and x.next_attempt_at <= now()
      order by x.next_attempt_at limit 100`);
    out.due_plan = plan.map((r) => r["QUERY PLAN"]);

    const fns = await sql`
      select p.oid::regprocedure::text as signature, n.nspname || '.' || p.proname as name
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname in ('email_api', 'email') and p.proname ~ '(metric|stats|summary|dashboard)'
        and p.pronargs = p.pronargdefaults and p.prokind = 'f'
      order by 1`;
    out.metrics = {};
    if (fns.length === 0) {
      out.metrics_present = false;
    } else {
      out.metrics_present = true;
      for (const f of fns) {
        try {
          out.metrics[f.signature] = await timeQuery(
            sql,
            `select * from ${f.name}()`,
            5,
            `set local role service_role`,
          );
        } catch (e) {
          out.metrics[f.signature] = { error: String(e.message ?? e) };
        }
      }
    }
    return out;
  } finally {
    await sql.end();
  }
}

/**
 * The retention job at scale. With the history loaded (120 days), email.run_retention (90 days)
 * removes the oldest month: finished deliveries by batched delete, their events by dropping whole
 * weekly partitions. It runs as pg_cron would, call after call (batches of 10,000, 10 per call)
 * until no backlog is left, while `clients` clients run lifecycles as the worker calls them
 * (email-2rt) in back-to-back one-second windows. Returns the load's rate and p99 before the job, during
 * the calls that only delete deliveries, and during the call that drops the partitions; the job's
 * own record (email.retention_runs); the storage per delivery before and after (and after a VACUUM of
 * deliveries, which makes the deleted rows' space reusable: a heap does not shrink, it stops growing).
 */
export async function retentionAtScale(url, { clients = 8, log }) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const before = await storage(sql);
    const baseline = await runLifecycles(url, { variant: "email-2rt", clients, seconds: 5, tag: "ret-before" });
    log(`  load before the job: ${baseline.per_second}/s, p99 ${baseline.p99_ms} ms (${clients} clients)`);

    const windows = [];
    let stop = false;
    const load = (async () => {
      for (let i = 0; !stop; i++) {
        const t0 = performance.now();
        const r = await runLifecycles(url, { variant: "email-2rt", clients, seconds: 1, tag: `ret-during-${i}` });
        windows.push({ t0, t1: performance.now(), ...r });
      }
    })();
    await new Promise((r) => setTimeout(r, 1500));
    const calls = [];
    const started = performance.now();
    try {
      for (;;) {
        const t0 = performance.now();
        const [run] = await sql`select * from email.run_retention(10000, 10)`;
        calls.push({ t0, t1: performance.now(), run });
        const ms = round(performance.now() - t0, 0);
        if (run.id === null) break;
        log(
          `  run_retention: ${run.deliveries_deleted} deliveries, ${run.partitions_dropped.length} partitions ` +
            `(${run.events_deleted} events, ${run.events_carried} carried) in ${ms} ms` +
            (run.trail_locked_ms !== null ? `, trail locked ${round(run.trail_locked_ms, 1)} ms` : ""),
        );
        if (!run.backlog) break;
      }
    } finally {
      await new Promise((r) => setTimeout(r, 1500));
      stop = true;
      await load;
    }
    const jobSeconds = (calls.at(-1).t1 - started) / 1000;
    const runs = calls.map((c) => c.run).filter((r) => r.id !== null);
    const dropCall = calls.findLast((c) => c.run.id !== null && c.run.partitions_dropped.length > 0);
    const deleteCalls = calls.filter((c) => c !== dropCall && c.run.id !== null);
    const overlapping = (cs) => windows.filter((w) => cs.some((c) => w.t1 > c.t0 && w.t0 < c.t1));
    const phase = (ws) =>
      ws.length === 0 ? null : {
        windows: ws.length,
        per_second: round(ws.reduce((s, w) => s + w.lifecycles, 0) / ws.reduce((s, w) => s + w.seconds, 0), 1),
        p99_ms_worst_window: round(Math.max(...ws.map((w) => w.p99_ms)), 2),
        p99_ms_median_window: round(median(ws.map((w) => w.p99_ms)), 2),
      };

    const after = await storage(sql);
    await sql.unsafe(`vacuum (analyze) email.deliveries`);
    const vacuumed = await storage(sql);
    const sum = (k) => runs.reduce((s, r) => s + Number(r[k]), 0);
    return {
      clients,
      before_job: { per_second: baseline.per_second, p99_ms: baseline.p99_ms },
      deleting: phase(overlapping(deleteCalls)),
      dropping: phase(overlapping(dropCall ? [dropCall] : [])),
      all_windows_p99_ms: round(quantile(windows.map((w) => w.p99_ms), 0.99), 2),
      job: {
        seconds: round(jobSeconds, 1),
        calls: runs.length,
        cutoff: runs[0]?.cutoff ?? null,
        deliveries_deleted: sum("deliveries_deleted"),
        events_deleted: sum("events_deleted"),
        events_carried: sum("events_carried"),
        partitions_dropped: runs.flatMap((r) => r.partitions_dropped),
        drop_call_seconds: dropCall ? round((dropCall.t1 - dropCall.t0) / 1000, 2) : null,
        drop_call_deliveries_deleted: dropCall ? Number(dropCall.run.deliveries_deleted) : null,
        trail_locked_ms: dropCall ? round(dropCall.run.trail_locked_ms, 1) : null,
      },
      storage: { before, after, after_vacuum: vacuumed },
    };
  } finally {
    await sql.end();
  }
}

/** The scale figures of retentionAtScale, as printed by `npm run bench`. */
export function reportRetention(r, log) {
  const mib = (b) => round(b / 2 ** 20, 0);
  const per = (s, k) => round(s[k] / s.deliveries, 0);
  log(
    `\nretention at ${r.storage.before.deliveries} deliveries: ${r.job.partitions_dropped.length} weekly partitions ` +
      `and ${r.job.deliveries_deleted} deliveries removed (cutoff ${new Date(r.job.cutoff).toISOString()}) ` +
      `in ${r.job.seconds} s over ${r.job.calls} calls`,
  );
  log(
    `  the dropping call: ${r.job.drop_call_seconds} s (with its last ${r.job.drop_call_deliveries_deleted} deliveries), ` +
      `trail locked ${r.job.trail_locked_ms} ms; ${r.job.events_deleted} events removed, ${r.job.events_carried} carried ` +
      `(kept deliveries: dead letters and open ones)`,
  );
  const rows = [["before the job", r.before_job.per_second, r.before_job.p99_ms, r.before_job.p99_ms, null]];
  for (const [name, p] of [["deleting deliveries", r.deleting], ["dropping partitions", r.dropping]]) {
    if (p) {
      rows.push([
        name,
        p.per_second,
        p.p99_ms_median_window,
        p.p99_ms_worst_window,
        round(p.per_second / r.before_job.per_second, 2),
      ]);
    }
  }
  log(`  concurrent lifecycle load (${r.clients} clients, email-2rt, 1-second windows)`);
  log(table(["phase", "lifecycles/s", "p99 ms (median window)", "p99 ms (worst window)", "rate vs before"], rows));
  const srows = [];
  for (
    const [name, s] of [["before", r.storage.before], ["after", r.storage.after], [
      "after vacuum",
      r.storage.after_vacuum,
    ]]
  ) {
    srows.push([
      name,
      s.deliveries,
      s.events,
      s.partitions,
      mib(s.deliveries_table_bytes),
      mib(s.deliveries_index_bytes),
      mib(s.events_table_bytes),
      mib(s.events_index_bytes),
      mib(s.total_bytes),
      per(s, "total_bytes"),
      round((s.events_table_bytes + s.events_index_bytes) / s.deliveries, 0),
    ]);
  }
  log("  storage (MiB; bytes per delivery)");
  log(table([
    "",
    "deliveries",
    "events",
    "partitions",
    "deliveries heap",
    "deliveries idx",
    "events heap",
    "events idx",
    "total",
    "B/delivery",
    "events B/delivery",
  ], srows));
}

/**
 * The lifecycle rate with the history in place vs an empty database, measured interleaved (history,
 * empty, empty, history, ...) on the same server, so a busy machine's drift hits both alike: the
 * figure for "history >= 0.9 x empty" that does not depend on when (b) ran. Both are warmed first
 * (one untimed measurement each). The empty database is dropped afterwards.
 */
export async function interleavedGrowth(serverUrl, historyUrl, { clients = 8, seconds = 3, rounds = 3, log }) {
  const emptyUrl = await recreateDatabase(serverUrl, "email_bench_empty");
  await migrate(emptyUrl, { log: () => {} });
  const out = {};
  try {
    // Warm both first: right after the load, the history's indexes are not in memory yet.
    for (const url of [historyUrl, emptyUrl]) {
      await runLifecycles(url, { variant: "email", clients, seconds, tag: "cmp-warm" });
    }
    for (const variant of ["email", "email-2rt"]) {
      const acc = { history: [], empty: [] };
      for (let r = 0; r < rounds; r++) {
        for (const which of r % 2 === 0 ? ["history", "empty"] : ["empty", "history"]) {
          const res = await runLifecycles(which === "history" ? historyUrl : emptyUrl, {
            variant,
            clients,
            seconds,
            tag: `cmp-${which}-${variant}-${r}`,
          });
          acc[which].push(res);
          log(
            `  ${which.padEnd(7)} ${variant.padEnd(9)} ${clients} clients: ${res.per_second}/s (p99 ${res.p99_ms} ms)`,
          );
        }
      }
      const rate = (xs) => round(xs.reduce((a, x) => a + x.lifecycles, 0) / xs.reduce((a, x) => a + x.seconds, 0), 1);
      const p99 = (xs) => round(median(xs.map((x) => x.p99_ms)), 2);
      out[variant] = {
        history_per_second: rate(acc.history),
        empty_per_second: rate(acc.empty),
        ratio: round(rate(acc.history) / rate(acc.empty), 2),
        history_p99_ms: p99(acc.history),
        empty_p99_ms: p99(acc.empty),
      };
    }
  } finally {
    const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
    await admin.unsafe(`drop database if exists email_bench_empty with (force)`);
    await admin.end();
  }
  return { clients, seconds, rounds, variants: out };
}

/** The interleaved comparison of interleavedGrowth, as printed by `npm run bench`. */
export function reportInterleavedGrowth(g, rows, log) {
  log(`
lifecycles/s at ${g.clients} clients with ${rows} deliveries of history vs empty, interleaved on one server`);
  log(table(
    ["variant", "history /s", "empty /s", "history/empty", "p99 ms history", "p99 ms empty"],
    Object.entries(g.variants).map((
      [v, x],
    ) => [v, x.history_per_second, x.empty_per_second, x.ratio, x.history_p99_ms, x.empty_p99_ms]),
  ));
  const r = g.variants.email?.ratio;
  if (r !== undefined) {
    log(`target (c), interleaved: email with history >= 0.9 x empty: ${r} ${r >= 0.9 ? "MET" : "MISSED"}`);
  }
}
