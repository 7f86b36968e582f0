/**
 * email: who may read and write what.
 *
 * service_role (the worker, operators' tools): everything (it bypasses RLS; table grants below).
 * authenticated end user: reads their own deliveries (user_id = auth.uid(), or the recipient is the
 *   JWT's email claim) and those deliveries' events; nothing else, and never writes.
 * support user (app_metadata.role 'support' or 'admin' in the JWT): the policies here give them what
 *   any end user gets; every delivery and event they read through email_api (the api migration's
 *   staff views), never payloads or rejected input.
 * anon: nothing.
 *
 * Supabase's RLS performance guidance: one policy per way of owning a row, each `to authenticated`,
 * each calling auth.uid() / auth.jwt() once per statement through `(select ...)`, each matched by an
 * index (deliveries_user_id_idx, deliveries_recipient_lower_idx), so listing one's own deliveries is
 * a BitmapOr of two index scans. No policy has a support arm: `... or (select email.is_support())`
 * is not indexable and makes every end user's query scan the whole table (supabase/tests/085).
 */

/** True when the caller's JWT says they are support staff (app_metadata.role support or admin). */
create or replace function email.is_support()
returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce(
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb -> 'app_metadata' ->> 'role') in ('support', 'admin'),
    false
  )
$$;
comment on function email.is_support() is 'Whether the JWT carries app_metadata.role support or admin';
revoke execute on function email.is_support() from public, anon;
grant execute on function email.is_support() to authenticated, service_role;

grant usage on schema email to authenticated, service_role;

revoke all on all tables in schema email from public, anon, authenticated;
grant select, insert, update, delete on all tables in schema email to service_role;
grant usage, select on all sequences in schema email to service_role;
-- Except the request-hash key: nobody but its owner reads it (email._request_hash does, as definer).
revoke all on email.request_hash_key from service_role;
-- Readable by end users and support under the policies below; no end user writes anything.
-- Column grants: request_hash (a keyed hash over the payload) is readable by service_role only.
grant select (
  delivery_id, workflow, recipient, user_id, status, attempts, max_attempts, last_error_code, last_error_message,
  queued_at, last_attempted_at, next_attempt_at, lease_expires_at, sent_at, completed_at, provider_message_id,
  provider_response, metadata, created_at, updated_at
) on email.deliveries to authenticated;
grant select on email.delivery_events to authenticated;

create policy deliveries_select_own_by_user_id on email.deliveries
for select to authenticated
using (user_id = (select auth.uid()));

create policy deliveries_select_own_by_email on email.deliveries
for select to authenticated
using (lower(recipient) = (select lower(auth.jwt() ->> 'email')));

-- The events of the deliveries the caller may see (the policies above apply inside the subquery).
create policy delivery_events_select_own_delivery on email.delivery_events
for select to authenticated
using (exists (select from email.deliveries d where d.delivery_id = delivery_events.delivery_id));

-- email.delivery_payloads, email.rejected_messages, email.retry_policies, email.transitions and
-- email.statuses have RLS enabled and no policy for anon or authenticated: only service_role reads them.
-- email.request_hash_key has RLS enabled, no policy and no grant: only its owner reads it.
