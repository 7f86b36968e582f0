-- Payloads (verification codes, reset links): kept apart, erased when a delivery ends sent or failed,
-- kept while it may still be sent (retrying, dead_letter) until a requeue sends it or a purge removes it.
begin;
select plan(18);

\ir fixtures/helpers.psql

/** Whether delivery `id` still has its payload. */
create function pg_temp.has_payload(id text) returns boolean language sql as $$
  select exists (select from email.delivery_payloads p where p.delivery_id = id)
$$;

select tests.authenticate_as_service_role();

select hasnt_column('email', 'deliveries', 'payload', 'the payload is not a column of email.deliveries');

select email.record_queued(id, 'pgtap', 'someone@example.com',
  jsonb_build_object('code', 'S3CR3T-' || id, 'reset_link', 'https://example.com/reset?token=T0K3N-' || id))
from unnest(array['pgtap-060-sent', 'pgtap-060-failed', 'pgtap-060-render', 'pgtap-060-retry', 'pgtap-060-dead',
  'pgtap-060-late']) id;

select ok(pg_temp.has_payload('pgtap-060-sent'), 'queued: the payload is kept');
select email.mark_in_progress('pgtap-060-sent');
select ok(pg_temp.has_payload('pgtap-060-sent'), 'in_progress: the payload is kept');
select email.mark_sent('pgtap-060-sent', 1);
select ok(not pg_temp.has_payload('pgtap-060-sent'), 'sent: the payload is erased');

select email.mark_in_progress('pgtap-060-failed');
select email.record_failure('pgtap-060-failed', 1, 'transaction failed', 554);
select ok(not pg_temp.has_payload('pgtap-060-failed'), 'failed (permanent SMTP refusal): the payload is erased');

select email.mark_failed('pgtap-060-render', 0, 'render_error', 'no template');
select ok(not pg_temp.has_payload('pgtap-060-render'), 'failed (render failure after enqueue): the payload is erased');

select email.mark_in_progress('pgtap-060-retry');
select email.record_failure('pgtap-060-retry', 1, 'busy', 421);
select ok(pg_temp.has_payload('pgtap-060-retry'), 'retrying: the payload is kept for the next attempt');

select email.mark_in_progress('pgtap-060-dead');
update email.deliveries set max_attempts = 1 where delivery_id = 'pgtap-060-dead';
select email.record_failure('pgtap-060-dead', 1, 'given up', 421);
select ok(pg_temp.has_payload('pgtap-060-dead'), 'dead_letter: the payload is kept for a requeue');
select email.requeue('pgtap-060-dead', 'pgtap: try again');
select ok(pg_temp.has_payload('pgtap-060-dead'), 'requeued: the payload is kept');
update email.deliveries set next_attempt_at = timestamptz '2000-01-01 00:00:00+00' where delivery_id = 'pgtap-060-dead';
select is(
  (select payload ->> 'code' from email.claim_due(1) where delivery_id = 'pgtap-060-dead'), 'S3CR3T-pgtap-060-dead',
  'the requeued delivery is claimed with its payload'
);
select email.mark_sent('pgtap-060-dead', 2);
select ok(not pg_temp.has_payload('pgtap-060-dead'), 'the requeued delivery sent: the payload is erased');

-- A reaped attempt's late success erases it too.
select email.mark_in_progress('pgtap-060-late');
update email.deliveries set lease_expires_at = now() - interval '1 second' where delivery_id = 'pgtap-060-late';
select email.reap_expired_leases();
select ok(pg_temp.has_payload('pgtap-060-late'), 'reaped (retrying): the payload is kept');
select email.mark_sent('pgtap-060-late', 1);
select ok(not pg_temp.has_payload('pgtap-060-late'), 'late success: the payload is erased');

-- A dead letter's payload can be purged; the delivery and its trail stay.
select email.record_queued('pgtap-060-purge', 'pgtap', 'someone@example.com', '{"code": "S3CR3T-purge"}');
select email.mark_in_progress('pgtap-060-purge');
update email.deliveries set max_attempts = 1 where delivery_id = 'pgtap-060-purge';
select email.record_failure('pgtap-060-purge', 1, 'given up', 421);
delete from email.delivery_payloads where delivery_id = 'pgtap-060-purge';
select results_eq(
  $$ select d.status, (select count(*)::int from email.delivery_events e where e.delivery_id = d.delivery_id)
     from email.deliveries d where d.delivery_id = 'pgtap-060-purge' $$,
  $$ values ('dead_letter'::text, 3) $$,
  'purging a dead letter''s payload keeps the delivery and its trail'
);
select throws_ok(
  $$ select email.requeue('pgtap-060-purge', 'too late') $$,
  'EM001', 'delivery pgtap-060-purge cannot be requeued: its payload was erased',
  'a purged dead letter cannot be requeued (it would be sent without its payload)'
);
select is_empty(
  $$ select delivery_id from email.claim_due(1000) where delivery_id = 'pgtap-060-purge' $$,
  'a purged dead letter is not claimed'
);

-- The secrets never leave the payload table: not in the delivery rows, not in the trail.
select is_empty(
  $$ select d.delivery_id from email.deliveries d
     where d.delivery_id like 'pgtap-060-%' and (d::text like '%S3CR3T%' or d::text like '%T0K3N%') $$,
  'no secret in the delivery rows'
);
select is_empty(
  $$ select e.id from email.delivery_events e
     where e.delivery_id like 'pgtap-060-%' and (e::text like '%S3CR3T%' or e::text like '%T0K3N%') $$,
  'no secret in the audit trail'
);

select * from finish();
rollback;
