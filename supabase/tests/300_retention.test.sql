-- Retention of finished history: email.run_retention deletes finished deliveries past
-- email.settings.history_retention, drops their weeks' event partitions (carrying the events of kept
-- deliveries), deletes the webhook messages of removed events, and records each run.
begin;
select plan(48);

\ir fixtures/helpers.psql
select tests.create_supabase_user('ann', 'ann@example.com');

select is((select history_retention from email.settings), interval '90 days', 'finished history is kept 90 days by default');

-- 140 days of weekly partitions, and a webhook endpoint so events get messages.
select email.ensure_event_partitions(now() - interval '140 days', now());
select email.add_webhook_endpoint('https://hooks.example.com/300');

/**
 * A delivery as the lifecycle would have left it `ago` (completed then, unless open), with its
 * events at the given ages (seconds are added so their order is kept). Inserted with the triggers
 * of deliveries off, the events directly: the test is about time, not rules.
 */
create function pg_temp.history(id text, status text, completed_ago interval, event_ages interval[])
returns void language plpgsql as $$
declare
  i integer;
begin
  alter table email.deliveries disable trigger user;
  insert into email.deliveries (delivery_id, workflow, recipient, status, attempts, max_attempts, request_hash,
    queued_at, created_at, updated_at, completed_at, next_attempt_at)
  values (id, 'pgtap-300', id || '@example.com', status, 1, 5, 'x',
    now() - event_ages[1], now() - event_ages[1], now() - coalesce(completed_ago, interval '0'),
    now() - completed_ago, case when status in ('queued', 'retrying') then now() end);
  alter table email.deliveries enable trigger user;
  for i in 1 .. cardinality(event_ages) loop
    insert into email.delivery_events (delivery_id, from_status, to_status, attempt, actor, created_at)
    values (id, null, case when i = cardinality(event_ages) then status else 'in_progress' end, 1, 'pgtap',
      now() - event_ages[i] + i * interval '1 second');
  end loop;
end
$$;

select pg_temp.history('old-sent', 'sent', interval '120 days', array[interval '120 days', interval '120 days', interval '120 days']);
select pg_temp.history('old-failed', 'failed', interval '110 days', array[interval '110 days', interval '110 days', interval '110 days']);
select pg_temp.history('old-purged', 'purged', interval '100 days', array[interval '130 days', interval '130 days', interval '100 days']);
select pg_temp.history('old-dead', 'dead_letter', interval '120 days', array[interval '120 days', interval '120 days', interval '120 days']);
select pg_temp.history('old-open', 'retrying', null, array[interval '115 days', interval '115 days', interval '0']);
select pg_temp.history('straddle', 'sent', interval '10 days', array[interval '100 days', interval '99 days', interval '10 days']);
select pg_temp.history('recent', 'sent', interval '30 days', array[interval '30 days', interval '30 days', interval '30 days']);
insert into email.delivery_payloads (delivery_id, payload) values ('old-dead', '{"code": "1"}');
select email.add_suppression('old-sent@example.com', 'hard bounce', 'old-sent');

create temporary table kept_before as
select e.* from email.delivery_events e where e.delivery_id in ('old-dead', 'old-open', 'straddle', 'recent');
create temporary table cutoff as select date_trunc('week', now() - interval '90 days', 'UTC') as t;
create temporary table due_partitions as
select c.relname::text as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
where i.inhparent = 'email.delivery_events'::regclass and c.relname ~ '^delivery_events_p\d{8}$'
  and (to_timestamp(substr(c.relname, 18), 'YYYYMMDD')::timestamp at time zone 'UTC') + interval '7 days' <= (select t from cutoff);

-- Only the job removes history, and only its owner runs it.
select tests.authenticate_as_service_role();
select throws_ok($$ select email.run_retention() $$, '42501', null, 'service_role cannot run the retention job');
select throws_ok($$ delete from email.deliveries where delivery_id = 'old-sent' $$, '42501', null,
  'service_role cannot delete a delivery');
select throws_ok($$ delete from email.delivery_events where delivery_id = 'old-sent' $$, 'EM005', null,
  'nor an event (append-only)');
select tests.authenticate_as('ann');
select throws_ok($$ select email.run_retention() $$, '42501', null, 'authenticated cannot run the retention job');
select throws_ok($$ select * from email.retention_runs $$, '42501', null, 'authenticated cannot read the runs');
select tests.reset_authentication();
select throws_ok($$ delete from email.deliveries where delivery_id = 'old-sent' $$, 'EM005', null,
  'the owner is refused outside the job too');
select throws_ok($$ select email.run_retention(0) $$, 'EM006', null, 'a batch size of 0 is refused');

-- A longer retention: nothing is old enough.
update email.settings set history_retention = interval '400 days';
select is(coalesce((email.run_retention()).deliveries_deleted, 0), 0::bigint, 'with 400 days nothing is removed');
select is((select count(*)::int from email.deliveries where workflow = 'pgtap-300'), 7, 'every delivery is still there');
update email.settings set history_retention = interval '90 days';
delete from email.retention_runs;

-- A run cut short: one batch of one delivery, so partitions wait.
create temporary table first_run as select * from email.run_retention(batch_size => 1, max_batches => 1);
select is((select deliveries_deleted from first_run), 1::bigint, 'one batch of one: one delivery deleted');
select is((select backlog from first_run), true, 'the rest is a backlog');
select is((select partitions_dropped from first_run), '{}'::text[], 'so no partition is dropped yet');
select is((select delivery_id from email.deliveries where delivery_id in ('old-sent', 'old-failed', 'old-purged')
  order by completed_at limit 1), 'old-failed', 'the oldest completion went first');

-- The full run.
create temporary table run as select * from email.run_retention();
select is((select cutoff from run), (select t from cutoff), 'the cutoff is the UTC week start of now() - 90 days');
select is((select deliveries_deleted from run), 2::bigint, 'the other finished deliveries past the cutoff are deleted');
select is((select backlog from run), false, 'no backlog left');
select ok((select trail_locked_ms between 0 and 5000 from run), 'the trail was locked for the drop only, and the time is recorded');
select is((select trail_locked_ms from first_run), null, 'the run that dropped nothing did not lock the trail');
select results_eq(
  $$ select delivery_id from email.deliveries where workflow = 'pgtap-300' order by delivery_id $$,
  array['old-dead', 'old-open', 'recent', 'straddle'],
  'kept: the dead letter, the open delivery, the one finished after the cutoff, the recent one'
);
select is((select partitions_dropped from run), (select array_agg(name order by name) from due_partitions),
  'every weekly partition ending at or before the cutoff is dropped');
select ok((select count(*) >= 6 from due_partitions), 'that is weeks of partitions');
select is_empty(
  $$ select from due_partitions d where to_regclass('email.' || d.name) is not null $$, 'they are gone'
);
select is((select events_deleted from run), 9::bigint, 'the events of the deleted deliveries are counted removed (3 each)');
select is((select events_carried from run), 7::bigint,
  'the events of kept deliveries in those partitions are counted carried (3 + 2 + 2)');
select results_eq(
  $$ select e.id, e.delivery_id, e.to_status, e.created_at from email.delivery_events e
     where e.delivery_id in ('old-dead', 'old-open', 'straddle', 'recent') order by e.id $$,
  $$ select id, delivery_id, to_status, created_at from kept_before order by id $$,
  'every event of every kept delivery survives, with its id and time'
);
select is(
  (select count(*)::int from email.delivery_events e where e.tableoid::regclass::text ~ '^email\.delivery_events_p\d{8}_kept$'),
  7, 'the carried events are in copies of their weeks'' partitions (delivery_events_pYYYYMMDD_kept)'
);
select is_empty($$ select from email.delivery_events_default $$, 'the default partition is not used for them');
select is(
  (select jsonb_array_length(email_api.get_delivery('old-dead') -> 'events')), 3,
  'get_delivery still shows the dead letter''s whole timeline'
);
select is((select count(*)::int from email.delivery_events where delivery_id in ('old-sent', 'old-failed', 'old-purged')), 0,
  'no event of a deleted delivery is left');
select is((select webhook_messages_deleted from run), 9::bigint,
  'the webhook messages of the removed events are deleted (3 each; the one-batch run left them with their partitions)');
select is(
  (select count(*)::int from email.webhook_outbox o join email.delivery_events e on e.id = o.event_id
   where e.delivery_id = 'old-dead'), 3, 'the dead letter''s webhook messages stay'
);
select is_empty(
  $$ select from email.webhook_outbox o where not exists (select from email.delivery_events e where e.id = o.event_id) $$,
  'no webhook message is left without its event'
);
select is((select delivery_id from email.suppressions where address = 'old-sent@example.com'), null,
  'a suppression keeps its address, without the deleted delivery');
select is((select count(*)::int from email.delivery_payloads where delivery_id = 'old-dead'), 1,
  'the dead letter keeps its payload');

-- The record.
select results_eq(
  $$ select deliveries_deleted, events_deleted, events_carried, partitions_dropped, retention, actor from email.retention_runs order by id $$,
  $$ select deliveries_deleted, events_deleted, events_carried, partitions_dropped, retention, actor from first_run
     union all
     select deliveries_deleted, events_deleted, events_carried, partitions_dropped, interval '90 days', actor from run $$,
  'each run is recorded with what it removed'
);
select tests.authenticate_as_service_role();
select is((select count(*)::int from email.retention_runs), 2, 'service_role can read the record');
select throws_ok($$ delete from email.retention_runs $$, '42501', null, 'but cannot change it');
select tests.reset_authentication();

-- The trail works as before: triggers on the re-attached default partition, new events in this week.
select is_empty(
  $$ select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
     where i.inhparent = 'email.delivery_events'::regclass and c.relname ~ '_kept$'
       and (not c.relrowsecurity
         or (select array_agg(t.tgname::text order by t.tgname) from pg_trigger t where t.tgrelid = c.oid)
           is distinct from array['_100_refuse_change', '_110_refuse_truncate', '_700_suppress_hard_bounce', '_800_webhook_outbox']
         or has_table_privilege('service_role', c.oid, 'select')) $$,
  'the kept copies have the trail''s triggers, RLS and no grants'
);
select throws_ok($$ delete from email.delivery_events where delivery_id = 'old-dead' $$, 'EM005', null,
  'carried events are append-only too');
select email.record_queued('pgtap-300-new', 'pgtap-300', 'new@example.com', '{}');
select is(
  (select e.tableoid::regclass::text from email.delivery_events e where e.delivery_id = 'pgtap-300-new'),
  'email.delivery_events_p' || to_char(date_trunc('week', now(), 'UTC') at time zone 'UTC', 'YYYYMMDD'),
  'a new event goes to this week''s partition'
);
select is(
  (select count(*)::int from email.webhook_outbox o join email.delivery_events e on e.id = o.event_id
   where e.delivery_id = 'pgtap-300-new'), 1, 'and gets its webhook message'
);
select ok(email.run_retention() is null, 'a run with nothing to do returns null');
select is((select count(*)::int from email.retention_runs), 2, 'and records nothing');

-- Once the dead letter is purged and its purge is past the retention, it goes, carried events too.
select email.purge_dead_letters(interval '0', 'pgtap');
update email.deliveries set completed_at = now() - interval '100 days' where delivery_id = 'old-dead';
create temporary table last_run as select * from email.run_retention();
select is((select deliveries_deleted from last_run), 1::bigint, 'the purged dead letter past the retention is deleted');
select is((select events_deleted from last_run), 3::bigint, 'its carried events are removed from the kept copies');
select results_eq(
  $$ select delivery_id, count(*)::int from email.delivery_events e
     where e.tableoid::regclass::text ~ '_kept$' group by delivery_id order by delivery_id $$,
  $$ values ('old-open', 2), ('straddle', 2) $$,
  'the other kept deliveries'' carried events stay'
);
select is((select partitions_dropped from last_run), '{}'::text[], 'a compaction drops no weekly partition');

select * from finish();
rollback;
