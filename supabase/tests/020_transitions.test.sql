-- Transitions: every allowed one works, every other one raises EM001; what each transition implies.
begin;
-- One assertion per allowed transition and per forbidden status change (later migrations may add statuses).
select plan(17
  + (select count(*)::int from email.transitions)
  + (select count(*)::int from email.statuses f cross join email.statuses t
     where f.status <> t.status
       and not exists (select from email.transitions x where x.from_status = f.status and x.to_status = t.status)));

/** Moves delivery `id` (queued) to `status` through a state of the six that has a transition into it. */
create function pg_temp.walk_to(id text, status text) returns void language plpgsql as $$
declare
  via text := (select t.from_status from email.transitions t
               where t.to_status = status
                 and t.from_status in ('queued', 'in_progress', 'retrying', 'sent', 'failed', 'dead_letter')
               order by t.from_status = 'queued' desc, t.from_status limit 1);
begin
  if via = 'dead_letter' then
    perform email.mark_in_progress(id);
    perform email.mark_dead_letter(id, 1, 'smtp_421', 'given up');
  elsif via is distinct from 'queued' then
    raise exception 'no way to %', status;
  end if;
  update email.deliveries d set status = walk_to.status where d.delivery_id = id;
end
$$;

/** A new delivery walked to `status` through the RPCs; returns its id. */
create function pg_temp.delivery_in(status text) returns text language plpgsql as $$
declare
  id text := 'pgtap-020-' || gen_random_uuid();
begin
  perform email.record_queued(id, 'pgtap', 'someone@example.com', '{"code": "123456"}');
  if status in ('in_progress', 'retrying', 'sent', 'dead_letter') then
    perform email.mark_in_progress(id);
  end if;
  case status
    when 'retrying' then perform email.record_failure(id, 1, 'try again later', 421);
    when 'sent' then perform email.mark_sent(id, 1, '<m@example.com>', '250 ok');
    when 'failed' then perform email.mark_failed(id, 0, 'render_error', 'template not found');
    when 'dead_letter' then perform email.mark_dead_letter(id, 1, 'smtp_421', 'given up');
    when 'queued' then null;
    when 'in_progress' then null;
    else
      -- A status a later migration added: reach it from one of the six through an allowed transition.
      perform pg_temp.walk_to(id, status);
  end case;
  if (select d.status from email.deliveries d where d.delivery_id = id) <> status then
    raise exception 'could not bring a delivery to %', status;
  end if;
  return id;
end
$$;

-- The transitions, as data: at least those the issue requires.
select set_has(
  $$ select from_status, to_status from email.transitions $$,
  $$ values ('queued', 'in_progress'), ('queued', 'failed'),
            ('in_progress', 'sent'), ('in_progress', 'retrying'), ('in_progress', 'failed'), ('in_progress', 'dead_letter'),
            ('retrying', 'in_progress'), ('retrying', 'dead_letter'), ('retrying', 'sent'),
            ('failed', 'queued'), ('dead_letter', 'queued') $$,
  'email.transitions holds (at least) the transitions the lifecycle needs'
);

-- Every allowed transition works through a plain UPDATE (the trigger is the gate, not the RPCs).
create temp table allowed on commit drop as
select t.from_status, t.to_status, pg_temp.delivery_in(t.from_status) as id
from email.transitions t;

select lives_ok(
  format('update email.deliveries set status = %L where delivery_id = %L', a.to_status, a.id),
  format('%s -> %s is allowed', a.from_status, a.to_status)
)
from allowed a order by a.from_status, a.to_status;

select is_empty(
  $$ select a.id from allowed a join email.deliveries d on d.delivery_id = a.id where d.status <> a.to_status $$,
  'every allowed transition reached its target state'
);

-- Every other change of status raises EM001 and changes nothing.
create temp table forbidden on commit drop as
select f.status as from_status, t.status as to_status, pg_temp.delivery_in(f.status) as id
from email.statuses f cross join email.statuses t
where f.status <> t.status
  and not exists (select from email.transitions x where x.from_status = f.status and x.to_status = t.status);

select is(
  (select count(*)::int from forbidden
   where from_status in ('queued', 'in_progress', 'retrying', 'sent', 'failed', 'dead_letter')
     and to_status in ('queued', 'in_progress', 'retrying', 'sent', 'failed', 'dead_letter')),
  19, 'among the six states, 19 status changes are not allowed'
);

select throws_ok(
  format('update email.deliveries set status = %L where delivery_id = %L', f.to_status, f.id),
  'EM001',
  format('delivery %s cannot go from %s to %s', f.id, f.from_status, f.to_status),
  format('%s -> %s raises EM001', f.from_status, f.to_status)
)
from forbidden f order by f.from_status, f.to_status;

select is_empty(
  $$ select f.id from forbidden f join email.deliveries d on d.delivery_id = f.id where d.status <> f.from_status $$,
  'a refused transition changes nothing'
);

-- Inserts start queued, or in_progress (born claimed, as email.queue_and_claim inserts): nothing else.
select throws_ok(
  $$ insert into email.deliveries (delivery_id, workflow, recipient, status, max_attempts, request_hash)
     values ('pgtap-020-insert-sent', 'pgtap', 'someone@example.com', 'sent', 5, 'x') $$,
  'EM001', 'delivery pgtap-020-insert-sent must start queued or in_progress, not sent',
  'an insert that does not start queued or in_progress raises EM001'
);
select throws_ok(
  $$ insert into email.deliveries (delivery_id, workflow, recipient, status, max_attempts, request_hash)
     values ('pgtap-020-insert-retrying', 'pgtap', 'someone@example.com', 'retrying', 5, 'x') $$,
  'EM001', null,
  'an insert retrying raises EM001'
);
insert into email.deliveries (delivery_id, workflow, recipient, max_attempts, request_hash, attempts)
values ('pgtap-020-insert-attempts', 'pgtap', 'someone@example.com', 5, 'x', 7);
select is(
  (select attempts from email.deliveries where delivery_id = 'pgtap-020-insert-attempts'), 0,
  'an insert starts at attempt 0 whatever it says'
);

-- updated_at is the time of the last change, whatever an update says.
update email.deliveries set updated_at = '2000-01-01', metadata = '{"touched": true}'
where delivery_id = 'pgtap-020-insert-attempts';
select is(
  (select updated_at from email.deliveries where delivery_id = 'pgtap-020-insert-attempts'), now(),
  'an update sets updated_at to now, whatever it says'
);

-- attempts cannot be changed outside a transition into in_progress.
create temp table a on commit drop as select pg_temp.delivery_in('retrying') as id;
select throws_ok(
  format('update email.deliveries set attempts = 0 where delivery_id = %L', (select id from a)),
  'EM001', format('delivery %s attempts only grow when an attempt starts', (select id from a)),
  'changing attempts without a transition raises EM001'
);
select throws_ok(
  format('update email.deliveries set attempts = attempts + 1, last_error_code = %L where delivery_id = %L', 'x', (select id from a)),
  'EM001', null,
  'attempts cannot be bumped alongside another change either'
);
update email.deliveries set status = 'dead_letter', attempts = 42 where delivery_id = (select id from a);
select is(
  (select attempts from email.deliveries where delivery_id = (select id from a)), 1,
  'a transition that is not into in_progress keeps attempts, whatever the update says'
);
update email.deliveries set status = 'queued' where delivery_id = (select id from a);
update email.deliveries set status = 'in_progress', attempts = 42 where delivery_id = (select id from a);
select is(
  (select attempts from email.deliveries where delivery_id = (select id from a)), 2,
  'entering in_progress adds exactly one attempt, whatever the update says'
);

-- What the transitions imply.
create temp table w on commit drop as select pg_temp.delivery_in('queued') as id;
select ok(
  (select next_attempt_at is not null and lease_expires_at is null and completed_at is null
   from email.deliveries where delivery_id = (select id from w)),
  'queued: due at some time, no lease, not completed'
);
update email.deliveries set status = 'in_progress' where delivery_id = (select id from w);
select ok(
  (select lease_expires_at > now() and next_attempt_at is null and last_attempted_at = now() and attempts = 1
   from email.deliveries where delivery_id = (select id from w)),
  'in_progress: a lease (60 s by default), attempt 1, last_attempted_at set, nothing due'
);
update email.deliveries set status = 'retrying' where delivery_id = (select id from w);
select ok(
  (select lease_expires_at is null and next_attempt_at is not null and completed_at is null
   from email.deliveries where delivery_id = (select id from w)),
  'retrying: no lease, due at some time'
);
update email.deliveries set status = 'in_progress' where delivery_id = (select id from w);
update email.deliveries set status = 'sent' where delivery_id = (select id from w);
select ok(
  (select lease_expires_at is null and next_attempt_at is null and sent_at = now() and completed_at = now() and attempts = 2
   from email.deliveries where delivery_id = (select id from w)),
  'sent: sent_at and completed_at set, no lease, nothing due'
);
select throws_ok(
  format('update email.deliveries set status = %L where delivery_id = %L', 'queued', (select id from w)),
  'EM001', null, 'sent is final: it cannot be requeued'
);

select * from finish();
rollback;
