-- email_api as service_role (the worker and operators' tools): everything but payloads.
begin;
select plan(6);

\ir fixtures/api_deliveries.psql

set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';

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
