-- The worker's push path: email.queue_and_claim. A new delivery is born in_progress at attempt 1 with
-- one event; a known one is answered as record_queued + mark_in_progress would; and mark_sent records
-- the outcome under its fence in one statement.
begin;
select plan(26);

\ir fixtures/helpers.psql

select tests.authenticate_as_service_role();

-- A new delivery: born in_progress, attempt 1, under the lease asked for, payload kept apart.
select results_eq(
  $$ select status, attempt from email.queue_and_claim('pgtap-032-new', 'pgtap', 'new@example.com', '{"code": "123456"}', '{"k": 1}', null, 45) $$,
  $$ values ('in_progress'::text, 1) $$,
  'a new delivery is claimed at once: in_progress, attempt 1'
);
select results_eq(
  $$ select status, attempts, next_attempt_at is null, lease_expires_at = now() + interval '45 seconds',
            last_attempted_at = now(), send_started_at is null, metadata, completed_at is null
     from email.deliveries where delivery_id = 'pgtap-032-new' $$,
  $$ values ('in_progress'::text, 1, true, true, true, true, '{"k": 1}'::jsonb, true) $$,
  'born in_progress: attempt 1, the lease, nothing due, no send started'
);
select is(
  (select payload from email.delivery_payloads where delivery_id = 'pgtap-032-new'), '{"code": "123456"}'::jsonb,
  'the payload is kept apart, as record_queued keeps it'
);
select results_eq(
  $$ select from_status, to_status, attempt, (detail ->> 'lease_expires_at')::timestamptz = now() + interval '45 seconds'
     from email.delivery_events where delivery_id = 'pgtap-032-new' order by id $$,
  $$ values (null::text, 'in_progress'::text, 1, true) $$,
  'one event: null -> in_progress at attempt 1, with the lease'
);
select is(
  (select request_hash from email.deliveries where delivery_id = 'pgtap-032-new'),
  email._request_hash('pgtap', 'new@example.com', '{"code": "123456"}', null),
  'the request hash is the one record_queued would store'
);

-- The same push again while the lease is live: not claimable, nothing written.
select results_eq(
  $$ select status, attempt from email.queue_and_claim('pgtap-032-new', 'pgtap', 'new@example.com', '{"code": "123456"}', '{"k": 1}', null, 45) $$,
  $$ values ('in_progress'::text, null::integer) $$,
  'the same push under a live lease: in_progress, no attempt'
);
select is((select count(*)::int from email.delivery_events where delivery_id = 'pgtap-032-new'), 1, 'and no event');
select throws_ok(
  $$ select * from email.queue_and_claim('pgtap-032-new', 'pgtap', 'new@example.com', '{"code": "654321"}') $$,
  'EM002', null, 'the same id with other content raises EM002'
);

-- The outcome: mark_sent, fenced in its one update.
select throws_ok($$ select email.mark_sent('pgtap-032-new', 2) $$, 'EM003', null, 'mark_sent of another attempt raises EM003');
select throws_ok($$ select email.mark_sent('pgtap-032-none', 1) $$, 'EM004', null, 'mark_sent of an unknown delivery raises EM004');
select is((email.mark_sent('pgtap-032-new', 1, '<m@x>', '250 ok', 'relay.test')).status, 'sent', 'mark_sent of attempt 1: sent');
select is((email.mark_sent('pgtap-032-new', 1, '<m@x>', '250 ok', 'relay.test')).status, 'sent', 'and again: sent, idempotent');
select results_eq(
  $$ select from_status, to_status, attempt from email.delivery_events where delivery_id = 'pgtap-032-new' order by id $$,
  $$ values (null::text, 'in_progress'::text, 1), ('in_progress', 'sent', 1) $$,
  'a pushed delivery that is sent writes two events: null -> in_progress, in_progress -> sent'
);
select ok(
  not exists (select from email.delivery_payloads where delivery_id = 'pgtap-032-new'),
  'sent: the payload is erased'
);
select is(
  coalesce(nullif(current_setting('email.event_detail', true), ''), '{}')::jsonb, '{}'::jsonb,
  'the idempotent mark_sent leaves no detail behind for a later event'
);
select results_eq(
  $$ select status, attempt from email.queue_and_claim('pgtap-032-new', 'pgtap', 'new@example.com', '{"code": "123456"}', '{"k": 1}', null, 45) $$,
  $$ values ('sent'::text, null::integer) $$,
  'a push of a sent delivery: sent, no attempt'
);
select throws_ok($$ select email.mark_sent('pgtap-032-new', 2) $$, 'EM003', null, 'a sent delivery fences off other attempts');

-- A delivery queued without a claim (the API) is claimed by the push.
select email.record_queued('pgtap-032-queued', 'pgtap', 'queued@example.com', '{"code": "1"}');
select results_eq(
  $$ select status, attempt from email.queue_and_claim('pgtap-032-queued', 'pgtap', 'queued@example.com', '{"code": "1"}') $$,
  $$ values ('in_progress'::text, 1) $$,
  'a queued delivery is claimed: in_progress, attempt 1'
);
select results_eq(
  $$ select from_status, to_status, attempt from email.delivery_events where delivery_id = 'pgtap-032-queued' order by id $$,
  $$ values (null::text, 'queued'::text, 0), ('queued', 'in_progress', 1) $$,
  'its trail: null -> queued, queued -> in_progress'
);

-- An expired lease is reaped first (retrying, not yet due): no attempt.
update email.deliveries set lease_expires_at = now() - interval '1 second' where delivery_id = 'pgtap-032-queued';
select results_eq(
  $$ select status, attempt from email.queue_and_claim('pgtap-032-queued', 'pgtap', 'queued@example.com', '{"code": "1"}') $$,
  $$ values ('in_progress'::text, null::integer) $$,
  'a push that finds an expired lease: reaped, no attempt (the status it found)'
);
select is((select status from email.deliveries where delivery_id = 'pgtap-032-queued'), 'retrying', 'the expired attempt is now retrying');

-- A suppressed recipient: queued and at once suppressed, nothing stored, no attempt.
select email.add_suppression('Blocked@Example.com', 'hard bounce');
select results_eq(
  $$ select status, attempt from email.queue_and_claim('pgtap-032-blocked', 'pgtap', 'Ann <blocked@example.com>', '{"code": "2"}') $$,
  $$ values ('suppressed'::text, null::integer) $$,
  'a suppressed recipient: suppressed, no attempt'
);
select results_eq(
  $$ select from_status, to_status from email.delivery_events where delivery_id = 'pgtap-032-blocked' order by id $$,
  $$ values (null::text, 'queued'::text), ('queued', 'suppressed') $$,
  'its trail: null -> queued -> suppressed'
);
select ok(not exists (select from email.delivery_payloads where delivery_id = 'pgtap-032-blocked'), 'and no payload stored');

-- Arguments.
select throws_ok(
  $$ select * from email.queue_and_claim('pgtap-032-lease', 'pgtap', 'l@example.com', '{}', '{}', null, 0) $$,
  'EM006', null, 'lease_seconds under 1 raises EM006'
);
select ok(not exists (select from email.deliveries where delivery_id = 'pgtap-032-lease'), 'and nothing is stored');

select * from finish();
rollback;
