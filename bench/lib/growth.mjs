// Part (c) of `npm run bench`: a history of `rows` deliveries and their audit trail, loaded in bulk,
// then the time of the sweep's queries and of the metrics functions at that size.
import postgres from "postgres";
import { median, round } from "./stats.mjs";

/**
 * Loads `rows` finished and open deliveries spread over 30 days, with the events the lifecycle would
 * have written for each, into email.* (and the same rows into bench_baseline.*). As superuser, with
 * session_replication_role = replica so the triggers do not fire: the events are written here
 * instead, one row per transition, as the audit trigger would. Secondary indexes are dropped for the
 * load and rebuilt after it, then everything is vacuumed and analysed, as autovacuum would have.
 *
 * Mix: 96.9% sent, 1.5% failed (permanent), 0.5% dead_letter (5 attempts), 1% retrying (due in the
 * next hour), 0.1% in_progress (live lease).
 */
export async function loadHistory(url, { rows, log }) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const t0 = performance.now();
    await sql.begin(async (tx) => {
      await tx.unsafe(`set local session_replication_role = replica`);
      await tx.unsafe(`set local synchronous_commit = off`);
      await tx.unsafe(`set local maintenance_work_mem = '512MB'`);
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
               now() - interval '30 days' * (g::float8 / ${rows}) as t0
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
    await sql.unsafe(`
      insert into bench_baseline.deliveries select * from email.deliveries where delivery_id like 'hist-%';
      insert into bench_baseline.delivery_payloads select * from email.delivery_payloads where delivery_id like 'hist-%';
      insert into bench_baseline.delivery_events overriding system value
        select * from email.delivery_events where delivery_id like 'hist-%';
      select setval(pg_get_serial_sequence('bench_baseline.delivery_events', 'id'), (select max(id) from bench_baseline.delivery_events));
    `).simple();
    await sql.unsafe(`vacuum (analyze) email.deliveries, email.delivery_events, email.delivery_payloads,
                      bench_baseline.deliveries, bench_baseline.delivery_events, bench_baseline.delivery_payloads`);
    await sql.unsafe(`checkpoint`);
    const [sizes] = await sql`
      select (select count(*) from email.deliveries)::int as deliveries,
             (select count(*) from email.delivery_events)::int as events,
             (select count(*) from email.delivery_payloads)::int as payloads,
             pg_total_relation_size('email.deliveries') + pg_total_relation_size('email.delivery_events')
               + pg_total_relation_size('email.delivery_payloads') as email_bytes`;
    log(`  copied to the baseline, vacuumed and analysed in ${round((performance.now() - t1) / 1000, 1)} s`);
    return {
      load_seconds: round(loadSeconds, 1),
      deliveries: sizes.deliveries,
      events: sizes.events,
      payloads: sizes.payloads,
      email_total_bytes: Number(sizes.email_bytes),
    };
  } finally {
    await sql.end();
  }
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
