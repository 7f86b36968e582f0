-- email_api as another end user: Ada's deliveries are indistinguishable from missing ones.
begin;
select plan(7);

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

set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-0000-0000-00000000000b", "role": "authenticated", "email": "bob@example.com"}';

select is(email_api.get_delivery('t-api-ada-1'), null, 'Bob reads Ada''s delivery as null');
select is(email_api.get_delivery('t-api-ada-2'), null, 'Bob reads the delivery addressed to Ada''s email as null');
select is(email_api.get_delivery('t-api-ada-1'), email_api.get_delivery('no-such-delivery'), 'not visible and missing give the same answer');
select is(email_api.get_delivery('t-api-bob') ->> 'delivery_id', 't-api-bob', 'Bob reads his own');
select results_eq($$select delivery_id from email_api.deliveries where workflow = 't-api'$$, array['t-api-bob'], 'Bob lists only his own');
select is((select count(*)::int from email_api.delivery_events where delivery_id like 't-api-ada%'), 0, 'Bob sees none of Ada''s events');
select throws_ok($$select * from email_api.purge_dead_letters('0 seconds', 'x')$$, '42501', null, 'an end user cannot purge');

select * from finish();
rollback;
