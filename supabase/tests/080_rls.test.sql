-- The RLS matrix, acting as each role the way PostgREST applies a JWT: anon, the owner, another user,
-- support, service_role; every table and the RPCs.
begin;
select plan(65);

-- Three deliveries: one owned by user_id, one by recipient only, one of somebody else; each with events,
-- a payload, and a rejected message.
select email.record_queued('pgtap-080-by-uid', 'pgtap', 'someone-else@example.com', '{"code": "111111"}',
  '{}', 'aaaaaaaa-0000-4000-8000-000000000080');
select email.record_queued('pgtap-080-by-email', 'pgtap', 'Owner@Example.com', '{"code": "222222"}');
select email.record_queued('pgtap-080-other', 'pgtap', 'other@example.com', '{"code": "333333"}',
  '{}', 'bbbbbbbb-0000-4000-8000-000000000080');
select email.mark_in_progress(id) from unnest(array['pgtap-080-by-uid', 'pgtap-080-by-email', 'pgtap-080-other']) id;
select email.record_rejected('bad_json', 'pgtap-080', convert_to('{', 'UTF8'), 'pgtap-080-rejected');

/** Runs `sql` and returns the SQLSTATE it raised, or null when it did not raise. */
create function pg_temp.sqlstate_of(sql text) returns text language plpgsql as $$
begin
  execute sql;
  return null;
exception when others then
  return sqlstate;
end
$$;

-- ------------------------------------------------------------------------------------------------
-- anon: nothing at all
-- ------------------------------------------------------------------------------------------------
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select throws_ok($$ select * from email.deliveries $$, '42501', null, 'anon: deliveries, permission denied');
select throws_ok($$ select * from email.delivery_events $$, '42501', null, 'anon: delivery_events, permission denied');
select throws_ok($$ select * from email.delivery_payloads $$, '42501', null, 'anon: delivery_payloads, permission denied');
select throws_ok($$ select * from email.rejected_messages $$, '42501', null, 'anon: rejected_messages, permission denied');
select throws_ok(
  $$ insert into email.deliveries (delivery_id, workflow, recipient, max_attempts, request_hash)
     values ('pgtap-080-anon', 'pgtap', 'a@example.com', 5, 'x') $$,
  '42501', null, 'anon: insert into deliveries, permission denied'
);
select throws_ok(
  $$ select email.record_queued('pgtap-080-anon', 'pgtap', 'a@example.com', '{}') $$,
  '42501', 'permission denied for schema email', 'anon: record_queued, permission denied'
);
select throws_ok($$ select email.mark_in_progress('pgtap-080-by-uid') $$, '42501', 'permission denied for schema email', 'anon: mark_in_progress, permission denied');
reset role;

-- ------------------------------------------------------------------------------------------------
-- The owner: their deliveries (by user_id, and by recipient = the JWT's email) and those events
-- ------------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to '{"sub": "aaaaaaaa-0000-4000-8000-000000000080", "role": "authenticated", "email": "owner@example.com", "app_metadata": {"provider": "email"}}';
select set_eq(
  $$ select delivery_id from email.deliveries where delivery_id like 'pgtap-080-%' $$,
  array['pgtap-080-by-uid', 'pgtap-080-by-email'],
  'owner: sees the delivery with their user_id and the one to their email address (case-insensitive)'
);
select set_eq(
  $$ select distinct delivery_id from email.delivery_events where delivery_id like 'pgtap-080-%' $$,
  array['pgtap-080-by-uid', 'pgtap-080-by-email'],
  'owner: sees the events of those deliveries only'
);
select is(
  (select count(*)::int from email.delivery_events where delivery_id in ('pgtap-080-by-uid', 'pgtap-080-by-email')), 4,
  'owner: all their events (queued and in_progress of each)'
);
select throws_ok($$ select request_hash from email.deliveries $$, '42501', null, 'owner: request_hash (a hash over the payload), permission denied');
select throws_ok($$ select * from email.delivery_payloads $$, '42501', null, 'owner: delivery_payloads, permission denied');
select throws_ok($$ select * from email.rejected_messages $$, '42501', null, 'owner: rejected_messages, permission denied');
select throws_ok($$ select * from email.retry_policies $$, '42501', null, 'owner: retry_policies, permission denied');
select throws_ok(
  $$ insert into email.deliveries (delivery_id, workflow, recipient, max_attempts, request_hash, user_id)
     values ('pgtap-080-mine', 'pgtap', 'owner@example.com', 5, 'x', 'aaaaaaaa-0000-4000-8000-000000000080') $$,
  '42501', null, 'owner: insert into deliveries, permission denied'
);
select throws_ok(
  $$ update email.deliveries set recipient = 'x@example.com' where delivery_id = 'pgtap-080-by-uid' $$,
  '42501', null, 'owner: update of their own delivery, permission denied'
);
select throws_ok(
  $$ delete from email.deliveries where delivery_id = 'pgtap-080-by-uid' $$,
  '42501', null, 'owner: delete of their own delivery, permission denied'
);
select throws_ok(
  $$ insert into email.delivery_events (delivery_id, to_status, attempt, actor) values ('pgtap-080-by-uid', 'sent', 1, 'me') $$,
  '42501', null, 'owner: insert into delivery_events, permission denied'
);
select throws_ok(
  $$ insert into email.delivery_payloads (delivery_id, payload) values ('pgtap-080-by-uid', '{}') $$,
  '42501', null, 'owner: insert into delivery_payloads, permission denied'
);
select throws_ok(
  $$ select email.mark_sent('pgtap-080-by-uid', 1) $$, '42501', 'permission denied for function mark_sent', 'owner: mark_sent, permission denied'
);
select throws_ok(
  $$ select email.requeue('pgtap-080-by-uid', 'please') $$, '42501', 'permission denied for function requeue', 'owner: requeue, permission denied'
);
select throws_ok(
  $$ select * from email.claim_due(10) $$, '42501', 'permission denied for function claim_due', 'owner: claim_due, permission denied'
);
select ok(not email.is_support(), 'owner: is not support');
reset role;

-- ------------------------------------------------------------------------------------------------
-- Another user: none of them
-- ------------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to '{"sub": "cccccccc-0000-4000-8000-000000000080", "role": "authenticated", "email": "stranger@example.com", "user_metadata": {"role": "support"}}';
select is_empty(
  $$ select delivery_id from email.deliveries where delivery_id like 'pgtap-080-%' $$,
  'another user: sees none of the deliveries (user_metadata, which users can edit, does not make support)'
);
select is_empty(
  $$ select id from email.delivery_events where delivery_id like 'pgtap-080-%' $$,
  'another user: sees none of their events'
);
select is(
  pg_temp.sqlstate_of($$ update email.deliveries set status = 'sent' where delivery_id = 'pgtap-080-other' $$), '42501',
  'another user: update, permission denied'
);
select throws_ok(
  $$ select * from email.record_failure('pgtap-080-other', 1, 'y', transport_code => 'x') $$, '42501', 'permission denied for function record_failure',
  'another user: record_failure, permission denied'
);
reset role;

-- ------------------------------------------------------------------------------------------------
-- Support (app_metadata.role support or admin): all deliveries and events through email_api, never
-- payloads; the policies on the tables give support what they give any user (no support arm, which
-- would make every end user's query scan the table)
-- ------------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to '{"sub": "dddddddd-0000-4000-8000-000000000080", "role": "authenticated", "email": "help@example.com", "app_metadata": {"role": "support"}}';
select ok(email.is_support(), 'support: is support');
select is_empty(
  $$ select delivery_id from email.deliveries where delivery_id like 'pgtap-080-%' $$,
  'support: the table''s policies show support only their own deliveries (none here)'
);
select set_eq(
  $$ select delivery_id from email_api.deliveries where delivery_id like 'pgtap-080-%' $$,
  array['pgtap-080-by-uid', 'pgtap-080-by-email', 'pgtap-080-other'],
  'support: sees every delivery through email_api'
);
select is(
  (select count(*)::int from email_api.delivery_events where delivery_id like 'pgtap-080-%'), 6,
  'support: sees every event through email_api'
);
select throws_ok($$ select * from email.delivery_payloads $$, '42501', null, 'support: delivery_payloads, permission denied');
select throws_ok($$ select * from email.rejected_messages $$, '42501', null, 'support: rejected_messages, permission denied');
select throws_ok(
  $$ update email.deliveries set status = 'failed' where delivery_id = 'pgtap-080-other' $$,
  '42501', null, 'support: update, permission denied'
);
select throws_ok(
  $$ delete from email.delivery_events where delivery_id = 'pgtap-080-other' $$,
  '42501', null, 'support: delete of events, permission denied'
);
select throws_ok(
  $$ select email.requeue('pgtap-080-other', 'support wants it') $$, '42501', 'permission denied for function requeue', 'support: requeue, permission denied'
);
reset role;

set local role authenticated;
set local request.jwt.claims to '{"sub": "eeeeeeee-0000-4000-8000-000000000080", "role": "authenticated", "app_metadata": {"role": "admin"}}';
select is(
  (select count(*)::int from email_api.deliveries where delivery_id like 'pgtap-080-%'), 3,
  'admin: sees every delivery through email_api'
);
select throws_ok($$ select * from email.delivery_payloads $$, '42501', null, 'admin: delivery_payloads, permission denied');
reset role;

-- An authenticated role without any JWT claims sees nothing (and does not fail).
set local role authenticated;
set local request.jwt.claims to '';
select is_empty(
  $$ select delivery_id from email.deliveries where delivery_id like 'pgtap-080-%' $$,
  'authenticated without claims: sees nothing'
);
reset role;

-- ------------------------------------------------------------------------------------------------
-- service_role: everything
-- ------------------------------------------------------------------------------------------------
set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';
select is((select count(*)::int from email.deliveries where delivery_id like 'pgtap-080-%'), 3, 'service_role: every delivery');
select is((select count(*)::int from email.delivery_events where delivery_id like 'pgtap-080-%'), 6, 'service_role: every event');
select is((select count(*)::int from email.delivery_payloads where delivery_id like 'pgtap-080-%'), 3, 'service_role: every payload');
select is(
  (select count(*)::int from email.rejected_messages where delivery_id = 'pgtap-080-rejected'), 1,
  'service_role: rejected messages'
);
select is((select count(*)::int from email.retry_policies where workflow = '*'), 1, 'service_role: retry policies');
select lives_ok(
  $$ select email.mark_sent('pgtap-080-other', 1) $$, 'service_role: mark_sent'
);
select lives_ok(
  $$ update email.deliveries set metadata = '{"note": "x"}' where delivery_id = 'pgtap-080-by-uid' $$,
  'service_role: update'
);
select lives_ok(
  $$ delete from email.delivery_payloads where delivery_id = 'pgtap-080-by-email' $$,
  'service_role: delete a payload'
);
select lives_ok(
  $$ insert into email.retry_policies (workflow, max_attempts) values ('pgtap-080', 3) $$,
  'service_role: insert a retry policy'
);
reset role;

-- Table by table: which role may do what (privileges), the policies that apply.
select table_privs_are('email', t, 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
  format('service_role: select, insert, update, delete on email.%s', t))
from unnest(array['deliveries', 'delivery_events', 'delivery_payloads', 'rejected_messages', 'retry_policies',
  'transitions', 'statuses']) t;
select policies_are('email', 'deliveries', array['deliveries_select_own_by_user_id', 'deliveries_select_own_by_email'],
  'deliveries: one select policy per way of owning a delivery');
select policy_cmd_is('email', 'deliveries', p, 'select', format('deliveries: %s is for select', p))
from unnest(array['deliveries_select_own_by_user_id', 'deliveries_select_own_by_email']) p;
select policy_roles_are('email', 'deliveries', p, array['authenticated'], format('deliveries: %s is for authenticated only', p))
from unnest(array['deliveries_select_own_by_user_id', 'deliveries_select_own_by_email']) p;
select policies_are('email', 'delivery_events', array['delivery_events_select_own_delivery'],
  'delivery_events: only the select policy');
select policy_cmd_is('email', 'delivery_events', 'delivery_events_select_own_delivery', 'select', 'delivery_events: the policy is for select');
select policy_roles_are('email', 'delivery_events', 'delivery_events_select_own_delivery', array['authenticated']);
select is_empty(
  $$ select tablename::text from pg_policies
     where schemaname = 'email' and tablename in ('delivery_payloads', 'rejected_messages', 'retry_policies', 'transitions', 'statuses') $$,
  'no policy on payloads, rejected messages, policies, transitions or statuses: nobody but service_role reads them'
);
select ok(
  (select rolbypassrls from pg_roles where rolname = 'service_role')
  and not (select rolbypassrls from pg_roles where rolname = 'authenticated')
  and not (select rolbypassrls from pg_roles where rolname = 'anon'),
  'only service_role bypasses RLS'
);

select * from finish();
rollback;
