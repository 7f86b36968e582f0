-- The audit trail partitioned by week: where rows go, the default partition as a safety net, the
-- partitions made ahead, and the rules of the trail on every partition.
begin;
select plan(23);

\ir fixtures/helpers.psql
select tests.create_supabase_user('ann', 'ann@example.com');
set local timezone = 'America/New_York'; -- weeks are UTC weeks whatever the session's zone

/** The partition of the trail a row of that time belongs to by name (weekly, Monday 00:00 UTC). */
create function pg_temp.week_partition(t timestamptz) returns text language sql as $$
  select 'email.delivery_events_p' || to_char(date_trunc('week', t, 'UTC') at time zone 'UTC', 'YYYYMMDD')
$$;

-- Made by the migration: this week and the next four, and the default partition.
select is(
  (select count(*)::int from generate_series(0, 4) w where to_regclass(pg_temp.week_partition(now() + w * interval '7 days')) is not null),
  5, 'the partitions of this week and the next four exist'
);
select is(
  (select pg_get_expr(c.relpartbound, c.oid) from pg_class c where c.oid = 'email.delivery_events_default'::regclass),
  'DEFAULT', 'delivery_events_default is the default partition'
);
select is(
  (select pg_get_expr(c.relpartbound, c.oid) from pg_class c where c.oid = to_regclass(pg_temp.week_partition('2026-11-30 12:00+00'))),
  'FOR VALUES FROM (''2026-11-29 19:00:00-05'') TO (''2026-12-06 19:00:00-05'')',
  'a partition spans Monday 00:00 UTC to the next Monday (shown here in New York time)'
);

-- A lifecycle writes its events into this week's partition, through the unchanged audit trigger.
select email.record_queued('pgtap-290-a', 'pgtap', 'a@example.com', '{}');
select email.mark_in_progress('pgtap-290-a');
select is(
  (select array_agg(distinct e.tableoid::regclass::text) from email.delivery_events e where e.delivery_id = 'pgtap-290-a'),
  array[pg_temp.week_partition(now())], 'the lifecycle''s events land in this week''s partition'
);

-- Routing at the boundary: the last microsecond of a week and the first of the next.
insert into email.delivery_events (delivery_id, to_status, attempt, actor, created_at) values
  ('pgtap-290-edge', 'queued', 0, 'pgtap', '2026-12-06 23:59:59.999999+00'),
  ('pgtap-290-edge', 'in_progress', 1, 'pgtap', '2026-12-07 00:00:00+00');
select results_eq(
  $$ select e.tableoid::regclass::text from email.delivery_events e where e.delivery_id = 'pgtap-290-edge' order by e.id $$,
  array['email.delivery_events_p20261130', 'email.delivery_events_p20261207'],
  'Sunday 23:59:59.999999 UTC goes to its week, Monday 00:00 UTC to the next'
);

-- No partition for a row's week: the default partition takes it, the insert does not fail.
select email.add_webhook_endpoint('https://hooks.example.com/290');
insert into email.delivery_events (delivery_id, to_status, attempt, actor, created_at)
values ('pgtap-290-future', 'queued', 0, 'pgtap', now() + interval '2 years');
select is(
  (select e.tableoid::regclass::text from email.delivery_events e where e.delivery_id = 'pgtap-290-future'),
  'email.delivery_events_default', 'an event of a week without a partition goes to the default partition'
);
select is((select count(*)::int from email.webhook_outbox o join email.delivery_events e on e.id = o.event_id
           where e.delivery_id = 'pgtap-290-future'), 1, 'its insert triggers fired once (one webhook message)');
create temporary table future as select e.id, e.created_at from email.delivery_events e where e.delivery_id = 'pgtap-290-future';

-- Creating that week's partition moves the row in, unchanged, without firing the insert triggers again.
select is(
  email.ensure_event_partitions(now() + interval '2 years', now() + interval '2 years'),
  array[substr(pg_temp.week_partition(now() + interval '2 years'), 7)],
  'ensure_event_partitions creates the missing week and returns its name'
);
select is(
  (select e.tableoid::regclass::text from email.delivery_events e where e.delivery_id = 'pgtap-290-future'),
  pg_temp.week_partition(now() + interval '2 years'), 'the row moved from the default partition into its week'
);
select results_eq(
  $$ select e.id, e.created_at from email.delivery_events e where e.delivery_id = 'pgtap-290-future' $$,
  $$ select id, created_at from future $$, 'with its id and time'
);
select is_empty($$ select from email.delivery_events_default $$, 'the default partition is empty again');
select is((select count(*)::int from email.webhook_outbox o join future f on f.id = o.event_id), 1,
  'the move fired no trigger (still one webhook message)');
select is(
  email.ensure_event_partitions(now(), now() + interval '4 weeks'), '{}'::text[],
  'partitions that exist are left alone'
);
select throws_ok(
  $$ select email.ensure_event_partitions(now(), now() - interval '1 day') $$,
  'EM006', null, 'an empty range is refused'
);

-- Every partition, the new one too: the trail's rules, RLS, no grants.
select is_empty(
  $$ select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
     where i.inhparent = 'email.delivery_events'::regclass and not c.relrowsecurity $$,
  'every partition has RLS enabled'
);
select is_empty(
  $$ select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
     where i.inhparent = 'email.delivery_events'::regclass
       and not exists (select from pg_trigger t where t.tgrelid = c.oid and t.tgname = '_110_refuse_truncate') $$,
  'every partition refuses TRUNCATE'
);
select throws_ok(
  format('update %s set actor = %L where delivery_id = %L', pg_temp.week_partition(now() + interval '2 years'), 'x', 'pgtap-290-future'),
  'EM005', null, 'the owner cannot UPDATE an event in a partition either'
);
select throws_ok(
  format('delete from %s where delivery_id = %L', pg_temp.week_partition(now() + interval '2 years'), 'pgtap-290-future'),
  'EM005', null, 'nor DELETE one'
);
set local client_min_messages = warning;
select throws_ok(
  format('truncate %s', pg_temp.week_partition(now())), 'EM005', null, 'nor TRUNCATE a partition'
);

select tests.authenticate_as_service_role();
select throws_ok(
  format('select * from %s', pg_temp.week_partition(now())), '42501', null,
  'service_role cannot read a partition directly (only through email.delivery_events)'
);
select is((select count(*)::int from email.delivery_events where delivery_id = 'pgtap-290-a'), 2,
  'service_role reads the trail through the parent');
select throws_ok(
  $$ select email.ensure_event_partitions(now(), now() + interval '1 year') $$, '42501', null,
  'service_role cannot create partitions'
);
select tests.authenticate_as('ann');
select throws_ok(
  format('select * from %s', pg_temp.week_partition(now())), '42501', null,
  'authenticated cannot read a partition directly'
);
select tests.reset_authentication();

select * from finish();
rollback;
