/**
 * email: who may read and write what.
 *
 * service_role (the worker, operators' tools): everything (it bypasses RLS; table grants below).
 * authenticated end user: reads their own deliveries (user_id = auth.uid(), or the recipient is the
 *   JWT's email claim) and those deliveries' events; nothing else, and never writes.
 * support user (app_metadata.role 'support' or 'admin' in the JWT): reads all deliveries and events,
 *   never payloads or rejected input.
 * anon: nothing.
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
-- Readable by end users and support under the policies below; no end user writes anything.
-- Column grants: request_hash (a sha256 over the payload, which a short verification code would make
-- guessable) is readable by service_role only.
grant select (
  delivery_id, workflow, recipient, user_id, status, attempts, max_attempts, last_error_code, last_error_message,
  queued_at, last_attempted_at, next_attempt_at, lease_expires_at, sent_at, completed_at, provider_message_id,
  provider_response, metadata, created_at, updated_at
) on email.deliveries to authenticated;
grant select on email.delivery_events to authenticated;

create policy deliveries_select_own_or_support on email.deliveries
for select to authenticated
using (
  user_id = (select auth.uid())
  or lower(recipient) = lower((select auth.jwt() ->> 'email'))
  or (select email.is_support())
);

create policy delivery_events_select_visible_delivery on email.delivery_events
for select to authenticated
using (
  (select email.is_support())
  or exists (select from email.deliveries d where d.delivery_id = delivery_events.delivery_id)
);

-- email.delivery_payloads, email.rejected_messages, email.retry_policies, email.transitions and
-- email.statuses have RLS enabled and no policy for anon or authenticated: only service_role reads them.
