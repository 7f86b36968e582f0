-- email_api as anon (PostgREST with the anon key): nothing at all.
begin;
select plan(5);

\ir fixtures/api_deliveries.psql

set local role anon;
set local request.jwt.claims to '{"role": "anon"}';

select throws_ok($$select email_api.get_delivery('t-api-ada-1')$$, '42501', null, 'anon cannot call get_delivery');
select throws_ok($$select count(*) from email_api.deliveries$$, '42501', null, 'anon cannot list deliveries');
select throws_ok($$select count(*) from email_api.delivery_events$$, '42501', null, 'anon cannot list events');
select throws_ok($$select email_api.metrics()$$, '42501', null, 'anon cannot read metrics');
select throws_ok($$select * from email_api.requeue(array['t-api-ada-1'], 'x')$$, '42501', null, 'anon cannot requeue');

select * from finish();
rollback;
