/**
 * email: bounded history. The audit trail is partitioned by week; finished deliveries and their
 * events are removed after email.settings.history_retention (90 days by default) by one job,
 * email.run_retention(), which records what it removed in email.retention_runs.
 *
 * Why this shape
 * - email.deliveries stays one table. Its primary key is the caller's idempotency key
 *   (delivery_id), which must stay unique across all time; a unique key on a partitioned table must
 *   contain the partition key, so a time-partitioned deliveries table could only promise uniqueness
 *   per period. Finished deliveries past the retention are removed by a batched DELETE that walks
 *   deliveries_completed_at_idx (finished rows only, oldest first): its cost follows the period
 *   removed, not the table's size, and it locks only finished rows, which the worker never touches.
 * - email.delivery_events (append-only, about three rows per delivery: the bulk of the history) is
 *   range-partitioned by created_at, one partition per week (Monday 00:00 UTC). A partition of a
 *   period past the retention is dropped whole: no row-by-row delete, no dead tuples, no vacuum,
 *   a catalogue change that takes milliseconds whatever its size. Weekly rather than daily:
 *   a lookup without a time bound (a delivery's events by delivery_id, the metric fold by event
 *   id, the webhook outbox's event id) probes every partition's index, so the number of live
 *   partitions is a cost on every such read; 90 days are 14 weekly partitions but 91 daily ones.
 *   The price is granularity: history is kept between 90 days and 90 days plus a week.
 * - Native partitioning, managed from plpgsql here (email.ensure_event_partitions), rather than
 *   pg_partman. pg_partman is available on hosted Supabase but not in Debian's Postgres or the
 *   embedded Postgres the tests run on, so a dependency on it could not be tested here; what it
 *   would do for us (create partitions ahead, drop old ones) is a few dozen lines, and dropping a
 *   partition here has a rule pg_partman has no notion of: the events of deliveries that are kept
 *   (still open, dead letters under their own policy, or finished after the cutoff) are carried
 *   over before the partition goes (below).
 * - Kept deliveries' events are carried into a copy of their week's partition holding only them
 *   (delivery_events_pYYYYMMDD_kept, same bounds, built beside the trail with a CHECK constraint of
 *   those bounds so attaching it reads nothing): the trail's ACCESS EXCLUSIVE lock then covers
 *   catalogue changes only, however many events are kept. A copy is compacted the same way once
 *   deliveries of its own have gone, and dropped when none is left.
 * - A default partition (email.delivery_events_default) catches any row no weekly partition covers,
 *   so an insert never fails when the job has not run for weeks; the next
 *   email.ensure_event_partitions moves such rows into the week's new partition. Normally empty, so
 *   creating or attaching a partition (which must check it) reads nothing.
 *
 * What the table looks like now
 * - Primary key (id, created_at): a unique key on a partitioned table must include the partition
 *   key. id still comes from one identity sequence, so it stays unique on its own; the key's index
 *   leads with id, so lookups by event id (the metric fold, webhook replays) still use it.
 * - delivery_events_delivery_id_idx (delivery_id, id): a delivery's timeline (get_delivery, the RLS
 *   policy). No btree on created_at any more: a time range selects partitions (pruning), and inside
 *   a partition a BRIN index (a few pages per partition, nothing written per insert until a page
 *   range is summarised) narrows the scan for webhook replays of an hour.
 * - No foreign key from delivery_id to email.deliveries: it cost an index probe and a row lock on
 *   the delivery per event, and a RESTRICT key would make every removed delivery probe every
 *   partition. Integrity holds otherwise: events are written only by the audit trigger on
 *   email.deliveries (the delivery exists in the same transaction), deliveries are removed only by
 *   email.run_retention (DELETE and TRUNCATE on email.deliveries are refused to everyone else), and
 *   that job removes a delivery only together with the partitions holding its events (the cutoff is
 *   a partition boundary, and an event is never later than its delivery's completed_at).
 * - No foreign key from email.webhook_outbox.event_id either (it would have to carry created_at
 *   too); the job removes the outbox messages of the events it removes.
 * - The triggers are the ones the released migrations created, unchanged (functions untouched):
 *   _100_refuse_change (row triggers are cloned onto every partition), _110_refuse_truncate (a
 *   statement trigger stays on the parent, so every partition gets its own copy),
 *   _700_suppress_hard_bounce, _800_webhook_outbox.
 * - RLS stays enabled with the same policy and grants on the parent; partitions have RLS enabled,
 *   no policies and no grants, so they can only be read through the parent.
 *
 * The existing rows are copied into the new table once (the migration's cost is one pass over the
 * trail, before the triggers exist, so nothing fires twice).
 */

-- ---------------------------------------------------------------------------------------------
-- The trail becomes partitioned: the old table is moved aside, copied, and dropped
-- ---------------------------------------------------------------------------------------------

alter table email.webhook_outbox drop constraint webhook_outbox_event_id_fkey;
alter table email.delivery_events drop constraint delivery_events_delivery_id_fkey;
alter table email.delivery_events rename to delivery_events_unpartitioned;
alter table email.delivery_events_unpartitioned rename constraint delivery_events_pkey to delivery_events_unpartitioned_pkey;
alter sequence email.delivery_events_id_seq rename to delivery_events_unpartitioned_id_seq;
drop index email.delivery_events_delivery_id_idx;
drop index email.delivery_events_created_at_idx;

-- The append-only audit trail, written by a trigger on deliveries; one partition per week.
create table email.delivery_events (
  id bigint generated always as identity (sequence name email.delivery_events_id_seq),
  delivery_id text not null,
  from_status text,
  to_status text not null,
  attempt integer not null,
  error_code text,
  error_message text,
  detail jsonb not null default '{}',
  actor text not null,
  created_at timestamptz not null default now(),
  constraint delivery_events_pkey primary key (id, created_at)
) partition by range (created_at);
alter table email.delivery_events enable row level security;
comment on table email.delivery_events is 'Append-only audit trail: one row per insert and status change of a delivery; one partition per week, removed by email.run_retention';

create index delivery_events_delivery_id_idx on email.delivery_events (delivery_id, id);
create index delivery_events_created_at_brin on email.delivery_events using brin (created_at);

-- Rows no weekly partition covers: a safety net, normally empty.
create table email.delivery_events_default partition of email.delivery_events default;
alter table email.delivery_events_default enable row level security;
comment on table email.delivery_events_default is 'Events no weekly partition covers: rows written before their week''s partition existed (moved by email.ensure_event_partitions); normally empty';

/**
 * What every partition of the trail gets besides the parent's row triggers (cloned by Postgres): RLS
 * enabled without policies, no grants (it is read through the parent), and the parent's TRUNCATE
 * refusal (a statement trigger is not cloned).
 */
create or replace function email._secure_event_partition(name text)
returns void
language plpgsql
set search_path = ''
as $$
begin
  execute format('alter table email.%I enable row level security', name);
  execute format('revoke all on email.%I from public, anon, authenticated, service_role', name);
  execute format('create trigger _110_refuse_truncate before truncate on email.%I
                  for each statement execute function email.tg_delivery_events__refuse_change()', name);
end
$$;
revoke execute on function email._secure_event_partition(text) from public;

/**
 * Creates the weekly partitions of email.delivery_events (Monday 00:00 UTC to the next Monday) for
 * every week from `since` to `until` that has none; returns the names created. Rows the default
 * partition took for such a week are moved into its new partition (the default is detached for the
 * move, so the insert triggers do not fire again and the append-only refusal does not apply).
 * Each partition gets RLS (no policies), no grants, and the parent's TRUNCATE refusal.
 */
create or replace function email.ensure_event_partitions(since timestamptz, until timestamptz)
returns text[]
language plpgsql
volatile
set search_path = ''
as $$
declare
  week timestamptz := date_trunc('week', since, 'UTC');
  next_week timestamptz;
  name text;
  bounds text;
  created text[] := '{}';
begin
  if since is null or until is null or until < since then
    raise exception 'partitions need since <= until, not % .. %', since, until using errcode = 'EM006';
  end if;
  while week <= until loop
    next_week := week + interval '168 hours';
    name := 'delivery_events_p' || to_char(week at time zone 'UTC', 'YYYYMMDD');
    if to_regclass('email.' || name) is null then
      bounds := format('from (%L) to (%L)',
        to_char(week at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00"'),
        to_char(next_week at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00"'));
      if exists (select from email.delivery_events_default d where d.created_at >= week and d.created_at < next_week) then
        alter table email.delivery_events detach partition email.delivery_events_default;
        execute format('create table email.%I (like email.delivery_events including defaults)', name);
        execute format('insert into email.%I select d.* from email.delivery_events_default d
                        where d.created_at >= $1 and d.created_at < $2', name) using week, next_week;
        delete from email.delivery_events_default d where d.created_at >= week and d.created_at < next_week;
        execute format('alter table email.delivery_events attach partition email.%I for values %s', name, bounds);
        alter table email.delivery_events attach partition email.delivery_events_default default;
      else
        execute format('create table email.%I partition of email.delivery_events for values %s', name, bounds);
      end if;
      perform email._secure_event_partition(name);
      execute format('comment on table email.%I is %L', name, 'Audit events of the week from ' || week::date);
      created := created || name;
    end if;
    week := next_week;
  end loop;
  return created;
end
$$;
comment on function email.ensure_event_partitions(timestamptz, timestamptz) is 'Create the weekly partitions of email.delivery_events covering since .. until (rows of those weeks in the default partition move in); returns the names created';
revoke execute on function email.ensure_event_partitions(timestamptz, timestamptz) from public;

-- Partitions for the rows already there and four weeks ahead, then the rows, then the id sequence.
select email.ensure_event_partitions(
  coalesce((select min(e.created_at) from email.delivery_events_unpartitioned e), now()), now() + interval '4 weeks');
insert into email.delivery_events overriding system value
select e.* from email.delivery_events_unpartitioned e;
select setval('email.delivery_events_id_seq',
  greatest((select last_value from email.delivery_events_unpartitioned_id_seq), coalesce((select max(e.id) from email.delivery_events e), 0), 1),
  (select is_called from email.delivery_events_unpartitioned_id_seq));

-- The triggers of the released migrations, on the new table (their functions are unchanged).
create trigger _100_refuse_change
before update or delete on email.delivery_events
for each row execute function email.tg_delivery_events__refuse_change();

create trigger _110_refuse_truncate
before truncate on email.delivery_events
for each statement execute function email.tg_delivery_events__refuse_change();

create trigger _110_refuse_truncate
before truncate on email.delivery_events_default
for each statement execute function email.tg_delivery_events__refuse_change();

create trigger _700_suppress_hard_bounce
after insert on email.delivery_events
for each row when (new.to_status = 'failed' and coalesce((new.detail -> 'failure' ->> 'hard_bounce')::boolean, false))
execute function email.tg_delivery_events__suppress_hard_bounce();

create trigger _800_webhook_outbox
after insert on email.delivery_events
for each row execute function email.tg_delivery_events__webhook_outbox();

-- The readers bound to the old table: the staff and API views, and the webhook body's row type.
create or replace view email._staff_delivery_events as
select e.*, email.public_error_category(e.error_code) as error_category
from email.delivery_events e
where (select email.is_staff());

create or replace view email_api.delivery_events with (security_invoker = true) as
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

drop function email.webhook_body(email.delivery_events_unpartitioned, text);

/** The webhook body of an audit event: {"type", "timestamp", "data": {...}}. */
create or replace function email.webhook_body(e email.delivery_events, workflow text)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object(
    'type', 'email.' || e.to_status,
    'timestamp', to_char(e.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'data', jsonb_build_object(
      'delivery_id', e.delivery_id,
      'workflow', workflow,
      'status', e.to_status,
      'previous_status', e.from_status,
      'attempt', e.attempt,
      'error_code', coalesce(e.error_code, e.detail ->> 'error_code')
    )
  )
$$;
comment on function email.webhook_body(email.delivery_events, text) is 'The JSON body sent for an audit event';
revoke execute on function email.webhook_body(email.delivery_events, text) from public;
grant execute on function email.webhook_body(email.delivery_events, text) to service_role;

drop table email.delivery_events_unpartitioned;

-- Privileges and the policy, as the rls migration gave them to the old table.
grant select, insert, update, delete on email.delivery_events to service_role;
grant usage, select on sequence email.delivery_events_id_seq to service_role;
grant select on email.delivery_events to authenticated;

-- The events of the deliveries the caller may see (the policies of deliveries apply inside the subquery).
create policy delivery_events_select_own_delivery on email.delivery_events
for select to authenticated
using (exists (select from email.deliveries d where d.delivery_id = delivery_events.delivery_id));

-- ---------------------------------------------------------------------------------------------
-- Deliveries are removed by the retention job only
-- ---------------------------------------------------------------------------------------------

/**
 * Refuses DELETE and TRUNCATE on email.deliveries: the foreign key from the trail used to forbid
 * both (a delivery with events could not go), and history is removed by email.run_retention only,
 * which sets email.retention_running for its own DELETE. service_role has no DELETE privilege at
 * all, so it cannot set that flag and delete; only the owner could, and the owner can drop the
 * trigger as well.
 */
create or replace function email.tg_deliveries__refuse_removal()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' and current_setting('email.retention_running', true) = 'on' then
    return null;
  end if;
  raise exception 'email.deliveries keeps its history: % refused (email.run_retention removes finished deliveries past the retention)', tg_op
    using errcode = 'EM005';
end
$$;
revoke execute on function email.tg_deliveries__refuse_removal() from public;

create trigger _050_refuse_removal
before delete or truncate on email.deliveries
for each statement execute function email.tg_deliveries__refuse_removal();

revoke delete on email.deliveries from service_role;

-- ---------------------------------------------------------------------------------------------
-- Retention: settings, the record of what was removed, the job
-- ---------------------------------------------------------------------------------------------

alter table email.settings
  add column history_retention interval not null default '90 days',
  add constraint settings_history_retention_positive check (history_retention > interval '0');
comment on column email.settings.history_retention is 'Age (since completed_at) after which email.run_retention removes a finished delivery (sent, failed, suppressed, purged) and its events, a week at a time';

-- The finished deliveries, oldest completion first: what the retention job walks to delete them.
create index deliveries_finished_idx on email.deliveries (completed_at)
where status in ('sent', 'failed', 'suppressed', 'purged');

-- Removing a delivery sets suppressions.delivery_id to null (its foreign key): found by index, not by a scan per row.
create index suppressions_delivery_id_idx on email.suppressions (delivery_id) where delivery_id is not null;

-- One row per run of email.run_retention that removed or created something.
create table email.retention_runs (
  id bigint generated always as identity primary key,
  started_at timestamptz not null,
  finished_at timestamptz not null,
  retention interval not null,
  cutoff timestamptz not null,
  deliveries_deleted bigint not null check (deliveries_deleted >= 0),
  events_deleted bigint not null check (events_deleted >= 0),
  events_carried bigint not null check (events_carried >= 0),
  webhook_messages_deleted bigint not null check (webhook_messages_deleted >= 0),
  partitions_dropped text[] not null,
  partitions_created text[] not null,
  trail_locked_ms double precision check (trail_locked_ms >= 0),
  backlog boolean not null,
  actor text not null
);
alter table email.retention_runs enable row level security;
comment on table email.retention_runs is 'What each run of email.run_retention removed: deliveries, events (in whole weekly partitions), webhook messages; and the events it carried over';
comment on column email.retention_runs.cutoff is 'Finished deliveries completed before it and event partitions ending at or before it were removed (a week boundary: now() - history_retention, rounded down)';
comment on column email.retention_runs.events_carried is 'Events of kept deliveries (open, dead letters, finished after the cutoff) kept from the dropped partitions, in copies of them (delivery_events_pYYYYMMDD_kept)';
comment on column email.retention_runs.trail_locked_ms is 'How long the run held email.delivery_events in ACCESS EXCLUSIVE mode to detach and drop (inserts waited meanwhile); null when it did not lock it';
comment on column email.retention_runs.backlog is 'Partitions past the cutoff wait for the next run: finished deliveries before the cutoff remained after max_batches, or the trail''s lock was not had';
grant select on email.retention_runs to service_role;

/**
 * Removes the history past email.settings.history_retention and records what it removed in
 * email.retention_runs (when something was removed or created); returns that row (null when the run
 * had nothing to do, or another run holds the job's lock). Run by pg_cron (hourly: see
 * sql/schedule_retention.sql); callable by the owner only.
 *
 * 1. The weekly partitions for the next four weeks are created (email.ensure_event_partitions).
 * 2. cutoff = the start of the UTC week holding now() - history_retention. Finished deliveries
 *    (sent, failed, suppressed, purged: dead letters keep their own policy, email.purge_dead_letters,
 *    and join this one once purged) completed before the cutoff are deleted, batch_size at a time
 *    through deliveries_finished_idx, at most max_batches batches per run: the cost of a run follows
 *    what it removes. Only finished rows are locked, which the worker never touches (skip locked:
 *    an operator's requeue of one wins).
 * 3. When no such delivery is left, the partitions of weeks ending at or before the cutoff go. An
 *    event is never later than its delivery's completed_at, so every event of a deleted delivery is
 *    in them. Their events of deliveries that are kept (open, dead letters, finished after the
 *    cutoff) are carried, with their ids and times, into a copy of the partition holding only them
 *    (delivery_events_pYYYYMMDD_kept); the webhook messages of the other events are deleted. Copies
 *    made by earlier runs are compacted the same way when this run deleted deliveries. Each partition
 *    is first locked in SHARE mode (nothing can be added to it) and read, and its copy built beside
 *    the trail (a standalone table: no insert trigger fires again, no second webhook or suppression),
 *    while the lifecycle runs on. Then, under a brief ACCESS EXCLUSIVE lock of email.delivery_events
 *    (waited for lock_wait at most, retried; inserts queue behind it meanwhile): detach, drop, attach
 *    the copy, catalogue changes only (the copy's CHECK constraint proves its bounds).
 */
create or replace function email.run_retention(batch_size integer default 10000, max_batches integer default 100,
  lock_wait interval default interval '1 second')
returns email.retention_runs
language plpgsql
volatile
set search_path = ''
as $$
declare
  run email.retention_runs;
  n bigint;
  batches integer := 0;
  p record;
  dropped text[] := '{}';
  part text;
  removed bigint;
  unsent bigint;
  attempt integer := 0;
  locked boolean := false;
  locked_at timestamptz;
  lock_timeout_was text := pg_catalog.current_setting('lock_timeout');
begin
  if batch_size is null or batch_size < 1 or max_batches is null or max_batches < 1 then
    raise exception 'batch_size and max_batches must be positive' using errcode = 'EM006';
  end if;
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('email.run_retention')) then
    return null;
  end if;
  perform pg_catalog.set_config('email.retention_running', 'on', true);

  run.started_at := pg_catalog.clock_timestamp();
  run.actor := email._actor();
  run.retention := (select s.history_retention from email.settings s);
  run.cutoff := pg_catalog.date_trunc('week', now() - run.retention, 'UTC');
  run.deliveries_deleted := 0;
  run.events_deleted := 0;
  run.events_carried := 0;
  run.webhook_messages_deleted := 0;
  run.partitions_created := email.ensure_event_partitions(now(), now() + interval '4 weeks');

  -- 2. Finished deliveries completed before the cutoff, oldest first, a batch at a time.
  loop
    delete from email.deliveries d
    where d.delivery_id in (
      select x.delivery_id from email.deliveries x
      where x.status in ('sent', 'failed', 'suppressed', 'purged') and x.completed_at < run.cutoff
      order by x.completed_at
      limit batch_size
      for update skip locked
    );
    get diagnostics n = row_count;
    run.deliveries_deleted := run.deliveries_deleted + n;
    batches := batches + 1;
    exit when n < batch_size or batches >= max_batches;
  end loop;
  run.backlog := exists (
    select from email.deliveries x
    where x.status in ('sent', 'failed', 'suppressed', 'purged') and x.completed_at < run.cutoff);

  -- 3. The partitions of weeks before the cutoff, once their deliveries are gone: each is dropped,
  -- or replaced by a copy holding only its events of kept deliveries (delivery_events_pYYYYMMDD_kept,
  -- same bounds). Earlier copies are compacted the same way when a delivery of theirs has gone. In a
  -- block of its own: when the trail's lock cannot be had, all of step 3 is undone and waits for the
  -- next run (the deletions above stay).
  if not run.backlog then
    begin
      for p in
        select c.relname::text as name, c.relname ~ '_kept$' as kept,
          pg_catalog.to_timestamp(substr(c.relname, 18, 8), 'YYYYMMDD')::timestamp at time zone 'UTC' as lo
        from pg_catalog.pg_inherits i
        join pg_catalog.pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'email.delivery_events'::regclass
          and c.relname ~ '^delivery_events_p[0-9]{8}(_kept)?$'
          and pg_catalog.to_timestamp(substr(c.relname, 18, 8), 'YYYYMMDD')::timestamp at time zone 'UTC'
            + interval '168 hours' <= run.cutoff
          and (c.relname !~ '_kept$' or run.deliveries_deleted > 0)
        order by c.relname
      loop
        -- Nothing can be added to it from here on; read it while the lifecycle runs on.
        execute format('lock table email.%I in share mode', p.name);
        execute format('select count(*) from email.%I', p.name) into n;
        part := 'delivery_events_p' || substr(p.name, 18, 8) || '_new';
        execute format('create table email.%I (like email.delivery_events including defaults including indexes)', part);
        execute format('alter table email.%I add constraint %I check (created_at >= %L and created_at < %L)',
          part, part || '_bounds', p.lo, p.lo + interval '168 hours');
        execute format('insert into email.%I select e.* from email.%I e
                        where exists (select from email.deliveries d where d.delivery_id = e.delivery_id)', part, p.name);
        get diagnostics removed = row_count;
        if p.kept and removed = n then
          execute format('drop table email.%I', part); -- a kept copy with nothing to remove: left as it is
          continue;
        end if;
        if not p.kept then
          run.events_carried := run.events_carried + removed;
        end if;
        run.events_deleted := run.events_deleted + n - removed;
        execute format('delete from email.webhook_outbox o using email.%I e where o.event_id = e.id
                        and not exists (select from email.deliveries d where d.delivery_id = e.delivery_id)', p.name);
        get diagnostics unsent = row_count;
        run.webhook_messages_deleted := run.webhook_messages_deleted + unsent;
        if removed = 0 then
          execute format('drop table email.%I', part);
        end if;
        dropped := dropped || p.name;
      end loop;

      if cardinality(dropped) > 0 then
        -- The trail's lock, waited for briefly (inserts queue behind a waiting ACCESS EXCLUSIVE request).
        while not locked loop
          begin
            perform pg_catalog.set_config('lock_timeout', (extract(epoch from lock_wait) * 1000)::bigint::text, true);
            lock table email.delivery_events in access exclusive mode;
            locked := true;
            locked_at := pg_catalog.clock_timestamp();
          exception when lock_not_available then
            attempt := attempt + 1;
            if attempt >= 10 then
              raise;
            end if;
            perform pg_catalog.pg_sleep(0.1 * attempt);
          end;
        end loop;
        perform pg_catalog.set_config('lock_timeout', lock_timeout_was, true);

        -- Catalogue changes only: the copies' bounds are proven by their CHECK constraint (no scan),
        -- and the default partition, normally empty, is all the attach reads.
        foreach part in array dropped loop
          execute format('alter table email.delivery_events detach partition email.%I', part);
          execute format('drop table email.%I', part);
          if to_regclass('email.delivery_events_p' || substr(part, 18, 8) || '_new') is not null then
            execute format('alter table email.%I rename to %I',
              'delivery_events_p' || substr(part, 18, 8) || '_new', 'delivery_events_p' || substr(part, 18, 8) || '_kept');
            perform email._secure_event_partition('delivery_events_p' || substr(part, 18, 8) || '_kept');
            execute format('comment on table email.%I is %L', 'delivery_events_p' || substr(part, 18, 8) || '_kept',
              'Audit events of kept deliveries (open, dead letters, finished after the cutoff) of the week from '
                || substr(part, 18, 8));
            execute format('alter table email.delivery_events attach partition email.%I for values from (%L) to (%L)',
              'delivery_events_p' || substr(part, 18, 8) || '_kept',
              pg_catalog.to_timestamp(substr(part, 18, 8), 'YYYYMMDD')::timestamp at time zone 'UTC',
              (pg_catalog.to_timestamp(substr(part, 18, 8), 'YYYYMMDD')::timestamp at time zone 'UTC') + interval '168 hours');
          end if;
        end loop;
        dropped := array(select d from unnest(dropped) d where d !~ '_kept$');
      end if;
    exception when lock_not_available then
      perform pg_catalog.set_config('lock_timeout', lock_timeout_was, true);
      dropped := '{}';
      run.events_deleted := 0;
      run.events_carried := 0;
      run.webhook_messages_deleted := 0;
      run.backlog := true;
      locked_at := null;
    end;
  end if;

  perform pg_catalog.set_config('email.retention_running', '', true);
  run.partitions_dropped := dropped;
  run.finished_at := pg_catalog.clock_timestamp();
  run.trail_locked_ms := extract(epoch from run.finished_at - locked_at) * 1000;
  if run.deliveries_deleted = 0 and run.events_deleted = 0 and cardinality(run.partitions_created) = 0 then
    return null;
  end if;
  insert into email.retention_runs (started_at, finished_at, retention, cutoff, deliveries_deleted, events_deleted,
    events_carried, webhook_messages_deleted, partitions_dropped, partitions_created, trail_locked_ms, backlog, actor)
  values (run.started_at, run.finished_at, run.retention, run.cutoff, run.deliveries_deleted, run.events_deleted,
    run.events_carried, run.webhook_messages_deleted, run.partitions_dropped, run.partitions_created, run.trail_locked_ms,
    run.backlog, run.actor)
  returning * into run;
  return run;
end
$$;
comment on function email.run_retention(integer, integer, interval) is 'The retention job: creates the next weeks'' event partitions, deletes finished deliveries past email.settings.history_retention, drops their weeks'' event partitions (carrying kept deliveries'' events), records it in email.retention_runs';
revoke execute on function email.run_retention(integer, integer, interval) from public;

-- Scheduled where pg_cron exists (hosted Supabase has it): hourly. Elsewhere (the embedded Postgres
-- of the tests) run email.run_retention() from any scheduler, as its owner.
do $do$
begin
  if exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
    perform cron.schedule('email-retention', '41 * * * *', 'select email.run_retention()');
  end if;
end
$do$;
