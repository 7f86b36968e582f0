-- email._reap re-checks the lease under the row lock: mark_in_progress reads the lease without a lock,
-- so by the time _reap holds the row another attempt may have re-claimed it with a live lease, which
-- must not be reaped (that would fail an attempt that is still sending).
begin;
select plan(6);

select email.record_queued('t045-live', 'pgtap', 'a@example.com', '{}');
select email.mark_in_progress('t045-live', 60);
select email._reap('t045-live');
select is((select row(status, attempts)::text from email.deliveries where delivery_id = 't045-live'), row('in_progress', 1)::text,
  '_reap leaves an attempt with a live lease alone');
select is((select count(*)::int from email.delivery_events where delivery_id = 't045-live'), 2, 'and writes nothing in the trail');

select email.record_queued('t045-queued', 'pgtap', 'b@example.com', '{}');
select email._reap('t045-queued');
select is((select status from email.deliveries where delivery_id = 't045-queued'), 'queued', '_reap leaves a queued delivery alone');
select lives_ok($$select email._reap('t045-no-such-delivery')$$, 'and a missing one');

-- The lease runs out: now it is reaped.
update email.deliveries set lease_expires_at = now() - interval '1 second' where delivery_id = 't045-live';
select email._reap('t045-live');
select is((select status from email.deliveries where delivery_id = 't045-live'), 'retrying', 'an expired lease is reaped to retrying');
select is((select error_code from email.delivery_events where delivery_id = 't045-live' order by id desc limit 1), 'lease_expired',
  'with lease_expired in the trail');

select * from finish();
rollback;
