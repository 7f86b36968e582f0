-- RLS, the owner's story: Ada, an end user who owns deliveries by user_id and by the email claim. On
-- the tables she reads her deliveries and their events, nothing else, and changes nothing; through
-- email_api she reads her own documents, without payloads, operators' notes or SMTP text.
begin;
select plan(36);

\ir fixtures/rls_deliveries.psql

select tests.authenticate_as('ada');

-- The tables
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
-- She changes nothing, reads no payload and calls no operator's function: the privileges refuse it.
select throws_ok(statement, '42501', message, 'owner: ' || what || ', permission denied')
from (values
  ('request_hash (a hash over the payload)', $$ select request_hash from email.deliveries $$, null),
  ('delivery_payloads', $$ select * from email.delivery_payloads $$, null),
  ('rejected_messages', $$ select * from email.rejected_messages $$, null),
  ('retry_policies', $$ select * from email.retry_policies $$, null),
  ('insert into deliveries', format($$ insert into email.deliveries (delivery_id, workflow, recipient, max_attempts, request_hash, user_id)
     values ('pgtap-080-mine', 'pgtap', 'ada@example.com', 5, 'x', %L) $$, tests.get_supabase_uid('ada')), null),
  ('update of their own delivery', $$ update email.deliveries set recipient = 'x@example.com' where delivery_id = 'pgtap-080-by-uid' $$, null),
  ('delete of their own delivery', $$ delete from email.deliveries where delivery_id = 'pgtap-080-by-uid' $$, null),
  ('insert into delivery_events',
    $$ insert into email.delivery_events (delivery_id, to_status, attempt, actor) values ('pgtap-080-by-uid', 'sent', 1, 'me') $$, null),
  ('insert into delivery_payloads', $$ insert into email.delivery_payloads (delivery_id, payload) values ('pgtap-080-by-uid', '{}') $$, null),
  ('mark_sent', $$ select email.mark_sent('pgtap-080-by-uid', 1) $$, 'permission denied for function mark_sent'),
  ('requeue', $$ select email.requeue('pgtap-080-by-uid', 'please') $$, 'permission denied for function requeue'),
  ('claim_due', $$ select * from email.claim_due(10) $$, 'permission denied for function claim_due')
) v(what, statement, message);
select ok(not email.is_support(), 'owner: is not support');

-- email_api

select is(email_api.get_delivery('t-api-ada-1') ->> 'status', 'dead_letter', 'the owner reads their delivery by user_id');
select is(email_api.get_delivery('t-api-ada-2') ->> 'recipient', 'Ada@Example.com', 'the owner reads a delivery addressed to their email (any case)');
select is(
  (select array_agg(e ->> 'to_status' order by (e ->> 'id')::bigint) from jsonb_array_elements(email_api.get_delivery('t-api-ada-1') -> 'events') e),
  array['queued', 'in_progress', 'dead_letter'],
  'the timeline lists every event oldest first'
);
select is(
  (email_api.get_delivery('t-api-ada-1') -> 'events' -> 2 ->> 'error_category'),
  'temporary',
  'the timeline carries the public category of the failed attempt''s error'
);
select ok(not (email_api.get_delivery('t-api-ada-1') ?| array['payload', 'request_hash']), 'the document has no payload and no request hash');
select ok(position('482913' in email_api.get_delivery('t-api-ada-1')::text) = 0, 'the verification code appears nowhere in the document');
select ok(position('s3cret' in email_api.get_delivery('t-api-ada-2')::text) = 0, 'the reset link appears nowhere in the document');
select is(email_api.get_delivery('t-api-bob'), null, 'someone else''s delivery reads as null');
select is(email_api.get_delivery('t-api-missing'), null, 'a missing delivery reads as null: the same answer');
select results_eq(
  $$select delivery_id from email_api.deliveries where workflow = 't-api' order by delivery_id$$,
  array['t-api-ada-1', 't-api-ada-2'],
  'the list shows the owner''s deliveries only'
);
select results_eq(
  $$select delivery_id from email_api.deliveries where workflow = 't-api' and status = 'dead_letter'$$,
  array['t-api-ada-1'],
  'filters (as PostgREST query params become where clauses) apply within what the owner sees'
);
select is(
  (select count(*)::int from email_api.delivery_events where delivery_id = 't-api-bob'),
  0,
  'the owner sees no events of someone else''s delivery'
);
-- What an end user sees of an operator's requeue: the status change, its time and attempt; never who
-- did it, why, or what the relay said (issue 10, item 6).
select is(
  (select array_agg(e ->> 'to_status' order by (e ->> 'id')::bigint) from jsonb_array_elements(email_api.get_delivery('t-api-ada-3') -> 'events') e),
  array['queued', 'in_progress', 'dead_letter', 'queued'],
  'the owner sees the requeue in the timeline'
);
select ok(
  position('ada.lovelace' in email_api.get_delivery('t-api-ada-3')::text) = 0
  and position('Jane Doe' in email_api.get_delivery('t-api-ada-3')::text) = 0
  and position('10.0.3.7' in email_api.get_delivery('t-api-ada-3')::text) = 0,
  'the document names no operator, no requeue reason and no relay'
);
select is(
  (select array_agg(distinct k order by k) from jsonb_array_elements(email_api.get_delivery('t-api-ada-3') -> 'events') e, jsonb_object_keys(e) k),
  array['attempt', 'created_at', 'error_category', 'from_status', 'id', 'to_status'],
  'an event tells the owner status, time, attempt and error category only'
);
select ok(
  not (email_api.get_delivery('t-api-ada-3') ?| array['last_error_code', 'last_error_message', 'provider_response', 'provider_message_id', 'metadata']),
  'the delivery document has no error text, SMTP reply or metadata for the owner'
);
select is(email_api.get_delivery('t-api-ada-1') ->> 'error_category', 'temporary', 'the owner gets the public error category');
select is(
  (select count(*)::int from email_api.delivery_events where delivery_id = 't-api-ada-3' and (actor is not null or detail is not null or error_message is not null or error_code is not null)),
  0,
  'the events view has no actor, detail or error text for the owner either'
);
select is(
  (select count(*)::int from email_api.deliveries where delivery_id = 't-api-ada-3' and (last_error_message is not null or last_error_code is not null or metadata is not null)),
  0,
  'nor has the deliveries view'
);
select throws_ok($$select email_api.metrics()$$, '42501', 'only support staff and service_role may read email metrics', 'an end user cannot read metrics');

select * from finish();
rollback;
