-- The metric rollups behind email_api.metrics: on a real history (the lifecycle RPCs: sends, retries,
-- failures, dead letters, requeues, suppressions, purges; latencies from 1 ms to an hour, queued over
-- three days) the answer from the rollups equals the exact one over random windows that start and
-- end mid-hour, with events the fold has not read yet (the tail); percentiles are within the stated
-- bound of percentile_cont; outcomes group by recipient domain and relay; a rebuild and a fold change
-- nothing; structure and privileges.
begin;
select plan(37);

\ir fixtures/helpers.psql
\ir fixtures/fold_all.psql

-- Structure ------------------------------------------------------------------------------------
select has_table('email', t, format('email.%s exists', t))
from unnest(array['metric_rollups', 'metric_latency_rollups', 'metric_outcome_rollups']) t;
select is(
  (select array_agg(c.relname::text order by c.relname) from pg_class c
   where c.relnamespace = 'email'::regnamespace and c.relkind = 'r' and c.relname like 'metric%rollups' and not c.relrowsecurity),
  null, 'every rollup table has RLS enabled');
select is_empty(
  $$ select r || ' ' || c.relname from unnest(array['anon', 'authenticated']) r, pg_class c
     where c.relnamespace = 'email'::regnamespace and c.relkind = 'r' and c.relname like 'metric%rollups'
       and has_table_privilege(r, c.oid, 'select, insert, update, delete') $$,
  'anon and authenticated have no privilege on the rollups');
select is_empty(
  $$ select r || ' ' || f from unnest(array['anon', 'authenticated']) r,
       unnest(array['email.rebuild_metric_rollups(boolean)', 'email._metric_facts(bigint, bigint, bigint[], timestamptz, timestamptz)',
         'email.latency_percentiles(smallint[], bigint[], double precision[])', 'email.metric_label(text, text)']) f
     where has_function_privilege(r, f, 'execute') $$,
  'anon and authenticated may execute none of the rollup functions');
select is_empty(
  $$ select p.oid::regprocedure::text from pg_proc p
     where p.pronamespace = 'email'::regnamespace
       and (p.proname in ('rebuild_metric_rollups', '_metric_facts', 'latency_percentiles', 'metric_label')
            and (p.prosecdef or not coalesce('search_path=""' = any (p.proconfig), false))
         or p.proname in ('latency_bin', 'latency_bin_value', 'metric_bucket', 'is_attempt_outcome')
            and (p.prosecdef or p.provolatile <> 'i' or p.proconfig is not null or p.prolang <> (select l.oid from pg_language l where l.lanname = 'sql'))) $$,
  'the rollup functions run as the caller and pin search_path = '''', but for the inlined immutable SQL helpers');

-- The histogram -------------------------------------------------------------------------------
select is(
  (select count(*)::int from generate_series(1, 2000) i,
     lateral (select exp(ln(1e-3) + (ln(1e9) - ln(1e-3)) * i / 2000.0) as ms) x
   where abs(email.latency_bin_value(email.latency_bin(x.ms)) - x.ms) > 0.005 * x.ms * (1 + 1e-9)),
  0, 'every latency from 1 µs to 11 days is within 0.5 % of the value of its bin');
select is(email.latency_bin_value(email.latency_bin(0)), 0::double precision, 'zero has a bin of its own');
select ok(email.latency_bin(100) > email.latency_bin(99.4) and email.latency_bin(100) < email.latency_bin(101),
  'neighbouring latencies 0.6 % apart fall in different bins');
select is(
  email.latency_percentiles(array[email.latency_bin(10), email.latency_bin(20)]::smallint[], array[1, 1]::bigint[], array[0, 0.5, 1]),
  array[email.latency_bin_value(email.latency_bin(10)),
        (email.latency_bin_value(email.latency_bin(10)) + email.latency_bin_value(email.latency_bin(20))) / 2,
        email.latency_bin_value(email.latency_bin(20))],
  'percentiles interpolate between the ranks floor and ceil, as percentile_cont does');
select is(email.latency_percentiles('{}', '{}', array[0.5]), null, 'an empty histogram has no percentiles');

-- The history ---------------------------------------------------------------------------------
-- 480 deliveries of two workflows (two attempts each), to three busy domains, rarer ones and two
-- relays (and none: the reaper's outcomes), ending: sent at once or after a retry, failed, dead
-- letter, requeued from the dead letters and sent, suppressed, purged, still queued or in progress.
update email.metric_state set max_domains = (select count(*) from email.metric_labels where kind = 'domain') + 3,
  max_relays = (select count(*) from email.metric_labels where kind = 'relay') + 2;
select pg_temp.fold_all();
select setseed(0.265) is null as seeded;
create function pg_temp.deliver(i int, tail boolean) returns void language plpgsql as $$
declare
  id text := case when tail then 't-roll-tail-' else 't-roll-' end || i;
  wf text := case when i % 3 = 0 then 't-roll-b' else 't-roll-a' end;
  domain text := case when i % 7 < 3 then 'gmail.roll' when i % 7 < 5 then 'outlook.roll' when i % 7 = 5 then 'yahoo.roll'
    else 'rare' || (i % 11) || '.roll' end;
  relay text := case when i % 5 = 0 then null when i % 5 < 3 then 'smtp-1.roll' else 'smtp-2.roll' end;
  recipient text := case when tail then 'v' else 'u' end || i || '@' || domain;
  kind int := i % 20;
begin
  if kind = 17 then
    perform email.add_suppression(recipient, 'pgtap rollups');
  end if;
  perform email.record_queued(id, wf, recipient, '{}');
  if kind in (15, 16, 17) then
    return; -- queued (or suppressed on arrival)
  end if;
  perform email.mark_in_progress(id);
  if kind = 14 then
    return; -- in progress
  end if;
  if kind between 8 and 13 then
    perform email.record_failure(id, 1, 'try later', 451, relay => relay);
    update email.deliveries set next_attempt_at = now() where delivery_id = id;
    if kind = 8 then
      return; -- retrying
    end if;
    perform email.mark_in_progress(id);
    if kind in (9, 10) then
      perform email.mark_sent(id, 2, relay => relay);
      return;
    end if;
    perform email.record_failure(id, 2, 'still later', 421, relay => relay); -- exhausted: dead letter
    if kind = 12 then
      perform email.requeue(id, 'pgtap rollups');
      perform email.mark_in_progress(id);
      perform email.mark_sent(id, 3, relay => relay);
    elsif kind = 13 then
      update email.deliveries set completed_at = now() - interval '400 days' where delivery_id = id;
      perform email.purge_dead_letters(interval '399 days', 'pgtap rollups');
    end if;
    return;
  end if;
  if kind in (6, 7) then
    perform email.record_failure(id, 1, 'no such user', 550, '5.1.1', relay => relay);
    return;
  end if;
  perform email.mark_sent(id, 1, relay => relay);
end
$$;
insert into email.retry_policies (workflow, max_attempts) values ('t-roll-a', 2), ('t-roll-b', 2);
-- queued over three days before the start of this hour, sent 1 ms to an hour later (log-uniform)
create temp table base as select email.metric_bucket('hour', now()) - interval '1 hour' as t;
create function pg_temp.backdate(pattern text) returns void language sql as $$
  update email.deliveries d set
    queued_at = x.q,
    sent_at = case when d.sent_at is not null then x.q + make_interval(secs => exp(ln(1) + ln(3600000) * random()) / 1000) end
  from (select d2.delivery_id, (select t from base) - make_interval(secs => random() * 3 * 86400) as q
        from email.deliveries d2 where d2.delivery_id like pattern) x
  where d.delivery_id = x.delivery_id
$$;
do $$ begin perform pg_temp.deliver(i, false) from generate_series(1, 480) i; perform pg_temp.backdate('t-roll-%'); end $$;

-- Outcomes at many times: workflow t-roll-out gets attempt outcomes (written as the trail would) over
-- the three days, half of them folded, half in the tail.
create function pg_temp.outcomes(n int) returns void language sql as $$
  insert into email.delivery_events (delivery_id, from_status, to_status, attempt, detail, actor, created_at)
  select 't-roll-out-' || (i % 30), 'in_progress', (array['sent', 'retrying', 'retrying', 'failed', 'dead_letter'])[1 + (i % 5)], 1,
    case when i % 4 = 0 then '{}' else jsonb_build_object('relay', 'smtp-' || (i % 4) || '.roll') end, 'pgtap',
    (select t from base) - make_interval(secs => random() * 3 * 86400)
  from generate_series(1, n) i
$$;
do $$ begin
  perform email.record_queued('t-roll-out-' || i, 't-roll-out', 'o' || i || '@' || (array['gmail.roll', 'outlook.roll', 'rare-out.roll'])[1 + i % 3], '{}')
  from generate_series(0, 29) i;
end $$;
update email.deliveries set queued_at = queued_at - interval '4 days' where workflow = 't-roll-out';
do $$ begin perform pg_temp.outcomes(300); end $$;

-- Folded: everything so far.
select pg_temp.fold_all();
-- Not folded: new deliveries, and folded ones that move on (dead letters requeued and claimed, a retry sent).
do $$
begin
  perform pg_temp.deliver(i, true) from generate_series(1, 60) i;
  perform pg_temp.backdate('t-roll-tail-%');
  perform email.requeue(d.delivery_id, 'pgtap tail') from email.deliveries d
  where d.delivery_id like 't-roll-%' and d.status = 'dead_letter' and d.delivery_id not like 't-roll-tail-%' and random() < 0.5;
  perform email.mark_in_progress(d.delivery_id) from email.deliveries d
  where d.delivery_id like 't-roll-%' and d.status = 'queued' and d.attempts > 0 and random() < 0.5;
  perform email.mark_sent(d.delivery_id, d.attempts, relay => 'smtp-2.roll') from email.deliveries d
  where d.delivery_id like 't-roll-%' and d.status = 'retrying' and d.delivery_id not like 't-roll-tail-%';
end
$$;
do $$ begin perform pg_temp.outcomes(200); end $$;
select cmp_ok((select count(*)::int from email.delivery_events e where e.id > (select last_event_id from email.metric_state)), '>', 200,
  'the tail holds hundreds of unfolded events');

-- The exact answer, from the rows (what email_api.metrics computed before the rollups).
create function pg_temp.exact(since timestamptz, until timestamptz, wf text) returns jsonb language sql as $$
  with w as (
    select d.* from email.deliveries d
    where d.queued_at >= since and d.queued_at < until and (wf is null or d.workflow = wf) and d.workflow like 't-roll-%'
  ),
  per as (
    select grouping(w.workflow) = 1 as is_total, w.workflow, count(*) as total,
      count(*) filter (where s.terminal) as completed, count(*) filter (where w.status = 'sent') as sent,
      round(avg(w.attempts) filter (where s.terminal), 2) as avg_attempts,
      (select jsonb_object_agg(x.status, x.n) from (select w2.status, count(*) as n from w w2
        where grouping(w.workflow) = 1 or w2.workflow = w.workflow group by w2.status) x) as by_status,
      percentile_cont(array[0.5, 0.95, 0.99]) within group (order by extract(epoch from w.sent_at - w.queued_at) * 1000)
        filter (where w.status = 'sent') as latency
    from w join email.statuses s on s.status = w.status
    group by grouping sets ((w.workflow), ())
  )
  select jsonb_build_object(
    'workflows', coalesce((select jsonb_agg(jsonb_build_object('workflow', p.workflow, 'total', p.total, 'completed', p.completed,
        'by_status', p.by_status, 'avg_attempts', p.avg_attempts,
        'success_rate', case when p.completed > 0 then round(p.sent::numeric / p.completed, 4) end,
        'latency_ms', jsonb_build_object('p50', round(p.latency[1]::numeric, 1), 'p95', round(p.latency[2]::numeric, 1),
          'p99', round(p.latency[3]::numeric, 1))) order by p.workflow) from per p where not p.is_total), '[]'),
    'errors', coalesce((select jsonb_agg(jsonb_build_object('workflow', e.workflow, 'error_code', e.last_error_code,
        'deliveries', e.n, 'sent', e.sent, 'failed', e.failed, 'dead_letter', e.dead_letter) order by e.n desc, e.workflow collate "C", e.last_error_code)
      from (select w.workflow, w.last_error_code, count(*) as n,
              count(*) filter (where s.counts_as = 'sent') as sent, count(*) filter (where s.counts_as = 'failed') as failed,
              count(*) filter (where s.counts_as = 'dead_letter') as dead_letter
            from w join email.statuses s on s.status = w.status where w.last_error_code is not null
            group by w.workflow, w.last_error_code) e), '[]'))
$$;
-- ... and the attempt outcomes in the window by domain or relay label, from the events.
create function pg_temp.exact_outcomes(since timestamptz, until timestamptz, kind text, wf text) returns jsonb language sql as $$
  select coalesce(jsonb_object_agg(y.label, y.counts), '{}') from (
    select x.label, jsonb_object_agg(x.status, x.n) as counts from (
      select case kind when 'domain' then coalesce(email.metric_label('domain', email.recipient_domain(d.recipient)), 'other')
               else email.metric_label('relay', e.detail ->> 'relay') end as label, e.to_status as status, count(*) as n
      from email.delivery_events e join email.deliveries d on d.delivery_id = e.delivery_id
      where e.created_at >= since and e.created_at < until and email.is_attempt_outcome(e.to_status) and d.workflow = wf
      group by 1, 2) x
    group by x.label) y
$$;
-- The same from a metrics document (zero counts left out).
create function pg_temp.doc_outcomes(doc jsonb, kind text) returns jsonb language sql as $$
  select coalesce(jsonb_object_agg(o ->> kind, (select jsonb_object_agg(k.key, k.value) from jsonb_each(o - kind - 'outcomes' - 'deferral_rate') k
    where (k.value)::numeric > 0)), '{}')
  from jsonb_array_elements(doc -> (kind || 's')) o
$$;


-- Random windows ------------------------------------------------------------------------------
-- 30 windows over the three days (a fifth of them shorter than an hour), with and without a
-- workflow; each answered with exact percentiles (exact_latency_limit high) and from the histogram
-- (limit 0). Everything but the percentiles must equal the exact answer; the exact percentiles too;
-- the histogram's within 0.5 % + 0.1 ms (both are rounded to 0.1 ms).
-- The k-th random window: starts within the three days (and a bit before), ends by two hours after
-- them; every fifth one shorter than an hour.
create function pg_temp.random_window(k int, out since timestamptz, out until timestamptz) language plpgsql as $$
begin
  since := (select t from base) - make_interval(secs => random() * 3.1 * 86400);
  until := case when k % 5 = 0 then since + make_interval(secs => random() * 3000)
    else since + make_interval(secs => random() * extract(epoch from (select t from base) + interval '2 hours' - since)) end;
end
$$;
create temp table checks (k int, wf text, what text, ok boolean, got jsonb, want jsonb);
create temp table sources (k int, source jsonb);
do $$
declare
  k int;
  since timestamptz;
  until timestamptz;
  wf text;
  doc jsonb;
  hist jsonb;
  ex jsonb;
  got jsonb;
  p text;
  w jsonb;
  x jsonb;
begin
  for k in 1..30 loop
    select w.since, w.until into since, until from pg_temp.random_window(k) w;
    foreach wf in array array[null, 't-roll-a'] loop
      update email.metric_state set exact_latency_limit = 10000000;
      doc := email_api.metrics(since, until, wf);
      update email.metric_state set exact_latency_limit = 0;
      hist := email_api.metrics(since, until, wf);
      ex := pg_temp.exact(since, until, wf);
      insert into sources values (k, hist -> 'source');
      got := coalesce((select jsonb_agg(e - 'workflow' || jsonb_build_object('workflow', e ->> 'workflow') order by e ->> 'workflow')
        from jsonb_array_elements(doc -> 'workflows') e where e ->> 'workflow' like 't-roll-_'), '[]');
      insert into checks values (k, wf, 'workflows (exact percentiles)', got = ex -> 'workflows', got, ex -> 'workflows');
      insert into checks values (k, wf, 'counts from the histogram answer',
        (select jsonb_agg(e - 'latency_ms' order by e ->> 'workflow') from jsonb_array_elements(hist -> 'workflows') e where e ->> 'workflow' like 't-roll-_')
          is not distinct from (select jsonb_agg(e - 'latency_ms' order by e ->> 'workflow') from jsonb_array_elements(ex -> 'workflows') e),
        hist -> 'workflows', ex -> 'workflows');
      insert into checks
      select k, wf, 'errors', a is not distinct from b, a, b
      from (select (select jsonb_agg(e order by e::text) from jsonb_array_elements(doc -> 'errors') e where e ->> 'workflow' like 't-roll-_') as a,
                   (select jsonb_agg(e order by e::text) from jsonb_array_elements(ex -> 'errors') e) as b) z;
      for w in select e from jsonb_array_elements(ex -> 'workflows') e where e -> 'latency_ms' ->> 'p50' is not null loop
        x := (select e -> 'latency_ms' from jsonb_array_elements(hist -> 'workflows') e where e ->> 'workflow' = w ->> 'workflow');
        foreach p in array array['p50', 'p95', 'p99'] loop
          insert into checks values (k, wf, 'percentile ' || p || ' within the bound',
            abs((x ->> p)::numeric - (w -> 'latency_ms' ->> p)::numeric) <= 0.005 * (w -> 'latency_ms' ->> p)::numeric + 0.1,
            x, w -> 'latency_ms');
        end loop;
      end loop;
      if wf is not null then
        foreach p in array array['domain', 'relay'] loop
          doc := email_api.metrics(since, until, 't-roll-out');
          insert into checks values (k, 't-roll-out', p || ' outcomes',
            pg_temp.doc_outcomes(doc, p) = pg_temp.exact_outcomes(since, until, p, 't-roll-out'),
            pg_temp.doc_outcomes(doc, p), pg_temp.exact_outcomes(since, until, p, 't-roll-out'));
        end loop;
      end if;
    end loop;
  end loop;
  update email.metric_state set exact_latency_limit = 10000;
end
$$;
select is((select count(*)::int from checks where what = 'workflows (exact percentiles)'), 60, '30 windows, with and without a workflow');
select is((select jsonb_agg(c) from checks c where what = 'workflows (exact percentiles)' and not ok), null,
  'per workflow: total, by status, completed, success rate, average attempts and exact percentiles equal the exact answer');
select is((select jsonb_agg(c) from checks c where what = 'counts from the histogram answer' and not ok), null,
  'the same counts when the percentiles come from the histogram');
select is((select jsonb_agg(c) from checks c where what = 'errors' and not ok), null,
  'errors by code and how those deliveries ended equal the exact answer');
select cmp_ok((select count(*)::int from checks where what like 'percentile%'), '>', 150, 'hundreds of percentiles compared');
select is((select jsonb_agg(c) from checks c where what like 'percentile%' and not ok), null,
  'every histogram percentile is within 0.5 % (+ 0.1 ms of rounding) of percentile_cont');
select cmp_ok((select max(abs((c.got ->> 'p95')::numeric / nullif((c.want ->> 'p95')::numeric, 0) - 1)) from checks c where what = 'percentile p95 within the bound'),
  '>', 0::numeric, 'and they are estimates (not the exact values by accident)');
select is((select jsonb_agg(c) from checks c where what like '% outcomes' and not ok), null,
  'attempt outcomes by domain and by relay label equal the events'' over every window');

-- Deliveries over time (the dashboard's chart) -------------------------------------------------
-- email_api.delivery_series over 30 random windows with mid-hour edges (the tail still unfolded; a
-- fifth shorter than an hour),
-- widths of hours and days (from the rollups) and 15 minutes (from the rows), with and without a
-- workflow, equals the count of the rows per UTC-aligned bucket and current status.
create function pg_temp.exact_series(since timestamptz, until timestamptz, width interval, wf text) returns jsonb language sql as $$
  select coalesce(jsonb_agg(jsonb_build_object('t', x.t, 'status', x.status, 'n', x.n) order by x.t, x.status), '[]') from (
    select date_bin(width, d.queued_at, '2001-01-01 00:00:00+00') as t, d.status, count(*) as n
    from email.deliveries d
    where d.queued_at >= since and d.queued_at < until and (wf is null or d.workflow = wf)
    group by 1, 2) x
$$;
create temp table series_checks (k int, width interval, wf text, ok boolean, got jsonb, want jsonb);
-- 30 random windows (the same generator as above) x four widths x with and without a workflow
insert into series_checks
select x.k, x.width, x.wf, x.got = x.want, x.got, x.want
from (
  select w.k, width, wf,
    (select coalesce(jsonb_agg(jsonb_build_object('t', s.t, 'status', s.status, 'n', s.n) order by s.t, s.status), '[]')
     from email_api.delivery_series(w.since, w.until, width, wf) s) as got,
    pg_temp.exact_series(w.since, w.until, width, wf) as want
  from (select k, r.since, r.until from generate_series(1, 30) k cross join lateral pg_temp.random_window(k) r) w
  cross join unnest(array['1 hour', '6 hours', '1 day', '15 minutes']::interval[]) width
  cross join unnest(array[null, 't-roll-a']) wf
) x;
select cmp_ok((select count(*)::int from series_checks where jsonb_array_length(want) > 3), '>', 150,
  'hundreds of series compared, most with several buckets');
select is((select jsonb_agg(c) from series_checks c where not ok), null,
  'deliveries over time per UTC-aligned bucket and status equal the rows'' over every window, width and workflow');
select throws_ok($$ select * from email_api.delivery_series(now(), now() + interval '1 hour', interval '1 month') $$, 'EM006', null,
  'a bucket width in months is refused');
select is_empty(
  $$ select r from unnest(array['anon', 'authenticated']) r
     where has_function_privilege(r, 'email_api.delivery_series(timestamptz, timestamptz, interval, text)', 'execute')
        or has_function_privilege(r, 'email._metric_deliveries(timestamptz, timestamptz, text, boolean)', 'execute') $$,
  'the series is for service_role only');
select ok((select count(*) filter (where (source ->> 'rollup_days')::int > 0) > 0
     and count(*) filter (where (source ->> 'rollup_hours')::int > 0) > 0
     and count(*) filter (where (source ->> 'unfolded_events')::int > 0) > 0
     and count(*) filter (where source -> 'rows_before' is not null and source -> 'rows_after' is not null) > 0
     and count(*) filter (where (source ->> 'rollup_hours')::int = 0 and (source ->> 'rollup_days')::int = 0) > 0
   from sources),
  'the windows used whole days, whole hours, the unfolded tail, partial hours at both ends, and rows alone');

-- Domains and relays --------------------------------------------------------------------------
create temp table full_doc as select email_api.metrics((select t from base) - interval '4 days', now() + interval '1 hour', 't-roll-out') as doc;
select is((select count(*)::int from jsonb_array_elements(email_api.metrics((select t from base) - interval '4 days', now() + interval '1 hour') -> 'domains') d
   where d ->> 'domain' = 'other'), 1,
  'domains past the cap count as other');
select is((select count(*)::int from full_doc, jsonb_array_elements(doc -> 'relays') d where d ->> 'relay' in ('unknown', 'other')), 2,
  'outcomes without a relay are unknown, relays past the cap other');
select is(
  (select jsonb_agg(d -> 'deferral_rate' = to_jsonb(round((d ->> 'retrying')::numeric / (d ->> 'outcomes')::numeric, 4))) from full_doc, jsonb_array_elements(doc -> 'relays') d),
  (select jsonb_agg(true) from full_doc, jsonb_array_elements(doc -> 'relays') d),
  'deferral_rate is retrying over all outcomes');
select is(
  (select (d ->> 'outcomes')::int from full_doc, jsonb_array_elements(doc -> 'domains') d where d ->> 'domain' = 'gmail.roll'),
  (select count(*)::int from email.delivery_events e join email.deliveries x on x.delivery_id = e.delivery_id
   where x.workflow = 't-roll-out' and email.recipient_domain(x.recipient) = 'gmail.roll' and email.is_attempt_outcome(e.to_status)),
  'a domain counts every attempt outcome of its recipients');

-- The rollups are what answers; a rebuild and a fold change nothing ------------------------------
create temp table before_fold as select email_api.metrics((select t from base) - interval '3 days', (select t from base) + interval '30 minutes') as doc;
select ok((before_fold.doc -> 'source' ->> 'unfolded_events')::int > 0 and (before_fold.doc -> 'source' ->> 'rollup_days')::int >= 2,
  'a window of days with a tail: ' || (before_fold.doc -> 'source')::text)
from before_fold;
select is(email.rebuild_metric_rollups(false) ->> 'last_event_id', (select last_event_id::text from email.metric_state),
  'a rebuild keeps the watermark');
select is(email_api.metrics((select t from base) - interval '3 days', (select t from base) + interval '30 minutes'), (select doc from before_fold),
  'after a rebuild the answer is the same');
select pg_temp.fold_all();
create temp table after_fold as select email_api.metrics((select t from base) - interval '3 days', (select t from base) + interval '30 minutes') as doc;
select is((select doc -> 'source' ->> 'unfolded_events' from after_fold), '0', 'once folded there is no tail');
select is((select doc - 'source' from after_fold), (select doc - 'source' from before_fold), 'and the answer is the same from the rollups alone');
update email.metric_rollups set deliveries = deliveries + 1
where (grain, bucket, workflow, status) = (select 'day', email.metric_bucket('day', (select t from base) - interval '1 day'), 't-roll-a', 'sent')
  and error_code is null;
select is(
  (email_api.metrics((select t from base) - interval '3 days', (select t from base) + interval '30 minutes') -> 'totals' ->> 'total')::int,
  (select (doc -> 'totals' ->> 'total')::int + 1 from after_fold),
  'whole days are read from the day rollups (a changed rollup changes the answer)');

-- Prometheus (the scrape folds first) --------------------------------------------------------
select is(
  (select sum(s.value)::int from email.metric_samples() s
   where s.family = 'email_recipient_domain_outcomes_total' and s.labels ->> 'relay' = 'smtp-1.roll' and s.labels ->> 'domain' = 'gmail.roll'),
  (select count(*)::int from email.delivery_events e join email.deliveries x on x.delivery_id = e.delivery_id
   where x.delivery_id like 't-roll-%' and email.recipient_domain(x.recipient) = 'gmail.roll' and e.detail ->> 'relay' = 'smtp-1.roll'
     and email.is_attempt_outcome(e.to_status)),
  'Prometheus counts outcomes by domain and relay (email_recipient_domain_outcomes_total{domain, relay, status})');

select * from finish();
rollback;
