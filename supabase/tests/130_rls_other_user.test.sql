-- RLS, another user's story: Bob, signed in, owns one delivery; everything of Ada's (and Carol's) is
-- invisible to him, and indistinguishable from a missing delivery. He put role "support" in his own
-- user_metadata, which users can edit: it makes him nothing. Last, a request with the authenticated
-- role but no JWT claims at all sees nothing.
begin;
select plan(12);

\ir fixtures/rls_deliveries.psql

/** Runs `sql` and returns the SQLSTATE it raised, or null when it did not raise. */
create function pg_temp.sqlstate_of(sql text) returns text language plpgsql as $$
begin
  execute sql;
  return null;
exception when others then
  return sqlstate;
end
$$;

select tests.authenticate_as('bob');

-- The tables
select is_empty(
  $$ select delivery_id from email.deliveries where delivery_id like 'pgtap-080-%' $$,
  'another user: sees none of the deliveries (user_metadata, which users can edit, does not make support)'
);
select is_empty(
  $$ select id from email.delivery_events where delivery_id like 'pgtap-080-%' $$,
  'another user: sees none of their events'
);
select is(
  pg_temp.sqlstate_of($$ update email.deliveries set status = 'sent' where delivery_id = 'pgtap-080-other' $$), '42501',
  'another user: update, permission denied'
);
select throws_ok(
  $$ select * from email.record_failure('pgtap-080-other', 1, 'y', transport_code => 'x') $$, '42501', 'permission denied for function record_failure',
  'another user: record_failure, permission denied'
);

-- email_api
select is(email_api.get_delivery('t-api-ada-1'), null, 'Bob reads Ada''s delivery as null');
select is(email_api.get_delivery('t-api-ada-2'), null, 'Bob reads the delivery addressed to Ada''s email as null');
select is(email_api.get_delivery('t-api-ada-1'), email_api.get_delivery('no-such-delivery'), 'not visible and missing give the same answer');
select is(email_api.get_delivery('t-api-bob') ->> 'delivery_id', 't-api-bob', 'Bob reads his own');
select results_eq($$select delivery_id from email_api.deliveries where workflow = 't-api'$$, array['t-api-bob'], 'Bob lists only his own');
select is((select count(*)::int from email_api.delivery_events where delivery_id like 't-api-ada%'), 0, 'Bob sees none of Ada''s events');
select throws_ok($$select * from email_api.purge_dead_letters('0 seconds', 'x')$$, '42501', null, 'an end user cannot purge');

-- The authenticated role without any JWT claims (no sub, no email) sees nothing, and does not fail.
select tests.reset_authentication();
set local role authenticated;
select is_empty(
  $$ select delivery_id from email.deliveries where delivery_id like 'pgtap-080-%' $$,
  'authenticated without claims: sees nothing'
);

select * from finish();
rollback;
