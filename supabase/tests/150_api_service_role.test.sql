-- email_api as service_role (the worker and operators' tools): everything but payloads.
begin;
select plan(6);

create function pg_temp.make_dead_letter(delivery_id text, workflow text, recipient text, user_id uuid, error_code text default 'smtp_timeout')
returns void language plpgsql as $f$
begin
  insert into email.retry_policies (workflow, max_attempts) values (make_dead_letter.workflow, 1) on conflict do nothing;
  perform email.record_queued(make_dead_letter.delivery_id, make_dead_letter.workflow, make_dead_letter.recipient,
    '{"code": "482913"}', '{"trace": "t"}', make_dead_letter.user_id);
  perform email.mark_in_progress(make_dead_letter.delivery_id);
  perform email.record_failure(make_dead_letter.delivery_id, 1, make_dead_letter.error_code, 'the server timed out', false);
end
$f$;
-- Ada owns t-api-ada-1 (by user_id) and t-api-ada-2 (by the email claim, another case); Bob owns t-api-bob.
select pg_temp.make_dead_letter('t-api-ada-1', 't-api', 'ada@example.com', '00000000-0000-0000-0000-00000000000a');
select email.record_queued('t-api-ada-2', 't-api', 'Ada@Example.com', '{"link": "https://x/reset?t=s3cret"}');
select email.record_queued('t-api-bob', 't-api', 'bob@example.com', '{"code": "111111"}', '{}', '00000000-0000-0000-0000-00000000000b');

set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';

select is(email_api.get_delivery('t-api-ada-1') ->> 'status', 'dead_letter', 'service_role reads any delivery');
select is(email_api.get_delivery('t-api-missing'), null, 'a missing delivery is null');
select is((select count(*)::int from email_api.deliveries where workflow = 't-api'), 3, 'service_role lists every delivery');
select ok(not (email_api.get_delivery('t-api-ada-1') ?| array['payload', 'request_hash']), 'no payload in the document for service_role either');
select lives_ok($$select email_api.metrics()$$, 'service_role reads metrics');
select is(
  (select count(*)::int from email_api.requeue(array['t-api-ada-1'], 'the SMTP relay is back', 'cli:test')),
  1,
  'service_role requeues through the API'
);

select * from finish();
rollback;
