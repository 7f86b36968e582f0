-- RLS, the anon story: PostgREST with only the anon key. Nothing at all, on the tables or through email_api.
begin;
select plan(12);

\ir fixtures/rls_deliveries.psql

select tests.clear_authentication();

-- The tables and the lifecycle RPCs
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

-- email_api
select throws_ok($$select email_api.get_delivery('t-api-ada-1')$$, '42501', null, 'anon cannot call get_delivery');
select throws_ok($$select count(*) from email_api.deliveries$$, '42501', null, 'anon cannot list deliveries');
select throws_ok($$select count(*) from email_api.delivery_events$$, '42501', null, 'anon cannot list events');
select throws_ok($$select email_api.metrics()$$, '42501', null, 'anon cannot read metrics');
select throws_ok($$select * from email_api.requeue(array['t-api-ada-1'], 'x')$$, '42501', null, 'anon cannot requeue');

select * from finish();
rollback;
