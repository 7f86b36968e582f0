/**
 * email_api: what end users, support staff and operators' tools may call through PostgREST, and the
 * dead-letter processing it needs on the lifecycle side.
 *
 * Lifecycle side (schema email):
 * - a new terminal status `purged` (dead_letter -> purged): a dead letter whose payload was erased by
 *   an operator or by the retention policy. Deliveries are never deleted (their audit trail is
 *   append-only and references them), so a purge keeps the row and the trail and erases the payload;
 *   the dead-letter queue no longer counts it and nothing can requeue it;
 * - email.settings: the dead-letter retention used by a purge that names no age (30 days by default),
 *   and the retention of rejected input (14 days), which email.purge_rejected_messages applies after
 *   every rejection;
 * - email.requeue_dead_letters: requeue by filter (workflow, dead since), through email.requeue;
 * - email.purge_dead_letters: dead_letter -> purged for dead letters older than the retention.
 *   Both write one audit event per delivery with the actor (email.actor) and the reason.
 *
 * API side (schema email_api, listed in supabase/config.toml [api] schemas):
 * - views deliveries and delivery_events with security_invoker: an end user sees their own deliveries
 *   (RLS) with status, times, attempts and a public error category; support staff and service_role
 *   see all (through the staff views) with actors, reasons and SMTP replies; anon nothing; nobody
 *   sees payloads or request hashes;
 * - get_delivery(delivery_id): the delivery and its timeline as one document, without internals for
 *   an end user; null when it does not exist or the caller may not see it, so the two cannot be told
 *   apart;
 * - metrics(since, until, workflow): for support staff and service_role only (42501 for others);
 * - requeue, requeue_dead_letters, purge_dead_letters: service_role only (the CLI through PostgREST).
 */

-- ---------------------------------------------------------------------------------------------
-- Lifecycle side: the purged status
-- ---------------------------------------------------------------------------------------------

insert into email.statuses (status, terminal, waiting, failing, counts_as, position, description) values
  ('purged', true, false, false, 'dead_letter', 80, 'a dead letter whose payload was erased by an operator or the retention policy; kept for the record');

insert into email.transitions (from_status, to_status, description) values
  ('dead_letter', 'purged', 'an operator or the retention policy purges it: the payload is erased');

-- The payload is erased when a delivery ends sent, failed or purged (dead letters keep it for a requeue;
-- suppressed ones erase it themselves). A trigger's WHEN cannot read a table, so the statuses are literal.
drop trigger _600_erase_payload on email.deliveries;
create trigger _600_erase_payload
after update of status on email.deliveries
for each row when (new.status in ('sent', 'failed', 'purged') and old.status is distinct from new.status)
execute function email.tg_deliveries__erase_payload();

-- What the metrics read, in the index only (queued_at window, then the columns they aggregate).
create index deliveries_queued_at_idx on email.deliveries (queued_at)
  include (workflow, status, attempts, last_error_code, sent_at);
-- The dead-letter queue: its size and age per workflow, requeue by filter and purge by age.
create index deliveries_dead_letter_idx on email.deliveries (completed_at)
  include (workflow) where status = 'dead_letter';

-- ---------------------------------------------------------------------------------------------
-- Lifecycle side: settings
-- ---------------------------------------------------------------------------------------------

create table email.settings (
  singleton boolean primary key default true check (singleton),
  dead_letter_retention interval not null default interval '30 days'
    constraint settings_dead_letter_retention_positive check (dead_letter_retention > interval '0'),
  rejected_message_retention interval not null default interval '14 days'
    constraint settings_rejected_message_retention_positive check (rejected_message_retention > interval '0'),
  updated_at timestamptz not null default now()
);
alter table email.settings enable row level security;
comment on table email.settings is 'Operational settings (one row): dead_letter_retention is how long a dead letter keeps its payload before a purge';
comment on column email.settings.dead_letter_retention is 'Age (since dead-lettered) after which email.purge_dead_letters(null, reason) purges a dead letter';
comment on column email.settings.rejected_message_retention is 'Age after which a rejected message is deleted (email.purge_rejected_messages, run on every rejection)';

insert into email.settings default values;
grant select, update on email.settings to service_role;

-- ---------------------------------------------------------------------------------------------
-- Lifecycle side: retention of rejected input
-- ---------------------------------------------------------------------------------------------

/**
 * Deletes rejected messages received longer ago than `older_than` (null: the retention in
 * email.settings); returns how many. Rejected input is kept for debugging, not for ever: even with
 * its secrets redacted it holds addresses and whatever a publisher sent. The trigger below runs it
 * after every rejection, so the retention holds without a schedule; a pg_cron job covers quiet
 * periods (sql/schedule_sweep.sql).
 */
create or replace function email.purge_rejected_messages(older_than interval default null)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  keep interval := coalesce(older_than, (select s.rejected_message_retention from email.settings s));
  n integer;
begin
  if keep is null or keep < interval '0' then
    raise exception 'older_than must not be negative, not %', keep using errcode = 'EM006';
  end if;
  delete from email.rejected_messages r where r.received_at < now() - keep;
  get diagnostics n = row_count;
  return n;
end
$$;
comment on function email.purge_rejected_messages(interval) is 'Delete rejected messages older than older_than (null: email.settings.rejected_message_retention); returns the count';
revoke execute on function email.purge_rejected_messages(interval) from public, anon, authenticated;
grant execute on function email.purge_rejected_messages(interval) to service_role;

/** After a rejection is stored: purge the rejected messages past their retention. */
create or replace function email.tg_rejected_messages__purge_expired()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform email.purge_rejected_messages(null);
  return null;
end
$$;
revoke execute on function email.tg_rejected_messages__purge_expired() from public, anon, authenticated;

create trigger _900_purge_expired
after insert on email.rejected_messages
for each statement execute function email.tg_rejected_messages__purge_expired();

-- ---------------------------------------------------------------------------------------------
-- Lifecycle side: dead-letter processing
-- ---------------------------------------------------------------------------------------------

/**
 * Requeues the dead letters that match the filter (a workflow, dead-lettered at or after `since`;
 * null matches all) through email.requeue, one audit event each with the reason; returns them.
 * Rows another transaction holds are skipped, so it never waits on the worker.
 */
create or replace function email.requeue_dead_letters(
  workflow text default null,
  since timestamptz default null,
  reason text default null
)
returns setof email.deliveries
language plpgsql
volatile
set search_path = ''
as $$
declare
  id text;
begin
  if coalesce(btrim(reason), '') = '' then
    raise exception 'a requeue needs a reason' using errcode = 'EM006';
  end if;
  for id in
    select x.delivery_id from email.deliveries x
    where x.status = 'dead_letter'
      and (requeue_dead_letters.workflow is null or x.workflow = requeue_dead_letters.workflow)
      and (requeue_dead_letters.since is null or x.completed_at >= requeue_dead_letters.since)
    order by x.completed_at, x.delivery_id
    for update skip locked
  loop
    return next email.requeue(id, reason);
  end loop;
end
$$;
comment on function email.requeue_dead_letters(text, timestamptz, text) is 'Requeue dead letters by workflow and dead-since (null: all) through email.requeue';
revoke execute on function email.requeue_dead_letters(text, timestamptz, text) from public;
grant execute on function email.requeue_dead_letters(text, timestamptz, text) to service_role;

/**
 * Purges dead letters that have been dead for longer than `older_than` (null: the retention in
 * email.settings): dead_letter -> purged, which erases the payload (trigger _600_erase_payload) and
 * writes one audit event each with the actor and {reason, older_than}. Returns the purged rows.
 */
create or replace function email.purge_dead_letters(older_than interval, reason text)
returns setof email.deliveries
language plpgsql
volatile
set search_path = ''
as $$
declare
  keep interval := coalesce(older_than, (select s.dead_letter_retention from email.settings s));
  id text;
  d email.deliveries;
begin
  if coalesce(btrim(reason), '') = '' then
    raise exception 'a purge needs a reason' using errcode = 'EM006';
  end if;
  if keep is null or keep < interval '0' then
    raise exception 'older_than must not be negative, not %', keep using errcode = 'EM006';
  end if;
  for id in
    select x.delivery_id from email.deliveries x
    where x.status = 'dead_letter' and x.completed_at < now() - keep
    order by x.completed_at, x.delivery_id
    for update skip locked
  loop
    perform email._set_event_detail(jsonb_build_object('reason', left(reason, 500), 'older_than', keep::text));
    update email.deliveries x set status = 'purged' where x.delivery_id = id returning x.* into d;
    return next d;
  end loop;
end
$$;
comment on function email.purge_dead_letters(interval, text) is 'dead_letter -> purged (payload erased) for dead letters older than older_than (null: email.settings)';
revoke execute on function email.purge_dead_letters(interval, text) from public;
grant execute on function email.purge_dead_letters(interval, text) to service_role;

/**
 * True when the caller reads every delivery with its internals (actors, reasons, SMTP replies): support
 * staff (JWT app_metadata.role support or admin) and roles that bypass RLS anyway (service_role, or a
 * superuser connecting directly). Works inside security definer functions: it reads the SET ROLE of
 * the session (as PostgREST sets it), else the login role.
 */
create or replace function email.is_staff()
returns boolean
language plpgsql
stable
set search_path = ''
as $$
declare
  caller text := coalesce(nullif(pg_catalog.current_setting('role', true), 'none'), session_user);
begin
  return email.is_support()
    or exists (select from pg_catalog.pg_roles r where r.rolname = caller and (r.rolsuper or r.rolbypassrls));
end
$$;
comment on function email.is_staff() is 'Whether the caller is support staff or bypasses RLS: sees every delivery, actors and reasons';
revoke execute on function email.is_staff() from public, anon;
grant execute on function email.is_staff() to authenticated, service_role;

/** Raises 42501 unless the caller is support staff or a role that bypasses RLS (email.is_staff). */
create or replace function email._require_support_or_service()
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if not email.is_staff() then
    raise exception 'only support staff and service_role may read email metrics' using errcode = '42501';
  end if;
end
$$;
comment on function email._require_support_or_service() is 'Raises 42501 unless the caller is support staff or bypasses RLS';
revoke execute on function email._require_support_or_service() from public;

/**
 * What an end user may know about why a delivery did not go out, from its error code: `suppressed`
 * (the address is on the suppression list), `invalid_message` (the email could not be built),
 * `rejected` (the receiving side refused it: an SMTP 5xx) or `temporary` (anything else: timeouts,
 * 4xx, connection errors, an attempt that did not report). The code itself, the SMTP reply text,
 * actors and reasons stay with support staff.
 */
create or replace function email.public_error_category(error_code text)
returns text
language plpgsql
immutable
set search_path = ''
as $$
begin
  return case
    when error_code is null then null
    when error_code = 'address_suppressed' then 'suppressed'
    when error_code in ('render_failed', 'header_injection') then 'invalid_message'
    when error_code like 'smtp\_5%' then 'rejected'
    else 'temporary'
  end;
end
$$;
comment on function email.public_error_category(text) is 'The public category of an error code: suppressed, invalid_message, rejected or temporary';
revoke execute on function email.public_error_category(text) from public, anon;
grant execute on function email.public_error_category(text) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- API schema
-- ---------------------------------------------------------------------------------------------

create schema if not exists email_api;
comment on schema email_api is 'Email delivery API exposed through PostgREST: read under the caller''s RLS; operators'' actions for service_role';

-- Postgres grants EXECUTE to PUBLIC on every new function (a per-schema default cannot take that
-- back), so each function below revokes it and grants execute to exactly the roles that need it.
alter default privileges in schema email_api revoke all on tables from anon, authenticated;
-- What Supabase needs for a custom exposed schema; each object below is granted on its own.
grant usage on schema email_api to anon, authenticated, service_role;

-- Staff views (schema email, not exposed): every row with its internals for email.is_staff() callers,
-- nothing for anyone else. They run as their owner (the migrations' role, which owns the tables and
-- so is not subject to their RLS): support staff see every row without a support arm in the RLS
-- policies, which would make every end user's query a scan of the whole table (see the rls migration).
-- Only the email_api views below read them.
create view email._staff_deliveries as
select d.*, email.public_error_category(d.last_error_code) as error_category
from email.deliveries d
where (select email.is_staff());
comment on view email._staff_deliveries is 'Every delivery for support staff and service_role, none for others (runs as its owner, read by email_api.deliveries)';
revoke all on email._staff_deliveries from public, anon;
grant select on email._staff_deliveries to authenticated, service_role;

create view email._staff_delivery_events as
select e.*, email.public_error_category(e.error_code) as error_category
from email.delivery_events e
where (select email.is_staff());
comment on view email._staff_delivery_events is 'Every audit event for support staff and service_role, none for others (runs as its owner, read by email_api.delivery_events)';
revoke all on email._staff_delivery_events from public, anon;
grant select on email._staff_delivery_events to authenticated, service_role;

/**
 * The deliveries the caller may see: support staff and service_role every delivery with its
 * internals (last error code and message, SMTP reply, metadata); an end user their own deliveries
 * (the RLS policies of email.deliveries) with status, times, attempts and error_category only.
 * Two branches, of which exactly one runs (a one-time filter on email.is_staff()), so an end user's
 * listing is an index scan (supabase/tests/085). No payloads and no request hashes, for anyone.
 */
create view email_api.deliveries with (security_invoker = true) as
select
  s.delivery_id, s.workflow, s.recipient, s.user_id, s.status, s.attempts, s.max_attempts, s.error_category,
  s.last_error_code, s.last_error_message, s.queued_at, s.last_attempted_at, s.next_attempt_at, s.sent_at,
  s.completed_at, s.provider_message_id, s.provider_response, s.metadata, s.created_at, s.updated_at
from email._staff_deliveries s
union all
select
  d.delivery_id, d.workflow, d.recipient, d.user_id, d.status, d.attempts, d.max_attempts,
  email.public_error_category(d.last_error_code),
  null, null, d.queued_at, d.last_attempted_at, d.next_attempt_at, d.sent_at,
  d.completed_at, null, null, null, d.created_at, d.updated_at
from email.deliveries d
where not (select email.is_staff());
comment on view email_api.deliveries is 'Deliveries the caller may see (own under RLS; all for support): internals for support only, never payloads or request hashes';
grant select on email_api.deliveries to authenticated, service_role;

/**
 * The audit trail of the deliveries the caller may see: support staff and service_role every event
 * with its actor, error and detail (requeue reasons, SMTP replies); an end user the events of their
 * own deliveries with status, attempt, time and error_category only. The end users' branch names its
 * deliveries explicitly (`delivery_id in (...)`), so the join starts from their few deliveries and
 * reads the events by index instead of checking the policy on every event.
 */
create view email_api.delivery_events with (security_invoker = true) as
select
  s.id, s.delivery_id, s.from_status, s.to_status, s.attempt, s.error_category,
  s.error_code, s.error_message, s.detail, s.actor, s.created_at
from email._staff_delivery_events s
union all
select
  e.id, e.delivery_id, e.from_status, e.to_status, e.attempt, email.public_error_category(e.error_code),
  null, null, null, null, e.created_at
from email.delivery_events e
where not (select email.is_staff())
  and e.delivery_id in (select d.delivery_id from email.deliveries d);
comment on view email_api.delivery_events is 'Audit trail of the deliveries the caller may see: actors, reasons and errors for support only';
grant select on email_api.delivery_events to authenticated, service_role;

/**
 * The delivery and its timeline (events oldest first) as one document, read under the caller's RLS.
 * Null when the delivery does not exist or the caller may not see it: the two are indistinguishable.
 * For an end user the document has no internal keys at all (error codes and messages, SMTP replies,
 * metadata, actors, details): status, times, attempts and error_category.
 */
create or replace function email_api.get_delivery(delivery_id text)
returns jsonb
language sql
stable
set search_path = ''
as $$
  with doc as (
    select to_jsonb(d) || jsonb_build_object('events', coalesce((
      select jsonb_agg(
        case when staff.yes then to_jsonb(e) else to_jsonb(e) - array['error_code', 'error_message', 'detail', 'actor'] end
          - 'delivery_id' order by e.id)
      from email_api.delivery_events e
      where e.delivery_id = d.delivery_id
    ), '[]'::jsonb)) as doc
    from email_api.deliveries d, (select email.is_staff() as yes) staff
    where d.delivery_id = get_delivery.delivery_id
  )
  select case when (select email.is_staff()) then doc.doc
    else doc.doc - array['last_error_code', 'last_error_message', 'provider_message_id', 'provider_response', 'metadata'] end
  from doc
$$;
comment on function email_api.get_delivery(text) is 'A delivery and its event timeline as JSON (internals for support only); null when missing or not visible to the caller';
revoke execute on function email_api.get_delivery(text) from public;
grant execute on function email_api.get_delivery(text) to authenticated, service_role;

/**
 * Delivery metrics over the deliveries queued in [since, until), per workflow and in total:
 * - total and by_status (counts per current status);
 * - success_rate: sent / completed, where completed counts the terminal statuses of email.statuses
 *   (sent, failed, dead_letter, suppressed, purged; null when none);
 * - avg_attempts: mean attempts of the completed deliveries;
 * - latency_ms p50/p95/p99: from queued_at to sent_at, over the sent ones;
 * - errors: per workflow and last error code, how many deliveries and how they ended;
 * - dead_letter_queue: now, regardless of the window: size and age of the oldest dead letter.
 * Support staff and service_role only (42501 otherwise). Security definer so it reads the table
 * without per-row RLS; the caller is checked first. Served from the covering index
 * deliveries_queued_at_idx and the partial index deliveries_dead_letter_idx; work_mem is raised
 * for the call so a month of deliveries sorts in memory.
 */
create or replace function email_api.metrics(
  since timestamptz default now() - interval '24 hours',
  until timestamptz default now(),
  workflow text default null
)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
set work_mem = '64MB'
as $$
declare
  result jsonb;
begin
  perform email._require_support_or_service();
  if since is null or until is null or since > until then
    raise exception 'the window must have since <= until, not % .. %', since, until using errcode = 'EM006';
  end if;

  with w as materialized (
    -- collate "C": grouping sorts by workflow, and byte order sorts several times faster
    select d.workflow collate "C" as workflow, d.status collate "C" as status, d.attempts, d.last_error_code,
      d.queued_at, d.sent_at
    from email.deliveries d
    where d.queued_at >= metrics.since and d.queued_at < metrics.until
      and (metrics.workflow is null or d.workflow = metrics.workflow)
  ),
  per_workflow as (
    select
      grouping(w.workflow) = 1 as is_total,
      w.workflow,
      count(*) as total,
      count(*) filter (where s.terminal) as completed,
      count(*) filter (where w.status = 'sent') as sent,
      avg(w.attempts) filter (where s.terminal) as avg_attempts,
      percentile_cont(array[0.5, 0.95, 0.99]) within group (order by extract(epoch from w.sent_at - w.queued_at) * 1000)
        filter (where w.status = 'sent') as latency
    from w
    join email.statuses s on s.status = w.status
    group by grouping sets ((w.workflow), ())
  ),
  per_status as (
    select s.is_total, s.workflow, jsonb_object_agg(s.status, s.n order by s.status) as by_status
    from (
      select grouping(w.workflow) = 1 as is_total, w.workflow, w.status, count(*) as n
      from w
      group by grouping sets ((w.workflow, w.status), (w.status))
    ) s
    group by s.is_total, s.workflow
  ),
  summaries as (
    select
      p.is_total,
      jsonb_build_object(
        'workflow', p.workflow,
        'total', p.total,
        'by_status', coalesce((
          select ps.by_status from per_status ps
          where ps.is_total = p.is_total and ps.workflow is not distinct from p.workflow
        ), '{}'::jsonb),
        'completed', p.completed,
        'success_rate', case when p.completed > 0 then round(p.sent::numeric / p.completed, 4) end,
        'avg_attempts', round(p.avg_attempts, 2),
        'latency_ms', jsonb_build_object(
          'p50', round(p.latency[1]::numeric, 1),
          'p95', round(p.latency[2]::numeric, 1),
          'p99', round(p.latency[3]::numeric, 1))
      ) as doc
    from per_workflow p
  ),
  errors as (
    select jsonb_agg(jsonb_build_object(
      'workflow', e.workflow, 'error_code', e.last_error_code, 'deliveries', e.n,
      'sent', e.sent, 'failed', e.failed, 'dead_letter', e.dead_letter) order by e.n desc, e.workflow, e.last_error_code) as doc
    from (
      select w.workflow, w.last_error_code, count(*) as n,
        count(*) filter (where s.counts_as = 'sent') as sent,
        count(*) filter (where s.counts_as = 'failed') as failed,
        count(*) filter (where s.counts_as = 'dead_letter') as dead_letter
      from w
      join email.statuses s on s.status = w.status
      where w.last_error_code is not null
      group by w.workflow, w.last_error_code
    ) e
  ),
  dlq as (
    select
      grouping(d.workflow) = 1 as is_total,
      jsonb_build_object(
        'workflow', d.workflow,
        'size', count(*),
        'oldest_at', min(d.completed_at),
        'oldest_age_seconds', floor(extract(epoch from now() - min(d.completed_at)))
      ) as doc
    from email.deliveries d
    where d.status = 'dead_letter' and (metrics.workflow is null or d.workflow = metrics.workflow)
    group by grouping sets ((d.workflow), ())
  )
  select jsonb_build_object(
    'window', jsonb_build_object('since', metrics.since, 'until', metrics.until, 'workflow', metrics.workflow),
    'totals', coalesce((select s.doc - 'workflow' from summaries s where s.is_total),
      jsonb_build_object('total', 0, 'by_status', '{}'::jsonb, 'completed', 0, 'success_rate', null,
        'avg_attempts', null, 'latency_ms', jsonb_build_object('p50', null, 'p95', null, 'p99', null))),
    'workflows', coalesce((select jsonb_agg(s.doc order by s.doc ->> 'workflow') from summaries s where not s.is_total), '[]'::jsonb),
    'errors', coalesce((select e.doc from errors e), '[]'::jsonb),
    'dead_letter_queue', jsonb_build_object(
      'size', coalesce((select (q.doc ->> 'size')::bigint from dlq q where q.is_total), 0),
      'oldest_at', (select q.doc -> 'oldest_at' from dlq q where q.is_total),
      'oldest_age_seconds', (select q.doc -> 'oldest_age_seconds' from dlq q where q.is_total),
      'workflows', coalesce((select jsonb_agg(q.doc order by q.doc ->> 'workflow') from dlq q where not q.is_total), '[]'::jsonb))
  ) into result;
  return result;
end
$$;
comment on function email_api.metrics(timestamptz, timestamptz, text) is 'Delivery metrics over a queued_at window, per workflow and in total, and the dead-letter queue (support and service_role)';
revoke execute on function email_api.metrics(timestamptz, timestamptz, text) from public;
grant execute on function email_api.metrics(timestamptz, timestamptz, text) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- Operators' actions through PostgREST (service_role only): thin wrappers over the lifecycle
-- ---------------------------------------------------------------------------------------------

/** Sets the actor the audit trail records for the rest of the transaction (when one is given). */
create or replace function email._set_actor(actor text)
returns void
language sql
volatile
set search_path = ''
as $$
  select set_config('email.actor', left(btrim(actor), 200), true) where coalesce(btrim(actor), '') <> '';
$$;
revoke execute on function email._set_actor(text) from public;
grant execute on function email._set_actor(text) to service_role;

/** Requeues the given deliveries (all or none) through email.requeue; returns them as they are now. */
create or replace function email_api.requeue(delivery_ids text[], reason text, actor text default null)
returns setof email_api.deliveries
language plpgsql
volatile
set search_path = ''
as $$
declare
  id text;
begin
  perform email._set_actor(actor);
  for id in select distinct u.id from unnest(delivery_ids) u(id) order by 1 loop
    perform email.requeue(id, reason);
  end loop;
  return query select v.* from email_api.deliveries v where v.delivery_id = any (delivery_ids) order by v.delivery_id;
end
$$;
comment on function email_api.requeue(text[], text, text) is 'Operator requeue of the given deliveries (service_role)';
revoke execute on function email_api.requeue(text[], text, text) from public;
grant execute on function email_api.requeue(text[], text, text) to service_role;

/** Requeues dead letters by workflow and dead-since (null: all) through email.requeue_dead_letters. */
create or replace function email_api.requeue_dead_letters(
  workflow text default null,
  since timestamptz default null,
  reason text default null,
  actor text default null
)
returns setof email_api.deliveries
language plpgsql
volatile
set search_path = ''
as $$
declare
  ids text[];
begin
  perform email._set_actor(actor);
  select coalesce(array_agg(r.delivery_id), '{}') into ids
  from email.requeue_dead_letters(requeue_dead_letters.workflow, requeue_dead_letters.since, requeue_dead_letters.reason) r;
  return query select v.* from email_api.deliveries v where v.delivery_id = any (ids) order by v.delivery_id;
end
$$;
comment on function email_api.requeue_dead_letters(text, timestamptz, text, text) is 'Operator requeue of dead letters by filter (service_role)';
revoke execute on function email_api.requeue_dead_letters(text, timestamptz, text, text) from public;
grant execute on function email_api.requeue_dead_letters(text, timestamptz, text, text) to service_role;

/** Purges dead letters older than older_than (null: the retention setting) through email.purge_dead_letters. */
create or replace function email_api.purge_dead_letters(
  older_than interval default null,
  reason text default null,
  actor text default null
)
returns setof email_api.deliveries
language plpgsql
volatile
set search_path = ''
as $$
declare
  ids text[];
begin
  perform email._set_actor(actor);
  select coalesce(array_agg(r.delivery_id), '{}') into ids
  from email.purge_dead_letters(purge_dead_letters.older_than, purge_dead_letters.reason) r;
  return query select v.* from email_api.deliveries v where v.delivery_id = any (ids) order by v.delivery_id;
end
$$;
comment on function email_api.purge_dead_letters(interval, text, text) is 'Operator purge of old dead letters: payload erased, status purged (service_role)';
revoke execute on function email_api.purge_dead_letters(interval, text, text) from public;
grant execute on function email_api.purge_dead_letters(interval, text, text) to service_role;
