-- RLS, the support story: Sam (app_metadata.role support) and Dee (admin). Through email_api, every
-- delivery and event, with actors, reasons and SMTP text, never a payload; on the tables, only what any
-- user gets (the policies have no support arm, which would make every end user's query scan the
-- table); no writes, no requeue.
begin;
select plan(24);

\ir fixtures/rls_deliveries.psql

select tests.authenticate_as('sam');

-- The tables (and, for support, the same rows through email_api)
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
select throws_ok(statement, '42501', message, 'support: ' || what || ', permission denied')
from (values
  ('delivery_payloads', $$ select * from email.delivery_payloads $$, null),
  ('rejected_messages', $$ select * from email.rejected_messages $$, null),
  ('update', $$ update email.deliveries set status = 'failed' where delivery_id = 'pgtap-080-other' $$, null),
  ('delete of events', $$ delete from email.delivery_events where delivery_id = 'pgtap-080-other' $$, null),
  ('requeue', $$ select email.requeue('pgtap-080-other', 'support wants it') $$, 'permission denied for function requeue')
) v(what, statement, message);

-- email_api

select is(email_api.get_delivery('t-api-ada-1') ->> 'status', 'dead_letter', 'support reads Ada''s delivery');
select is(email_api.get_delivery('t-api-bob') ->> 'recipient', 'bob@example.com', 'support reads Bob''s delivery');
select is(jsonb_array_length(email_api.get_delivery('t-api-ada-1') -> 'events'), 3, 'support sees the whole timeline');
select is(email_api.get_delivery('t-api-missing'), null, 'a missing delivery is null for support too');
select results_eq(
  $$select delivery_id from email_api.deliveries where workflow = 't-api' order by delivery_id$$,
  array['t-api-ada-1', 't-api-ada-2', 't-api-bob'],
  'support lists every delivery'
);
select ok(position('482913' in (select jsonb_agg(to_jsonb(d))::text from email_api.deliveries d where workflow = 't-api')) = 0,
  'no payload reaches support through the list');
select lives_ok($$select email_api.metrics()$$, 'support reads metrics');
-- Actors, reasons and SMTP text are for support (issue 10, item 6).
select is(
  (select jsonb_build_object('actor', e ->> 'actor', 'reason', e -> 'detail' ->> 'reason')
   from jsonb_array_elements(email_api.get_delivery('t-api-ada-3') -> 'events') e where e ->> 'to_status' = 'queued' and e ->> 'from_status' = 'dead_letter'),
  jsonb_build_object('actor', 'ops:ada.lovelace@corp', 'reason', 'customer Jane Doe (ticket #4411) asked again; relay 10.0.3.7 was down'),
  'support sees who requeued and why'
);
select is(
  (select actor from email_api.delivery_events where delivery_id = 't-api-ada-3' and from_status = 'dead_letter'),
  'ops:ada.lovelace@corp',
  'support sees the actor in the events view'
);
select is(
  (select array[last_error_code, last_error_message, error_category] from email_api.deliveries where delivery_id = 't-api-ada-3'),
  array['smtp_451', '451 4.3.0 relay 10.0.3.7 busy', 'temporary'],
  'support sees the error code and the SMTP text as well as the category'
);
select is(email_api.get_delivery('t-api-ada-3') ->> 'last_error_message', '451 4.3.0 relay 10.0.3.7 busy', 'and in the document');
select throws_ok($$select * from email_api.requeue(array['t-api-ada-1'], 'x')$$, '42501', null, 'support cannot requeue through the API (operators use service_role)');

-- An admin (no email address in the token)
select tests.authenticate_as('dee');
select is(email_api.get_delivery('t-api-bob') ->> 'delivery_id', 't-api-bob', 'an admin reads every delivery too');
select is(
  (select count(*)::int from email_api.deliveries where delivery_id like 'pgtap-080-%'), 3,
  'admin: sees every delivery through email_api'
);
select throws_ok($$ select * from email.delivery_payloads $$, '42501', null, 'admin: delivery_payloads, permission denied');

select * from finish();
rollback;
