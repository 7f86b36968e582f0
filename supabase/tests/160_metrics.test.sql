-- email_api.metrics: the numbers on a known set of deliveries, and who may read them.
begin;
select plan(19);

\ir fixtures/helpers.psql
select tests.create_supabase_user('m1', 'm1@example.com');
select tests.create_supabase_user('sam', 'sam@example.com', '{"role": "support"}');
select tests.create_supabase_user('mallory', 'mallory@example.com', '{"role": "user"}', '{"role": "support"}');

\ir fixtures/make_dead_letter.psql

-- Workflow t-met: four sent (latencies 1, 2, 3 and 4 s; one after a retry), one failed, one dead
-- letter (dead for two days), one still queued. Workflow t-met-b: one dead letter.
do $$
declare i int;
begin
  for i in 1..4 loop
    perform email.record_queued('t-met-sent-' || i, 't-met', 'm' || i || '@example.com', '{}');
    perform email.mark_in_progress('t-met-sent-' || i);
  end loop;
  perform email.record_failure('t-met-sent-4', 1, 'try later', 421);
  update email.deliveries set next_attempt_at = now() where delivery_id = 't-met-sent-4';
  perform email.mark_in_progress('t-met-sent-4');
  for i in 1..3 loop perform email.mark_sent('t-met-sent-' || i, 1); end loop;
  perform email.mark_sent('t-met-sent-4', 2);
  for i in 1..4 loop
    update email.deliveries set queued_at = now() - interval '1 hour', sent_at = now() - interval '1 hour' + make_interval(secs => i)
    where delivery_id = 't-met-sent-' || i;
  end loop;
  perform email.record_queued('t-met-failed', 't-met', 'f@example.com', '{}');
  perform email.mark_in_progress('t-met-failed');
  perform email.record_failure('t-met-failed', 1, 'no such user', 550);
  perform email.record_queued('t-met-queued', 't-met', 'q@example.com', '{}');
end
$$;
select pg_temp.make_dead_letter('t-met-dead', 't-met', 'd@example.com', null);
update email.deliveries set completed_at = now() - interval '2 days' where delivery_id = 't-met-dead';
select pg_temp.make_dead_letter('t-met-b-dead', 't-met-b', 'd@example.com', null, 'ETIMEDOUT');
-- Everything above was queued in this transaction; move t-met-queued out of the window.
update email.deliveries set queued_at = now() - interval '3 days' where delivery_id = 't-met-queued';

select tests.authenticate_as_service_role();
create temp table m as select email_api.metrics(now() - interval '1 day', now() + interval '1 second', 't-met') as doc;
create temp table w as select jsonb_array_elements(doc -> 'workflows') as doc from m;

select is((select (doc ->> 'total')::int from w where doc ->> 'workflow' = 't-met'), 6, 'the window counts deliveries queued in it (not the one queued three days ago)');
select is((select doc -> 'by_status' from w where doc ->> 'workflow' = 't-met'), '{"sent": 4, "failed": 1, "dead_letter": 1}'::jsonb, 'deliveries by status');
select is((select (doc ->> 'success_rate')::numeric from w where doc ->> 'workflow' = 't-met'), 0.6667, 'success rate is sent over completed');
select is((select (doc ->> 'avg_attempts')::numeric from w where doc ->> 'workflow' = 't-met'), 1.17, 'average attempts over completed deliveries (7 / 6)');
select is((select doc -> 'latency_ms' from w where doc ->> 'workflow' = 't-met'), '{"p50": 2500.0, "p95": 3850.0, "p99": 3970.0}'::jsonb,
  'queued to sent latency percentiles (continuous) in milliseconds');
select is((select doc -> 'totals' ->> 'total' from m), '6', 'the totals cover the filtered workflow');
select is(
  (select jsonb_agg(e order by e ->> 'error_code') from m, jsonb_array_elements(m.doc -> 'errors') e),
  '[{"workflow": "t-met", "error_code": "ETIMEDOUT", "deliveries": 1, "sent": 0, "failed": 0, "dead_letter": 1},
    {"workflow": "t-met", "error_code": "smtp_421", "deliveries": 1, "sent": 1, "failed": 0, "dead_letter": 0},
    {"workflow": "t-met", "error_code": "smtp_550", "deliveries": 1, "sent": 0, "failed": 1, "dead_letter": 0}]'::jsonb,
  'error distribution by last error code, with how those deliveries ended'
);
select is((select (doc -> 'dead_letter_queue' ->> 'size')::int from m), 1, 'the dead-letter queue of the workflow');
select is((select (doc -> 'dead_letter_queue' ->> 'oldest_age_seconds')::int from m), 172800, 'the age of its oldest dead letter in seconds');

select tests.reset_authentication();
create temp table all_m as select email_api.metrics(now() - interval '1 day', now() + interval '1 second') as doc;
select ok((select (doc -> 'dead_letter_queue' ->> 'size')::int >= 2 from all_m), 'without a workflow the queue counts every workflow');
select is(
  (select (q ->> 'size')::int from all_m, jsonb_array_elements(all_m.doc -> 'dead_letter_queue' -> 'workflows') q where q ->> 'workflow' = 't-met-b'),
  1,
  'and breaks it down per workflow'
);
select is(
  (select (x ->> 'total')::int from all_m, jsonb_array_elements(all_m.doc -> 'workflows') x where x ->> 'workflow' = 't-met-b'),
  1,
  'every workflow has its own row'
);
select is((email_api.metrics(now() - interval '1 day', now(), 'no-such-workflow') -> 'totals' ->> 'total'), '0', 'an empty window gives zeros, not an error');

-- The completed set is the terminal statuses of email.statuses: a suppressed delivery has ended too
-- (the hand-written list this replaced forgot it), and an open one has not.
select email.add_suppression('s1@example.com', 'pgtap');
select email.record_queued('t-met-s-1', 't-met-s', 's1@example.com', '{}');
select email.record_queued('t-met-s-2', 't-met-s', 's2@example.com', '{}');
select is(
  (select doc -> 'totals' from (select email_api.metrics(now() - interval '1 day', now() + interval '1 second', 't-met-s') as doc) m)
    - 'latency_ms' - 'avg_attempts',
  '{"total": 2, "by_status": {"queued": 1, "suppressed": 1}, "completed": 1, "success_rate": 0}'::jsonb,
  'a suppressed delivery is completed (and not a success); a queued one is not'
);
select is(
  (select jsonb_agg(e) from jsonb_array_elements(email_api.metrics(now() - interval '1 day', now() + interval '1 second', 't-met-s') -> 'errors') e),
  '[{"workflow": "t-met-s", "error_code": "address_suppressed", "deliveries": 1, "sent": 0, "failed": 0, "dead_letter": 0}]'::jsonb,
  'its error code is counted, in none of the sent, failed and dead_letter columns'
);
select throws_ok($$select email_api.metrics(now(), now() - interval '1 day')$$, 'EM006', null, 'a reversed window is refused');

select tests.authenticate_as('m1');
select throws_ok($$select email_api.metrics()$$, '42501', null, 'an end user gets an error, not numbers');
select tests.authenticate_as('sam');
select is((email_api.metrics(now() - interval '1 day', now() + interval '1 second', 't-met') -> 'totals' ->> 'total'), '6', 'support reads the same numbers');
select tests.authenticate_as('mallory');
select throws_ok($$select email_api.metrics()$$, '42501', null, 'user_metadata (which users can edit) does not make anyone support');

select * from finish();
rollback;
