-- Only app_metadata.role support or admin makes a user support staff: a user whose JWT carries some
-- other application role (member, owner, editor ...) still sees only their own deliveries, without
-- their internals.
begin;
select plan(8);

\ir fixtures/helpers.psql

select tests.create_supabase_user('member', 'member@example.com', '{"role": "member"}', '{}', 'aaaaaaaa-0000-4000-8000-000000000086');
select tests.create_supabase_user('admin', null, '{"role": "admin"}', '{}', 'cccccccc-0000-4000-8000-000000000086');

select email.record_queued('t086-mine', 'pgtap', 'member@example.com', '{}', '{}', 'aaaaaaaa-0000-4000-8000-000000000086');
select email.record_queued('t086-other', 'pgtap', 'other@example.com', '{}', '{}', 'bbbbbbbb-0000-4000-8000-000000000086');

select tests.authenticate_as('member');
select is(email.is_support(), false, 'app_metadata.role member is not support');
select results_eq($$select delivery_id from email_api.deliveries where delivery_id like 't086-%' order by 1$$,
  array['t086-mine'], 'a member sees only their own delivery');
select is((select count(*)::int from email_api.delivery_events where delivery_id = 't086-other'), 0,
  'and none of the other delivery''s events');
select is(email_api.get_delivery('t086-other'), null, 'get_delivery of the other delivery is null');
select is((select count(*)::int from email_api.delivery_events where delivery_id = 't086-mine' and actor is not null), 0,
  'the actors of their own delivery''s events stay with support');
select throws_ok($$select email_api.metrics()$$, '42501', null, 'a member may not read metrics');

select tests.authenticate_as('admin');
select results_eq($$select delivery_id from email_api.deliveries where delivery_id like 't086-%' order by 1$$,
  array['t086-mine', 't086-other'], 'app_metadata.role admin sees every delivery');
select isnt((select count(*)::int from email_api.delivery_events where delivery_id = 't086-other' and actor is not null), 0,
  'with the actors');

select * from finish();
rollback;
