-- The relay of each attempt's outcome: mark_sent and record_failure record the SMTP relay host the
-- worker sent through in the outcome's event (detail->>'relay'); the other events carry none, and a
-- caller that does not know it (the reaper) records none.
begin;
select plan(9);

\ir fixtures/helpers.psql

select tests.authenticate_as_service_role();

-- sent
select email.record_queued('pgtap-072-sent', 'pgtap', 'relay-sent@example.com', '{}');
select email.mark_in_progress('pgtap-072-sent');
select email.mark_sent('pgtap-072-sent', 1, '<s@example.com>', '250 OK', relay => 'smtp.relay.test');
-- retrying, then dead_letter
select email.record_queued('pgtap-072-dl', 'pgtap', 'relay-dl@example.com', '{}');
select email.mark_in_progress('pgtap-072-dl');
select email.record_failure('pgtap-072-dl', 1, '4.3.0 try again later', 451, relay => 'smtp.relay.test');
update email.deliveries set next_attempt_at = now() - interval '1 second', max_attempts = 2 where delivery_id = 'pgtap-072-dl';
select email.mark_in_progress('pgtap-072-dl');
select email.record_failure('pgtap-072-dl', 2, '4.3.0 try again later', 451, relay => 'backup.relay.test');
-- failed (permanent)
select email.record_queued('pgtap-072-failed', 'pgtap', 'relay-failed@example.com', '{}');
select email.mark_in_progress('pgtap-072-failed');
select email.record_failure('pgtap-072-failed', 1, '5.6.0 content refused', 554, '5.6.0', relay => 'smtp.relay.test');
-- no relay given (the reaper's calls, older callers)
select email.record_queued('pgtap-072-none', 'pgtap', 'relay-none@example.com', '{}');
select email.mark_in_progress('pgtap-072-none');
select email.record_failure('pgtap-072-none', 1, 'timed out', transport_code => 'ETIMEDOUT');

select results_eq(
  $$ select to_status, detail ->> 'relay' from email.delivery_events where delivery_id = 'pgtap-072-sent' order by id $$,
  $$ values ('queued'::text, null::text), ('in_progress', null), ('sent', 'smtp.relay.test') $$,
  'sent: the outcome''s event records the relay, the queue and claim events none'
);
select results_eq(
  $$ select to_status, detail ->> 'relay' from email.delivery_events
     where delivery_id = 'pgtap-072-dl' and to_status in ('retrying', 'dead_letter') order by id $$,
  $$ values ('retrying'::text, 'smtp.relay.test'::text), ('dead_letter', 'backup.relay.test') $$,
  'retrying and dead_letter: each attempt''s outcome records its own relay'
);
select is(
  (select detail ->> 'relay' from email.delivery_events where delivery_id = 'pgtap-072-failed' and to_status = 'failed'),
  'smtp.relay.test',
  'failed: the outcome''s event records the relay'
);
select is(
  (select detail -> 'failure' ->> 'class' from email.delivery_events where delivery_id = 'pgtap-072-failed' and to_status = 'failed'),
  'permanent',
  'the relay sits beside the failure''s facts, not instead of them'
);
select ok(
  (select not (detail ? 'relay') from email.delivery_events where delivery_id = 'pgtap-072-none' and to_status = 'retrying'),
  'no relay given: the event has no relay key (not an empty one)'
);
select is(
  (select count(*)::int from email.delivery_events where detail ? 'relay' and delivery_id like 'pgtap-072-%'),
  4,
  'exactly the four outcomes given a relay carry one'
);
select is(
  (select detail ->> 'relay' from email.delivery_events where delivery_id = 'pgtap-072-sent' and to_status = 'sent'),
  (select detail ->> 'relay' from email_api.delivery_events where delivery_id = 'pgtap-072-sent' and to_status = 'sent'),
  'service_role reads the relay through email_api.delivery_events too'
);
-- A repeated mark_sent (the same attempt again) changes nothing: no second event.
select email.mark_sent('pgtap-072-sent', 1, '<s@example.com>', '250 OK', relay => 'other.relay.test');
select is(
  (select count(*)::int from email.delivery_events where delivery_id = 'pgtap-072-sent' and to_status = 'sent'),
  1,
  'a repeated mark_sent writes no second event'
);
-- The reaped-but-not-reclaimed late success (retrying -> sent) records its relay too, cut to 255.
select email.mark_sent('pgtap-072-none', 1, null, null, repeat('r', 300));
select is(
  (select e.detail ->> 'relay' from email.delivery_events e where e.delivery_id = 'pgtap-072-none' and e.to_status = 'sent'),
  repeat('r', 255),
  'a relay is stored cut to 255 characters'
);

select * from finish();
rollback;
