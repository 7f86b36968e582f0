begin;
select plan(40);

\ir fixtures/helpers.psql
select tests.create_supabase_user('sam', 'sam@example.com', '{"role": "support"}');

-- The status, its transitions, and one list of statuses
select ok((select terminal from email.statuses where status = 'suppressed'), 'suppressed is a terminal status');
select ok(exists (select from email.transitions where from_status = 'queued' and to_status = 'suppressed'), 'queued -> suppressed is allowed');
select ok(exists (select from email.transitions where from_status = 'retrying' and to_status = 'suppressed'), 'retrying -> suppressed is allowed');
select ok(not exists (select from email.transitions where from_status = 'suppressed'), 'suppressed is never left');
select throws_ok(
  $$ insert into email.deliveries (delivery_id, workflow, recipient, status, max_attempts, request_hash)
     values ('t-sup-unknown-status', 'pgtap', 'x@example.com', 'no_such_status', 5, 'x') $$,
  'EM001', null, 'a delivery cannot start in a status email.statuses does not have'
);
select ok(not exists (select from pg_constraint where conrelid = 'email.deliveries'::regclass and conname = 'deliveries_status_check'), 'no CHECK repeats the list of statuses');

-- Hard bounces: email.failure_rules decides from the facts of a failure (no error-code parsing)
create function pg_temp.hb(reply integer, enhanced text, transport text default null) returns boolean
language sql as $$ select (x.rule).hard_bounce from email.failure_rule(reply, enhanced, transport) x $$;
select ok(pg_temp.hb(550, null), '550 without an enhanced code is a hard bounce');
select ok(pg_temp.hb(550, '5.1.1'), '550 5.1.1 is a hard bounce');
select ok(pg_temp.hb(550, '5.1.1', 'EENVELOPE'), '550 5.1.1 reported with the transport code EENVELOPE (as nodemailer does) is one');
select ok(not pg_temp.hb(450, '4.1.1'), 'a 4xx about the mailbox (4.1.1) is not: it is transient');
select ok(pg_temp.hb(551, null) and pg_temp.hb(553, null), '551 and 553 are hard bounces');
select ok(pg_temp.hb(554, '5.1.0'), 'any reply with enhanced 5.1.x is a hard bounce');
select ok(not pg_temp.hb(550, '5.7.1'), 'a 550 policy refusal (5.7.1) is not a hard bounce');
select ok(not pg_temp.hb(552, null) and not pg_temp.hb(452, '4.2.2'), 'mailbox full and 4xx are not');
select ok(not pg_temp.hb(null, null, 'ECONNECTION') and not pg_temp.hb(null, null), 'connection errors and no facts are not');

-- Operator suppression, case-insensitive
select is((email.add_suppression('Ada <Ada.Lovelace@Example.COM>', 'asked us to stop')).address, 'ada.lovelace@example.com',
  'add_suppression stores the bare lower-cased address');
select throws_ok($$select email.add_suppression('not an address', 'x')$$, 'EM006', null, 'a non-address is refused with EM006');
select throws_ok($$select email.add_suppression('x@example.com', ' ')$$, 'EM006', null, 'a suppression needs a reason');
select ok(email.is_suppressed('ADA.LOVELACE@example.com'), 'is_suppressed compares case-insensitively');

-- A delivery to a suppressed address ends suppressed without an attempt, payload never stored
select lives_ok($$select email.record_queued('t200-sup-1', 'invite', 'ADA.lovelace@EXAMPLE.com', '{"link": "https://x.test/secret"}')$$,
  'record_queued accepts a delivery to a suppressed address');
select is((select status from email.deliveries where delivery_id = 't200-sup-1'), 'suppressed', 'it ends suppressed at once');
select is((email.record_queued('t200-sup-1', 'invite', 'ADA.lovelace@EXAMPLE.com', '{"link": "https://x.test/secret"}')).status,
  'suppressed', 'record_queued returns the row as it is now: suppressed, not queued');
select is((select (email.record_queued('t200-sup-new', 'invite', 'ada.lovelace@example.com', '{}')).status), 'suppressed',
  'a new delivery to a suppressed address is returned suppressed by record_queued itself');
select is((select array_agg(to_status order by id) from email.delivery_events where delivery_id = 't200-sup-1'),
  array['queued', 'suppressed'], 'the trail shows queued then suppressed');
select is((select detail ->> 'error_code' from email.delivery_events where delivery_id = 't200-sup-1' and to_status = 'suppressed'),
  'address_suppressed', 'the suppressed event says why');
select ok(not exists (select from email.delivery_payloads where delivery_id = 't200-sup-1'), 'its payload was never stored');
select is(email.mark_in_progress('t200-sup-1'), null, 'mark_in_progress does not claim it');
select is((select attempts from email.deliveries where delivery_id = 't200-sup-1'), 0, 'no attempt was made');
select ok(not exists (select from email.claim_due(1000) where delivery_id = 't200-sup-1'), 'claim_due never returns it');

-- A hard bounce suppresses the address; its other open deliveries end suppressed
select email.record_queued('t200-hb-1', 'invite', 'Grace@Example.com', '{}');
select email.record_queued('t200-hb-2', 'invite', 'grace@example.com', '{"code": "123456"}');
select email.mark_in_progress('t200-hb-1');
select is((select status from email.record_failure('t200-hb-1', 1, '550 5.1.1 no such user', 550, '5.1.1')), 'failed',
  'a hard bounce fails the delivery');
select is((select source || ' ' || delivery_id || ' ' || error_code from email.suppressions where address = 'grace@example.com'),
  'hard_bounce t200-hb-1 smtp_550_5.1.1', 'and suppresses the address with the delivery and code');
select is((select status from email.deliveries where delivery_id = 't200-hb-2'), 'suppressed', 'the address''s queued delivery ends suppressed');
select ok(not exists (select from email.delivery_payloads where delivery_id = 't200-hb-2'), 'and its payload is erased');

-- Other failures do not
select email.record_queued('t200-soft-1', 'invite', 'linus@example.com', '{}');
select email.mark_in_progress('t200-soft-1');
select email.record_failure('t200-soft-1', 1, 'policy', 550, '5.7.1');
select email.record_queued('t200-soft-2', 'invite', 'ken@example.com', '{}');
select email.mark_in_progress('t200-soft-2');
select email.record_failure('t200-soft-2', 1, 'try later', 451);
select ok(not email.is_suppressed('linus@example.com') and not email.is_suppressed('ken@example.com'),
  'a policy refusal and a transient failure suppress nothing');

-- Suppressing an address ends its retrying deliveries too
select email.add_suppression('KEN@example.com', 'complaint');
select is((select status from email.deliveries where delivery_id = 't200-soft-2'), 'suppressed', 'a retrying delivery ends suppressed');

-- Removing the suppression lets later deliveries through
select ok(email.remove_suppression('Ada.Lovelace@example.com'), 'remove_suppression is true when the address was suppressed');
select ok(not email.remove_suppression('ada.lovelace@example.com'), 'and false the second time');
select email.record_queued('t200-sup-2', 'invite', 'ada.lovelace@example.com', '{}');
select is(email.mark_in_progress('t200-sup-2'), 1, 'a later delivery to the address is claimed normally');

-- service_role only: not even support staff read or change the list
select tests.authenticate_as('sam');
select throws_ok($$select * from email.suppressions$$, '42501', null, 'support users cannot read the suppression list');
select throws_ok($$select email.add_suppression('x@example.com', 'x')$$, '42501', null, 'nor call add_suppression');
select tests.reset_authentication();

select * from finish();
rollback;
