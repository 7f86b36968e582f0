-- The metric snapshot behind GET /email-worker/metrics: structure and privileges, the fold of the
-- audit trail into counters (exact numbers, no double counting, gaps of late and rolled-back events),
-- the bounded domain labels, the histogram and the live gauges.
begin;
select plan(54);

\ir fixtures/helpers.psql

\ir fixtures/make_dead_letter.psql
\ir fixtures/fold_all.psql

-- Structure ------------------------------------------------------------------------------------
select has_table('email', t, format('email.%s exists', t))
from unnest(array['metric_families', 'metric_latency_buckets', 'metric_state', 'metric_gaps', 'metric_labels', 'metric_counters']) t;
select is(
  (select array_agg(c.relname::text order by c.relname) from pg_class c
   where c.relnamespace = 'email'::regnamespace and c.relkind = 'r' and c.relname like 'metric%' and not c.relrowsecurity),
  null, 'every metric table has RLS enabled');
select is((select count(*)::int from pg_policies where schemaname = 'email' and tablename like 'metric%'), 0,
  'no policy on the metric tables: only service_role (bypassrls) reads them');
select function_returns('email', 'fold_metric_events', array[]::text[], 'integer');
select function_returns('email', 'metric_samples', array[]::text[], 'setof record');
select function_returns('email', 'recipient_domain', array['text'], 'text');
select is_empty(
  $$ select p.oid::regprocedure::text from pg_proc p
     where p.oid in ('email.fold_metric_events()'::regprocedure, 'email.metric_samples()'::regprocedure,
                     'email.recipient_domain(text)'::regprocedure, 'email._fold_metric_ids(bigint[], integer, integer)'::regprocedure)
       and (p.prosecdef or not coalesce('search_path=""' = any (p.proconfig), false)) $$,
  'the metric functions run as the caller and pin search_path = '''''
);
select ok(has_function_privilege('service_role', f, 'execute'), format('service_role may execute %s', f))
from unnest(array['email.fold_metric_events()', 'email.metric_samples()', 'email.recipient_domain(text)',
  'email._fold_metric_ids(bigint[], integer, integer)']) f;
select is_empty(
  $$ select r || ' ' || f from unnest(array['anon', 'authenticated']) r,
       unnest(array['email.fold_metric_events()', 'email.metric_samples()', 'email.recipient_domain(text)',
         'email._fold_metric_ids(bigint[], integer, integer)']) f
     where has_function_privilege(r, f, 'execute') $$,
  'anon and authenticated may execute none of them'
);
select is_empty(
  $$ select r || ' ' || c.relname from unnest(array['anon', 'authenticated']) r, pg_class c
     where c.relnamespace = 'email'::regnamespace and c.relkind = 'r' and c.relname like 'metric%'
       and has_table_privilege(r, c.oid, 'select, insert, update, delete') $$,
  'anon and authenticated have no privilege on the metric tables'
);
select is(email.recipient_domain('Ann <ann@Prom-A.test>'), 'prom-a.test', 'the domain of a recipient, lower-cased, from inside <...>');

-- What a scrape reads is reached through an index (with sequential scans off: one exists that fits).
\ir fixtures/plan_of.psql
set local enable_seqscan = off;
select matches(pg_temp.plan_of($$ select e.id from email.delivery_events e where e.id > 100 and e.id <= 200 $$),
  '(Index Only Scan using|Index Scan using|Bitmap Index Scan on) delivery_events_\w*pkey', 'the fold reads its range of the trail by primary key');
select matches(pg_temp.plan_of($$ select d.workflow, count(*), min(d.completed_at) from email.deliveries d
                                  where d.status = 'dead_letter' group by d.workflow $$),
  '(Index Only Scan using|Index Scan using|Bitmap Index Scan on) deliveries_dead_letter_idx', 'the dead-letter gauges come from the dead-letter index');
select matches(pg_temp.plan_of($$ select min(d.next_attempt_at) from email.deliveries d
                                  where d.status in ('queued', 'retrying') and d.next_attempt_at <= now() $$),
  '(Index Only Scan using|Index Scan using|Bitmap Index Scan on) deliveries_due_idx', 'the oldest due delivery comes from the due index');
reset enable_seqscan;

-- The fixture ----------------------------------------------------------------------------------
-- Whatever the database already holds is folded first; the checks compare with this snapshot.
select pg_temp.fold_all();
create temp table before as select c.family, c.labels, c.value from email.metric_counters c;
create function pg_temp.delta(family text, labels jsonb) returns double precision language sql as $$
  select coalesce((select c.value from email.metric_counters c where c.family = delta.family and c.labels = delta.labels), 0)
       - coalesce((select b.value from before b where b.family = delta.family and b.labels = delta.labels), 0)
$$;
-- Room for two new domains: the two busiest of the fold get a label, the third counts as other.
update email.metric_state set max_domains = (select count(*) from email.metric_labels where kind = 'domain') + 2;
select email.add_webhook_endpoint('https://prom.example.test/hook', array['email.dead_letter']);

-- Workflow t-prom: three sent (latencies 0.3 s, 4 s, 2 h), one failed (smtp_550), one dead letter
-- (smtp_452, dead for two days), one queued and due since 2000 (the oldest due), one in progress.
do $$
declare i int;
begin
  insert into email.retry_policies (workflow, max_attempts) values ('t-prom', 1);
  for i in 1..3 loop
    perform email.record_queued('t-prom-sent-' || i, 't-prom',
      case when i < 3 then 'Ann <ann' || i || '@Prom-A.test>' else 'c@prom-c.test' end, '{}');
    perform email.mark_in_progress('t-prom-sent-' || i);
    perform email.mark_sent('t-prom-sent-' || i, 1);
  end loop;
  update email.deliveries set queued_at = now() - interval '3 hours',
    sent_at = now() - interval '3 hours' + case delivery_id when 't-prom-sent-1' then interval '0.3 seconds'
      when 't-prom-sent-2' then interval '4 seconds' else interval '2 hours' end
  where delivery_id like 't-prom-sent-%';
  perform email.record_queued('t-prom-failed', 't-prom', 'f@prom-b.test', '{}');
  perform email.mark_in_progress('t-prom-failed');
  perform email.record_failure('t-prom-failed', 1, 'no such user', 550);
  perform email.record_queued('t-prom-queued', 't-prom', 'q@prom-b.test', '{}');
  update email.deliveries set next_attempt_at = '2000-01-01T00:00:00Z' where delivery_id = 't-prom-queued';
  perform email.record_queued('t-prom-busy', 't-prom', 'p@prom-b.test', '{}');
  perform email.mark_in_progress('t-prom-busy');
end
$$;
select pg_temp.make_dead_letter('t-prom-dead', 't-prom', 'd@prom-b.test', null, reply_code => 452);
update email.deliveries set completed_at = now() - interval '2 days' where delivery_id = 't-prom-dead';
update email.webhook_outbox set created_at = now() - interval '2 hours'
where event_id in (select e.id from email.delivery_events e where e.delivery_id = 't-prom-dead');

-- The scrape, as the worker makes it ------------------------------------------------------------
select tests.authenticate_as_service_role();
create temp table s1 as select * from email.metric_samples();
select tests.reset_authentication();
/** The value of the sample `name` in that scrape, the one with exactly `labels` (when given); more than one is an error. */
create function pg_temp.scraped(name text, labels jsonb default null) returns double precision language sql as $$
  select (select s.value from s1 s where s.sample = scraped.name and (scraped.labels is null or s.labels = scraped.labels))
$$;
/** The samples `name` of workflow t-prom in that scrape, as {their label `key`: value}. */
create function pg_temp.t_prom_by(name text, key text) returns jsonb language sql as $$
  select jsonb_object_agg(s.labels ->> t_prom_by.key, s.value) from s1 s
  where s.sample = t_prom_by.name and s.labels ->> 'workflow' = 't-prom'
$$;

select is(pg_temp.t_prom_by('email_delivery_transitions_total', 'status'),
  '{"queued": 7, "in_progress": 6, "sent": 3, "failed": 1, "dead_letter": 1}'::jsonb,
  'transitions by status: every audit event of the workflow counted once');
select is(pg_temp.scraped('email_delivery_attempts_total', '{"workflow": "t-prom"}'),
  6::double precision, 'attempts are the transitions into in_progress');
select is(pg_temp.t_prom_by('email_delivery_errors_total', 'error_code'),
  '{"smtp_550": 1, "smtp_452": 1}'::jsonb, 'errors by error code');
select is(pg_temp.delta('domain_outcomes', '{"domain": "prom-a.test", "relay": "unknown", "status": "sent"}'), 2::double precision,
  'the busiest new domain got a label of its own (sent twice, the address case folded)');
select is(pg_temp.delta('domain_outcomes', '{"domain": "prom-b.test", "relay": "unknown", "status": "failed"}')
  + pg_temp.delta('domain_outcomes', '{"domain": "prom-b.test", "relay": "unknown", "status": "dead_letter"}'), 2::double precision,
  'the second new domain too (one failed, one dead letter)');
select is(pg_temp.delta('domain_outcomes', '{"domain": "other", "relay": "unknown", "status": "sent"}'), 1::double precision,
  'the third new domain, past the cap, counts as other');
select ok(not exists (select from email.metric_labels where kind = 'domain' and value = 'prom-c.test'),
  'and is not in the label registry');
select is(
  (select array_agg(s.labels ->> 'le' || '=' || s.value
     order by case s.labels ->> 'le' when '+Inf' then 'Infinity' else (s.labels ->> 'le')::double precision end) from s1 s
   where s.sample = 'email_delivery_latency_seconds_bucket' and s.labels ->> 'workflow' = 't-prom'),
  array['0.5=1', '1=1', '2=1', '5=2', '10=2', '30=2', '60=2', '300=2', '900=2', '3600=2', '21600=3', '86400=3', '+Inf=3'],
  'the latency histogram: cumulative buckets at every bound and +Inf');
select is(
  (select array_agg(s.labels ->> 'le' order by s.ord) from (select *, row_number() over () as ord from email.metric_samples()) s
   where s.sample = 'email_delivery_latency_seconds_bucket' and s.labels ->> 'workflow' = 't-prom'),
  array['0.5', '1', '2', '5', '10', '30', '60', '300', '900', '3600', '21600', '86400', '+Inf'],
  'buckets come in increasing order of their bound');
select is(round(pg_temp.scraped('email_delivery_latency_seconds_sum', '{"workflow": "t-prom"}')::numeric, 3),
  7204.300, 'the histogram''s sum is the sum of the latencies in seconds');
select is(pg_temp.scraped('email_delivery_latency_seconds_count', '{"workflow": "t-prom"}'),
  3::double precision, 'and its count the sent deliveries');
select is(pg_temp.t_prom_by('email_deliveries_open', 'status'),
  '{"queued": 1, "in_progress": 1}'::jsonb, 'open deliveries by status, now');
select is(pg_temp.scraped('email_deliveries_due_oldest_age_seconds'),
  extract(epoch from now() - '2000-01-01T00:00:00Z'::timestamptz)::double precision,
  'how long the oldest due delivery has been due');
select is(pg_temp.scraped('email_dead_letter_deliveries', '{"workflow": "t-prom"}'),
  1::double precision, 'the dead-letter queue of the workflow');
select is(pg_temp.scraped('email_dead_letter_oldest_age_seconds', '{"workflow": "t-prom"}'),
  172800::double precision, 'the age of its oldest dead letter');
select is(pg_temp.scraped('email_webhook_messages_pending'),
  (select count(*)::double precision from email.webhook_outbox where status = 'pending'), 'pending webhook messages');
select is(pg_temp.scraped('email_webhook_oldest_pending_age_seconds'), 7200::double precision,
  'the age of the oldest pending webhook message');
select is(pg_temp.scraped('email_metrics_events_behind'), 0::double precision,
  'the fold has caught up');
select is(
  (select array_agg(distinct s.type || ' ' || s.family order by s.type || ' ' || s.family) from s1 s where s.family like '%latency%'),
  array['histogram email_delivery_latency_seconds'], 'each sample carries its family''s type');

-- A second scrape adds nothing that did not happen -------------------------------------------
select is(email.fold_metric_events(), 0, 'a fold with no new events folds nothing');
select is(
  (select jsonb_object_agg(s.labels ->> 'status', s.value) from email.metric_samples() s
   where s.sample = 'email_delivery_transitions_total' and s.labels ->> 'workflow' = 't-prom'),
  '{"queued": 7, "in_progress": 6, "sent": 3, "failed": 1, "dead_letter": 1}'::jsonb,
  'the counters are the same at the next scrape (no event counted twice)');

-- Batches: a fold takes at most fold_batch events and says how far behind it is -----------------
update email.metric_state set fold_batch = 2;
select email.record_queued('t-prom-batch-' || i, 't-prom-batch', 'b@prom-b.test', '{}') from generate_series(1, 3) i;
select is(email.fold_metric_events(), 2, 'a fold takes at most fold_batch events');
select is((select s.value from email.metric_samples() s where s.sample = 'email_metrics_events_behind'), 0::double precision,
  'the next scrape folds the rest');
select is(pg_temp.delta('transitions', '{"workflow": "t-prom-batch", "status": "queued"}'), 3::double precision,
  'all three counted, once');
update email.metric_state set fold_batch = 100000;

-- Time: a fold stops after fold_time_limit, a chunk (10,000 ids) at least, and the next one goes on.
select email.record_queued('t-prom-many', 't-prom-many', 'm@prom-b.test', '{}');
insert into email.delivery_events (delivery_id, from_status, to_status, attempt, actor)
select 't-prom-many', 'queued', 'queued', 0, 'test' from generate_series(1, 10000);
update email.metric_state set fold_time_limit = interval '1 microsecond';
select is(email.fold_metric_events(), 10000, 'a fold past its time limit stops after its first chunk');
select is((select s.value from email.metric_samples() s where s.sample = 'email_metrics_events_behind'), 0::double precision,
  'the next one folds the rest');
select is(pg_temp.delta('transitions', '{"workflow": "t-prom-many", "status": "queued"}'), 10001::double precision,
  'every event counted once');
update email.metric_state set fold_time_limit = interval '2 seconds';

-- Gaps: an id taken by a transaction that had not committed when its range was folded ---------
savepoint late;
select email.record_queued('t-prom-gap-rolled-back', 't-prom-gap', 'g@prom-b.test', '{}');
rollback to savepoint late;
select email.record_queued('t-prom-gap', 't-prom-gap', 'g@prom-b.test', '{}');
select email.fold_metric_events();
-- (earlier test files' rolled-back transactions took ids too: only this section's are looked at)
create function pg_temp.gaps() returns bigint[] language sql as $$
  select array_agg(g.event_id order by g.event_id) from email.metric_gaps g
  where g.event_id >= (select min(e.id) from email.delivery_events e where e.delivery_id like 't-prom-gap%') - 1
$$;
select is(
  pg_temp.gaps(),
  (select array[e.id - 1] from email.delivery_events e where e.delivery_id = 't-prom-gap'),
  'the id the rolled-back transaction took is remembered as a gap');
-- The same id committing late (as a slow transaction's event would) is folded at the next scrape.
insert into email.delivery_events (id, delivery_id, from_status, to_status, attempt, actor)
overriding system value
select e.id - 1, 't-prom-gap', 'queued', 'queued', 0, 'test' from email.delivery_events e where e.delivery_id = 't-prom-gap';
select is(email.fold_metric_events(), 1, 'the late event is folded once it is visible');
select is(pg_temp.delta('transitions', '{"workflow": "t-prom-gap", "status": "queued"}'), 2::double precision,
  'and counted with the one folded before it');
select is(pg_temp.gaps(), null, 'its gap is gone');
-- A gap still missing after an hour belonged to a rolled-back transaction: dropped.
savepoint gone;
select email.record_queued('t-prom-gap-2', 't-prom-gap', 'g@prom-b.test', '{}');
rollback to savepoint gone;
select email.record_queued('t-prom-gap-3', 't-prom-gap', 'g@prom-b.test', '{}');
select email.fold_metric_events();
update email.metric_gaps set seen_at = now() - interval '61 minutes';
select email.fold_metric_events();
select is(pg_temp.gaps(), null, 'a gap older than an hour is dropped');

select * from finish();
rollback;
