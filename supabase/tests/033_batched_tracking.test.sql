-- The tracker's batches (20261130000100_email_batched_tracking.sql): queue_and_claim with starting_send,
-- and queue_and_claim_many / mark_sent_many, which make each call through the single-call function and
-- answer each one in its own row, one call's error never undoing another's work.
begin;
select plan(24);

\ir fixtures/helpers.psql

select tests.create_supabase_user('ada', 'ada@example.com');
select tests.authenticate_as_service_role();

-- starting_send: born in_progress with its send started, under the lease asked for.
select results_eq(
  $$ select status, attempt from email.queue_and_claim('pgtap-033-start', 'pgtap', 's@example.com', '{"code": "1"}', '{}', null, 95, true) $$,
  $$ values ('in_progress'::text, 1) $$,
  'starting_send: claimed, attempt 1'
);
select results_eq(
  $$ select send_started_at = now(), lease_expires_at = now() + interval '95 seconds'
     from email.deliveries where delivery_id = 'pgtap-033-start' $$,
  $$ values (true, true) $$,
  'the claim records that the send starts now, under the sending lease'
);
-- Without it, no send has started (as before).
select email.queue_and_claim('pgtap-033-nostart', 'pgtap', 'n@example.com', '{"code": "1"}');
select ok(
  (select send_started_at is null from email.deliveries where delivery_id = 'pgtap-033-nostart'),
  'without starting_send: no send started'
);
-- An insert cannot backdate the start: a born in_progress delivery says now, or nothing.
insert into email.deliveries (delivery_id, workflow, recipient, status, max_attempts, request_hash, send_started_at)
values ('pgtap-033-backdated', 'pgtap', 'b@example.com', 'in_progress', 3, 'x', now() - interval '1 day');
select ok(
  (select send_started_at = now() from email.deliveries where delivery_id = 'pgtap-033-backdated'),
  'a given send_started_at on insert becomes now()'
);
-- A redelivered push that claims a queued delivery also records its send start.
select email.record_queued('pgtap-033-queued', 'pgtap', 'q@example.com', '{"code": "1"}');
select results_eq(
  $$ select status, attempt from email.queue_and_claim('pgtap-033-queued', 'pgtap', 'q@example.com', '{"code": "1"}', '{}', null, 95, true) $$,
  $$ values ('in_progress'::text, 1) $$,
  'starting_send on a queued delivery: claimed'
);
select ok(
  (select send_started_at = now() and lease_expires_at = now() + interval '95 seconds'
   from email.deliveries where delivery_id = 'pgtap-033-queued'),
  'and its send start and lease are recorded too'
);
-- The reaper reads a claim that started sending as possibly sent.
update email.deliveries set lease_expires_at = now() - interval '1 second' where delivery_id = 'pgtap-033-start';
select email.reap_expired_leases();
select is(
  (select last_error_code from email.deliveries where delivery_id = 'pgtap-033-start'),
  'outcome_unknown',
  'an expired claim that started sending is reaped as outcome_unknown'
);

-- queue_and_claim_many: one row per call, in the caller's numbering, each with its own answer.
select email.queue_and_claim('pgtap-033-live', 'pgtap', 'live@example.com', '{"code": "1"}');
create temporary table batch1 on commit drop as
select * from email.queue_and_claim_many($$[
  {"delivery_id": "pgtap-033-b2", "workflow": "pgtap", "recipient": "b2@example.com", "payload": {"code": "2"}, "lease_seconds": 95, "starting_send": true},
  {"delivery_id": "pgtap-033-b1", "workflow": "pgtap", "recipient": "b1@example.com", "payload": {"code": "1"}, "metadata": {"k": 1}},
  {"delivery_id": "pgtap-033-live", "workflow": "pgtap", "recipient": "live@example.com", "payload": {"code": "1"}},
  {"delivery_id": "pgtap-033-live", "workflow": "pgtap", "recipient": "live@example.com", "payload": {"code": "other"}},
  {"delivery_id": "pgtap-033-b3", "workflow": "pgtap", "recipient": "b3@example.com", "payload": {"code": "3"}, "lease_seconds": 0}
]$$::jsonb);
grant select on batch1 to service_role;
select results_eq(
  $$ select ord, status, attempt, error_state from batch1 order by ord $$,
  $$ values (1, 'in_progress'::text, 1, null::text), (2, 'in_progress', 1, null), (3, 'in_progress', null, null),
            (4, null, null, 'EM002'), (5, null, null, 'EM006') $$,
  'each call answered in its own row: claimed, claimed, not claimable, EM002, EM006'
);
select ok(
  (select error_message like '%already exists with different content%' from batch1 where ord = 4),
  'an error row carries its message'
);
select results_eq(
  $$ select delivery_id, status, attempts, send_started_at is not null, metadata from email.deliveries
     where delivery_id in ('pgtap-033-b1', 'pgtap-033-b2') order by delivery_id $$,
  $$ values ('pgtap-033-b1'::text, 'in_progress'::text, 1, false, '{"k": 1}'::jsonb),
            ('pgtap-033-b2', 'in_progress', 1, true, '{}') $$,
  'the claims of the batch are stored as the single calls store them (starting_send per call)'
);
select is(
  (select payload from email.delivery_payloads where delivery_id = 'pgtap-033-b2'), '{"code": "2"}'::jsonb,
  'with their payloads'
);
select ok(not exists (select from email.deliveries where delivery_id = 'pgtap-033-b3'), 'a call that raised stored nothing');
select is(
  (select count(*)::int from email.delivery_events where delivery_id = 'pgtap-033-live'), 1,
  'and the calls that were refused or not claimable wrote no event'
);

-- mark_sent_many: each outcome fenced by its own attempt.
create temporary table batch2 on commit drop as
select * from email.mark_sent_many($$[
  {"delivery_id": "pgtap-033-b1", "attempt": 1, "provider_message_id": "<1@x>", "provider_response": "250 ok", "relay": "relay.test"},
  {"delivery_id": "pgtap-033-b2", "attempt": 2, "provider_message_id": "<2@x>"},
  {"delivery_id": "pgtap-033-none", "attempt": 1},
  {"delivery_id": "pgtap-033-b2", "attempt": 1, "provider_message_id": "<2@x>"}
]$$::jsonb);
grant select on batch2 to service_role;
select results_eq(
  $$ select ord, status, error_state from batch2 order by ord $$,
  $$ values (1, 'sent'::text, null::text), (2, null, 'EM003'), (3, null, 'EM004'), (4, 'sent', null) $$,
  'each outcome answered in its own row: sent, stale (EM003), unknown (EM004), sent'
);
select results_eq(
  $$ select delivery_id, status, provider_message_id from email.deliveries
     where delivery_id in ('pgtap-033-b1', 'pgtap-033-b2') order by delivery_id $$,
  $$ values ('pgtap-033-b1'::text, 'sent'::text, '<1@x>'::text), ('pgtap-033-b2', 'sent', '<2@x>') $$,
  'both deliveries are sent'
);
select is(
  (select detail ->> 'relay' from email.delivery_events where delivery_id = 'pgtap-033-b1' and to_status = 'sent'),
  'relay.test', 'the relay is in the outcome''s event'
);
select ok(
  not exists (select from email.delivery_payloads where delivery_id in ('pgtap-033-b1', 'pgtap-033-b2')),
  'and their payloads are erased'
);

-- Limits and shapes.
select throws_ok(
  $$ select * from email.queue_and_claim_many((select jsonb_agg(jsonb_build_object('delivery_id', 'x' || i)) from generate_series(1, 51) i)) $$,
  'EM006', null, 'a batch of more than 50 calls raises EM006'
);
select throws_ok($$ select * from email.mark_sent_many('{}') $$, 'EM006', null, 'a batch that is not an array raises EM006');
select is((select count(*)::int from email.queue_and_claim_many('[]')), 0, 'an empty batch answers nothing');

-- Who may call them: the worker (service_role), nobody else.
select tests.authenticate_as('ada');
select throws_ok($$ select * from email.queue_and_claim_many('[]') $$, '42501', null, 'authenticated cannot call queue_and_claim_many');
select throws_ok($$ select * from email.mark_sent_many('[]') $$, '42501', null, 'authenticated cannot call mark_sent_many');
select tests.clear_authentication();
select throws_ok(
  $$ select * from email.queue_and_claim('x', 'pgtap', 'x@example.com', '{}', '{}', null, 60, true) $$,
  '42501', null, 'anon cannot call queue_and_claim'
);
select tests.reset_authentication();
select ok(
  not exists (
    select from pg_proc p where p.proname in ('queue_and_claim_many', 'mark_sent_many', '_check_batch')
      and p.pronamespace = 'email'::regnamespace and p.prosecdef
  ),
  'the batch functions run as their caller (no security definer)'
);

select * from finish();
rollback;
