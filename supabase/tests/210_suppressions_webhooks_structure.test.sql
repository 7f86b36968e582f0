begin;
select plan(26);

select has_table('email', 'suppressions', 'email.suppressions exists');
select has_table('email', 'webhook_endpoints', 'email.webhook_endpoints exists');
select has_table('email', 'webhook_outbox', 'email.webhook_outbox exists');
select col_is_pk('email', 'suppressions', 'address', 'suppressions are keyed by the lower-cased address');
select col_is_unique('email', 'webhook_outbox', array['endpoint_id', 'event_id'], 'one message per endpoint and event');

select ok((select relrowsecurity from pg_class where oid = t::regclass), t || ' has RLS enabled')
from unnest(array['email.suppressions', 'email.webhook_endpoints', 'email.webhook_outbox']) t;
select is((select count(*)::int from pg_policies where schemaname = 'email' and tablename in ('suppressions', 'webhook_endpoints', 'webhook_outbox')),
  0, 'no policy: only service_role (bypassrls) reads or writes them');

select ok(not has_table_privilege(r, 'email.' || t, 'select'), r || ' cannot read email.' || t)
from unnest(array['anon', 'authenticated']) r, unnest(array['suppressions', 'webhook_endpoints', 'webhook_outbox']) t;
select ok(has_table_privilege('service_role', 'email.' || t, 'select, insert, update, delete'), 'service_role uses email.' || t)
from unnest(array['suppressions', 'webhook_endpoints', 'webhook_outbox']) t;

select is(
  (select array_agg(p.oid::regprocedure::text order by 1) from pg_proc p
   where p.pronamespace = 'email'::regnamespace
     and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute'))
     and (p.proname ~ 'suppress|webhook|hard_bounce|normalize_address')),
  null, 'no suppression or webhook function is executable by anon or authenticated');

select has_trigger('email', 'delivery_events', '_700_suppress_hard_bounce', 'hard bounces suppress through a trigger on the trail');
select has_trigger('email', 'delivery_events', '_800_webhook_outbox', 'the outbox is written by a trigger on the trail');
select has_trigger('email', 'deliveries', '_700_suppress_recipient', 'deliveries to suppressed addresses end suppressed');
select has_trigger('email', 'webhook_endpoints', '_050_refuse_private_target',
  'endpoints inside the network are refused by a trigger, whoever writes them');
select ok((select relrowsecurity from pg_class where oid = 'email.webhook_refused_networks'::regclass)
  and not has_table_privilege('authenticated', 'email.webhook_refused_networks', 'select')
  and has_table_privilege('service_role', 'email.webhook_refused_networks', 'select')
  and not has_table_privilege('service_role', 'email.webhook_refused_networks', 'insert'),
  'the refused networks: RLS on, read by service_role (the dispatcher), changed only by a migration');
select ok((select count(*) from email.webhook_refused_networks where '127.0.0.1' <<= network or '169.254.169.254' <<= network
  or '::1' <<= network or '10.0.0.1' <<= network or 'fe80::1' <<= network) = 5,
  'loopback, link-local, private and IPv6 loopback and link-local are listed');

select is((select count(*)::int from pg_proc p where p.pronamespace = 'email'::regnamespace and p.prosecdef
  and p.proname in ('add_suppression', 'remove_suppression', 'claim_webhook_messages', 'record_webhook_result')), 0,
  'the suppression and webhook functions run as the caller (no security definer)');

select * from finish();
rollback;
