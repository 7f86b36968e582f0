/**
 * email: metric snapshots for Prometheus (GET /email-worker/metrics, functions/_shared/prometheus.ts).
 *
 * Prometheus counters must only go up (a decrease reads as a restart of the process), so every
 * counter here comes from something that only grows: the append-only audit trail. Counting the trail
 * at each scrape would cost O(history), so the counters are folded incrementally instead:
 * email.fold_metric_events() reads the audit events added since the last fold (primary-key ranges,
 * at most fold_batch ids and fold_time_limit per call) and adds them to email.metric_counters.
 * Nothing is added to the lifecycle's write path, and a later removal of old history (retention)
 * cannot make a counter fall.
 *
 * An identity value is taken when a row is inserted, not when it commits, so an event can become
 * visible after a later one was folded. The fold records the ids missing from the range it read
 * (email.metric_gaps, all in one snapshot) and picks them up at a later fold once committed; ids
 * still missing after an hour belonged to rolled-back transactions (an identity value is never
 * reused) and are dropped.
 *
 * Gauges of the present (open deliveries, the dead-letter queue, the webhook backlog) are read live
 * through the status, due, dead-letter and outbox indexes; they are small by nature. email.metric_samples() folds, then returns every
 * sample with its family's type and help, ready to render: the worker only formats them.
 *
 * Label sets are bounded: workflow names come from the worker's registry; recipient domains and
 * error codes get a label of their own through a registry (email.metric_labels) capped by
 * email.metric_state (20 domains, 100 error codes by default): the busiest new values of a fold
 * are admitted while there is room, and everything else counts as "other". An admission is never
 * undone by the fold, so no series moves between labels (which would make a counter fall).
 *
 * Rollups per time bucket (maintained as deliveries end) can later feed the same families (a
 * counter is then the sum of its buckets since the start): the names, labels and meanings in
 * email.metric_families and the bounds in email.metric_latency_buckets are the contract, not the
 * way the numbers are computed.
 *
 * All tables are service_role only (RLS enabled, no policies); so are the functions.
 */

-- ---------------------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------------------

-- What each metric family is: its Prometheus type and help text (the worker renders them as is).
create table email.metric_families (
  family text primary key check (family ~ '^[a-zA-Z_:][a-zA-Z0-9_:]*$'),
  type text not null check (type in ('counter', 'gauge', 'histogram')),
  help text not null check (help !~ '[\r\n]'),
  position integer not null unique
);
alter table email.metric_families enable row level security;
comment on table email.metric_families is 'The metric families email.metric_samples returns: Prometheus type and help, in exposition order';

insert into email.metric_families (family, type, help, position) values
  ('email_delivery_transitions_total', 'counter', 'Deliveries that entered each status (from the audit trail; queued includes requeues)', 10),
  ('email_delivery_attempts_total', 'counter', 'Send attempts started (transitions into in_progress)', 20),
  ('email_delivery_errors_total', 'counter', 'Failed attempts by error code (other: beyond the error-code cap)', 30),
  ('email_recipient_domain_outcomes_total', 'counter', 'Outcomes of attempts by recipient domain (other: beyond the domain cap)', 40),
  ('email_delivery_latency_seconds', 'histogram', 'Time from queued to sent of sent deliveries', 50),
  ('email_deliveries_open', 'gauge', 'Deliveries now queued, in progress or waiting for a retry', 60),
  ('email_deliveries_due_oldest_age_seconds', 'gauge', 'How long the longest-waiting due delivery has been due (0 when none)', 70),
  ('email_dead_letter_deliveries', 'gauge', 'Deliveries now in the dead-letter queue', 80),
  ('email_dead_letter_oldest_age_seconds', 'gauge', 'Age of the oldest dead letter since it was dead-lettered (0 when none)', 90),
  ('email_webhook_messages_pending', 'gauge', 'Webhook messages not yet delivered nor given up', 100),
  ('email_webhook_oldest_pending_age_seconds', 'gauge', 'Age of the oldest pending webhook message (0 when none)', 110),
  ('email_metrics_events_behind', 'gauge', 'Audit events not yet folded into the counters (the fold catches up batch by batch)', 120);

-- The latency histogram's upper bounds in seconds (+Inf is implied). Changing them changes the
-- meaning of series Prometheus already holds: add a new family rather than edit these.
create table email.metric_latency_buckets (
  le double precision primary key check (le > 0 and le < 'Infinity')
);
alter table email.metric_latency_buckets enable row level security;
comment on table email.metric_latency_buckets is 'Upper bounds (seconds) of the queued-to-sent latency histogram; +Inf implied';

insert into email.metric_latency_buckets (le)
select unnest(array[0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400]::double precision[]);

-- The fold's state and knobs (one row).
create table email.metric_state (
  singleton boolean primary key default true check (singleton),
  last_event_id bigint not null default 0 check (last_event_id >= 0),
  folded_at timestamptz,
  fold_batch integer not null default 100000 check (fold_batch between 1 and 10000000),
  max_domains integer not null default 20 check (max_domains between 0 and 1000),
  max_error_codes integer not null default 100 check (max_error_codes between 0 and 1000),
  fold_time_limit interval not null default interval '2 seconds'
    check (fold_time_limit > interval '0' and fold_time_limit <= interval '1 minute')
);
alter table email.metric_state enable row level security;
comment on table email.metric_state is 'Metric fold: the last audit event folded, events and time per fold, and the label caps for domains and error codes';

insert into email.metric_state default values;

-- Audit event ids the fold found missing (not yet committed, or rolled back).
create table email.metric_gaps (
  event_id bigint primary key,
  seen_at timestamptz not null default now()
);
alter table email.metric_gaps enable row level security;
comment on table email.metric_gaps is 'Audit event ids missing when their range was folded; folded once visible, dropped after an hour';

-- Label values with a series of their own (the rest count as "other").
create table email.metric_labels (
  kind text not null check (kind in ('domain', 'error_code')),
  value text not null check (char_length(value) between 1 and 255 and value <> 'other'),
  admitted_at timestamptz not null default now(),
  primary key (kind, value)
);
alter table email.metric_labels enable row level security;
comment on table email.metric_labels is 'Recipient domains and error codes that have a label of their own in the counters (capped by email.metric_state)';

-- The counters: one row per family and label set, only ever increased by the fold.
create table email.metric_counters (
  family text not null,
  labels jsonb not null check (jsonb_typeof(labels) = 'object'),
  value double precision not null default 0 check (value >= 0),
  updated_at timestamptz not null default now(),
  primary key (family, labels)
);
alter table email.metric_counters enable row level security;
comment on table email.metric_counters is 'Monotonic counters folded from the audit trail (family transitions, errors, domain_outcomes, latency_bucket, latency_sum)';

grant select on email.metric_families, email.metric_latency_buckets to service_role;
grant select, update on email.metric_state to service_role;
grant select, insert, update, delete on email.metric_gaps, email.metric_labels, email.metric_counters to service_role;

-- ---------------------------------------------------------------------------------------------
-- Functions
-- ---------------------------------------------------------------------------------------------

/** The lower-cased domain of a recipient (`Ann <ann@Example.com>` -> example.com); null without one. */
create or replace function email.recipient_domain(recipient text)
returns text
language sql
immutable
set search_path = ''
as $$
  select nullif(substring(email.normalize_address(recipient) from '@([^@]+)$'), '')
$$;
comment on function email.recipient_domain(text) is 'Lower-cased domain of a recipient address; null when it has none';
revoke execute on function email.recipient_domain(text) from public;
grant execute on function email.recipient_domain(text) to service_role;

/**
 * Adds the given audit events to email.metric_counters; returns how many it found. Per event:
 * transitions{workflow, status}; errors{workflow, error_code} when it carries one;
 * domain_outcomes{domain, status} for sent, retrying, failed and dead_letter; for sent,
 * latency_bucket{workflow, le} and latency_sum{workflow} from the delivery's queued_at and sent_at
 * (as email_api.metrics measures it). New domains and error codes are admitted, busiest first,
 * while the registry is under its cap; the rest count as other.
 */
create or replace function email._fold_metric_ids(ids bigint[], max_domains integer, max_error_codes integer)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  folded integer;
begin
  with ev as materialized (
    select e.to_status as status, e.error_code, d.workflow,
      email.recipient_domain(d.recipient) as domain,
      case when e.to_status = 'sent' then extract(epoch from d.sent_at - d.queued_at)::double precision end as latency
    from unnest(ids) u(id)
    join email.delivery_events e on e.id = u.id
    join email.deliveries d on d.delivery_id = e.delivery_id
  ),
  new_domains as (
    insert into email.metric_labels (kind, value)
    select 'domain', x.domain from (
      select ev.domain, count(*) as n from ev
      where ev.status in ('sent', 'retrying', 'failed', 'dead_letter') and ev.domain is not null
        and char_length(ev.domain) <= 255 and ev.domain <> 'other'
        and not exists (select from email.metric_labels l where l.kind = 'domain' and l.value = ev.domain)
      group by ev.domain
      order by n desc, ev.domain
      limit greatest(0, max_domains - (select count(*) from email.metric_labels l where l.kind = 'domain'))
    ) x
    on conflict do nothing
    returning value
  ),
  new_codes as (
    insert into email.metric_labels (kind, value)
    select 'error_code', x.error_code from (
      select ev.error_code, count(*) as n from ev
      where ev.error_code is not null and ev.error_code <> 'other'
        and not exists (select from email.metric_labels l where l.kind = 'error_code' and l.value = ev.error_code)
      group by ev.error_code
      order by n desc, ev.error_code
      limit greatest(0, max_error_codes - (select count(*) from email.metric_labels l where l.kind = 'error_code'))
    ) x
    on conflict do nothing
    returning value
  ),
  domains as (
    select l.value from email.metric_labels l where l.kind = 'domain' union select n.value from new_domains n
  ),
  codes as (
    select l.value from email.metric_labels l where l.kind = 'error_code' union select n.value from new_codes n
  ),
  deltas as (
    select 'transitions' as family, jsonb_build_object('workflow', ev.workflow, 'status', ev.status) as labels,
      1::double precision as v
    from ev
    union all
    select 'errors', jsonb_build_object('workflow', ev.workflow,
        'error_code', case when ev.error_code in (select c.value from codes c) then ev.error_code else 'other' end), 1
    from ev where ev.error_code is not null
    union all
    select 'domain_outcomes', jsonb_build_object(
        'domain', case when ev.domain in (select m.value from domains m) then ev.domain else 'other' end,
        'status', ev.status), 1
    from ev where ev.status in ('sent', 'retrying', 'failed', 'dead_letter')
    union all
    select 'latency_bucket', jsonb_build_object('workflow', ev.workflow, 'le', coalesce(
        (select min(b.le) from email.metric_latency_buckets b where b.le >= ev.latency),
        'Infinity'::double precision)::text), 1
    from ev where ev.latency is not null
    union all
    select 'latency_sum', jsonb_build_object('workflow', ev.workflow), greatest(ev.latency, 0)
    from ev where ev.latency is not null
  ),
  upserted as (
    insert into email.metric_counters as c (family, labels, value)
    select x.family, x.labels, sum(x.v) from deltas x group by x.family, x.labels
    on conflict (family, labels) do update set value = c.value + excluded.value, updated_at = now()
    returning 1
  )
  select count(*)::int into folded from ev, (select count(*) from upserted) u;
  return folded;
end
$$;
comment on function email._fold_metric_ids(bigint[], integer, integer) is 'Adds the given audit events to email.metric_counters (internal to fold_metric_events)';
revoke execute on function email._fold_metric_ids(bigint[], integer, integer) from public;
grant execute on function email._fold_metric_ids(bigint[], integer, integer) to service_role;

/**
 * Folds the audit events added since the last fold into email.metric_counters, in chunks of at
 * most 10,000 ids, until it has caught up, covered metric_state.fold_batch ids or spent
 * metric_state.fold_time_limit (so a long backlog is caught up over several scrapes, each of them
 * short, each chunk advancing the watermark); gaps of earlier folds that have become visible are
 * folded first. Returns how many events it folded. A fold already running elsewhere is not waited
 * for (0).
 */
create or replace function email.fold_metric_events()
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  st email.metric_state;
  started timestamptz := clock_timestamp();
  wm bigint;
  top bigint;
  hi bigint;
  batch bigint[];
  recovered bigint[];
  folded integer := 0;
  ranged integer := 0;
begin
  select s.* into st from email.metric_state s for update skip locked;
  if not found then
    return 0;
  end if;

  -- Gaps of earlier folds that are now committed.
  with found as (
    delete from email.metric_gaps g
    where exists (select from email.delivery_events e where e.id = g.event_id)
    returning g.event_id
  )
  select coalesce(array_agg(f.event_id), '{}') into recovered from found f;
  if cardinality(recovered) > 0 then
    folded := email._fold_metric_ids(recovered, st.max_domains, st.max_error_codes);
  end if;
  delete from email.metric_gaps g where g.seen_at < now() - interval '1 hour';

  wm := st.last_event_id;
  top := coalesce((select max(e.id) from email.delivery_events e), wm);
  -- At least one chunk per call, so even a tight time limit makes progress.
  while wm < top and ranged < st.fold_batch loop
    hi := least(top, wm + least(10000, st.fold_batch - ranged));
    -- The range and its missing ids from one snapshot: this statement's.
    with present as materialized (
      select e.id from email.delivery_events e where e.id > wm and e.id <= hi
    ),
    missing as (
      insert into email.metric_gaps (event_id)
      select g from generate_series(wm + 1, hi) g
      except all select p.id from present p
      on conflict do nothing
    )
    select coalesce(array_agg(p.id), '{}') into batch from present p;
    ranged := ranged + (hi - wm)::integer;
    folded := folded + email._fold_metric_ids(batch, st.max_domains, st.max_error_codes);
    wm := hi;
    exit when clock_timestamp() - started >= st.fold_time_limit;
  end loop;

  update email.metric_state s set last_event_id = wm, folded_at = now() where s.singleton;
  return folded;
end
$$;
comment on function email.fold_metric_events() is 'Adds the audit events since the last fold (and recovered gaps) to email.metric_counters, bounded in events and time; returns how many';
revoke execute on function email.fold_metric_events() from public;
grant execute on function email.fold_metric_events() to service_role;

/**
 * Every metric sample, ready to render in the Prometheus text format: family (with its type and
 * help from email.metric_families), sample name (the family, or _bucket/_sum/_count of the
 * histogram), labels (a JSON object of strings) and value. Folds new audit events first. Counters
 * are as folded; gauges are read now from the partial indexes of the open, dead-letter and pending
 * rows; the histogram's buckets are cumulative, with every bound and +Inf.
 */
create or replace function email.metric_samples()
returns table (family text, type text, help text, sample text, labels jsonb, value double precision)
language plpgsql
volatile
set search_path = ''
as $$
begin
  perform email.fold_metric_events();
  return query
  with counters as (
    select c.family, c.labels, c.value from email.metric_counters c
  ),
  samples as (
    select 'email_delivery_transitions_total' as family, 'email_delivery_transitions_total' as sample, c.labels, c.value
    from counters c where c.family = 'transitions'
    union all
    select 'email_delivery_attempts_total', 'email_delivery_attempts_total', c.labels - 'status', c.value
    from counters c where c.family = 'transitions' and c.labels ->> 'status' = 'in_progress'
    union all
    select 'email_delivery_errors_total', 'email_delivery_errors_total', c.labels, c.value
    from counters c where c.family = 'errors'
    union all
    select 'email_recipient_domain_outcomes_total', 'email_recipient_domain_outcomes_total', c.labels, c.value
    from counters c where c.family = 'domain_outcomes'
    union all
    select 'email_delivery_latency_seconds', 'email_delivery_latency_seconds_bucket',
      jsonb_build_object('workflow', w.workflow, 'le', case when b.le = 'Infinity' then '+Inf' else b.le::text end),
      coalesce((select sum(c.value) from counters c
                where c.family = 'latency_bucket' and c.labels ->> 'workflow' = w.workflow
                  and (c.labels ->> 'le')::double precision <= b.le), 0)
    from (select distinct c.labels ->> 'workflow' as workflow from counters c where c.family = 'latency_bucket') w,
      (select x.le from email.metric_latency_buckets x union all select 'Infinity'::double precision) b
    union all
    select 'email_delivery_latency_seconds', 'email_delivery_latency_seconds_sum', c.labels, c.value
    from counters c where c.family = 'latency_sum'
    union all
    select 'email_delivery_latency_seconds', 'email_delivery_latency_seconds_count', c.labels - 'le', sum(c.value)
    from counters c where c.family = 'latency_bucket'
    group by c.labels - 'le'
    union all
    select 'email_deliveries_open', 'email_deliveries_open',
      jsonb_build_object('workflow', d.workflow, 'status', d.status), count(*)::double precision
    from email.deliveries d where d.status in ('queued', 'in_progress', 'retrying')
    group by d.workflow, d.status
    union all
    select 'email_deliveries_due_oldest_age_seconds', 'email_deliveries_due_oldest_age_seconds', '{}'::jsonb,
      coalesce(greatest(extract(epoch from now() - min(d.next_attempt_at)), 0), 0)::double precision
    from email.deliveries d where d.status in ('queued', 'retrying') and d.next_attempt_at <= now()
    union all
    select 'email_dead_letter_deliveries', 'email_dead_letter_deliveries',
      jsonb_build_object('workflow', d.workflow), count(*)::double precision
    from email.deliveries d where d.status = 'dead_letter'
    group by d.workflow
    union all
    select 'email_dead_letter_oldest_age_seconds', 'email_dead_letter_oldest_age_seconds',
      jsonb_build_object('workflow', d.workflow),
      greatest(floor(extract(epoch from now() - min(d.completed_at))), 0)::double precision
    from email.deliveries d where d.status = 'dead_letter'
    group by d.workflow
    union all
    select 'email_webhook_messages_pending', 'email_webhook_messages_pending', '{}'::jsonb, count(*)::double precision
    from email.webhook_outbox o where o.status = 'pending'
    union all
    select 'email_webhook_oldest_pending_age_seconds', 'email_webhook_oldest_pending_age_seconds', '{}'::jsonb,
      coalesce(greatest(floor(extract(epoch from now() - min(o.created_at))), 0), 0)::double precision
    from email.webhook_outbox o where o.status = 'pending'
    union all
    select 'email_metrics_events_behind', 'email_metrics_events_behind', '{}'::jsonb,
      greatest(coalesce((select max(e.id) from email.delivery_events e), 0) - s.last_event_id, 0)::double precision
    from email.metric_state s
  )
  select f.family, f.type, f.help, s.sample, s.labels, s.value
  from samples s join email.metric_families f on f.family = s.family
  -- a histogram's series together: its buckets by bound, then _sum and _count
  order by f.position, (s.labels - 'le')::text,
    case when s.sample like '%\_bucket' then 0 when s.sample like '%\_sum' then 1 else 2 end,
    case when s.labels ->> 'le' = '+Inf' then 'Infinity'::double precision else (s.labels ->> 'le')::double precision end;
end
$$;
comment on function email.metric_samples() is 'Every metric sample (folded counters, live gauges, cumulative histogram) with its family''s type and help';
revoke execute on function email.metric_samples() from public;
grant execute on function email.metric_samples() to service_role;
