-- Claims stay key lookups however many leases have expired: with plpgsql's cached generic plans, a
-- WHERE that mixed the key with `lease_expires_at < now()` walked deliveries_lease_idx over every
-- expired lease on each claim (found by `npm run bench` at a million deliveries).
begin;
select plan(4);

-- 300 deliveries in progress whose leases have expired (the history of crashed workers).
select count(email.mark_in_progress(x.delivery_id)) from (
  select (email.record_queued('t095-stuck-' || g, 'pgtap', 'stuck' || g || '@example.com', '{}')).delivery_id
  from generate_series(1, 300) g
) x;
update email.deliveries set lease_expires_at = now() - interval '1 minute'
where delivery_id like 't095-stuck-%';
select email.record_queued('t095-fresh-' || g, 'pgtap', 'fresh' || g || '@example.com', '{}') from generate_series(1, 20) g;

set local plan_cache_mode = force_generic_plan;
create temporary table t095_before as
select pg_stat_get_xact_tuples_returned('email.deliveries_lease_idx'::regclass) as tuples;

select is(
  (select count(*)::int from generate_series(1, 20) g where email.mark_in_progress('t095-fresh-' || g) = 1), 20,
  'twenty fresh deliveries are claimed while 300 expired leases wait for the reaper'
);
select cmp_ok(
  pg_stat_get_xact_tuples_returned('email.deliveries_lease_idx'::regclass) - (select tuples from t095_before),
  '<', 300::bigint,
  'the claims did not walk the expired leases (generic plans)'
);
select is(
  (select status from email.deliveries where delivery_id = 't095-stuck-1'), 'in_progress',
  'and left the other deliveries'' expired leases to the reaper'
);

-- A Prometheus scrape counts the open deliveries through the partial indexes of their statuses (due,
-- lease), never by reading every delivery: beside the 320 open ones above, 400 sent ones it must not
-- read. With sequential scans priced out, a scrape (after one that folds the new events) fetches the
-- open deliveries' rows, not all 720 (a whole-index scan would fetch them all).
select count(email.mark_sent(x.delivery_id, 1)) from (
  select (email.record_queued('t095-sent-' || g, 'pgtap', 'sent' || g || '@example.com', '{}')).delivery_id
  from generate_series(1, 400) g
) x where email.mark_in_progress(x.delivery_id) = 1;
create temporary table t095_samples as select * from email.metric_samples();
set local enable_seqscan = off;
create temporary table t095_reads as
select pg_stat_get_xact_tuples_fetched('email.deliveries'::regclass)
  + pg_stat_get_xact_tuples_returned('email.deliveries'::regclass) as n;
insert into t095_samples select * from email.metric_samples();
select cmp_ok(
  pg_stat_get_xact_tuples_fetched('email.deliveries'::regclass)
    + pg_stat_get_xact_tuples_returned('email.deliveries'::regclass) - (select n from t095_reads),
  '<', 400::bigint,
  'a scrape reads the open deliveries, not every delivery (the open gauge goes through the due and lease indexes)'
);

select * from finish();
rollback;
