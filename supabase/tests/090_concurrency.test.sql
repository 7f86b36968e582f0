-- Concurrency: among concurrent claims exactly one wins, concurrent sweeps never share a delivery, and a
-- concurrent redelivery of the same request finds the first one.
--
-- pgTAP runs in one session, so the contenders are other sessions opened with dblink. They see only
-- committed data: the deliveries they race on are committed through dblink (with ids unique to this
-- run), and every one of them ends sent before the test finishes, so nothing is left for a sweep.
-- Deliveries cannot be deleted (their trail is append-only), so they stay. The sessions log in as a
-- throwaway role with a random password, made (and dropped) outside the test's transaction because
-- other sessions cannot see an uncommitted role; they act as service_role, as the worker does.

select 'pgtap090_' || md5(random()::text || clock_timestamp()::text) as pgtap_090_password \gset
set client_min_messages = warning;
drop role if exists pgtap_090_worker;
create role pgtap_090_worker login password :'pgtap_090_password' in role service_role;

begin;
select plan(22);

create extension if not exists dblink with schema extensions;
select set_config('pgtap090.conninfo',
  format('host=%s port=%s dbname=%s user=pgtap_090_worker password=%s', :'HOST', :'PORT', :'DBNAME', :'pgtap_090_password'),
  true);
select set_config('pgtap090.run', replace(gen_random_uuid()::text, '-', ''), true);

/** The id of this run's delivery `name`. */
create function pg_temp.id(name text) returns text language sql as $$
  select 'pgtap-090-' || current_setting('pgtap090.run') || '-' || name
$$;

/** Opens dblink session `name` as service_role, with timeouts so a mistake fails instead of hanging. */
create function pg_temp.open(name text) returns int language plpgsql as $$
begin
  perform dblink_connect(name, current_setting('pgtap090.conninfo'));
  perform dblink_exec(name, 'set role service_role');
  perform dblink_exec(name, 'set statement_timeout = ''20s''');
  return (select pid from dblink(name, 'select pg_backend_pid()') as t(pid int));
end
$$;

/** Runs `sql` in session c0 (autocommit): it is committed when this returns. */
create function pg_temp.commit_sql(sql text) returns text language sql as $$
  select string_agg(x, ', ') from dblink('c0', sql) as t(x text)
$$;

/** Waits (at most 10 s) until `n` of the sessions `pids` wait for a lock another session holds. */
create function pg_temp.waiting(pids int[], n int) returns boolean language plpgsql as $$
begin
  for i in 1..200 loop
    if (select count(*) from unnest(pids) p where cardinality(pg_blocking_pids(p)) > 0) >= n then
      return true;
    end if;
    perform pg_sleep(0.05);
  end loop;
  return false;
end
$$;

/**
 * What the query last sent to session `name` gave, and clears it for the next one: its integer result
 * as text (cast it back with ::int), or the error it raised.
 */
create function pg_temp.result_of(name text) returns text language plpgsql set client_min_messages = warning as $$
declare
  r int;
  message text;
begin
  select a into r from dblink_get_result(name, false) as t(a int);
  message := dblink_error_message(name);
  perform * from dblink_get_result(name, false) as t(a int);
  return case when message = 'OK' then r::text else message end;
end
$$;

create temp table pids (name text primary key, pid int) on commit drop;
insert into pids select 'c' || i, pg_temp.open('c' || i) from generate_series(0, 8) i;
select is((select count(distinct pid)::int from pids), 9, 'nine sessions for the contenders');

-- ------------------------------------------------------------------------------------------------
-- A claim held by one session: the others wait on the row lock, then find it taken
-- ------------------------------------------------------------------------------------------------
select pg_temp.commit_sql(format(
  $$ select (email.record_queued(%L, 'pgtap', 'race@example.com', '{"code": "090090"}')).status $$, pg_temp.id('held')));
select dblink_exec('c1', 'begin');
select is(
  (select a from dblink('c1', format('select email.mark_in_progress(%L)', pg_temp.id('held'))) as t(a int)), 1,
  'session 1 claims attempt 1 and holds the row lock (not committed yet)'
);
select dblink_send_query('c' || i, format('select email.mark_in_progress(%L)', pg_temp.id('held')))
from generate_series(2, 8) i;
select ok(
  pg_temp.waiting((select array_agg(pid) from pids where name in ('c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'c8')), 7),
  'sessions 2-8 claim the same delivery at the same time and wait on the row lock'
);
select dblink_exec('c1', 'commit');
select is(
  (select array_agg(pg_temp.result_of('c' || i)::int order by i) from generate_series(2, 8) i),
  array[null, null, null, null, null, null, null]::int[],
  'when session 1 commits, sessions 2-8 find the delivery taken: null, no attempt for them'
);
select results_eq(
  format($$ select status, attempts from email.deliveries where delivery_id = %L $$, pg_temp.id('held')),
  $$ values ('in_progress'::text, 1) $$,
  'the delivery is in progress at attempt 1: the losers counted nothing'
);
select is(
  (select count(*)::int from email.delivery_events where delivery_id = pg_temp.id('held') and to_status = 'in_progress'), 1,
  'one claim in the trail'
);

-- ------------------------------------------------------------------------------------------------
-- Free races: eight sessions claim the same delivery at once, ten times over
-- ------------------------------------------------------------------------------------------------
select pg_temp.commit_sql(format(
  $$ select count(email.record_queued(%L || r, 'pgtap', 'race@example.com', '{"code": "090090"}')) from generate_series(1, 10) r $$,
  pg_temp.id('race-')));
create temp table race (round int, session int, attempt int) on commit drop;
create function pg_temp.race(round int) returns void language plpgsql as $$
begin
  perform dblink_send_query('c' || i, format('select email.mark_in_progress(%L)', pg_temp.id('race-' || round)))
  from generate_series(1, 8) i;
  insert into race select round, i, pg_temp.result_of('c' || i)::int from generate_series(1, 8) i;
end
$$;
select pg_temp.race(r) from generate_series(1, 10) r;
select is(
  (select count(*)::int from race), 80, 'ten rounds of eight concurrent claims'
);
select is_empty(
  $$ select round from race group by round having count(attempt) <> 1 $$,
  'every round has exactly one winner'
);
select is(
  (select array_agg(distinct attempt) from race where attempt is not null), array[1],
  'each winner got attempt 1'
);
select is_empty(
  format($$ select delivery_id from email.deliveries where delivery_id like %L and (status <> 'in_progress' or attempts <> 1) $$,
    pg_temp.id('race-') || '%'),
  'each raced delivery was claimed once: in progress at attempt 1'
);
select is(
  (select count(*)::int from email.delivery_events where delivery_id like pg_temp.id('race-') || '%' and to_status = 'in_progress'),
  10, 'ten claims in the trail, one per delivery'
);

-- ------------------------------------------------------------------------------------------------
-- Concurrent sweeps (claim_due, skip locked) never share a delivery and never wait for each other
-- ------------------------------------------------------------------------------------------------
select pg_temp.commit_sql(format(
  $$ select count(email.record_queued(%L || r, 'pgtap', 'race@example.com', '{"code": "090090"}')) from generate_series(1, 12) r $$,
  pg_temp.id('due-')));
-- Due long ago, so they come first in line whatever else the database holds.
select pg_temp.commit_sql(format(
  $$ update email.deliveries set next_attempt_at = timestamptz '2000-01-01 00:00:00+00' + (substring(delivery_id from '-(\d+)$')::int * interval '1 second')
     where delivery_id like %L $$,
  pg_temp.id('due-') || '%'));
create temp table swept (session int, delivery_id text, attempt int) on commit drop;
select dblink_exec('c1', 'begin');
select dblink_exec('c2', 'begin');
insert into swept select 1, t.* from dblink('c1', 'select delivery_id, attempt from email.claim_due(4)') as t(delivery_id text, attempt int);
insert into swept select 2, t.* from dblink('c2', 'select delivery_id, attempt from email.claim_due(4)') as t(delivery_id text, attempt int);
insert into swept select 3, t.* from dblink('c3', 'select delivery_id, attempt from email.claim_due(4)') as t(delivery_id text, attempt int);
select is(
  (select array_agg(n order by session) from (select session, count(*)::int as n from swept group by session) s),
  array[4, 4, 4],
  'three sweeps at once (the first two still open) each claim four without waiting'
);
select dblink_exec('c1', 'commit');
select dblink_exec('c2', 'commit');
select is(
  (select count(distinct delivery_id)::int from swept), 12, 'no delivery was claimed by two sweeps'
);
select set_eq(
  $$ select delivery_id from swept $$,
  format($$ select pg_temp.id('due-' || r) from generate_series(1, 12) r $$),
  'together they claimed exactly the twelve due deliveries'
);
select ok((select bool_and(attempt = 1) from swept), 'each as attempt 1');
select is(
  (select array_agg(delivery_id order by delivery_id) from swept where session = 1),
  (select array_agg(pg_temp.id('due-' || r) order by pg_temp.id('due-' || r)) from generate_series(1, 4) r),
  'the first sweep took the four longest due'
);

-- ------------------------------------------------------------------------------------------------
-- A concurrent redelivery of the same request finds the first one; a conflicting one is refused
-- ------------------------------------------------------------------------------------------------
select dblink_exec('c1', 'begin');
select is(
  (select status from dblink('c1', format(
     $$ select status from email.record_queued(%L, 'pgtap', 'race@example.com', '{"code": "090090"}') $$,
     pg_temp.id('dup'))) as t(status text)),
  'queued', 'session 1 records the delivery (not committed yet)'
);
select dblink_send_query('c2', format(
  $$ select attempts from email.record_queued(%L, 'pgtap', 'race@example.com', '{"code": "090090"}') $$, pg_temp.id('dup')));
select dblink_send_query('c3', format(
  $$ select attempts from email.record_queued(%L, 'pgtap', 'race@example.com', '{"code": "999999"}') $$, pg_temp.id('dup')));
select ok(
  pg_temp.waiting((select array_agg(pid) from pids where name in ('c2', 'c3')), 2),
  'the same request (session 2) and a conflicting one (session 3) wait for session 1'
);
select dblink_exec('c1', 'commit');
select is(pg_temp.result_of('c2')::int, 0, 'the same request gets the first one''s row');
select matches(
  pg_temp.result_of('c3'), 'already exists with different content', 'the conflicting request is refused (EM002)'
);
select results_eq(
  format($$ select count(*)::int, (select count(*)::int from email.delivery_events e where e.delivery_id = %L) from email.deliveries where delivery_id = %L $$,
    pg_temp.id('dup'), pg_temp.id('dup')),
  $$ values (1, 1) $$,
  'one delivery, one event'
);

-- ------------------------------------------------------------------------------------------------
-- Leave nothing for a sweep: every committed delivery of this run ends sent
-- ------------------------------------------------------------------------------------------------
select pg_temp.commit_sql(format(
  $$ select count(email.mark_in_progress(delivery_id)) from email.deliveries where delivery_id like %L and status = 'queued' $$,
  pg_temp.id('') || '%'));
select pg_temp.commit_sql(format(
  $$ select count(email.mark_sent(delivery_id, attempts)) from email.deliveries where delivery_id like %L and status = 'in_progress' $$,
  pg_temp.id('') || '%'));
select is_empty(
  format($$ select delivery_id from email.deliveries where delivery_id like %L and status <> 'sent' $$, pg_temp.id('') || '%'),
  'every delivery of this run ends sent (its payload erased)'
);

select dblink_disconnect(name) from pids;
select * from finish();
rollback;

drop role pgtap_090_worker;
