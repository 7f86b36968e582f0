-- email_api.requeue records the operator it is given (issue 14, point 6): requeues through PostgREST
-- connect as service_role, so without the actor argument the trail would only say service_role.
begin;
select plan(4);

\ir fixtures/make_dead_letter.psql

select pg_temp.make_dead_letter('t175-a', 't175', 'a@example.com', null);
select pg_temp.make_dead_letter('t175-b', 't175', 'b@example.com', null);

set local role service_role;
select set_config('email.actor', '', true);

select results_eq(
  $$select delivery_id, status from email_api.requeue(array['t175-a'], 'relay fixed', 'cli:erin')$$,
  $$values ('t175-a', 'queued')$$,
  'email_api.requeue requeues the given delivery'
);
select is((select row(to_status, actor, detail ->> 'reason')::text from email.delivery_events
  where delivery_id = 't175-a' order by id desc limit 1),
  row('queued', 'cli:erin', 'relay fixed')::text, 'the trail records the actor it was given, with the reason');

-- Without an actor the trail names the connecting role, not a previous caller's actor.
select set_config('email.actor', '', true);
select lives_ok($$select * from email_api.requeue(array['t175-b'], 'relay fixed')$$, 'an actor is optional');
select isnt((select actor from email.delivery_events where delivery_id = 't175-b' order by id desc limit 1), 'cli:erin',
  'without one, the trail does not claim a named operator');

select * from finish();
rollback;
