-- email_api: the objects, their security options and who may use them.
begin;
select plan(24);

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

select * from finish();
rollback;
