-- Structure: schema, tables, columns, keys, indexes, triggers, functions and privileges, so drift shows up.
begin;
select plan(168);

select has_schema('email');

-- Tables, each with RLS enabled.
select has_table('email', t, format('table email.%s exists', t))
from unnest(array['statuses', 'transitions', 'retry_policies', 'failure_rules', 'deliveries', 'delivery_payloads',
  'delivery_events', 'rejected_messages', 'request_hash_key']) t;

select is_empty(
  $$ select c.relname::text from pg_class c
     where c.relnamespace = 'email'::regnamespace and c.relkind in ('r', 'p') and not c.relrowsecurity $$,
  'RLS is enabled on every table in schema email'
);

-- email.deliveries: every column with its type.
select col_type_is('email', 'deliveries', c, t, format('email.deliveries.%s is %s', c, t))
from (values
  ('delivery_id', 'text'), ('workflow', 'text'), ('recipient', 'text'), ('user_id', 'uuid'),
  ('status', 'text'), ('attempts', 'integer'), ('max_attempts', 'integer'),
  ('last_error_code', 'text'), ('last_error_message', 'text'),
  ('queued_at', 'timestamp with time zone'), ('last_attempted_at', 'timestamp with time zone'),
  ('next_attempt_at', 'timestamp with time zone'), ('lease_expires_at', 'timestamp with time zone'),
  ('send_started_at', 'timestamp with time zone'), ('sent_at', 'timestamp with time zone'), ('completed_at', 'timestamp with time zone'),
  ('provider_message_id', 'text'), ('provider_response', 'text'), ('request_hash', 'text'),
  ('metadata', 'jsonb'), ('created_at', 'timestamp with time zone'), ('updated_at', 'timestamp with time zone')
) v(c, t);
select col_is_pk('email', 'deliveries', 'delivery_id', 'delivery_id is the primary key');
select col_default_is('email', 'deliveries', 'status', 'queued'::text, 'a delivery starts queued');
select col_default_is('email', 'deliveries', 'attempts', 0, 'attempts start at 0');
select col_not_null('email', 'deliveries', c, format('email.deliveries.%s is not null', c))
from unnest(array['workflow', 'recipient', 'status', 'attempts', 'max_attempts', 'request_hash', 'metadata']) c;
-- status is one of the states: the transition trigger admits only email.transitions (whose rows reference
-- email.statuses) and inserts that start queued or in_progress (no foreign key: its lock on the status row
-- cost every transition a WAL record, see the lean-lifecycle migration).
insert into email.deliveries (delivery_id, workflow, recipient, max_attempts, request_hash)
values ('pgtap-010-unknown-status', 'pgtap', 'unknown-status@example.com', 5, 'x');
select throws_ok(
  $$ update email.deliveries set status = 'no_such_status' where delivery_id = 'pgtap-010-unknown-status' $$,
  'EM001', 'delivery pgtap-010-unknown-status cannot go from queued to no_such_status',
  'status is one of the states: a status that is not in email.statuses is refused (EM001)'
);
select col_has_check('email', 'deliveries', 'last_error_message', 'last_error_message has a CHECK (length)');

-- The other tables.
select col_type_is('email', 'delivery_events', c, t, format('email.delivery_events.%s is %s', c, t))
from (values
  ('id', 'bigint'), ('delivery_id', 'text'), ('from_status', 'text'), ('to_status', 'text'),
  ('attempt', 'integer'), ('error_code', 'text'), ('error_message', 'text'), ('detail', 'jsonb'),
  ('actor', 'text'), ('created_at', 'timestamp with time zone')
) v(c, t);
select col_is_pk('email', 'delivery_events', array['id', 'created_at'],
  'delivery_events'' primary key is (id, created_at): a partitioned table''s key includes the partition key');
select is_partitioned('email', 'delivery_events', 'delivery_events is partitioned (by week, on created_at)');
select hasnt_fk('email', 'delivery_events', 'no foreign key from the trail: events are written by the audit trigger only');

select col_type_is('email', 'delivery_payloads', c, t, format('email.delivery_payloads.%s is %s', c, t))
from (values ('delivery_id', 'text'), ('payload', 'jsonb'), ('created_at', 'timestamp with time zone')) v(c, t);
select col_is_pk('email', 'delivery_payloads', 'delivery_id', 'delivery_payloads.delivery_id is the primary key');
select fk_ok('email', 'delivery_payloads', 'delivery_id', 'email', 'deliveries', 'delivery_id');

select col_type_is('email', 'retry_policies', c, t, format('email.retry_policies.%s is %s', c, t))
from (values ('workflow', 'text'), ('max_attempts', 'integer'), ('base_delay', 'interval'), ('max_delay', 'interval')) v(c, t);
select col_is_pk('email', 'retry_policies', 'workflow', 'retry_policies.workflow is the primary key');
select results_eq(
  $$ select max_attempts from email.retry_policies where workflow = '*' $$,
  $$ values (5) $$,
  'the default policy row ''*'' allows 5 attempts'
);

select col_is_pk('email', 'transitions', array['from_status', 'to_status'], 'transitions are keyed by (from, to)');
select col_is_pk('email', 'statuses', 'status', 'statuses.status is the primary key');
select set_has(
  $$ select status from email.statuses $$,
  $$ values ('queued'), ('in_progress'), ('retrying'), ('sent'), ('failed'), ('dead_letter') $$,
  'the six states of the lifecycle (later migrations may add terminal ones)'
);
select set_eq(
  $$ select status from email.statuses where terminal and status in ('sent', 'failed', 'dead_letter', 'queued', 'in_progress', 'retrying') $$,
  array['sent', 'failed', 'dead_letter'],
  'sent, failed and dead_letter are the terminal ones of the six'
);

select col_type_is('email', 'rejected_messages', c, t, format('email.rejected_messages.%s is %s', c, t))
from (values
  ('id', 'bigint'), ('reason_code', 'text'), ('reason', 'text'), ('delivery_id', 'text'), ('message_id', 'text'),
  ('raw_body', 'bytea'), ('redacted', 'text[]'), ('body_bytes', 'integer'), ('body_truncated', 'boolean'), ('headers', 'jsonb'),
  ('received_at', 'timestamp with time zone')
) v(c, t);
select col_is_pk('email', 'rejected_messages', 'id', 'rejected_messages.id is the primary key');

-- Indexes, including the partial "what is due" index.
-- Only the indexes something reads (the lean-lifecycle migration): every other one is written on each
-- row version of every delivery.
select hasnt_index('email', 'deliveries', 'deliveries_status_updated_at_idx', 'no (status, updated_at) index: nothing reads it');
select is(
  (select array_agg(c.relname::text order by c.relname) from pg_index i join pg_class c on c.oid = i.indexrelid
   where i.indrelid = 'email.deliveries'::regclass and i.indpred is null),
  array['deliveries_pkey', 'deliveries_queued_at_idx', 'deliveries_recipient_lower_idx'],
  'every row version of a delivery is in three full indexes only (the key, RLS by recipient, the metrics'' window); the rest are partial'
);
select has_index('email', 'deliveries', 'deliveries_due_idx', array['next_attempt_at']);
select has_index('email', 'deliveries', 'deliveries_lease_idx', array['lease_expires_at']);
select has_index('email', 'delivery_events', 'delivery_events_delivery_id_idx', array['delivery_id', 'id']);
select is(
  (select pg_get_expr(i.indpred, i.indrelid) from pg_index i where i.indexrelid = 'email.deliveries_due_idx'::regclass),
  $$(status = ANY (ARRAY['queued'::text, 'retrying'::text]))$$,
  'deliveries_due_idx is partial: only queued and retrying deliveries'
);

\ir fixtures/plan_of.psql
set local enable_seqscan = off;
select matches(
  pg_temp.plan_of($$ select delivery_id from email.deliveries
                     where status in ('queued', 'retrying') and next_attempt_at <= now()
                     order by next_attempt_at limit 10 for update skip locked $$),
  'Index Scan using deliveries_due_idx',
  'claim_due''s query ("which retries are due now") is an index scan of deliveries_due_idx'
);
select matches(
  pg_temp.plan_of($$ select delivery_id from email.deliveries where status = 'in_progress' and lease_expires_at < now()
                     order by lease_expires_at for update skip locked $$),
  'Index Scan using deliveries_lease_idx',
  'the expired-lease query is an index scan of deliveries_lease_idx'
);
select matches(
  pg_temp.plan_of($$ select delivery_id from email.deliveries
                     where status in (select s.status from email.statuses s where s.failing or s.counts_as = 'suppressed')
                       and status in ('retrying', 'failed', 'dead_letter', 'suppressed') and updated_at >= now() - interval '1 day'
                     order by updated_at desc limit 25 $$),
  'Index Scan Backward using deliveries_attention_idx',
  'the dashboard''s "needs a look" query is an index scan of deliveries_attention_idx'
);
reset enable_seqscan;
select is(
  (select pg_get_expr(i.indpred, i.indrelid) from pg_index i where i.indexrelid = 'email.deliveries_attention_idx'::regclass),
  (select format('(status = ANY (ARRAY[%s]))', string_agg(quote_literal(s.status) || '::text', ', ' order by s.position))
   from email.statuses s where s.failing or s.counts_as = 'suppressed'),
  'deliveries_attention_idx is partial on exactly the failing and suppressed statuses of email.statuses'
);

-- Triggers, named so their order is deterministic.
select has_trigger('email', 'deliveries', t, format('trigger %s on email.deliveries', t))
from unnest(array['_050_refuse_removal', '_200_apply_transition', '_500_audit', '_600_erase_payload']) t;
select hasnt_trigger('email', 'deliveries', '_100_touch_updated_at', 'updated_at is kept by _200_apply_transition, not a trigger of its own');
select has_trigger('email', 'delivery_events', t, format('trigger %s on email.delivery_events', t))
from unnest(array['_100_refuse_change', '_110_refuse_truncate']) t;

-- Functions with their signatures and return types.
select has_function('email', f, a, format('function email.%s(%s)', f, array_to_string(a, ', ')))
from (values
  ('record_queued', array['text', 'text', 'text', 'jsonb', 'jsonb', 'uuid']),
  ('mark_in_progress', array['text', 'integer']),
  ('mark_sent', array['text', 'integer', 'text', 'text', 'text']),
  ('record_failure', array['text', 'integer', 'text', 'integer', 'text', 'text', 'text']),
  ('failure_rule', array['integer', 'text', 'text']),
  ('mark_retrying', array['text', 'integer', 'text', 'text']),
  ('mark_failed', array['text', 'integer', 'text', 'text']),
  ('mark_dead_letter', array['text', 'integer', 'text', 'text']),
  ('requeue', array['text', 'text']),
  ('claim_due', array['integer', 'integer']),
  ('reap_expired_leases', array[]::text[]),
  ('renew_lease', array['text', 'integer', 'integer', 'boolean']),
  ('record_rejected', array['text', 'text', 'bytea', 'text', 'text', 'jsonb', 'integer', 'text[]']),
  ('backoff_delay', array['text', 'integer']),
  ('retry_policy', array['text']),
  ('is_support', array[]::text[])
) v(f, a);
select function_returns('email', 'record_queued', array['text', 'text', 'text', 'jsonb', 'jsonb', 'uuid'], 'email.deliveries');
select function_returns('email', 'mark_in_progress', array['text', 'integer'], 'integer');
select function_returns('email', 'mark_sent', array['text', 'integer', 'text', 'text', 'text'], 'email.deliveries');
select function_returns('email', 'record_failure', array['text', 'integer', 'text', 'integer', 'text', 'text', 'text'], 'setof record');
select is(
  (select array_agg(a order by n) from pg_proc p, unnest(p.proargnames) with ordinality u(a, n)
   where p.oid = 'email.record_failure(text, integer, text, integer, text, text, text)'::regprocedure and p.proargmodes[n] = 'i'),
  array['delivery_id', 'attempt', 'message', 'reply_code', 'enhanced_code', 'transport_code', 'relay'],
  'record_failure takes the facts of a failure (and the relay), not a verdict'
);
select function_returns('email', 'requeue', array['text', 'text'], 'email.deliveries');
select function_returns('email', 'claim_due', array['integer', 'integer'], 'setof record');
select function_returns('email', 'reap_expired_leases', array[]::text[], 'integer');
select function_returns('email', 'renew_lease', array['text', 'integer', 'integer', 'boolean'], 'timestamp with time zone');
select function_returns('email', 'backoff_delay', array['text', 'integer'], 'interval');
select is(
  (select array_agg(a order by n) from pg_proc p, unnest(p.proargnames) with ordinality u(a, n)
   where p.oid = 'email.record_queued(text, text, text, jsonb, jsonb, uuid)'::regprocedure),
  array['delivery_id', 'workflow', 'recipient', 'payload', 'metadata', 'user_id'],
  'record_queued has plain parameter names for supabase-js callers'
);
select is(
  (select pronargdefaults from pg_proc where oid = 'email.record_queued(text, text, text, jsonb, jsonb, uuid)'::regprocedure),
  2::int2,
  'record_queued: metadata and user_id have defaults'
);
select is(
  (select array_agg(a order by n) from pg_proc p, unnest(p.proargnames) with ordinality u(a, n)
   where p.oid = 'email.claim_due(integer, integer)'::regprocedure and p.proargmodes[n] = 't'),
  array['delivery_id', 'attempt', 'workflow', 'recipient', 'payload', 'user_id', 'metadata'],
  'claim_due returns what a sender needs'
);

-- security definer only with search_path = '', and every function pins search_path = ''.
select is_empty(
  $$ select p.oid::regprocedure::text from pg_proc p
     where p.pronamespace = 'email'::regnamespace and p.prosecdef
       and not coalesce('search_path=""' = any (p.proconfig), false) $$,
  'no security definer function in schema email without search_path = '''''
);
-- Except the rollups' four arithmetic helpers: immutable SQL that Postgres inlines into its callers
-- (a SET clause would forbid that), so they are planned under their callers' pinned search_path;
-- supabase/tests/265_rollups.test.sql checks they stay immutable, SQL, without SET and not definer.
select is_empty(
  $$ select p.oid::regprocedure::text from pg_proc p
     where p.pronamespace = 'email'::regnamespace
       and not coalesce('search_path=""' = any (p.proconfig), false)
       and p.oid not in ('email.metric_bucket(text, timestamptz)'::regprocedure, 'email.latency_bin(double precision)'::regprocedure,
                         'email.latency_bin_value(smallint)'::regprocedure, 'email.is_attempt_outcome(text)'::regprocedure) $$,
  'every function in schema email has search_path = '''' (but the inlined helpers of the rollups)'
);

-- Execute privileges: the RPCs are for service_role only.
select ok(
  has_function_privilege('service_role', p, 'execute'),
  format('service_role may execute %s', p)
)
from unnest(array[
  'email.record_queued(text, text, text, jsonb, jsonb, uuid)', 'email.mark_in_progress(text, integer)',
  'email.mark_sent(text, integer, text, text, text)', 'email.record_failure(text, integer, text, integer, text, text, text)',
  'email.failure_rule(integer, text, text)', 'email.mark_failed(text, integer, text, text)', 'email.requeue(text, text)',
  'email.claim_due(integer, integer)', 'email.reap_expired_leases()',
  'email.renew_lease(text, integer, integer, boolean)', 'email.record_rejected(text, text, bytea, text, text, jsonb, integer, text[])'
]) p;
-- Only record_failure chooses between retrying and dead_letter: its internals are not service_role's.
select ok(
  not has_function_privilege('service_role', p, 'execute'),
  format('service_role may not execute %s', p)
)
from unnest(array[
  'email.mark_retrying(text, integer, text, text)', 'email.mark_dead_letter(text, integer, text, text)',
  'email._fail(text, text, text, text, timestamptz)'
]) p;
select is_empty(
  $$ select p.oid::regprocedure::text from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
     where p.pronamespace = 'email'::regnamespace and a.grantee = 0 and a.privilege_type = 'EXECUTE' $$,
  'no function in schema email is executable by PUBLIC'
);
select is_empty(
  $$ select p.oid::regprocedure::text from pg_proc p
     where p.pronamespace = 'email'::regnamespace and has_function_privilege('anon', p.oid, 'execute') $$,
  'anon may execute no function in schema email'
);
select is_empty(
  $$ select p.oid::regprocedure::text from pg_proc p
     where p.pronamespace = 'email'::regnamespace and has_function_privilege('authenticated', p.oid, 'execute')
       and p.oid not in ('email.is_support()'::regprocedure, 'email.is_staff()'::regprocedure,
         'email.public_error_category(text)'::regprocedure) $$,
  'authenticated may execute no function in schema email but the read helpers is_support(), is_staff() and public_error_category()'
);

-- Schema and table privileges.
select ok(not has_schema_privilege('anon', 'email', 'usage'), 'anon has no usage on schema email');
select ok(has_schema_privilege('authenticated', 'email', 'usage'), 'authenticated has usage on schema email (for RLS reads)');
select table_privs_are('email', 'deliveries', 'authenticated', array[]::text[], 'authenticated has no table-wide privilege on deliveries (column grants only)');
select table_privs_are('email', 'delivery_events', 'authenticated', array['SELECT'], 'authenticated may only SELECT delivery_events');
select table_privs_are('email', t, 'authenticated', array[]::text[], format('authenticated has no privilege on email.%s', t))
from unnest(array['delivery_payloads', 'rejected_messages', 'retry_policies', 'transitions', 'statuses']) t;
select table_privs_are('email', t, 'anon', array[]::text[], format('anon has no privilege on email.%s', t))
from unnest(array['deliveries', 'delivery_events', 'delivery_payloads', 'rejected_messages', 'retry_policies', 'transitions', 'statuses']) t;
select ok(
  has_table_privilege('service_role', 'email.deliveries', 'select, insert, update, delete')
  and has_table_privilege('service_role', 'email.delivery_payloads', 'select, insert, update, delete'),
  'service_role may read and write deliveries and payloads'
);
select ok(not has_table_privilege('service_role', 'email.deliveries', 'delete'),
  'service_role may not delete deliveries (only the retention job removes history)');

select * from finish();
rollback;
