-- RLS, the service_role story (the worker and operators' tools): on the tables everything (it bypasses
-- RLS); through email_api everything but payloads.
begin;
select plan(15);

\ir fixtures/rls_deliveries.psql

select tests.authenticate_as_service_role();

-- The tables
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

-- email_api

select is(email_api.get_delivery('t-api-ada-1') ->> 'status', 'dead_letter', 'service_role reads any delivery');
select is(email_api.get_delivery('t-api-missing'), null, 'a missing delivery is null');
select is((select count(*)::int from email_api.deliveries where workflow = 't-api'), 3, 'service_role lists every delivery');
select ok(not (email_api.get_delivery('t-api-ada-1') ?| array['payload', 'request_hash']), 'no payload in the document for service_role either');
select lives_ok($$select email_api.metrics()$$, 'service_role reads metrics');
select is(
  (select count(*)::int from email_api.requeue(array['t-api-ada-1'], 'the SMTP relay is back', 'cli:test')),
  1,
  'service_role requeues through the API'
);

select * from finish();
rollback;
