-- The pgTAP actor helpers (fixtures/helpers.psql) do what the RLS stories rely on: each switch sets
-- the role and the claims Supabase would, and a misspelt actor fails instead of acting as nobody.
begin;
select plan(12);

\ir fixtures/helpers.psql
select tests.create_supabase_user('ada', 'ada@example.com', '{"role": "support"}', '{"nickname": "A"}');

select tests.authenticate_as('ada');
select is(current_user::text, 'authenticated', 'authenticate_as: role authenticated');
select is(auth.uid(), tests.get_supabase_uid('ada'), 'authenticate_as: the JWT''s sub is the user''s id');
select is(
  auth.jwt() - array['iat', 'exp', 'sub'],
  '{"iss": "supabase", "aud": "authenticated", "role": "authenticated", "email": "ada@example.com", "aal": "aal1",
    "app_metadata": {"provider": "email", "providers": ["email"], "role": "support"},
    "user_metadata": {"nickname": "A"}}'::jsonb,
  'authenticate_as: the claims of a Supabase access token'
);
select ok((auth.jwt() ->> 'exp')::bigint > (auth.jwt() ->> 'iat')::bigint, 'authenticate_as: the token expires after it was issued');

select tests.authenticate_as_service_role();
select is(current_user::text, 'service_role', 'authenticate_as_service_role: role service_role');
select is(auth.jwt() ->> 'role', 'service_role', 'authenticate_as_service_role: the service key''s role claim, no user');

select tests.clear_authentication();
select is(current_user::text, 'anon', 'clear_authentication: role anon');
select is(auth.uid(), null, 'clear_authentication: no user');

select tests.reset_authentication();
select is(current_user::text, session_user::text, 'reset_authentication: back to the test''s own role');
select is(nullif(current_setting('request.jwt.claims', true), ''), null, 'reset_authentication: no claims');

select throws_ok($$select tests.authenticate_as('adda')$$, 'P0001', 'tests.authenticate_as: no user named adda',
  'authenticate_as a user nobody created fails');
select throws_ok($$select tests.get_supabase_uid('adda')$$, 'P0001', 'tests.get_supabase_uid: no user named adda',
  'get_supabase_uid of a user nobody created fails');

select * from finish();
rollback;
