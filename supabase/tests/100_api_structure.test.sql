-- The structure of access: email_api's objects, their security options and who may use them; the email
-- tables' privileges and RLS policies. What each actor can do with them is told in 110-150 (one file
-- per actor).
begin;
select plan(41);

select has_schema('email_api');
select has_view('email_api', 'deliveries', 'email_api.deliveries exists');
select has_view('email_api', 'delivery_events', 'email_api.delivery_events exists');
select ok(
  (select c.reloptions @> array['security_invoker=true'] from pg_class c where c.oid = 'email_api.deliveries'::regclass),
  'email_api.deliveries runs with the caller''s privileges (security_invoker)'
);
select ok(
  (select c.reloptions @> array['security_invoker=true'] from pg_class c where c.oid = 'email_api.delivery_events'::regclass),
  'email_api.delivery_events runs with the caller''s privileges (security_invoker)'
);
select hasnt_column('email_api', 'deliveries', 'request_hash', 'the API does not expose request hashes');
select hasnt_column('email_api', 'deliveries', 'payload', 'the API does not expose payloads');

select schema_privs_are('email_api', 'anon', array['USAGE']);
select schema_privs_are('email_api', 'authenticated', array['USAGE']);
select schema_privs_are('email_api', 'service_role', array['USAGE']);

select table_privs_are('email_api', 'deliveries', 'anon', array[]::text[]);
select table_privs_are('email_api', 'deliveries', 'authenticated', array['SELECT']);
select table_privs_are('email_api', 'delivery_events', 'authenticated', array['SELECT']);
select table_privs_are('email_api', 'deliveries', 'service_role', array['SELECT']);

select function_privs_are('email_api', 'get_delivery', array['text'], 'anon', array[]::text[]);
select function_privs_are('email_api', 'get_delivery', array['text'], 'authenticated', array['EXECUTE']);
select function_privs_are('email_api', 'metrics', array['timestamp with time zone', 'timestamp with time zone', 'text'], 'anon', array[]::text[]);
select function_privs_are('email_api', 'metrics', array['timestamp with time zone', 'timestamp with time zone', 'text'], 'authenticated', array['EXECUTE']);
select function_privs_are('email_api', 'requeue', array['text[]', 'text', 'text'], 'authenticated', array[]::text[]);
select function_privs_are('email_api', 'requeue_dead_letters', array['text', 'timestamp with time zone', 'text', 'text'], 'authenticated', array[]::text[]);
select function_privs_are('email_api', 'purge_dead_letters', array['interval', 'text', 'text'], 'authenticated', array[]::text[]);
select function_privs_are('email_api', 'purge_dead_letters', array['interval', 'text', 'text'], 'service_role', array['EXECUTE']);

select is_definer('email_api', 'metrics', array['timestamp with time zone', 'timestamp with time zone', 'text'],
  'metrics is security definer (it checks the caller itself)');
select ok(
  (select p.proconfig @> array['search_path=""'] from pg_proc p where p.oid = 'email_api.metrics(timestamptz, timestamptz, text)'::regprocedure),
  'the security definer metrics function pins an empty search_path'
);

-- The email tables, table by table: which role may do what (privileges), the policies that apply.
select table_privs_are('email', 'deliveries', 'service_role', array['SELECT', 'INSERT', 'UPDATE'],
  'service_role: select, insert, update on email.deliveries (no delete: only the retention job removes history)');
select table_privs_are('email', t, 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
  format('service_role: select, insert, update, delete on email.%s', t))
from unnest(array['delivery_events', 'delivery_payloads', 'rejected_messages', 'retry_policies',
  'transitions', 'statuses']) t;
select policies_are('email', 'deliveries', array['deliveries_select_own_by_user_id', 'deliveries_select_own_by_email'],
  'deliveries: one select policy per way of owning a delivery');
select policy_cmd_is('email', 'deliveries', p, 'select', format('deliveries: %s is for select', p))
from unnest(array['deliveries_select_own_by_user_id', 'deliveries_select_own_by_email']) p;
select policy_roles_are('email', 'deliveries', p, array['authenticated'], format('deliveries: %s is for authenticated only', p))
from unnest(array['deliveries_select_own_by_user_id', 'deliveries_select_own_by_email']) p;
select policies_are('email', 'delivery_events', array['delivery_events_select_own_delivery'],
  'delivery_events: only the select policy');
select policy_cmd_is('email', 'delivery_events', 'delivery_events_select_own_delivery', 'select', 'delivery_events: the policy is for select');
select policy_roles_are('email', 'delivery_events', 'delivery_events_select_own_delivery', array['authenticated']);
select is_empty(
  $$ select tablename::text from pg_policies
     where schemaname = 'email' and tablename in ('delivery_payloads', 'rejected_messages', 'retry_policies', 'transitions', 'statuses') $$,
  'no policy on payloads, rejected messages, policies, transitions or statuses: nobody but service_role reads them'
);
select ok(
  (select rolbypassrls from pg_roles where rolname = 'service_role')
  and not (select rolbypassrls from pg_roles where rolname = 'authenticated')
  and not (select rolbypassrls from pg_roles where rolname = 'anon'),
  'only service_role bypasses RLS'
);

select * from finish();
rollback;
