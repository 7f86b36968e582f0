-- Fencing: an outcome carries the attempt number of its claim; a stale one raises EM003 and changes nothing.
begin;
select plan(36);

\ir fixtures/helpers.psql

select tests.authenticate_as_service_role();

-- Attempt 1 claims, its lease expires and is reaped, attempt 2 claims.
select email.record_queued('pgtap-040-a', 'pgtap', 'someone@example.com', '{"code": "123456"}');
select is(email.mark_in_progress('pgtap-040-a'), 1, 'attempt 1 claims');
update email.deliveries set lease_expires_at = now() - interval '1 second' where delivery_id = 'pgtap-040-a';
select is(email.reap_expired_leases() >= 1, true, 'attempt 1''s lease expires and is reaped');
update email.deliveries set next_attempt_at = now() - interval '1 second' where delivery_id = 'pgtap-040-a';
select is(email.mark_in_progress('pgtap-040-a'), 2, 'attempt 2 claims');

create temp table before_a as select * from email.deliveries where delivery_id = 'pgtap-040-a';
create temp table events_a as select count(*) as n from email.delivery_events where delivery_id = 'pgtap-040-a';

select throws_ok(
  $$ select email.mark_sent('pgtap-040-a', 1, '<late@example.com>') $$,
  'EM003', 'attempt 1 of delivery pgtap-040-a is stale: the delivery is in_progress at attempt 2',
  'mark_sent from the reaped attempt 1 raises EM003'
);
select throws_ok(
  $$ select * from email.record_failure('pgtap-040-a', 1, 'late failure', 421) $$,
  'EM003', null, 'record_failure from attempt 1 raises EM003'
);
select throws_ok(
  $$ select * from email.record_failure('pgtap-040-a', 1, 'late failure', 550) $$,
  'EM003', null, 'a permanent record_failure from attempt 1 raises EM003'
);
select tests.reset_authentication(); -- mark_retrying and mark_dead_letter are internal to record_failure: called as their owner
select throws_ok(
  $$ select email.mark_retrying('pgtap-040-a', 1, 'smtp_421', 'late') $$, 'EM003', null, 'mark_retrying from attempt 1 raises EM003'
);
select throws_ok(
  $$ select email.mark_failed('pgtap-040-a', 1, 'smtp_550', 'late') $$, 'EM003', null, 'mark_failed from attempt 1 raises EM003'
);
select throws_ok(
  $$ select email.mark_dead_letter('pgtap-040-a', 1, 'smtp_421', 'late') $$, 'EM003', null,
  'mark_dead_letter from attempt 1 raises EM003'
);
select tests.authenticate_as_service_role();
select throws_ok(
  $$ select email.mark_sent('pgtap-040-a', 3) $$, 'EM003', null, 'an attempt from the future raises EM003'
);
select throws_ok(
  $$ select email.mark_sent('pgtap-040-a', null) $$, 'EM003', null, 'no attempt number raises EM003'
);
select results_eq(
  $$ select * from email.deliveries where delivery_id = 'pgtap-040-a' $$,
  $$ select * from before_a $$,
  'the stale reports changed nothing on the delivery'
);
select is(
  (select count(*) from email.delivery_events where delivery_id = 'pgtap-040-a'), (select n from events_a),
  'the stale reports wrote no event'
);
select is(
  (select status from email.mark_sent('pgtap-040-a', 2, '<current@example.com>')), 'sent',
  'the current attempt 2 records its success'
);
select throws_ok(
  $$ select * from email.record_failure('pgtap-040-a', 2, 'after the fact', 421) $$,
  'EM003', null, 'a failure reported after success raises EM003'
);
select throws_ok(
  $$ select email.mark_sent('pgtap-040-a', 1) $$, 'EM003', null, 'a success from another attempt after success raises EM003'
);
select throws_ok(
  $$ select email.mark_sent('pgtap-040-does-not-exist', 1) $$, 'EM004', 'delivery pgtap-040-does-not-exist does not exist',
  'mark_sent of an unknown delivery raises EM004'
);

-- Late success of an attempt that was reaped but not re-claimed: the mail did go out, so it is recorded.
select email.record_queued('pgtap-040-b', 'pgtap', 'someone@example.com', '{"code": "123456"}');
select email.mark_in_progress('pgtap-040-b');
update email.deliveries set lease_expires_at = now() - interval '1 second' where delivery_id = 'pgtap-040-b';
select email.reap_expired_leases();
select results_eq(
  $$ select status, attempts from email.deliveries where delivery_id = 'pgtap-040-b' $$,
  $$ values ('retrying'::text, 1) $$,
  'attempt 1 of pgtap-040-b was reaped and nobody re-claimed it'
);
select results_eq(
  $$ select status, attempts, provider_message_id, next_attempt_at, completed_at = now()
     from email.mark_sent('pgtap-040-b', 1, '<late@example.com>') $$,
  $$ values ('sent'::text, 1, '<late@example.com>'::text, null::timestamptz, true) $$,
  'its late success is recorded: sent, nothing due any more'
);
select results_eq(
  $$ select from_status, to_status, attempt from email.delivery_events where delivery_id = 'pgtap-040-b' order by id $$,
  $$ values (null::text, 'queued'::text, 0), ('queued', 'in_progress', 1), ('in_progress', 'retrying', 1),
            ('retrying', 'sent', 1) $$,
  'the trail shows the reap and the late success of attempt 1'
);
select is_empty(
  $$ select 1 from email.claim_due(1000) where delivery_id = 'pgtap-040-b' $$,
  'a late success is not claimed again'
);

-- The lease: renewed as the send starts and by the heartbeat, only while live and only by its attempt.
select email.record_queued('pgtap-040-c', 'pgtap', 'someone@example.com', '{"code": "123456"}');
select is(email.mark_in_progress('pgtap-040-c', 1), 1, 'attempt 1 of pgtap-040-c claims with a 1 s lease');
select is(
  (select send_started_at from email.deliveries where delivery_id = 'pgtap-040-c'), null,
  'a fresh claim has not started sending'
);
select is(
  email.renew_lease('pgtap-040-c', 1, 90, true), now() + interval '90 seconds',
  'renew_lease as the send starts: the lease ends lease_seconds from now'
);
select is(
  (select send_started_at from email.deliveries where delivery_id = 'pgtap-040-c'), now(),
  'and the attempt is recorded as sending'
);
select is(
  email.renew_lease('pgtap-040-c', 1, 5), now() + interval '90 seconds',
  'a heartbeat never shortens a lease'
);
select throws_ok(
  $$ select email.renew_lease('pgtap-040-c', 2, 60) $$, 'EM003', null, 'another attempt cannot renew it'
);
select throws_ok($$ select email.renew_lease('pgtap-040-c', 1, 0) $$, 'EM006', null, 'lease_seconds must be positive');
select throws_ok(
  $$ select email.renew_lease('pgtap-040-does-not-exist', 1, 60) $$, 'EM004', null, 'an unknown delivery raises EM004'
);

-- An expired lease is the reaper's: no renewal, and since the send had started, outcome_unknown.
update email.deliveries set lease_expires_at = now() - interval '1 second' where delivery_id = 'pgtap-040-c';
select throws_ok(
  $$ select email.renew_lease('pgtap-040-c', 1, 60, true) $$, 'EM003', null,
  'an expired lease cannot be renewed, so no send starts on it'
);
select email.reap_expired_leases();
select results_eq(
  $$ select status, attempts, last_error_code from email.deliveries where delivery_id = 'pgtap-040-c' $$,
  $$ values ('retrying'::text, 1, 'outcome_unknown'::text) $$,
  'an attempt that started sending and never reported is reaped as outcome_unknown, and retried (at least once)'
);
update email.deliveries set next_attempt_at = now() - interval '1 second' where delivery_id = 'pgtap-040-c';
select is(email.mark_in_progress('pgtap-040-c'), 2, 'attempt 2 claims');
select is(
  (select send_started_at from email.deliveries where delivery_id = 'pgtap-040-c'), null,
  'a new attempt starts with no send started'
);

-- An attempt that never started sending is reaped as lease_expired: nothing went out.
select email.record_queued('pgtap-040-d', 'pgtap', 'someone@example.com', '{"code": "123456"}');
select email.mark_in_progress('pgtap-040-d');
select email.renew_lease('pgtap-040-d', 1, 60);
update email.deliveries set lease_expires_at = now() - interval '1 second' where delivery_id = 'pgtap-040-d';
select email.reap_expired_leases();
select is(
  (select last_error_code from email.deliveries where delivery_id = 'pgtap-040-d'), 'lease_expired',
  'a heartbeat alone does not mark the attempt as sending: reaped as lease_expired'
);
select is(
  (select count(*)::integer from email.delivery_events where delivery_id = 'pgtap-040-c' and from_status = to_status), 0,
  'renewals write no event'
);
select is(
  (select error_code from email.delivery_events where delivery_id = 'pgtap-040-c' and to_status = 'retrying'),
  'outcome_unknown', 'the trail says outcome_unknown'
);

select * from finish();
rollback;
