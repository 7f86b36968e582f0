-- Purge of old dead letters: status purged, payload erased, audit trail, retention setting.
begin;
select plan(20);

\ir fixtures/helpers.psql
select tests.create_supabase_user('sam', 'sam@example.com', '{"role": "support"}');

\ir fixtures/make_dead_letter.psql

select pg_temp.make_dead_letter('t-pg-40d', 't-pg', 'a@example.com', null);
select pg_temp.make_dead_letter('t-pg-5d', 't-pg', 'b@example.com', null);
update email.deliveries set completed_at = now() - interval '40 days' where delivery_id = 't-pg-40d';
update email.deliveries set completed_at = now() - interval '5 days' where delivery_id = 't-pg-5d';

select is((select terminal from email.statuses where status = 'purged'), true, 'purged is a terminal status');
select results_eq($$select from_status from email.transitions where to_status = 'purged'$$, array['dead_letter'], 'only a dead letter can be purged');
select results_eq($$select count(*)::int from email.transitions where from_status = 'purged'$$, array[0], 'nothing leaves purged');
select is((select dead_letter_retention from email.settings), interval '30 days', 'the retention is 30 days by default');

select tests.authenticate_as_service_role();
select set_config('email.actor', 'cli:carol', true);
select throws_ok($$select * from email.purge_dead_letters(null, '')$$, 'EM006', 'a purge needs a reason', 'a purge without a reason is refused');
select throws_ok($$select * from email.purge_dead_letters(interval '-1 day', 'x')$$, 'EM006', null, 'a negative age is refused');

select ok((select count(*) = 0 from email.purge_dead_letters(interval '41 days', 'retention')
  where delivery_id like 't-pg-%'), 'nothing younger than older_than is purged');
select results_eq(
  $$select delivery_id, status from email.purge_dead_letters(null, 'retention policy') where delivery_id like 't-pg-%'$$,
  $$values ('t-pg-40d', 'purged')$$,
  'without older_than the retention setting applies: the 40-day-old dead letter is purged'
);
select is((select count(*)::int from email.delivery_payloads where delivery_id = 't-pg-40d'), 0, 'its payload is erased');
select is((select count(*)::int from email.delivery_payloads where delivery_id = 't-pg-5d'), 1, 'a younger dead letter keeps its payload');
select is(
  (select row(e.from_status, e.to_status, e.actor, e.detail ->> 'reason', e.detail ->> 'older_than')::text
   from email.delivery_events e where e.delivery_id = 't-pg-40d' order by e.id desc limit 1),
  row('dead_letter', 'purged', 'cli:carol', 'retention policy', '30 days')::text,
  'the trail records the purge with its actor, reason and age'
);
select is((select count(*)::int from email.deliveries where delivery_id = 't-pg-40d'), 1, 'the delivery itself stays, with its trail');
select throws_ok($$select email.requeue('t-pg-40d', 'x')$$, 'EM001', null, 'a purged delivery cannot be requeued');
select throws_ok($$update email.deliveries set status = 'queued' where delivery_id = 't-pg-40d'$$, 'EM001', null,
  'nor moved anywhere else');
select is(
  (select count(*)::int from email_api.deliveries where status = 'dead_letter' and delivery_id like 't-pg-%'),
  1,
  'the dead-letter queue no longer lists it'
);

update email.settings set dead_letter_retention = interval '2 days';
select results_eq(
  $$select delivery_id from email_api.purge_dead_letters(reason => 'shorter retention', actor => 'cli:dave') where delivery_id like 't-pg-%'$$,
  array['t-pg-5d'],
  'the API wrapper purges by the retention setting'
);
select is((select actor from email.delivery_events where delivery_id = 't-pg-5d' order by id desc limit 1), 'cli:dave', 'with the actor it was given');
select is((select status from email_api.deliveries where delivery_id = 't-pg-5d'), 'purged', 'the API shows the purged status');

select tests.reset_authentication();
select throws_ok($$update email.settings set dead_letter_retention = interval '0'$$, '23514', null, 'the retention must be positive');

select tests.authenticate_as('sam');
select throws_ok($$select * from email.purge_dead_letters(interval '0', 'x')$$, '42501', null, 'support cannot purge directly');

select * from finish();
rollback;
