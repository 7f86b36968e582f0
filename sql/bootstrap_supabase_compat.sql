-- Local Supabase-compat bootstrap for a plain Postgres 15+.
--
-- Creates what a Supabase database already has and our migrations rely on: the API roles (anon,
-- authenticated, service_role with bypassrls, authenticator), the `auth` schema with `uid()`,
-- `jwt()`, `role()` and `email()` reading `request.jwt.claims` exactly as Supabase defines them, and
-- the `extensions` schema. Idempotent, and a no-op on a real Supabase database: every object is only
-- created when it is missing, nothing existing is replaced.

do $$
begin
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
end
$$;

grant anon, authenticated, service_role to authenticator;

create schema if not exists extensions;
create schema if not exists auth;
grant usage on schema extensions to anon, authenticated, service_role;
grant usage on schema auth to anon, authenticated, service_role;

do $$
declare
  f record;
begin
  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb language sql stable as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $f$;
  end if;
  -- auth.uid(), auth.role() and auth.email(): one claim each, read the same way (Supabase's definitions,
  -- the claim's own setting first, then the claims' JSON), cast to the function's type.
  for f in select * from (values ('uid', 'sub', 'uuid'), ('role', 'role', 'text'), ('email', 'email', 'text')) v(name, claim, type)
  loop
    if to_regprocedure(format('auth.%I()', f.name)) is null then
      execute format($create$
        create function auth.%1$I() returns %3$s language sql stable as $f$
          select coalesce(
            nullif(current_setting('request.jwt.claim.%2$s', true), ''),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> %2$L)
          )::%3$s
        $f$ $create$, f.name, f.claim, f.type);
    end if;
  end loop;
end
$$;

grant execute on function auth.jwt(), auth.uid(), auth.role(), auth.email() to anon, authenticated, service_role;
