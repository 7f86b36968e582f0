-- Row-level security that uses its indexes (issue 10, item 11): at 100,000 deliveries, an end user
-- listing their own deliveries and events through email_api (as PostgREST does, under role
-- authenticated with the JWT's claims) reads them through deliveries_user_id_idx and
-- deliveries_recipient_lower_idx, never by scanning the tables, and touches a handful of pages.
begin;
select plan(9);

\ir fixtures/helpers.psql
select tests.create_supabase_user('user42', 'user42@example.com', id => '00000000-0000-4000-8000-000000000042');

-- 100,000 deliveries of 20,000 users (5 each: by user_id, and addressed to their email), one event
-- each. Triggers off while seeding (rolled back with the rest): the seed is about plans, not rules.
alter table email.deliveries disable trigger user;
insert into email.deliveries (delivery_id, workflow, recipient, user_id, status, max_attempts, request_hash, next_attempt_at)
select 'plan-' || g, 'pgtap-plans', 'User' || (g % 20000) || '@Example.com',
  case when g % 2 = 0 then ('00000000-0000-4000-8000-' || lpad((g % 20000)::text, 12, '0'))::uuid end,
  'queued', 5, 'x', now()
from generate_series(1, 100000) g;
alter table email.deliveries enable trigger user;
insert into email.delivery_events (delivery_id, to_status, attempt, actor)
select 'plan-' || g, 'queued', 0, 'pgtap' from generate_series(1, 100000) g;
analyze email.deliveries;
analyze email.delivery_events;

\ir fixtures/plan_of.psql
/**
 * The plan of `query` as EXPLAIN (ANALYZE, BUFFERS) prints it, run as the current role; the second
 * run's, so the first one's catalog lookups (compiling functions, reading roles) are not counted.
 */
create function pg_temp.analyzed(query text) returns text language plpgsql as $$
begin
  execute 'explain analyze ' || query;
  return pg_temp.plan_of(query, 'analyze, buffers, costs off, timing off, summary off');
end
$$;
/**
 * Seq Scan nodes of a plan that ran (a gated-off branch shows "never executed") on a table with pages:
 * the trail's empty partitions (next weeks', the default) are scanned without reading anything.
 */
create function pg_temp.executed_seq_scans(plan text) returns text[] language sql as $$
  select coalesce(array_agg(l), '{}') from regexp_split_to_table(plan, E'\n') l
  where l ~ 'Seq Scan on (deliveries|delivery_events)' and l !~ 'never executed'
    and pg_relation_size(('email.' || (regexp_match(l, 'Seq Scan on (\w+)'))[1])::regclass) > 0
$$;
/** Shared buffers a plan touched (hit + read), from its top node. */
create function pg_temp.buffers(plan text) returns integer language sql as $$
  select coalesce((regexp_match(plan, 'Buffers: shared hit=(\d+)'))[1]::int, 0)
    + coalesce((regexp_match(plan, 'Buffers: shared (?:hit=\d+ )?read=(\d+)'))[1]::int, 0)
$$;
grant execute on function pg_temp.plan_of(text, text), pg_temp.analyzed(text), pg_temp.executed_seq_scans(text), pg_temp.buffers(text) to authenticated;

create temporary table plans (name text primary key, plan text);
grant select, insert on plans to authenticated;

select tests.authenticate_as('user42');
insert into plans values
  ('list', pg_temp.analyzed('select * from email_api.deliveries')),
  ('events', pg_temp.analyzed('select * from email_api.delivery_events')),
  ('one', pg_temp.analyzed($q$select * from email_api.deliveries where delivery_id = 'plan-42'$q$));
select is((select count(*)::int from email_api.deliveries), 5, 'the end user sees their 5 deliveries among 100,000');
select tests.reset_authentication();

-- Each read scans no table and touches a handful of pages (the tables have thousands).
select is(pg_temp.executed_seq_scans((select p.plan from plans p where p.name = v.name)), '{}'::text[], v.what || ' scans no table')
from (values ('list', 'listing their deliveries'), ('events', 'listing their events'), ('one', 'reading one delivery by id')) v(name, what);
select cmp_ok(pg_temp.buffers((select p.plan from plans p where p.name = v.name)), '<', 100, v.description)
from (values
  ('list', 'listing their deliveries touches fewer than 100 pages (the table has thousands)'),
  ('events', 'listing their events touches fewer than 100 pages')
) v(name, description);
-- And the index each one is read through.
select matches((select plan from plans where name = 'list'), 'Bitmap Index Scan on deliveries_user_id_idx',
  'the deliveries owned by user_id come from deliveries_user_id_idx');
select matches((select plan from plans where name = 'list'), 'Bitmap Index Scan on deliveries_recipient_lower_idx',
  'the deliveries addressed to the JWT''s email come from deliveries_recipient_lower_idx');
select matches((select plan from plans where name = 'events'), 'Index Scan using delivery_events_\w+_delivery_id_id_idx',
  'their events are read by delivery_events_delivery_id_idx (each partition''s copy)');

select * from finish();
rollback;
