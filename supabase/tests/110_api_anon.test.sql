-- email_api as anon (PostgREST with the anon key): nothing at all.
begin;
select plan(5);

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

set local role anon;
set local request.jwt.claims to '{"role": "anon"}';

select throws_ok($$select email_api.get_delivery('t-api-ada-1')$$, '42501', null, 'anon cannot call get_delivery');
select throws_ok($$select count(*) from email_api.deliveries$$, '42501', null, 'anon cannot list deliveries');
select throws_ok($$select count(*) from email_api.delivery_events$$, '42501', null, 'anon cannot list events');
select throws_ok($$select email_api.metrics()$$, '42501', null, 'anon cannot read metrics');
select throws_ok($$select * from email_api.requeue(array['t-api-ada-1'], 'x')$$, '42501', null, 'anon cannot requeue');

select * from finish();
rollback;
