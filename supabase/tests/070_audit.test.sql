-- The audit trail: one event per insert and status change, in order, with the actor and the error;
-- append-only (EM005).
begin;
select plan(24);

\ir fixtures/helpers.psql

select tests.authenticate_as_service_role();

-- A delivery through most of the lifecycle, each step by a named actor.
select set_config('email.actor', 'pgtap:worker', true);
select email.record_queued('pgtap-070-a', 'pgtap', 'audit@example.com', '{"code": "123456"}');
select email.mark_in_progress('pgtap-070-a', 45);
update email.deliveries set lease_expires_at = lease_expires_at + interval '10 seconds' where delivery_id = 'pgtap-070-a';
select email.record_failure('pgtap-070-a', 1, '4.7.0 try again later', 421);
update email.deliveries set next_attempt_at = now() - interval '1 second' where delivery_id = 'pgtap-070-a';
select email.mark_in_progress('pgtap-070-a');
update email.deliveries set max_attempts = 2 where delivery_id = 'pgtap-070-a';
select email.record_failure('pgtap-070-a', 2, 'given up', 421);
select set_config('email.actor', 'pgtap:operator', true);
select email.requeue('pgtap-070-a', 'the relay is back');
select set_config('email.actor', 'pgtap:worker', true);
select email.mark_in_progress('pgtap-070-a');
select email.mark_sent('pgtap-070-a', 3, '<a@example.com>', '250 OK');

select results_eq(
  $$ select from_status, to_status, attempt, actor from email.delivery_events where delivery_id = 'pgtap-070-a' order by id $$,
  $$ values (null::text, 'queued'::text, 0, 'pgtap:worker'::text),
            ('queued', 'in_progress', 1, 'pgtap:worker'),
            ('in_progress', 'retrying', 1, 'pgtap:worker'),
            ('retrying', 'in_progress', 2, 'pgtap:worker'),
            ('in_progress', 'dead_letter', 2, 'pgtap:worker'),
            ('dead_letter', 'queued', 2, 'pgtap:operator'),
            ('queued', 'in_progress', 3, 'pgtap:worker'),
            ('in_progress', 'sent', 3, 'pgtap:worker') $$,
  'one event per transition, in order, with the attempt and the actor (a lease extension is not a transition)'
);
select is_empty(
  $$ select 1 from email.delivery_events e
     where e.delivery_id = 'pgtap-070-a'
       and (e.from_status is distinct from (select p.to_status from email.delivery_events p
                                             where p.delivery_id = e.delivery_id and p.id < e.id order by p.id desc limit 1)) $$,
  'each event starts where the previous one ended'
);
select is(
  (select to_status from email.delivery_events where delivery_id = 'pgtap-070-a' order by id desc limit 1),
  (select status from email.deliveries where delivery_id = 'pgtap-070-a'),
  'the last event is the delivery''s status'
);
select results_eq(
  $$ select to_status, error_code, error_message from email.delivery_events
     where delivery_id = 'pgtap-070-a' and error_code is not null order by id $$,
  $$ values ('retrying'::text, 'smtp_421'::text, '4.7.0 try again later'::text), ('dead_letter', 'smtp_421', 'given up') $$,
  'the failures carry their error code and message, the other events none'
);
select ok(
  (select (detail ->> 'next_attempt_at')::timestamptz > now() from email.delivery_events
   where delivery_id = 'pgtap-070-a' and to_status = 'retrying'),
  'the retrying event says when the next attempt is due'
);
select ok(
  (select bool_and((detail ->> 'lease_expires_at')::timestamptz > now()) from email.delivery_events
   where delivery_id = 'pgtap-070-a' and to_status = 'in_progress'),
  'the in_progress events carry the lease'
);
select is(
  (select detail ->> 'reason' from email.delivery_events where delivery_id = 'pgtap-070-a' and from_status = 'dead_letter'),
  'the relay is back', 'the requeue event carries the reason'
);
select is(
  (select detail from email.delivery_events where delivery_id = 'pgtap-070-a' and to_status = 'sent'),
  '{"provider_message_id": "<a@example.com>", "provider_response": "250 OK"}'::jsonb,
  'the sent event carries the provider''s id and response'
);
select is(
  (select count(*)::int from email.delivery_events where delivery_id = 'pgtap-070-a' and detail ? 'reason'), 1,
  'the requeue reason is attached to the requeue event only'
);

-- A failed render (queued -> failed) is in the trail with its error.
select email.record_queued('pgtap-070-render', 'pgtap', 'audit@example.com', '{}');
select email.mark_failed('pgtap-070-render', 0, 'render_error', 'unknown template');
select results_eq(
  $$ select from_status, to_status, attempt, error_code, error_message from email.delivery_events
     where delivery_id = 'pgtap-070-render' order by id $$,
  $$ values (null::text, 'queued'::text, 0, null::text, null::text),
            ('queued', 'failed', 0, 'render_error', 'unknown template') $$,
  'queued -> failed is in the trail with its error'
);

-- The actor: the email.actor setting, else the JWT's subject, else the database user and application.
select set_config('email.actor', '', true);
select email.record_queued('pgtap-070-default', 'pgtap', 'audit@example.com', '{}');
select is(
  (select actor from email.delivery_events where delivery_id = 'pgtap-070-default'),
  'service_role' || coalesce('@' || nullif(current_setting('application_name'), ''), ''),
  'without email.actor the actor is the database user @ application_name'
);
select set_config('request.jwt.claims', '{"sub": "5b6c7d8e-0000-4000-8000-000000000070", "role": "service_role"}', true);
select email.record_queued('pgtap-070-jwt', 'pgtap', 'audit@example.com', '{}');
select is(
  (select actor from email.delivery_events where delivery_id = 'pgtap-070-jwt'),
  'user:5b6c7d8e-0000-4000-8000-000000000070',
  'with a JWT the actor is its subject'
);
select set_config('email.actor', 'cli:carol', true);
select email.mark_in_progress('pgtap-070-jwt');
select is(
  (select actor from email.delivery_events where delivery_id = 'pgtap-070-jwt' and to_status = 'in_progress'),
  'cli:carol', 'email.actor wins over the JWT'
);
select set_config('request.jwt.claims', '', true);

-- Error messages are truncated to 512 characters in the database; a transport code no failure rule
-- names (here 100 characters long) is recorded as unknown.
select email.record_failure('pgtap-070-jwt', 1, repeat('m', 5000), transport_code => repeat('c', 100));
select results_eq(
  $$ select last_error_code, char_length(last_error_message) from email.deliveries where delivery_id = 'pgtap-070-jwt' $$,
  $$ values ('unknown'::text, 512) $$,
  'the delivery keeps at most 512 characters of message; an unnamed transport code is unknown'
);
select is(
  (select char_length(error_message) from email.delivery_events where delivery_id = 'pgtap-070-jwt' and to_status = 'retrying'),
  512, 'the event keeps at most 512 characters of message'
);
update email.deliveries set last_error_message = repeat('u', 1000) where delivery_id = 'pgtap-070-jwt';
select is(
  (select char_length(last_error_message) from email.deliveries where delivery_id = 'pgtap-070-jwt'), 512,
  'a direct update is truncated to 512 characters too'
);

-- Append-only: UPDATE, DELETE and TRUNCATE are refused, even for service_role and the owner.
select throws_ok(
  $$ update email.delivery_events set actor = 'someone else' where delivery_id = 'pgtap-070-a' $$,
  'EM005', 'email.delivery_events is append-only: UPDATE refused', 'service_role cannot UPDATE an event'
);
select throws_ok(
  $$ delete from email.delivery_events where delivery_id = 'pgtap-070-a' $$,
  'EM005', 'email.delivery_events is append-only: DELETE refused', 'service_role cannot DELETE an event'
);
select tests.reset_authentication();
select throws_ok(
  $$ update email.delivery_events set error_message = null where delivery_id = 'pgtap-070-a' $$,
  'EM005', null, 'the owner cannot UPDATE an event'
);
select throws_ok(
  $$ delete from email.delivery_events where delivery_id = 'pgtap-070-a' $$,
  'EM005', null, 'the owner cannot DELETE an event'
);
set local client_min_messages = warning; -- "truncate cascades to ..."
select throws_ok(
  $$ truncate email.delivery_events cascade $$,
  'EM005', 'email.delivery_events is append-only: TRUNCATE refused', 'the owner cannot TRUNCATE the trail'
);
select throws_ok(
  $$ truncate email.deliveries cascade $$,
  'EM005', null, 'the trail cannot be truncated through deliveries either'
);
select throws_ok(
  $$ delete from email.deliveries where delivery_id = 'pgtap-070-a' $$,
  'EM005', null, 'a delivery with a trail cannot be deleted (only the retention job removes history)'
);
select is(
  (select count(*)::int from email.delivery_events where delivery_id = 'pgtap-070-a'), 8,
  'the trail is intact'
);

select * from finish();
rollback;
