-- email_api as an end user who owns deliveries (by user_id, and by the email claim).
begin;
select plan(20);

\ir fixtures/api_deliveries.psql

set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-0000-0000-00000000000a", "role": "authenticated", "email": "ada@example.com"}';

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
