-- Suppressing an address ends its open deliveries whatever the case their recipient was written in
-- (issue 14, point 1: the trigger must compare lower(recipient), not recipient).
begin;
select plan(10);

-- Open deliveries to the same mailbox, written in mixed case: one queued, one retrying.
select email.record_queued('t205-queued', 'invite', 'Ada@Example.com', '{"link": "https://x.test/secret"}');
select email.record_queued('t205-retrying', 'invite', 'ADA@EXAMPLE.COM', '{"link": "https://x.test/secret"}');
select email.mark_in_progress('t205-retrying');
select email.record_failure('t205-retrying', 1, 'try later', 451);
-- Another mailbox, also open: it must stay as it is.
select email.record_queued('t205-other', 'invite', 'Bob@Example.com', '{}');

select is((select array_agg(status order by delivery_id) from email.deliveries where delivery_id in ('t205-queued', 't205-retrying')),
  array['queued', 'retrying'], 'before: both deliveries are open');

select email.add_suppression('ada@example.com', 'asked us to stop');

select is((select status from email.deliveries where delivery_id = 't205-queued'), 'suppressed',
  'a queued delivery to Ada@Example.com ends suppressed when ada@example.com is suppressed');
select is((select status from email.deliveries where delivery_id = 't205-retrying'), 'suppressed',
  'a retrying delivery to ADA@EXAMPLE.COM ends suppressed too');
select is(email.mark_in_progress('t205-queued'), null, 'nothing can claim it any more');
select ok(not exists (select from email.claim_due(1000) c where c.delivery_id in ('t205-queued', 't205-retrying')),
  'and the sweep does not return them');
select is((select count(*)::int from email.delivery_payloads where delivery_id in ('t205-queued', 't205-retrying')), 0,
  'their payloads are erased');
select is((select array_agg(to_status order by id) from email.delivery_events where delivery_id = 't205-queued'),
  array['queued', 'suppressed'], 'the trail shows the move');
select is((select status from email.deliveries where delivery_id = 't205-other'), 'queued', 'another address stays queued');

-- A delivery in flight when its address is suppressed ends suppressed when its retry is scheduled.
select email.record_queued('t205-in-flight', 'invite', 'Cy@Example.com', '{"link": "https://x.test/secret"}');
select email.mark_in_progress('t205-in-flight');
select email.add_suppression('cy@example.com', 'complaint');
select is((select status from email.deliveries where delivery_id = 't205-in-flight'), 'in_progress',
  'an attempt in flight is not interrupted by a new suppression');
select email.record_failure('t205-in-flight', 1, 'try later', 451);
select is((select status from email.deliveries where delivery_id = 't205-in-flight'), 'suppressed',
  'when it fails transiently it ends suppressed instead of waiting for a retry');

select * from finish();
rollback;
