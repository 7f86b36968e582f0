-- Only app_metadata.role support or admin makes a user support staff: a user whose JWT carries some
-- other application role (member, owner, editor ...) still sees only their own deliveries.
begin;
select plan(6);

select email.record_queued('t085-mine', 'pgtap', 'member@example.com', '{}', '{}', 'aaaaaaaa-0000-4000-8000-000000000085');
select email.record_queued('t085-other', 'pgtap', 'other@example.com', '{}', '{}', 'bbbbbbbb-0000-4000-8000-000000000085');

set local role authenticated;
set local request.jwt.claims to '{"sub": "aaaaaaaa-0000-4000-8000-000000000085", "role": "authenticated", "email": "member@example.com", "app_metadata": {"role": "member"}}';
select is(email.is_support(), false, 'app_metadata.role member is not support');
select results_eq($$select delivery_id from email.deliveries where delivery_id like 't085-%' order by 1$$,
  array['t085-mine'], 'a member sees only their own delivery');
select is((select count(*)::int from email.delivery_events where delivery_id = 't085-other'), 0,
  'and none of the other delivery''s events');
select is(email_api.get_delivery('t085-other'), null, 'get_delivery of the other delivery is null');
select throws_ok($$select email_api.metrics()$$, '42501', null, 'a member may not read metrics');

set local request.jwt.claims to '{"sub": "cccccccc-0000-4000-8000-000000000085", "role": "authenticated", "app_metadata": {"role": "admin"}}';
select results_eq($$select delivery_id from email.deliveries where delivery_id like 't085-%' order by 1$$,
  array['t085-mine', 't085-other'], 'app_metadata.role admin sees every delivery');

select * from finish();
rollback;
