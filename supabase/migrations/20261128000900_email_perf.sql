/**
 * email: performance fixes found by `npm run bench` (docs/performance.md).
 *
 * The lifecycle's small helpers were `language sql` functions with `set search_path = ''`. A SQL
 * function with a SET clause is never inlined, and a SQL function that is not inlined is parsed and
 * planned again on every call (its plan is kept only for the duration of the calling query). The
 * lifecycle calls them on every transition from plpgsql and from triggers (the audit trigger calls
 * _actor() once per event), so a delivery paid for about seven planner runs that bought nothing.
 * pg_stat_user_functions (track_functions = 'all') showed retry_policy at ~0.07 ms, _request_hash
 * at ~0.05 ms and _actor at ~0.03 ms per call, about a quarter of the server time of a lifecycle.
 *
 * The same functions in plpgsql keep their plans for the life of the connection. Signatures,
 * volatility, results and grants are unchanged (create or replace keeps the grants); only the
 * language is different. This migration sorts last on purpose: if an earlier migration redefines one
 * of these helpers, move the change here too, or this file will put the old body back.
 */

/** Who is acting: the email.actor setting, else the JWT's subject, else the database user and application. */
create or replace function email._actor()
returns text
language plpgsql
stable
set search_path = ''
as $$
begin
  return coalesce(
    nullif(current_setting('email.actor', true), ''),
    'user:' || (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'),
    current_user || coalesce('@' || nullif(current_setting('application_name', true), ''), '')
  );
end
$$;
comment on function email._actor() is 'The actor recorded in the audit trail';

/** The retry policy that applies to a workflow: its own row, else the default row '*'. */
create or replace function email.retry_policy(workflow text)
returns email.retry_policies
language plpgsql
stable
set search_path = ''
as $$
declare
  p email.retry_policies;
begin
  select x.* into p
  from email.retry_policies x
  where x.workflow in (retry_policy.workflow, '*')
  order by x.workflow = '*'
  limit 1;
  return p;
end
$$;
comment on function email.retry_policy(text) is 'Retry policy for a workflow (falls back to the ''*'' row)';

/** sha256 over what makes a request the same request: workflow, recipient, user and payload. */
create or replace function email._request_hash(workflow text, recipient text, payload jsonb, user_id uuid)
returns text
language plpgsql
immutable
set search_path = ''
as $$
begin
  return encode(sha256(convert_to(jsonb_build_object(
    'workflow', workflow, 'recipient', lower(recipient), 'payload', payload, 'user_id', user_id
  )::text, 'UTF8')), 'hex');
end
$$;
