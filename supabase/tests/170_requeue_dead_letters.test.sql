-- Requeue of dead letters by filter, through email.requeue: audit trail, then picked up by claim_due.
begin;
select plan(16);

\ir fixtures/helpers.psql

\ir fixtures/make_dead_letter.psql

select pg_temp.make_dead_letter('t-rq-a-old', 't-rq-a', 'a@example.com', null);
select pg_temp.make_dead_letter('t-rq-a-new', 't-rq-a', 'a@example.com', null);
select pg_temp.make_dead_letter('t-rq-b', 't-rq-b', 'b@example.com', null);
select pg_temp.make_dead_letter('t-rq-c', 't-rq-c', 'c@example.com', null);
update email.deliveries set completed_at = now() - interval '3 days' where delivery_id = 't-rq-a-old';

select tests.authenticate_as_service_role();
select set_config('email.actor', 'cli:alice', true);

select throws_ok($$select * from email.requeue_dead_letters('t-rq-a', null, ' ')$$, 'EM006', 'a requeue needs a reason', 'a requeue without a reason is refused');

select results_eq(
  $$select delivery_id, status from email.requeue_dead_letters('t-rq-a', now() - interval '1 day', 'relay fixed') order by 1$$,
  $$values ('t-rq-a-new', 'queued')$$,
  'since filters on when the delivery was dead-lettered'
);
select is((select status from email.deliveries where delivery_id = 't-rq-a-old'), 'dead_letter', 'an older dead letter stays');
select results_eq(
  $$select delivery_id from email.requeue_dead_letters('t-rq-a', null, 'relay fixed')$$,
  array['t-rq-a-old'],
  'without since, the workflow''s remaining dead letters are requeued'
);
select is((select status from email.deliveries where delivery_id = 't-rq-b'), 'dead_letter', 'another workflow''s dead letter is untouched');

select is(
  (select row(e.from_status, e.to_status, e.actor, e.detail ->> 'reason')::text from email.delivery_events e
   where e.delivery_id = 't-rq-a-new' order by e.id desc limit 1),
  row('dead_letter', 'queued', 'cli:alice', 'relay fixed')::text,
  'the trail records the requeue with its actor and reason'
);
select is(
  (select max_attempts - attempts from email.deliveries where delivery_id = 't-rq-a-new'),
  1,
  'the requeued delivery has a fresh attempt budget from its workflow''s policy'
);
select ok((select next_attempt_at <= now() from email.deliveries where delivery_id = 't-rq-a-new'), 'it is due now');

-- The sweep's RPCs pick it up and can send it.
create temp table claimed as select * from email.claim_due(1000);
select ok(exists (select from claimed where delivery_id = 't-rq-a-new' and attempt = 2), 'claim_due claims the requeued delivery as attempt 2');
select is((select payload from claimed where delivery_id = 't-rq-a-new'), '{"code": "482913"}'::jsonb, 'with its payload, which a dead letter keeps');
select is((email.mark_sent('t-rq-a-new', 2, '<id@x>', '250 ok')).status, 'sent', 'and mark_sent completes it');
select is(
  (select array_agg(to_status order by id) from email.delivery_events where delivery_id = 't-rq-a-new'),
  array['queued', 'in_progress', 'dead_letter', 'queued', 'in_progress', 'sent'],
  'the whole story is in the trail'
);

-- The API wrapper (service_role only) sets the actor itself.
select set_config('email.actor', '', true);
select results_eq(
  $$select delivery_id from email_api.requeue_dead_letters(workflow => 't-rq-b', reason => 'bounce fixed', actor => 'cli:bob')$$,
  array['t-rq-b'],
  'email_api.requeue_dead_letters requeues by filter'
);
select is((select actor from email.delivery_events where delivery_id = 't-rq-b' order by id desc limit 1), 'cli:bob', 'with the actor it was given');
select throws_ok($$select * from email_api.requeue(array['t-rq-c', 'no-such-delivery'], 'x', 'cli:bob')$$, 'EM004', null,
  'requeue of a list with a missing id fails as a whole');
select is((select status from email.deliveries where delivery_id = 't-rq-c'), 'dead_letter', 'and requeues none of it');

select * from finish();
rollback;
