-- RLS, the anon story: PostgREST with only the anon key. Nothing at all, on the tables or through email_api.
begin;
select plan(12);

\ir fixtures/rls_deliveries.psql

select tests.clear_authentication();

-- The tables and the lifecycle RPCs
select throws_ok(statement, '42501', message, 'anon: ' || what || ', permission denied')
from (values
  ('deliveries', $$ select * from email.deliveries $$, null),
  ('delivery_events', $$ select * from email.delivery_events $$, null),
  ('delivery_payloads', $$ select * from email.delivery_payloads $$, null),
  ('rejected_messages', $$ select * from email.rejected_messages $$, null),
  ('insert into deliveries', $$ insert into email.deliveries (delivery_id, workflow, recipient, max_attempts, request_hash)
     values ('pgtap-080-anon', 'pgtap', 'a@example.com', 5, 'x') $$, null),
  ('record_queued', $$ select email.record_queued('pgtap-080-anon', 'pgtap', 'a@example.com', '{}') $$,
    'permission denied for schema email'),
  ('mark_in_progress', $$ select email.mark_in_progress('pgtap-080-by-uid') $$, 'permission denied for schema email')
) v(what, statement, message);

-- email_api
select throws_ok(statement, '42501', null, 'anon cannot ' || what)
from (values
  ('call get_delivery', $$select email_api.get_delivery('t-api-ada-1')$$),
  ('list deliveries', $$select count(*) from email_api.deliveries$$),
  ('list events', $$select count(*) from email_api.delivery_events$$),
  ('read metrics', $$select email_api.metrics()$$),
  ('requeue', $$select * from email_api.requeue(array['t-api-ada-1'], 'x')$$)
) v(what, statement);

select * from finish();
rollback;
