-- Webhook dispatch rules users rely on (issue 14, points 2-4): a disabled endpoint receives nothing,
-- results are fenced by attempt, and a 3xx (an unfollowed redirect) is a failure, not a delivery.
begin;
select plan(26);

create temp table t_ep as
select
  (email.add_webhook_endpoint('https://on.example.test/hook', '{}', 't255')).id as on_id,
  (email.add_webhook_endpoint('https://off.example.test/hook', '{}', 't255')).id as off_id;
-- Other endpoints in the database are not this test's: keep their messages out of the claims below.
update email.webhook_outbox set next_attempt_at = now() + interval '1 day'
where endpoint_id not in (select on_id from t_ep union select off_id from t_ep) and status = 'pending';

-- Both endpoints get the event's message while both are enabled; then one is disabled.
select email.record_queued('t255-1', 'invite', 'ada@example.com', '{}');
select is((select count(*)::int from email.webhook_outbox o join email.delivery_events e on e.id = o.event_id
  where e.delivery_id = 't255-1'), 2, 'both endpoints have the message');
select email.set_webhook_endpoint_enabled((select off_id from t_ep), false, 'compromised receiver');

-- 2. A disabled endpoint receives nothing: its backlog is not claimed.
create temp table claimed as select * from email.claim_webhook_messages(1000, 60);
select is((select count(*)::int from claimed where endpoint_id = (select on_id from t_ep)), 1,
  'the enabled endpoint''s message is claimed');
select is((select count(*)::int from claimed where endpoint_id = (select off_id from t_ep)), 0,
  'the disabled endpoint''s message is not claimed');
select is((select attempts from email.webhook_outbox where endpoint_id = (select off_id from t_ep)), 0,
  'and no attempt is counted for it');
select email.set_webhook_endpoint_enabled((select off_id from t_ep), true);
select is((select count(*)::int from email.claim_webhook_messages(1000, 60) c where c.endpoint_id = (select off_id from t_ep)), 1,
  'once enabled again, its backlog is claimed');

-- 3. Results are fenced by attempt: a late answer to attempt 1 cannot decide while attempt 2 is in flight.
create temp table msg as select outbox_id, attempt from claimed where endpoint_id = (select on_id from t_ep);
select is((select attempt from msg), 1, 'the first claim is attempt 1');
update email.webhook_outbox set next_attempt_at = now() where id = (select outbox_id from msg); -- its claim ran out
select is((select c.attempt from email.claim_webhook_messages(1000, 60) c where c.outbox_id = (select outbox_id from msg)), 2,
  'a second claim is attempt 2');
select throws_ok(format('select * from email.record_webhook_result(%s, 1, 410)', (select outbox_id from msg)), 'EM003', null,
  'a late 410 for attempt 1 is refused as stale');
select is((select status from email.webhook_outbox where id = (select outbox_id from msg)), 'pending', 'the message is still pending');
select ok((select enabled from email.webhook_endpoints where id = (select on_id from t_ep)), 'the endpoint is still enabled');
select throws_ok(format('select * from email.record_webhook_result(%s, 1, 204)', (select outbox_id from msg)), 'EM003', null,
  'a late success for attempt 1 is refused too');
select throws_ok(format('select * from email.record_webhook_result(%s, 3, 204)', (select outbox_id from msg)), 'EM003', null,
  'an attempt that was never made is refused');

-- 4. A 3xx is a failure: the redirect was not followed, so the event did not arrive.
select is((select row(r.status, r.endpoint_disabled)::text from email.record_webhook_result((select outbox_id from msg), 2, 302) r),
  row('pending', false)::text, 'a 302 is not delivered: the message is retried');
select is((select row(status, last_status_code, delivered_at is null)::text from email.webhook_outbox where id = (select outbox_id from msg)),
  row('pending', 302, true)::text, 'with the status code recorded and no delivery time');
select ok((select failing_since is not null from email.webhook_endpoints where id = (select on_id from t_ep)),
  'and the endpoint''s failure run starts');
update email.webhook_outbox set next_attempt_at = now() where id = (select outbox_id from msg);
select is((select c.attempt from email.claim_webhook_messages(1000, 60) c where c.outbox_id = (select outbox_id from msg)), 3, 'attempt 3');
select is((select r.status from email.record_webhook_result((select outbox_id from msg), 3, 300) r), 'pending', 'a 300 is not delivered either');
update email.webhook_outbox set next_attempt_at = now() where id = (select outbox_id from msg);
select is((select c.attempt from email.claim_webhook_messages(1000, 60) c where c.outbox_id = (select outbox_id from msg)), 4, 'attempt 4');
select is((select r.status from email.record_webhook_result((select outbox_id from msg), 4, 299) r), 'delivered',
  'a 299 is delivered (the 2xx range ends there)');

-- Retry-After is honoured within 1 s .. 1 day.
select email.record_queued('t255-2', 'invite', 'bob@example.com', '{}');
create temp table msg2 as
select o.id as outbox_id from email.webhook_outbox o join email.delivery_events e on e.id = o.event_id
where e.delivery_id = 't255-2' and o.endpoint_id = (select on_id from t_ep);
update email.webhook_outbox set next_attempt_at = now() where id = (select outbox_id from msg2);
select is((select c.attempt from email.claim_webhook_messages(1000, 60) c where c.outbox_id = (select outbox_id from msg2)), 1, 'claimed');
select is((select r.next_attempt_at - now() from email.record_webhook_result((select outbox_id from msg2), 1, 503, null, 0) r),
  interval '1 second', 'Retry-After: 0 waits at least 1 second');
update email.webhook_outbox set next_attempt_at = now() where id = (select outbox_id from msg2);
select is((select c.attempt from email.claim_webhook_messages(1000, 60) c where c.outbox_id = (select outbox_id from msg2)), 2, 'claimed again');
select is((select r.next_attempt_at - now() from email.record_webhook_result((select outbox_id from msg2), 2, 429, null, 30 * 86400) r),
  interval '1 day', 'a Retry-After of 30 days waits 1 day at most');

-- Only secrets not yet expired sign a message.
update email.webhook_endpoints
set secret = 'whsec_Y3VycmVudA==',
    previous_secrets = jsonb_build_array(
      jsonb_build_object('secret', 'whsec_ZXhwaXJlZA==', 'expires_at', now() - interval '1 minute'),
      jsonb_build_object('secret', 'whsec_c3RpbGwtdmFsaWQ=', 'expires_at', now() + interval '1 hour'))
where id = (select on_id from t_ep);
select is((select email.webhook_signing_secrets(w) from email.webhook_endpoints w where w.id = (select on_id from t_ep)),
  array['whsec_Y3VycmVudA==', 'whsec_c3RpbGwtdmFsaWQ='], 'the current secret and the rotated one still valid, not the expired one');
update email.webhook_outbox set next_attempt_at = now() where id = (select outbox_id from msg2);
select is((select c.secrets from email.claim_webhook_messages(1000, 60) c where c.outbox_id = (select outbox_id from msg2)),
  array['whsec_Y3VycmVudA==', 'whsec_c3RpbGwtdmFsaWQ='], 'a claimed message carries exactly those');
select ok(not exists (select from email.claim_webhook_messages(1000, 60) c where 'whsec_ZXhwaXJlZA==' = any (c.secrets)),
  'no claim hands out the expired secret');

select * from finish();
rollback;
