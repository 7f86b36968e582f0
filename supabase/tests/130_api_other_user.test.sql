-- email_api as another end user: Ada's deliveries are indistinguishable from missing ones.
begin;
select plan(7);

\ir fixtures/api_deliveries.psql

set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-0000-0000-00000000000b", "role": "authenticated", "email": "bob@example.com"}';

select is(email_api.get_delivery('t-api-ada-1'), null, 'Bob reads Ada''s delivery as null');
select is(email_api.get_delivery('t-api-ada-2'), null, 'Bob reads the delivery addressed to Ada''s email as null');
select is(email_api.get_delivery('t-api-ada-1'), email_api.get_delivery('no-such-delivery'), 'not visible and missing give the same answer');
select is(email_api.get_delivery('t-api-bob') ->> 'delivery_id', 't-api-bob', 'Bob reads his own');
select results_eq($$select delivery_id from email_api.deliveries where workflow = 't-api'$$, array['t-api-bob'], 'Bob lists only his own');
select is((select count(*)::int from email_api.delivery_events where delivery_id like 't-api-ada%'), 0, 'Bob sees none of Ada''s events');
select throws_ok($$select * from email_api.purge_dead_letters('0 seconds', 'x')$$, '42501', null, 'an end user cannot purge');

select * from finish();
rollback;
