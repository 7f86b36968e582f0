begin;
select plan(59);

\ir fixtures/helpers.psql
select tests.create_supabase_user('dee', 'dee@example.com', '{"role": "admin"}');

create temp table t_ep as
select
  (email.add_webhook_endpoint('https://all.example.test/hook')).id as all_id,
  (email.add_webhook_endpoint('https://sent.example.test/hook', array['email.sent', 'email.failed'], 'sent only')).id as sent_id,
  (email.add_webhook_endpoint('https://off.example.test/hook')).id as off_id;
select email.set_webhook_endpoint_enabled((select off_id from t_ep), false, 'paused by the test');

-- Endpoints
select matches((select secret from email.webhook_endpoints where id = (select all_id from t_ep)), '^whsec_[A-Za-z0-9+/]{43}=$',
  'a new endpoint gets a whsec_ secret of 32 random bytes');
select is(length(decode(substr((select secret from email.webhook_endpoints where id = (select all_id from t_ep)), 7), 'base64')), 32,
  'the secret decodes to 32 bytes');
select throws_ok($$select email.add_webhook_endpoint('https://x.test', array['email.opened'])$$, 'EM006', null,
  'an unknown event type is refused');
select throws_ok($$select email.add_webhook_endpoint('ftp://x.test')$$, 'EM006', null, 'a non-http URL is refused');

-- Targets inside the network are refused, however written, whoever writes them
select throws_ok($$select email.add_webhook_endpoint('http://127.0.0.1:54321/hook')$$, 'EM007',
  'webhook target refused: 127.0.0.1 is loopback', 'a loopback address is refused');
select throws_ok($$select email.add_webhook_endpoint('http://[::1]:8080/')$$, 'EM007', null, 'IPv6 loopback is refused');
select throws_ok($$select email.add_webhook_endpoint('http://2130706433/')$$, 'EM007', null,
  'a decimal IPv4 address (127.0.0.1 to a URL parser) is refused');
select throws_ok($$select email.add_webhook_endpoint('http://0177.0.0.1/')$$, 'EM007', null,
  'an octal IPv4 address is refused');
select throws_ok($$select email.add_webhook_endpoint('http://%31%32%37.0.0.1/')$$, 'EM007', null,
  'a percent-escaped host (127.0.0.1 once decoded) is refused');
select throws_ok($$select email.add_webhook_endpoint('http://127.0.0.1\@hooks.example.com/')$$, 'EM007', null,
  'a backslash (a path separator to a URL parser, which then connects to 127.0.0.1) is refused');
select throws_ok($$select email.add_webhook_endpoint('http://169.254.169.254/latest/meta-data')$$, 'EM007', null,
  'the cloud metadata address (link-local) is refused');
select throws_ok($$select email.add_webhook_endpoint('http://10.0.3.7/')$$, 'EM007', null, 'a private address is refused');
select throws_ok($$select email.add_webhook_endpoint('http://localhost:5432/')$$, 'EM007', null, 'localhost is refused');
select throws_ok($$insert into email.webhook_endpoints (url, secret, created_by)
  values ('http://[::ffff:7f00:1]/', email.new_webhook_secret(), 'test')$$, 'EM007', null, 'a direct insert is checked too');
select throws_ok($$update email.webhook_endpoints set url = 'http://192.168.1.1/' where id = (select all_id from t_ep)$$,
  'EM007', null, 'so is a changed URL');
select is(email.webhook_target_refusal('https://hooks.example.com/x'), null,
  'a name passes registration (the dispatcher checks what it resolves to)');
select set_config('email.webhook_allow_private', 'on', true);
select lives_ok($$select email.remove_webhook_endpoint((email.add_webhook_endpoint('http://127.0.0.1:8080/')).id)$$,
  'a session that opts in (local development) may register a loopback endpoint');
select set_config('email.webhook_allow_private', 'off', true);
select throws_ok($$select email.set_webhook_endpoint_enabled((select all_id from t_ep), false)$$, 'EM006', null,
  'disabling needs a reason');

-- The outbox is written with the transition
select email.record_queued('t250-1', 'invite', 'ada@example.com', '{}');
select is((select count(*)::int from email.webhook_outbox o join email.delivery_events e on e.id = o.event_id where e.delivery_id = 't250-1'),
  1, 'a transition writes one message for the endpoint wanting every type, none for filtered or disabled ones');
select is((select event_type || ' ' || message_id from email.webhook_outbox o join email.delivery_events e on e.id = o.event_id where e.delivery_id = 't250-1'),
  (select 'email.queued msg_' || id from email.delivery_events where delivery_id = 't250-1'), 'type email.<status>, webhook-id msg_<event id>');
select is((select body #>> '{data,delivery_id}' || ' ' || (body #>> '{data,workflow}') || ' ' || (body #>> '{data,status}') || ' ' || (body #>> '{data,attempt}')
  from email.webhook_outbox o join email.delivery_events e on e.id = o.event_id where e.delivery_id = 't250-1'),
  't250-1 invite queued 0', 'the body carries delivery_id, workflow, status and attempt');
select matches((select body ->> 'timestamp' from email.webhook_outbox o join email.delivery_events e on e.id = o.event_id where e.delivery_id = 't250-1'),
  '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$', 'the timestamp is ISO 8601 UTC');

select email.mark_in_progress('t250-1');
select email.mark_sent('t250-1', 1, 'mid-1', '250 ok');
select is((select array_agg(o.event_type order by o.id) from email.webhook_outbox o join email.delivery_events e on e.id = o.event_id
  where e.delivery_id = 't250-1' and o.endpoint_id = (select sent_id from t_ep)), array['email.sent'], 'a filtered endpoint gets only its types');

savepoint before_rollback;
select email.record_queued('t250-rolled-back', 'invite', 'ada@example.com', '{}');
rollback to savepoint before_rollback;
select ok(not exists (select from email.webhook_outbox where body #>> '{data,delivery_id}' = 't250-rolled-back'),
  'a rolled-back transition leaves no message');

select email.record_queued('t250-fail', 'invite', 'bob@example.com', '{}');
select email.mark_in_progress('t250-fail');
select email.record_failure('t250-fail', 1, 'later', 451);
select is((select body #>> '{data,error_code}' from email.webhook_outbox where event_type = 'email.retrying' and body #>> '{data,delivery_id}' = 't250-fail'),
  'smtp_451', 'a failure event carries its error code');

-- Claiming
create temp table t_claim as select * from email.claim_webhook_messages(1000, 30);
select ok((select count(*) from t_claim) >= 4, 'due messages are claimed');
select ok(not exists (select from t_claim where endpoint_id = (select off_id from t_ep)), 'never those of a disabled endpoint');
select is((select attempt from t_claim where event_type = 'email.sent' and endpoint_id = (select sent_id from t_ep)), 1, 'the first attempt is 1');
select is((select body::jsonb from t_claim where event_type = 'email.sent' and endpoint_id = (select sent_id from t_ep)),
  (select body from email.webhook_outbox o where o.id = (select outbox_id from t_claim where event_type = 'email.sent' and endpoint_id = (select sent_id from t_ep))),
  'the claimed body is the stored body');
select is((select secrets from t_claim where event_type = 'email.sent' and endpoint_id = (select sent_id from t_ep)),
  array[(select secret from email.webhook_endpoints where id = (select sent_id from t_ep))], 'it is signed with the current secret');
select ok(not exists (select from email.claim_webhook_messages(1000) c join t_claim t on t.outbox_id = c.outbox_id),
  'a claimed message is not claimed again while its lock lasts');
select throws_ok($$select * from email.claim_webhook_messages(1, 0)$$, 'EM006', null, 'lock_seconds must be positive');

-- The per-message renewal right before a request: fenced by the attempt.
create temp table t_renew as select outbox_id, attempt from t_claim
  where event_type = 'email.retrying' and body::jsonb #>> '{data,delivery_id}' = 't250-fail' limit 1;
update email.webhook_outbox set next_attempt_at = now() - interval '1 second' where id = (select outbox_id from t_renew);
select is(email.renew_webhook_claim((select outbox_id from t_renew), (select attempt from t_renew), 45),
  now() + interval '45 seconds', 'a claim that ran out but was not claimed again is renewed by its attempt');
select ok(not exists (select from email.claim_webhook_messages(1000) c where c.outbox_id = (select outbox_id from t_renew)),
  'and is not claimed by anyone else');
update email.webhook_outbox set next_attempt_at = now() - interval '1 second' where id = (select outbox_id from t_renew);
select is((select count(*)::integer from email.claim_webhook_messages(1000) c where c.outbox_id = (select outbox_id from t_renew)), 1,
  'once it runs out again another dispatcher claims it (attempt + 1)');
select throws_ok(format('select email.renew_webhook_claim(%s, %s, 45)', (select outbox_id from t_renew), (select attempt from t_renew)),
  'EM003', null, 'the first attempt can no longer renew it: it is skipped, not sent twice');
select throws_ok($$select email.renew_webhook_claim(1, 1, 0)$$, 'EM006', null, 'lock_seconds must be positive (renewal)');

-- Outcomes
create temp table t_ids as select
  (select outbox_id from t_claim where event_type = 'email.sent' and endpoint_id = (select sent_id from t_ep)) as ok_id,
  (select outbox_id from t_claim where event_type = 'email.queued' and body::jsonb #>> '{data,delivery_id}' = 't250-1') as retry_id,
  (select outbox_id from t_claim where event_type = 'email.in_progress' and body::jsonb #>> '{data,delivery_id}' = 't250-1') as after_id,
  (select outbox_id from t_claim where event_type = 'email.sent' and endpoint_id = (select all_id from t_ep)) as gone_id;

select is((select status from email.record_webhook_result((select ok_id from t_ids), 1, 204)), 'delivered', '2xx: delivered');
select throws_ok($$select * from email.record_webhook_result((select ok_id from t_ids), 1, 200)$$, 'EM003', null,
  'a second outcome for the same attempt is stale');
select throws_ok($$select * from email.record_webhook_result(-1, 1, 200)$$, 'EM004', null, 'an unknown message raises EM004');

select is((select next_attempt_at from email.record_webhook_result((select retry_id from t_ids), 1, 500, 'HTTP 500')), now() + interval '5 seconds',
  'the first failure retries after 5 seconds');
select is((select failing_since from email.webhook_endpoints where id = (select all_id from t_ep)), now(), 'and starts the endpoint''s failure run');
select is((select next_attempt_at from email.record_webhook_result((select after_id from t_ids), 1, 429, 'HTTP 429', 120)), now() + interval '120 seconds',
  'Retry-After is honoured');
select is(array(select email.webhook_retry_delay(n) from generate_series(1, 8) n),
  array[interval '5 seconds', interval '5 minutes', interval '30 minutes', interval '2 hours', interval '5 hours', interval '10 hours', interval '10 hours', null],
  'the schedule is 5s, 5m, 30m, 2h, 5h, 10h, 10h, then give up');
update email.webhook_outbox set attempts = 8, status = 'pending' where id = (select retry_id from t_ids);
select is((select status from email.record_webhook_result((select retry_id from t_ids), 8, 503, 'HTTP 503', 5)), 'failed',
  'after the last retry the message fails, whatever Retry-After says');

-- 410 disables the endpoint
select is((select endpoint_disabled from email.record_webhook_result((select gone_id from t_ids), 1, 410)), true, '410 disables the endpoint');
select is((select enabled::text || ' ' || disabled_reason from email.webhook_endpoints where id = (select all_id from t_ep)),
  'false the endpoint answered 410 Gone', 'with the reason');
select is((select status from email.webhook_outbox where id = (select gone_id from t_ids)), 'failed', 'and the message fails');

-- Failing for more than 5 days disables it
select email.set_webhook_endpoint_enabled((select sent_id from t_ep), true);
select email.record_queued('t250-2', 'invite', 'cy@example.com', '{}');
select email.mark_in_progress('t250-2');
select email.mark_sent('t250-2', 1);
update email.webhook_endpoints set failing_since = now() - interval '6 days' where id = (select sent_id from t_ep);
select ok((select r.endpoint_disabled from email.claim_webhook_messages(1000) c,
  lateral email.record_webhook_result(c.outbox_id, c.attempt, null, 'timeout after 15000 ms') r
  where c.endpoint_id = (select sent_id from t_ep)), 'an endpoint failing for 6 days is disabled');
select matches((select disabled_reason from email.webhook_endpoints where id = (select sent_id from t_ep)), '^failing since .* without a success$',
  'with a reason saying since when');
select is((email.set_webhook_endpoint_enabled((select sent_id from t_ep), true)).failing_since, null, 'enabling it again clears the failure run');

-- Secret rotation
select email.rotate_webhook_secret((select sent_id from t_ep));
select is(cardinality(email.webhook_signing_secrets(w)), 2, 'after a rotation messages are signed with the new and the old secret')
from email.webhook_endpoints w where id = (select sent_id from t_ep);
select email.rotate_webhook_secret((select sent_id from t_ep), interval '0');
select is(cardinality(email.webhook_signing_secrets(w)), 2, 'a rotation without overlap drops the one rotated out, keeps earlier ones')
from email.webhook_endpoints w where id = (select sent_id from t_ep);

-- Replay
select is(email.replay_webhook_message((select message_id from email.webhook_outbox where id = (select ok_id from t_ids))), 2,
  'replay of one message sends it again to every endpoint that had it');
select is(email.replay_webhook_message((select message_id from email.webhook_outbox where id = (select ok_id from t_ids)), (select sent_id from t_ep)), 1,
  'or to one endpoint');
select is((select status || ' ' || schedule_offset || ' ' || (next_attempt_at = now())::text from email.webhook_outbox where id = (select ok_id from t_ids)),
  'pending 1 true', 'makes it due now with a fresh schedule, attempts kept');
select throws_ok($$select email.replay_webhook_message('msg_does_not_exist')$$, 'EM004', null, 'replay of an unknown message raises EM004');
select email.set_webhook_endpoint_enabled((select off_id from t_ep), true);
select ok(email.replay_webhook_messages(now() - interval '1 minute', now() + interval '1 minute', (select off_id from t_ep)) >= 5,
  'replay of a time range writes the messages an endpoint never had');

-- service_role only
select tests.authenticate_as('dee');
select throws_ok($$select * from email.webhook_endpoints$$, '42501', null, 'not even admins read the endpoints (secrets)');
select tests.reset_authentication();

select * from finish();
rollback;
