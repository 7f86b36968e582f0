-- The lifecycle RPCs, called as the worker calls them (service_role).
begin;
select plan(76);

\ir fixtures/helpers.psql

/** Creates delivery `id` and walks it to `status` through the RPCs. */
create function pg_temp.walk(id text, status text, workflow text default 'pgtap') returns text language plpgsql as $$
begin
  perform email.record_queued(id, workflow, 'someone@example.com', jsonb_build_object('code', '123456', 'id', id));
  if status in ('in_progress', 'retrying', 'sent', 'dead_letter') then
    perform email.mark_in_progress(id);
  end if;
  case status
    when 'retrying' then perform email.record_failure(id, 1, 'try again later', 421);
    when 'sent' then perform email.mark_sent(id, 1);
    when 'failed' then perform email.mark_failed(id, 0, 'render_error', 'template not found');
    when 'dead_letter' then
      update email.deliveries x set max_attempts = 1 where x.delivery_id = id;
      perform email.record_failure(id, 1, 'given up', 421);
    else null;
  end case;
  return id;
end
$$;

/** The status of a delivery. */
create function pg_temp.status_of(id text) returns text language sql as $$
  select d.status from email.deliveries d where d.delivery_id = id
$$;

insert into email.retry_policies (workflow, max_attempts, base_delay, max_delay)
values ('pgtap-two', 2, interval '10 seconds', interval '1 minute');

select tests.authenticate_as_service_role();

-- ------------------------------------------------------------------------------------------------
-- record_queued
-- ------------------------------------------------------------------------------------------------
select results_eq(
  $$ select status, attempts, max_attempts, workflow, recipient, user_id, metadata,
            next_attempt_at = now() + interval '60 seconds', completed_at is null
     from email.record_queued('pgtap-030-q', 'pgtap', 'Someone@example.com', '{"code": "123456"}',
                              '{"source": "pgtap"}', '5b6c7d8e-0000-4000-8000-000000000001') $$,
  $$ values ('queued'::text, 0, 5, 'pgtap'::text, 'Someone@example.com'::text,
             '5b6c7d8e-0000-4000-8000-000000000001'::uuid, '{"source": "pgtap"}'::jsonb, true, true) $$,
  'record_queued returns the queued row: attempt 0, the default policy''s 5 attempts, due for the sweep in 60 s'
);
select is(
  (select payload from email.delivery_payloads where delivery_id = 'pgtap-030-q'), '{"code": "123456"}'::jsonb,
  'record_queued keeps the payload apart, in email.delivery_payloads'
);
select is(
  (select metadata from email.record_queued('pgtap-030-defaults', 'pgtap', 'someone@example.com', '{}')),
  '{}'::jsonb, 'metadata defaults to {}'
);
select is(
  (select max_attempts from email.record_queued('pgtap-030-policy', 'pgtap-two', 'someone@example.com', '{}')),
  2, 'max_attempts comes from the workflow''s own policy row'
);

-- Idempotency: the same request returns the existing row and changes nothing.
create temp table before_q as select * from email.deliveries where delivery_id = 'pgtap-030-q';
select results_eq(
  $$ select d.* from email.record_queued('pgtap-030-q', 'pgtap', 'someone@EXAMPLE.com', '{"code": "123456"}',
                                         '{"other": "metadata"}', '5b6c7d8e-0000-4000-8000-000000000001') d $$,
  $$ select * from before_q $$,
  'the same request again returns the existing row (recipient case and metadata do not make it another request)'
);
select results_eq(
  $$ select * from email.deliveries where delivery_id = 'pgtap-030-q' $$,
  $$ select * from before_q $$,
  'the same request again changes nothing'
);
select is(
  (select count(*)::int from email.delivery_events where delivery_id = 'pgtap-030-q'), 1,
  'the same request again writes no event'
);

-- The conflict: same id, different content.
select throws_ok(
  $$ select email.record_queued('pgtap-030-q', 'pgtap', 'someone@example.com', '{"code": "654321"}',
                                '{}', '5b6c7d8e-0000-4000-8000-000000000001') $$,
  'EM002', 'delivery pgtap-030-q already exists with different content',
  'the same id with a different payload raises EM002'
);
select throws_ok(
  $$ select email.record_queued('pgtap-030-q', 'pgtap', 'other@example.com', '{"code": "123456"}',
                                '{}', '5b6c7d8e-0000-4000-8000-000000000001') $$,
  'EM002', null, 'the same id with a different recipient raises EM002'
);
select throws_ok(
  $$ select email.record_queued('pgtap-030-q', 'pgtap-other', 'someone@example.com', '{"code": "123456"}',
                                '{}', '5b6c7d8e-0000-4000-8000-000000000001') $$,
  'EM002', null, 'the same id with a different workflow raises EM002'
);
select throws_ok(
  $$ select email.record_queued('pgtap-030-q', 'pgtap', 'someone@example.com', '{"code": "123456"}') $$,
  'EM002', null, 'the same id with a different user raises EM002'
);
select results_eq(
  $$ select d.*, p.payload from email.deliveries d join email.delivery_payloads p using (delivery_id)
     where delivery_id = 'pgtap-030-q' $$,
  $$ select b.*, '{"code": "123456"}'::jsonb from before_q b $$,
  'a conflict changes nothing'
);
select pg_temp.walk('pgtap-030-q-sent', 'sent');
select is(
  (select status from email.record_queued('pgtap-030-q-sent', 'pgtap', 'someone@example.com',
     '{"code": "123456", "id": "pgtap-030-q-sent"}')),
  'sent', 'a redelivery of a sent delivery returns it as sent (nothing is sent again)'
);

-- ------------------------------------------------------------------------------------------------
-- mark_in_progress: the attempt number, or null when not claimable
-- ------------------------------------------------------------------------------------------------
select is(email.mark_in_progress('pgtap-030-q', 30), 1, 'claiming a queued delivery returns attempt 1');
select ok(
  (select lease_expires_at = now() + interval '30 seconds' and last_attempted_at = now()
   from email.deliveries where delivery_id = 'pgtap-030-q'),
  'the claim holds a lease of lease_seconds'
);
select is(email.mark_in_progress('pgtap-030-q'), null, 'in progress under a live lease: not claimable');
select is(email.mark_in_progress(pg_temp.walk('pgtap-030-c-sent', 'sent')), null, 'sent: not claimable');
select is(email.mark_in_progress(pg_temp.walk('pgtap-030-c-failed', 'failed')), null, 'failed: not claimable');
select is(email.mark_in_progress(pg_temp.walk('pgtap-030-c-dead', 'dead_letter')), null, 'dead_letter: not claimable');
select is(email.mark_in_progress(pg_temp.walk('pgtap-030-c-retry', 'retrying')), null, 'retrying but not yet due: not claimable');
select is(email.mark_in_progress('pgtap-030-does-not-exist'), null, 'an unknown delivery: not claimable');
select is_empty(
  $$ select delivery_id from email.deliveries
     where delivery_id in ('pgtap-030-c-sent', 'pgtap-030-c-failed', 'pgtap-030-c-dead', 'pgtap-030-c-retry')
       and (status = 'in_progress' or attempts <> case when delivery_id = 'pgtap-030-c-failed' then 0 else 1 end) $$,
  'a refused claim changes nothing'
);
update email.deliveries set next_attempt_at = now() - interval '1 second' where delivery_id = 'pgtap-030-c-retry';
select is(email.mark_in_progress('pgtap-030-c-retry'), 2, 'retrying and due: claimable, as attempt 2');
select throws_ok(
  $$ select email.mark_in_progress('pgtap-030-q', 0) $$, 'EM006', null, 'lease_seconds below 1 raises EM006'
);

-- An expired lease is reaped by the next claim (in the trail), then waits for its backoff.
update email.deliveries set lease_expires_at = now() - interval '1 second' where delivery_id = 'pgtap-030-q';
select is(email.mark_in_progress('pgtap-030-q'), null, 'an expired lease is not claimable at once: it is reaped, then backs off');
select results_eq(
  $$ select status, attempts, last_error_code, next_attempt_at > now() from email.deliveries where delivery_id = 'pgtap-030-q' $$,
  $$ values ('retrying'::text, 1, 'lease_expired'::text, true) $$,
  'the reaped delivery is retrying, still at attempt 1, with lease_expired'
);

-- ------------------------------------------------------------------------------------------------
-- attempts grow on the claim only
-- ------------------------------------------------------------------------------------------------
select pg_temp.walk('pgtap-030-count', 'queued');
select is(email.mark_in_progress('pgtap-030-count'), 1, 'claim 1 is attempt 1');
select is(
  (select r.status from email.record_failure('pgtap-030-count', 1, 'busy', 421) r), 'retrying',
  'a transient failure with attempts left: retrying'
);
select is((select attempts from email.deliveries where delivery_id = 'pgtap-030-count'), 1, 'retrying does not count an attempt');
update email.deliveries set next_attempt_at = now() - interval '1 second' where delivery_id = 'pgtap-030-count';
select is(email.mark_in_progress('pgtap-030-count'), 2, 'the next claim is attempt 2');
select is(
  (select array_agg(attempt order by id) from email.delivery_events where delivery_id = 'pgtap-030-count'),
  array[0, 1, 1, 2], 'the trail counts 0 (queued), 1 (claim), 1 (retrying), 2 (claim)'
);

-- ------------------------------------------------------------------------------------------------
-- record_failure: the database decides
-- ------------------------------------------------------------------------------------------------
select results_eq(
  $$ select status, next_attempt_at from email.record_failure('pgtap-030-count', 2, 'transaction failed', 554) $$,
  $$ values ('failed'::text, null::timestamptz) $$,
  'a permanent failure: failed, nothing due'
);
select pg_temp.walk('pgtap-030-two', 'in_progress', 'pgtap-two');
select results_eq(
  $$ select status, next_attempt_at between now() + interval '5 seconds' and now() + interval '10 seconds'
     from email.record_failure('pgtap-030-two', 1, 'busy', 421) $$,
  $$ values ('retrying'::text, true) $$,
  'a transient failure at attempt 1 of 2: retrying, due after the policy''s backoff (5-10 s for attempt 1)'
);
select is(
  (select (detail ->> 'next_attempt_at')::timestamptz from email.delivery_events
   where delivery_id = 'pgtap-030-two' and to_status = 'retrying'),
  (select next_attempt_at from email.deliveries where delivery_id = 'pgtap-030-two'),
  'the due time is in the trail'
);
update email.deliveries set next_attempt_at = now() - interval '1 second' where delivery_id = 'pgtap-030-two';
select is(email.mark_in_progress('pgtap-030-two'), 2, 'attempt 2 of 2 claimed');
select results_eq(
  $$ select status, next_attempt_at from email.record_failure('pgtap-030-two', 2, 'busy', 421) $$,
  $$ values ('dead_letter'::text, null::timestamptz) $$,
  'a transient failure at the last attempt: dead_letter'
);
select ok(
  (select completed_at = now() and lease_expires_at is null from email.deliveries where delivery_id = 'pgtap-030-two'),
  'dead_letter is completed, without a lease'
);
select pg_temp.walk('pgtap-030-last-permanent', 'in_progress', 'pgtap-two');
select is(
  (select status from email.record_failure('pgtap-030-last-permanent', 1, 'transaction failed', 554)),
  'failed', 'a permanent failure is failed even with attempts left'
);
select throws_ok(
  $$ select * from email.record_failure('pgtap-030-defaults', 0, 'y', transport_code => 'x') $$,
  'EM003', null, 'record_failure on a delivery that is not in progress raises EM003'
);
select throws_ok(
  $$ select * from email.record_failure('pgtap-030-does-not-exist', 1, 'y', transport_code => 'x') $$,
  'EM004', 'delivery pgtap-030-does-not-exist does not exist', 'record_failure on an unknown delivery raises EM004'
);
select is(
  (select last_error_message from email.deliveries where delivery_id = 'pgtap-030-two'), 'busy',
  'the last error is kept on the delivery'
);

-- record_failure returns the rule's error code and whether it was a hard bounce, and reports the facts in the trail.
select pg_temp.walk('pgtap-030-facts', 'in_progress');
select results_eq(
  $$ select status, error_code, hard_bounce from email.record_failure('pgtap-030-facts', 1, '535 5.7.8 bad credentials', 535, '5.7.8', 'EAUTH') $$,
  $$ values ('retrying'::text, 'smtp_535_5.7.8'::text, false) $$,
  'a 535 (our credentials) is retried, and its code names the reply and enhanced code'
);
select is(
  (select detail -> 'failure' from email.delivery_events where delivery_id = 'pgtap-030-facts' and to_status = 'retrying'),
  '{"reply_code": 535, "enhanced_code": "5.7.8", "transport_code": "EAUTH", "rule": 20, "class": "transient", "hard_bounce": false}'::jsonb,
  'the trail keeps the facts and the rule that decided'
);

-- Only record_failure chooses between retrying and dead_letter: service_role cannot call the internals.
select throws_ok($$ select email.mark_retrying('pgtap-030-facts', 1, 'x', 'y') $$, '42501', null,
  'service_role may not call mark_retrying');
select throws_ok($$ select email.mark_dead_letter('pgtap-030-facts', 1, 'x', 'y') $$, '42501', null,
  'service_role may not call mark_dead_letter');
select throws_ok($$ select email._fail('pgtap-030-facts', 'dead_letter', 'x', 'y') $$, '42501', null,
  'service_role may not call email._fail');

-- The explicit transitions record_failure uses (internal: called here as their owner).
select tests.reset_authentication();
select pg_temp.walk('pgtap-030-explicit', 'in_progress');
select ok(
  (select t between now() + interval '15 seconds' and now() + interval '30 seconds'
   from (select email.mark_retrying('pgtap-030-explicit', 1, 'smtp_421', 'busy') as t) r),
  'mark_retrying returns next_attempt_at, within the default policy''s 15-30 s for attempt 1'
);
select is(
  (select status from email.mark_dead_letter('pgtap-030-explicit', 1, 'operator', 'given up')),
  'dead_letter', 'mark_dead_letter: retrying -> dead_letter'
);
select is(
  (select status from email.mark_failed(pg_temp.walk('pgtap-030-render', 'queued'), 0, 'render_error', 'no template')),
  'failed', 'mark_failed: queued -> failed (a render failure after enqueue)'
);
select throws_ok(
  $$ select email.mark_retrying('pgtap-030-render', 0, 'x', 'y') $$, 'EM003', null,
  'mark_retrying on a delivery that is not in progress raises EM003'
);
select tests.authenticate_as_service_role();

-- ------------------------------------------------------------------------------------------------
-- mark_sent
-- ------------------------------------------------------------------------------------------------
select pg_temp.walk('pgtap-030-sent', 'in_progress');
select results_eq(
  $$ select status, provider_message_id, provider_response, sent_at = now(), completed_at = now(), lease_expires_at is null
     from email.mark_sent('pgtap-030-sent', 1, '<abc@example.com>', '250 2.0.0 OK') $$,
  $$ values ('sent'::text, '<abc@example.com>'::text, '250 2.0.0 OK'::text, true, true, true) $$,
  'mark_sent records the provider''s id and response'
);
select results_eq(
  $$ select d from email.mark_sent('pgtap-030-sent', 1, '<other@example.com>') d $$,
  $$ select d from email.deliveries d where delivery_id = 'pgtap-030-sent' $$,
  'mark_sent again for the same attempt returns the sent row and changes nothing'
);
select is(
  (select count(*)::int from email.delivery_events where delivery_id = 'pgtap-030-sent' and to_status = 'sent'), 1,
  'a repeated mark_sent writes no second event'
);
select pg_temp.walk('pgtap-030-long', 'in_progress');
select is(
  (select char_length(provider_response) from email.mark_sent('pgtap-030-long', 1, null, repeat('x', 2000))), 512,
  'the provider response is truncated to 512 characters'
);

-- ------------------------------------------------------------------------------------------------
-- requeue
-- ------------------------------------------------------------------------------------------------
select pg_temp.walk('pgtap-030-rq', 'dead_letter');
select results_eq(
  $$ select status, attempts, max_attempts, next_attempt_at = now(), completed_at, last_attempted_at is not null
     from email.requeue('pgtap-030-rq', 'smtp server fixed') $$,
  $$ values ('queued'::text, 1, 6, true, null::timestamptz, true) $$,
  'requeue of a dead letter: queued, due now, a fresh budget of 5 more attempts; attempts keep counting'
);
select results_eq(
  $$ select from_status, to_status, detail ->> 'reason' from email.delivery_events
     where delivery_id = 'pgtap-030-rq' order by id desc limit 1 $$,
  $$ values ('dead_letter'::text, 'queued'::text, 'smtp server fixed'::text) $$,
  'the requeue and its reason are in the trail'
);
select is(
  (select payload from email.delivery_payloads where delivery_id = 'pgtap-030-rq'),
  '{"code": "123456", "id": "pgtap-030-rq"}'::jsonb, 'a requeued dead letter still has its payload'
);
select throws_ok(
  $$ select email.requeue('pgtap-030-c-failed', 'try again') $$,
  'EM001', 'delivery pgtap-030-c-failed cannot be requeued: its payload was erased',
  'requeue of a failed delivery whose payload was erased raises EM001'
);
insert into email.delivery_payloads (delivery_id, payload) values ('pgtap-030-c-failed', '{"code": "999999"}');
select results_eq(
  $$ select status, max_attempts from email.requeue('pgtap-030-c-failed', 'template fixed') $$,
  $$ values ('queued'::text, 5) $$,
  'requeue of a failed delivery with its payload supplied again: queued, with a fresh budget'
);
select throws_ok(
  $$ select email.requeue('pgtap-030-defaults', 'why not') $$,
  'EM001', 'delivery pgtap-030-defaults cannot be requeued from queued',
  'requeue of a queued delivery raises EM001'
);
select throws_ok(
  $$ select email.requeue('pgtap-030-sent', 'again') $$, 'EM001', null, 'requeue of a sent delivery raises EM001'
);
select throws_ok(
  $$ select email.requeue('pgtap-030-rq', '  ') $$, 'EM006', 'a requeue needs a reason', 'requeue without a reason raises EM006'
);
select throws_ok(
  $$ select email.requeue('pgtap-030-does-not-exist', 'x') $$, 'EM004', null, 'requeue of an unknown delivery raises EM004'
);

-- ------------------------------------------------------------------------------------------------
-- claim_due: due retries, requeued deliveries, orphaned queued ones after the 60 s grace
-- ------------------------------------------------------------------------------------------------
select pg_temp.walk('pgtap-030-due-retry', 'retrying');
select pg_temp.walk('pgtap-030-due-later', 'retrying');
select pg_temp.walk('pgtap-030-due-orphan', 'queued');
select pg_temp.walk('pgtap-030-due-fresh', 'queued');
select pg_temp.walk('pgtap-030-due-ip', 'in_progress');
-- Ours first in line (the database may hold other due deliveries): next_attempt_at far in the past.
update email.deliveries set next_attempt_at = timestamptz '2000-01-01 00:00:00+00'
where delivery_id in ('pgtap-030-due-retry', 'pgtap-030-due-orphan');
update email.deliveries set next_attempt_at = timestamptz '2000-01-01 00:00:01+00' where delivery_id = 'pgtap-030-rq';
update email.deliveries set next_attempt_at = timestamptz '2000-01-01 00:00:02+00' where delivery_id = 'pgtap-030-c-failed';

select set_eq(
  $$ select delivery_id, attempt, workflow, recipient, payload from email.claim_due(4, 120) $$,
  $$ values ('pgtap-030-due-retry'::text, 2, 'pgtap'::text, 'someone@example.com'::text,
             '{"code": "123456", "id": "pgtap-030-due-retry"}'::jsonb),
            ('pgtap-030-due-orphan', 1, 'pgtap', 'someone@example.com', '{"code": "123456", "id": "pgtap-030-due-orphan"}'),
            ('pgtap-030-rq', 2, 'pgtap', 'someone@example.com', '{"code": "123456", "id": "pgtap-030-rq"}'),
            ('pgtap-030-c-failed', 1, 'pgtap', 'someone@example.com', '{"code": "999999"}') $$,
  'claim_due claims the due retry, the orphaned queued delivery and both requeued ones, with what a sender needs'
);
select is_empty(
  $$ select delivery_id from email.deliveries
     where delivery_id in ('pgtap-030-due-retry', 'pgtap-030-due-orphan', 'pgtap-030-rq', 'pgtap-030-c-failed')
       and not (status = 'in_progress' and lease_expires_at = now() + interval '120 seconds') $$,
  'the claimed deliveries are in progress under a lease of lease_seconds'
);
select is_empty(
  $$ select delivery_id from email.claim_due(1000)
     where delivery_id in ('pgtap-030-due-later', 'pgtap-030-due-fresh', 'pgtap-030-due-ip', 'pgtap-030-due-retry') $$,
  'claim_due leaves a retry not yet due, a queued delivery within its 60 s grace and in-progress ones'
);
select is_empty($$ select * from email.claim_due(0) $$, 'claim_due(0) claims nothing');
select throws_ok($$ select * from email.claim_due(1, 0) $$, 'EM006', null, 'claim_due with lease_seconds below 1 raises EM006');

-- ------------------------------------------------------------------------------------------------
-- reap_expired_leases
-- ------------------------------------------------------------------------------------------------
select email.reap_expired_leases(); -- whatever else the database holds is reaped first
select pg_temp.walk('pgtap-030-reap', 'in_progress');
select pg_temp.walk('pgtap-030-reap-last', 'in_progress', 'pgtap-two');
select pg_temp.walk('pgtap-030-reap-live', 'in_progress');
update email.deliveries set lease_expires_at = now() - interval '1 second'
where delivery_id in ('pgtap-030-reap', 'pgtap-030-reap-last');
select is(email.reap_expired_leases(), 2, 'reap_expired_leases returns how many it reaped');
update email.deliveries set next_attempt_at = now() - interval '1 second' where delivery_id = 'pgtap-030-reap-last';
select is(email.mark_in_progress('pgtap-030-reap-last'), 2, 'a reaped delivery is claimed again when due');
update email.deliveries set lease_expires_at = now() - interval '1 second' where delivery_id = 'pgtap-030-reap-last';
select is(email.reap_expired_leases(), 1, 'its last attempt expires too');
select results_eq(
  $$ select delivery_id, status, attempts, last_error_code from email.deliveries
     where delivery_id in ('pgtap-030-reap', 'pgtap-030-reap-last', 'pgtap-030-reap-live') order by delivery_id $$,
  $$ values ('pgtap-030-reap'::text, 'retrying'::text, 1, 'lease_expired'::text),
            ('pgtap-030-reap-last', 'dead_letter', 2, 'lease_expired'),
            ('pgtap-030-reap-live', 'in_progress', 1, null) $$,
  'an expired lease with attempts left is retrying, at the last attempt dead_letter; a live lease is left alone'
);
select is(email.reap_expired_leases(), 0, 'nothing left to reap');

-- ------------------------------------------------------------------------------------------------
-- record_rejected
-- ------------------------------------------------------------------------------------------------
create temp table rejected_ids (id bigint);
insert into rejected_ids
select email.record_rejected('bad_json', 'Unexpected token } in JSON', convert_to('{"a":}', 'UTF8'), 'pgtap-030-rej', 'm-1',
  '{"content-type": "application/json"}');
select is(
  (select jsonb_build_object('reason_code', reason_code, 'reason', reason, 'raw_body', convert_from(raw_body, 'UTF8'),
     'delivery_id', delivery_id, 'message_id', message_id, 'headers', headers, 'body_bytes', body_bytes,
     'body_truncated', body_truncated)
   from email.rejected_messages where id = (select max(id) from rejected_ids)),
  jsonb_build_object('reason_code', 'bad_json', 'reason', 'Unexpected token } in JSON', 'raw_body', '{"a":}',
     'delivery_id', 'pgtap-030-rej', 'message_id', 'm-1', 'headers', '{"content-type": "application/json"}'::jsonb,
     'body_bytes', 6, 'body_truncated', false),
  'record_rejected stores the reason, the raw body and where it came from'
);
insert into rejected_ids
select email.record_rejected('too_large', repeat('r', 3000), convert_to('first bytes', 'UTF8'), body_bytes => 1048576);
select results_eq(
  $$ select char_length(reason), body_bytes, body_truncated, headers
     from email.rejected_messages where id = (select max(id) from rejected_ids) $$,
  $$ values (2000, 1048576, true, '{}'::jsonb) $$,
  'record_rejected truncates the reason to 2000 characters and marks a truncated body'
);
select throws_ok(
  $$ select email.record_rejected('Not A Code!', 'x') $$, '23514', null, 'a malformed reason code is refused'
);

select * from finish();
rollback;
