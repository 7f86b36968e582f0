-- The `postgres` role of a hosted Supabase project, recreated on a throwaway cluster whose superuser is
-- `supabase_admin` (as on hosted Supabase), so `npm test` can apply the migrations and run pgTAP as a
-- user of a hosted project does. Run by that superuser after sql/bootstrap_supabase_compat.sql, in the
-- database the test uses (which supabase_admin owns).
--
-- The attributes and grants follow supabase/postgres's own setup (migrations/db/migrations:
-- 00000000000000-initial-schema.sql, 10000000000000_demote-postgres.sql,
-- 20250605172253_grant_with_admin_to_postgres_16_and_above.sql).

create role postgres login password 'postgres';
alter role postgres nosuperuser createdb createrole login replication bypassrls;
grant pg_read_all_data, pg_signal_backend, pg_monitor to postgres;

do $$
begin
  if current_setting('server_version_num')::int >= 160000 then
    -- From 16 on CREATEROLE alone no longer lets a role grant membership in other roles.
    grant anon, authenticated, service_role to postgres with admin option;
  else
    grant anon, authenticated, service_role to postgres;
  end if;
  execute format('grant all on database %I to postgres', current_database());
end
$$;

-- Extensions: hosted projects come with pgcrypto and uuid-ossp in `extensions`; pgTAP and dblink
-- (untrusted in plain Postgres) are ones supautils lets the hosted `postgres` role create. Here the
-- superuser creates them up front, so the tests' `create extension if not exists` finds them.
create extension if not exists pgcrypto with schema extensions;
create extension if not exists "uuid-ossp" with schema extensions;
create extension if not exists pgtap with schema extensions;
create extension if not exists dblink with schema extensions;

grant usage, create on schema public to postgres;
grant all on schema auth, extensions to postgres;
grant all on all routines in schema auth to postgres;
grant all on all routines in schema extensions to postgres;
