-- The backoff schedule: between half and all of min(max_delay, base_delay * 2^(attempt-1)), sampled many times.
begin;
select plan(32);

insert into email.retry_policies (workflow, max_attempts, base_delay, max_delay)
values ('pgtap-fast', 8, interval '2 seconds', interval '100 seconds');

-- The capped delay for attempts 1..12: the default row '*' (30 s doubling, at most 1 hour) and pgtap-fast.
create temp table expected (workflow text, attempt integer, capped interval) on commit drop;
insert into expected
select '*', n, (array[30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600, 3600])[n] * interval '1 second'
from generate_series(1, 12) n;
insert into expected
select 'pgtap-fast', n, (array[2, 4, 8, 16, 32, 64, 100, 100, 100, 100, 100, 100])[n] * interval '1 second'
from generate_series(1, 12) n;

-- 300 samples per workflow and attempt.
create temp table samples on commit drop as
select e.workflow, e.attempt, e.capped, email.backoff_delay(e.workflow, e.attempt) as delay
from expected e, generate_series(1, 300);

select ok(
  bool_and(s.delay >= s.capped * 0.5 and s.delay <= s.capped),
  format('%s, attempt %s: 300 delays all between %s and %s', s.workflow, s.attempt, s.capped * 0.5, s.capped)
)
from samples s
group by s.workflow, s.attempt, s.capped
order by s.workflow, s.attempt;

-- Jitter: the delays spread over the whole band, not one value.
select ok(
  min(extract(epoch from s.delay) / extract(epoch from s.capped)) < 0.55
  and max(extract(epoch from s.delay) / extract(epoch from s.capped)) > 0.95
  and count(distinct s.delay) > 100,
  format('%s: the delays spread over the whole band (jitter)', s.workflow)
)
from samples s
group by s.workflow
order by s.workflow;

-- A workflow without its own row falls back to '*'; the cap holds for any attempt number.
select ok(
  (select bool_and(d between interval '15 seconds' and interval '30 seconds')
   from (select email.backoff_delay('pgtap-no-policy-row', 1) as d from generate_series(1, 100)) s),
  'a workflow without its own policy row uses the default row'
);
select ok(
  (select bool_and(d between interval '30 minutes' and interval '1 hour')
   from (select email.backoff_delay('pgtap-no-policy-row', 1000) as d from generate_series(1, 100)) s),
  'attempt 1000 is capped at max_delay'
);
select throws_ok($$ select email.backoff_delay('pgtap', 0) $$, 'EM006', null, 'attempt 0 raises EM006');
select throws_ok($$ select email.backoff_delay('pgtap', null) $$, 'EM006', null, 'no attempt raises EM006');
select throws_ok(
  $$ insert into email.retry_policies (workflow, base_delay, max_delay) values ('pgtap-bad', interval '1 minute', interval '1 second') $$,
  '23514', null, 'a policy whose max_delay is below its base_delay is refused'
);
select throws_ok(
  $$ insert into email.retry_policies (workflow, max_attempts) values ('pgtap-bad', 0) $$,
  '23514', null, 'a policy without a single attempt is refused'
);

select * from finish();
rollback;
