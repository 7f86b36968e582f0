/**
 * email: metric rollups, so email_api.metrics answers any window in milliseconds, exactly; and
 * metrics by SMTP relay and recipient domain (issue 13, items 2 and 4).
 *
 * email_api.metrics used to read every delivery of its window and sort every latency (2.5 s for a
 * month at a million deliveries). Now the metric fold (email.fold_metric_events, observability
 * migration), which already reads each new audit event once, off the lifecycle's path, also keeps
 * rollups per time bucket, at two grains (hour and day, UTC):
 * - email.metric_rollups: deliveries by the bucket of their queued_at, workflow, current status and
 *   last error code, with the sum of their attempts. A delivery moves between statuses, so each event
 *   adds its delivery's state after the event and takes away its state before it (signed deltas;
 *   their sum over a delivery's events is its state now);
 * - email.metric_latency_rollups: the queued-to-sent latency of the sent ones as a log-bucketed
 *   histogram (DDSketch: bin i holds (g^(i-1), g^i] ms, g = (1 + a) / (1 - a), a = 0.005), which
 *   merges across buckets by adding counts;
 * - email.metric_outcome_rollups: attempt outcomes (sent, retrying, failed, dead_letter events) by
 *   the bucket of the event, workflow, recipient domain and SMTP relay (detail->>'relay', written by
 *   the tracker from SMTP_HOST; `unknown` when the event has none), so a provider that starts
 *   deferring shows as a rising retrying share of its domain or relay.
 *
 * The state an event leaves its delivery in comes from the trail itself (email._metric_facts): the
 * status it entered, its attempt number, and the error code of the last failing event (the statuses
 * with email.statuses.failing record the delivery's last error code in the event; the others keep
 * it); a status with no way out (email.transitions: sent, suppressed, purged) is final, so the
 * delivery's row is that state (its sent_at, and the error code a suppression sets). The state before
 * an event is the state after the delivery's previous event.
 *
 * Exact answers: a window [since, until) is cut into whole days and whole hours (from the rollups),
 * the events the fold has not added yet (ids past metric_state.last_event_id and gaps now committed:
 * their deltas, computed the same way, for deliveries inside the whole buckets), and the partial
 * hours at either edge (read from email.deliveries through deliveries_queued_at_idx, at most two
 * hours of rows). Counts, success rate and average attempts are then exactly those of the old query.
 * That cut is one rule (email._metric_window, _metric_tail, _metric_deliveries), which also answers
 * the dashboard's deliveries over time (email_api.delivery_series: per UTC-aligned bucket and status).
 * Latency percentiles: exact (percentile_cont over the rows) while the window holds at most
 * metric_state.exact_latency_limit deliveries; beyond, from the merged histogram, interpolated as
 * percentile_cont does between the values of ranks floor(r) and ceil(r). Every value of bin i is
 * within a = 0.5 % of the bin's value 2 g^i / (g + 1), and an interpolation of two values each within
 * 0.5 % is within 0.5 % of theirs: the estimate is within 0.5 % of the exact percentile (before both
 * are rounded to 0.1 ms), i.e. within 1 % with room for the rounding from 10 ms up.
 *
 * The rollups count the deliveries as the trail says; two assumptions hold in production and are
 * stated here: queued_at and sent_at change only through the lifecycle (a test that rewrites them
 * after the fold has read the delivery moves it outside its bucket), and the events of a delivery are
 * written at most a day before its queued_at (the context of an event is read from that time on, so
 * a time-partitioned trail reads few partitions). History that retention removes stays in the
 * rollups: metrics over months outlive the rows (email.rebuild_metric_rollups starts over from what
 * is kept).
 *
 * Domains and relays are labels of the registry email.metric_labels (caps in email.metric_state:
 * the busiest first, the rest count as other), as the Prometheus counters are: a domain admitted
 * later has its earlier events under other. email_recipient_domain_outcomes_total gains the label
 * relay (its counters so far move to relay="unknown").
 *
 * Nothing here writes on the lifecycle's path: the rollups are written by the fold only (pg_cron
 * each minute: sql/schedule_sweep.sql, and each Prometheus scrape). Tables: service_role only.
 */

-- ---------------------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------------------

alter table email.metric_state
  add column max_relays integer not null default 20 check (max_relays between 0 and 1000),
  add column exact_latency_limit integer not null default 10000 check (exact_latency_limit between 0 and 10000000);
comment on column email.metric_state.max_relays is 'How many SMTP relay hosts get a label of their own (the rest count as other)';
comment on column email.metric_state.exact_latency_limit is 'email_api.metrics computes exact latency percentiles for windows of at most this many deliveries; beyond, from the rollups'' histograms (within 0.5 %)';

alter table email.metric_labels drop constraint metric_labels_kind_check;
alter table email.metric_labels add constraint metric_labels_kind_check check (kind in ('domain', 'error_code', 'relay'));
comment on table email.metric_labels is 'Recipient domains, error codes and SMTP relays that have a label of their own in the counters and rollups (capped by email.metric_state)';

-- Deliveries per bucket of queued_at by workflow, status and last error code (signed deltas).
create table email.metric_rollups (
  grain text not null check (grain in ('hour', 'day')),
  bucket timestamptz not null,
  workflow text not null,
  status text not null,
  error_code text,
  deliveries bigint not null,
  attempts bigint not null,
  constraint metric_rollups_key unique nulls not distinct (grain, bucket, workflow, status, error_code)
);
alter table email.metric_rollups enable row level security;
comment on table email.metric_rollups is 'Deliveries per hour and day of queued_at by workflow, current status and last error code, with their attempts (kept by the metric fold)';

-- Latency histograms of the sent deliveries per bucket of queued_at and workflow.
create table email.metric_latency_rollups (
  grain text not null check (grain in ('hour', 'day')),
  bucket timestamptz not null,
  workflow text not null,
  bin smallint not null,
  deliveries bigint not null,
  primary key (grain, bucket, workflow, bin)
);
alter table email.metric_latency_rollups enable row level security;
comment on table email.metric_latency_rollups is 'Queued-to-sent latency of sent deliveries per hour and day of queued_at: counts per bin of email.latency_bin (relative accuracy 0.5 %)';

-- Attempt outcomes per bucket of the event by workflow, recipient domain and SMTP relay.
create table email.metric_outcome_rollups (
  grain text not null check (grain in ('hour', 'day')),
  bucket timestamptz not null,
  workflow text not null,
  domain text not null,
  relay text not null,
  status text not null,
  events bigint not null,
  primary key (grain, bucket, workflow, domain, relay, status)
);
alter table email.metric_outcome_rollups enable row level security;
comment on table email.metric_outcome_rollups is 'Attempt outcomes (sent, retrying, failed, dead_letter) per hour and day by workflow, recipient domain and relay labels (kept by the metric fold)';

grant select, insert, update, delete on email.metric_rollups, email.metric_latency_rollups, email.metric_outcome_rollups to service_role;

-- The domain counters so far had no relay: they become relay "unknown", so every series of the family
-- has the same labels (Prometheus sees new series; rate() over them starts from their first sample).
update email.metric_counters c set labels = c.labels || '{"relay": "unknown"}'
where c.family = 'domain_outcomes' and not c.labels ? 'relay';
update email.metric_families set help = 'Outcomes of attempts by recipient domain and SMTP relay (other: beyond the cap; relay unknown: not recorded)'
where family = 'email_recipient_domain_outcomes_total';

-- ---------------------------------------------------------------------------------------------
-- Functions
-- ---------------------------------------------------------------------------------------------

-- The four small immutable helpers below have no SET clause, unlike every other function here: a
-- function with one is never inlined, and these run once per row of the rollups' rebuilds and
-- windows (measured: 37 s instead of 6 s for the rebuild of 200,000 deliveries). They call only
-- built-in functions (pg_catalog is searched first whatever the search_path), run as the caller,
-- and read no table.

/** The start of the hour or day (UTC) that holds `at`. */
create or replace function email.metric_bucket(grain text, at timestamptz)
returns timestamptz
language sql
immutable
as $$
  select date_bin(case grain when 'hour' then interval '1 hour' when 'day' then interval '1 day' end,
    at, timestamptz '2000-01-01 00:00:00+00')
$$;
comment on function email.metric_bucket(text, timestamptz) is 'Start of the UTC hour or day holding a time: the rollups'' buckets';

/**
 * The histogram bin of a latency in milliseconds: ceil(ln(ms) / ln(g)) with g = 1.005 / 0.995, so bin
 * i holds (g^(i-1), g^i]; -32768 holds 0 (and anything not above it). Changing g changes the meaning
 * of every stored bin: the two functions below are the contract of email.metric_latency_rollups.
 */
create or replace function email.latency_bin(ms double precision)
returns smallint
language sql
immutable
as $$
  select case when ms > 0 then ceil(ln(ms) / ln(1.005::double precision / 0.995))::smallint else (-32768)::smallint end
$$;
comment on function email.latency_bin(double precision) is 'Histogram bin of a latency in ms (relative accuracy 0.5 %); -32768 for zero';

/** The value a bin stands for: 2 g^i / (g + 1), within 0.5 % of every latency in the bin; 0 for the zero bin. */
create or replace function email.latency_bin_value(bin smallint)
returns double precision
language sql
immutable
as $$
  select case when bin = -32768 then 0::double precision
    else 2 * power(1.005::double precision / 0.995, bin) / (1.005::double precision / 0.995 + 1) end
$$;
comment on function email.latency_bin_value(smallint) is 'The latency (ms) a histogram bin stands for: within 0.5 % of all it holds';

/**
 * Percentiles (continuous, as percentile_cont) of a histogram given as bins and counts: rank
 * f * (n - 1) interpolated between the values of the bins of ranks floor and ceil. Null when empty.
 */
create or replace function email.latency_percentiles(bins smallint[], counts bigint[], fractions double precision[])
returns double precision[]
language sql
immutable
set search_path = ''
as $$
  with b as (
    select u.bin, sum(u.n) over (order by u.bin) as upto
    from (select x.bin, sum(x.n) as n from unnest(bins, counts) x(bin, n) group by x.bin having sum(x.n) > 0) u
  ),
  r as (
    select q.i, q.f * (t.n - 1) as rank
    from (select max(b.upto) as n from b) t, unnest(fractions) with ordinality q(f, i)
    where t.n > 0
  )
  select array_agg(
    (select email.latency_bin_value(b.bin) from b where b.upto > floor(r.rank) order by b.bin limit 1) * (1 - (r.rank - floor(r.rank)))
    + (select email.latency_bin_value(b.bin) from b where b.upto > ceil(r.rank) order by b.bin limit 1) * (r.rank - floor(r.rank))
    order by r.i)
  from r
$$;
comment on function email.latency_percentiles(smallint[], bigint[], double precision[]) is 'Continuous percentiles of a latency histogram (within 0.5 % of the exact ones)';

/** Whether an event's status is the outcome of an attempt (what the domain and relay metrics count). */
create or replace function email.is_attempt_outcome(status text)
returns boolean
language sql
immutable
as $$
  select status in ('sent', 'retrying', 'failed', 'dead_letter')
$$;
comment on function email.is_attempt_outcome(text) is 'The statuses whose events are attempt outcomes: sent, retrying, failed, dead_letter';

/** The label a domain, error code or relay has now: itself when registered, else other (relay: unknown when null). */
create or replace function email.metric_label(kind text, value text)
returns text
language sql
stable
set search_path = ''
as $$
  select case
    when value is null then case when kind = 'relay' then 'unknown' end
    when exists (select from email.metric_labels l where l.kind = metric_label.kind and l.value = metric_label.value) then value
    else 'other'
  end
$$;
comment on function email.metric_label(text, text) is 'The metric label of a domain, error code or relay: itself when in email.metric_labels, else other';

/**
 * What the metrics need of the audit events with after_id < id <= upto_id and those in ids, one row
 * each (events of deliveries that no longer exist are left out; with inside_from/inside_until, only
 * the events of deliveries queued in that window or having one of those events in it): the event (time, status, error code,
 * relay), its delivery (workflow, domain, queued_at, and for a sent event the latency), and the
 * delivery's state before and after it (status, last error code, attempts; before is null for the
 * insert). See the header on how the state follows from the trail. One pass over each delivery's
 * events (by delivery_events_delivery_id_idx) with window functions, so a delivery with many events
 * costs linear time.
 */
create or replace function email._metric_facts(
  after_id bigint, upto_id bigint, ids bigint[] default '{}',
  inside_from timestamptz default null, inside_until timestamptz default null
)
returns table (
  event_id bigint, event_at timestamptz, workflow text, domain text, relay text, to_status text, error_code text,
  queued_at timestamptz, latency interval,
  before_status text, before_error text, before_attempts integer,
  after_error text, after_attempts integer
)
language sql
stable
set search_path = ''
as $$
  with ds as materialized (
    select d.delivery_id, d.workflow, d.recipient, d.queued_at, d.attempts, d.last_error_code, d.sent_at, x.upto
    from (
      select u.delivery_id, max(u.id) as upto,
        bool_or(u.created_at >= inside_from and u.created_at < inside_until) as event_inside
      from (
        -- apart, so each reads the primary key (an OR of the two reads every event)
        select e.delivery_id, e.id, e.created_at from email.delivery_events e where e.id > after_id and e.id <= upto_id
        union all
        select e.delivery_id, e.id, e.created_at from email.delivery_events e where e.id = any (ids)
      ) u
      group by u.delivery_id
    ) x
    join email.deliveries d on d.delivery_id = x.delivery_id
    -- with a window: only the deliveries queued in it, or with an asked-for event in it
    where inside_from is null or x.event_inside or (d.queued_at >= inside_from and d.queued_at < inside_until)
  ),
  -- every event of those deliveries up to the last one asked for, in order
  trail as (
    select ds.delivery_id, ds.workflow, ds.recipient, ds.queued_at, ds.attempts, ds.last_error_code, ds.sent_at,
      h.id, h.created_at, h.from_status, h.to_status, h.attempt, h.error_code, h.detail ->> 'relay' as relay,
      (h.id > after_id and h.id <= upto_id) or h.id = any (ids) as wanted,
      s.failing,
      not exists (select from email.transitions x where x.from_status = h.to_status) as final,
      lag(h.attempt) over w as attempt_before,
      -- numbers the failing events; the events after one share its number until the next
      count(*) filter (where s.failing) over w as failing_seen
    from ds
    cross join lateral (
      select h.* from email.delivery_events h
      where h.delivery_id = ds.delivery_id and h.id <= ds.upto and h.created_at >= ds.queued_at - interval '1 day'
    ) h
    join email.statuses s on s.status = h.to_status
    window w as (partition by h.delivery_id order by h.id)
  ),
  -- the delivery's last error code once the event is written (the code of the last failing event so far)
  coded as (
    select t.*, case when t.failing_seen > 0
      then first_value(t.error_code) over (partition by t.delivery_id, t.failing_seen order by t.id) end as error_now
    from trail t
  ),
  stepped as (
    select c.*, lag(c.error_now) over (partition by c.delivery_id order by c.id) as error_before
    from coded c
  )
  select t.id, t.created_at, t.workflow, email.recipient_domain(t.recipient), t.relay, t.to_status, t.error_code,
    t.queued_at,
    case when t.to_status = 'sent' then t.sent_at - t.queued_at end,
    t.from_status,
    case when t.from_status is not null then t.error_before end,
    case when t.from_status is not null then t.attempt_before end,
    case when t.final then t.last_error_code else t.error_now end,
    case when t.final then t.attempts else t.attempt end
  from stepped t
  where t.wanted
$$;
comment on function email._metric_facts(bigint, bigint, bigint[], timestamptz, timestamptz) is 'Per audit event (an id range and a list): the event, its delivery and the delivery''s state before and after it (the metric fold and email_api.metrics'' tail)';
revoke execute on function email._metric_facts(bigint, bigint, bigint[], timestamptz, timestamptz) from public;
grant execute on function email._metric_facts(bigint, bigint, bigint[], timestamptz, timestamptz) to service_role;

/**
 * Admits new label values: from candidate (kind, value, occurrences) rows, per kind the most frequent
 * values not yet in email.metric_labels, while the kind is under its cap; never other (nor unknown for
 * a relay). Returns the admitted rows (a statement that admits sees them only through this result).
 */
create or replace function email._admit_metric_labels(
  kinds text[], vals text[], counts bigint[], max_domains integer, max_error_codes integer, max_relays integer
)
returns table (kind text, value text)
language sql
volatile
set search_path = ''
as $$
  insert into email.metric_labels as l (kind, value)
  select x.kind, x.value from (
    select c.kind, c.value, row_number() over (partition by c.kind order by sum(c.n) desc, c.value) as rank
    from unnest(kinds, vals, counts) c(kind, value, n)
    where char_length(c.value) between 1 and 255 and c.value <> 'other' and not (c.kind = 'relay' and c.value = 'unknown')
      and not exists (select from email.metric_labels r where r.kind = c.kind and r.value = c.value)
    group by c.kind, c.value
  ) x
  where x.rank <= case x.kind when 'domain' then max_domains when 'error_code' then max_error_codes else max_relays end
    - (select count(*) from email.metric_labels r where r.kind = x.kind)
  on conflict do nothing
  returning l.kind, l.value
$$;
comment on function email._admit_metric_labels(text[], text[], bigint[], integer, integer, integer) is 'Admits the most frequent new domains, error codes and relays into email.metric_labels up to the caps';
revoke execute on function email._admit_metric_labels(text[], text[], bigint[], integer, integer, integer) from public;
grant execute on function email._admit_metric_labels(text[], text[], bigint[], integer, integer, integer) to service_role;

/**
 * Adds the given audit events to email.metric_counters and the rollups; returns how many it found.
 * Counters per event: transitions{workflow, status}; errors{workflow, error_code} when it carries
 * one; domain_outcomes{domain, relay, status} for attempt outcomes; for sent, latency_bucket{workflow,
 * le} and latency_sum{workflow}. Rollups: the delivery's state after the event added and its state
 * before taken away (metric_rollups, and metric_latency_rollups for sent), the outcome counted
 * (metric_outcome_rollups), each at both grains. New domains, error codes and relays are admitted,
 * busiest first, while the registry is under its cap; the rest count as other.
 */
create or replace function email._fold_metric_ids(ids bigint[], max_domains integer, max_error_codes integer)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  folded integer;
  max_relays integer := (select s.max_relays from email.metric_state s);
  lo bigint := (select min(u) from unnest(ids) u);
  hi bigint := (select max(u) from unnest(ids) u);
  whole boolean;
begin
  -- A chunk of the fold holds every visible event of its range: read it as a range.
  whole := cardinality(ids) = (select count(*) from email.delivery_events e where e.id >= lo and e.id <= hi);
  with ev as materialized (
    select f.*, f.to_status as status, extract(epoch from f.latency)::double precision as latency_s
    from email._metric_facts(case when whole then lo - 1 else 0 end, case when whole then hi else 0 end,
      case when whole then '{}' else ids end) f
  ),
  candidates as (
    select c.kind, c.value, count(*) as n
    from ev
    cross join lateral (values
      ('domain', case when email.is_attempt_outcome(ev.status) then ev.domain end),
      ('error_code', ev.error_code),
      ('relay', case when email.is_attempt_outcome(ev.status) then ev.relay end)) c(kind, value)
    where c.value is not null
    group by c.kind, c.value
  ),
  admitted as materialized (
    select a.kind, a.value
    from (select array_agg(c.kind) as kinds, array_agg(c.value) as vals, array_agg(c.n) as counts from candidates c) x
    cross join lateral email._admit_metric_labels(x.kinds, x.vals, x.counts, max_domains, max_error_codes, max_relays) a
  ),
  labels as (
    select l.kind, l.value from email.metric_labels l union select a.kind, a.value from admitted a
  ),
  domains as (select l.value from labels l where l.kind = 'domain'),
  codes as (select l.value from labels l where l.kind = 'error_code'),
  relays as (select l.value from labels l where l.kind = 'relay'),
  labelled as materialized (
    select ev.*,
      case when ev.domain in (select m.value from domains m) then ev.domain else 'other' end as domain_label,
      case when ev.relay is null then 'unknown' when ev.relay in (select r.value from relays r) then ev.relay else 'other' end as relay_label
    from ev
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
    select 'domain_outcomes', jsonb_build_object('domain', ev.domain_label, 'relay', ev.relay_label, 'status', ev.status), 1
    from labelled ev where email.is_attempt_outcome(ev.status)
    union all
    select 'latency_bucket', jsonb_build_object('workflow', ev.workflow, 'le', coalesce(
        (select min(b.le) from email.metric_latency_buckets b where b.le >= ev.latency_s),
        'Infinity'::double precision)::text), 1
    from ev where ev.latency_s is not null
    union all
    select 'latency_sum', jsonb_build_object('workflow', ev.workflow), greatest(ev.latency_s, 0)
    from ev where ev.latency_s is not null
  ),
  upserted as (
    insert into email.metric_counters as c (family, labels, value)
    select x.family, x.labels, sum(x.v) from deltas x group by x.family, x.labels
    on conflict (family, labels) do update set value = c.value + excluded.value, updated_at = now()
    returning 1
  ),
  -- the delivery's state after the event counts, its state before no longer does
  states as (
    select ev.queued_at, ev.workflow, ev.before_status as status, ev.before_error as error_code,
      -1 as n, -ev.before_attempts as attempts, null::interval as latency
    from ev where ev.before_status is not null
    union all
    select ev.queued_at, ev.workflow, ev.status, ev.after_error, 1, ev.after_attempts, ev.latency
    from ev
  ),
  grains as (select g.grain from unnest(array['hour', 'day']) g(grain)),
  rolled as (
    insert into email.metric_rollups as r (grain, bucket, workflow, status, error_code, deliveries, attempts)
    select g.grain, email.metric_bucket(g.grain, s.queued_at), s.workflow, s.status, s.error_code, sum(s.n), sum(s.attempts)
    from states s, grains g
    group by 1, 2, 3, 4, 5
    on conflict on constraint metric_rollups_key do update
      set deliveries = r.deliveries + excluded.deliveries, attempts = r.attempts + excluded.attempts
    returning 1
  ),
  latencies as (
    insert into email.metric_latency_rollups as r (grain, bucket, workflow, bin, deliveries)
    select g.grain, email.metric_bucket(g.grain, s.queued_at), s.workflow,
      email.latency_bin(extract(epoch from s.latency)::double precision * 1000), sum(s.n)
    from states s, grains g
    where s.status = 'sent' and s.latency is not null
    group by 1, 2, 3, 4
    on conflict (grain, bucket, workflow, bin) do update set deliveries = r.deliveries + excluded.deliveries
    returning 1
  ),
  outcomes as (
    insert into email.metric_outcome_rollups as r (grain, bucket, workflow, domain, relay, status, events)
    select g.grain, email.metric_bucket(g.grain, ev.event_at), ev.workflow, coalesce(ev.domain_label, 'other'),
      ev.relay_label, ev.status, count(*)
    from labelled ev, grains g
    where email.is_attempt_outcome(ev.status)
    group by 1, 2, 3, 4, 5, 6
    on conflict (grain, bucket, workflow, domain, relay, status) do update set events = r.events + excluded.events
    returning 1
  )
  select count(*)::int into folded
  from ev, (select count(*) from upserted) u, (select count(*) from rolled) r, (select count(*) from latencies) l,
    (select count(*) from outcomes) o;
  return folded;
end
$$;
comment on function email._fold_metric_ids(bigint[], integer, integer) is 'Adds the given audit events to email.metric_counters and the rollups (internal to fold_metric_events)';
revoke execute on function email._fold_metric_ids(bigint[], integer, integer) from public;
grant execute on function email._fold_metric_ids(bigint[], integer, integer) to service_role;

/**
 * Rebuilds the rollups from what the database holds, for the events folded so far: the deliveries'
 * rows as they are now, minus the deltas of the events not folded yet (which the next folds add),
 * and the outcome events up to the watermark. Waits for a running fold. With adopt_history the
 * watermark first moves to the newest event, so a history loaded in bulk (or kept from before the
 * fold ran) counts as folded without being read event by event: the Prometheus counters then do not
 * count it (they only ever grow from where they are), and ids missing from the last hour of the trail
 * are kept as gaps. Unregistered domains and relays of the counted outcomes are admitted, busiest
 * first, up to the caps. Returns what it rebuilt.
 */
create or replace function email.rebuild_metric_rollups(adopt_history boolean)
returns jsonb
language plpgsql
volatile
set search_path = ''
set work_mem = '256MB'
as $$
declare
  st email.metric_state;
  top bigint;
  gaps bigint[];
  n_tail bigint;
  n_rollups bigint;
  n_outcomes bigint;
begin
  select s.* into st from email.metric_state s for update;
  if adopt_history then
    top := coalesce((select max(e.id) from email.delivery_events e), 0);
    if top > st.last_event_id then
      insert into email.metric_gaps (event_id)
      select g from generate_series(
        greatest(st.last_event_id, coalesce((select min(e.id) from email.delivery_events e where e.created_at > now() - interval '1 hour'), top)) + 1,
        top) g
      where not exists (select from email.delivery_events e where e.id = g)
      on conflict do nothing;
      update email.metric_state s set last_event_id = top, folded_at = now() where s.singleton returning s.* into st;
    end if;
  end if;

  delete from email.metric_rollups;
  delete from email.metric_latency_rollups;
  delete from email.metric_outcome_rollups;

  top := coalesce((select max(e.id) from email.delivery_events e), st.last_event_id);
  select coalesce(array_agg(g.event_id), '{}') into gaps
  from email.metric_gaps g where exists (select from email.delivery_events e where e.id = g.event_id);

  with facts as materialized (
    select * from email._metric_facts(st.last_event_id, top, gaps)
  ),
  states as materialized (
    select d.queued_at, d.workflow, d.status, d.last_error_code as error_code, 1 as n, d.attempts,
      case when d.status = 'sent' then d.sent_at - d.queued_at end as latency
    from email.deliveries d
    union all
    select f.queued_at, f.workflow, f.before_status, f.before_error, 1, f.before_attempts, null
    from facts f where f.before_status is not null
    union all
    select f.queued_at, f.workflow, f.to_status, f.after_error, -1, -f.after_attempts, f.latency
    from facts f
  ),
  grains as (select g.grain from unnest(array['hour', 'day']) g(grain)),
  latencies as (
    insert into email.metric_latency_rollups (grain, bucket, workflow, bin, deliveries)
    select g.grain, email.metric_bucket(g.grain, s.queued_at), s.workflow,
      email.latency_bin(extract(epoch from s.latency)::double precision * 1000), sum(s.n)
    from states s, grains g
    where s.status = 'sent' and s.latency is not null
    group by 1, 2, 3, 4
    having sum(s.n) <> 0
  )
  insert into email.metric_rollups (grain, bucket, workflow, status, error_code, deliveries, attempts)
  select g.grain, email.metric_bucket(g.grain, s.queued_at), s.workflow, s.status, s.error_code, sum(s.n), sum(s.attempts)
  from states s, grains g
  group by 1, 2, 3, 4, 5
  having sum(s.n) <> 0 or sum(s.attempts) <> 0;
  get diagnostics n_rollups = row_count;
  select count(*) into n_tail from email._metric_facts(st.last_event_id, top, gaps);

  create temporary table _metric_outcomes on commit drop as
  select e.created_at, d.workflow, email.recipient_domain(d.recipient) as domain, e.detail ->> 'relay' as relay, e.to_status as status
  from email.delivery_events e
  join email.deliveries d on d.delivery_id = e.delivery_id
  where e.id <= st.last_event_id and email.is_attempt_outcome(e.to_status)
    and not exists (select from email.metric_gaps g where g.event_id = e.id);

  perform email._admit_metric_labels(array_agg(k.kind), array_agg(k.value), array_agg(k.n), st.max_domains, st.max_error_codes, st.max_relays)
  from (
    select 'domain' as kind, o.domain as value, count(*) as n from _metric_outcomes o where o.domain is not null group by o.domain
    union all
    select 'relay', o.relay, count(*) from _metric_outcomes o where o.relay is not null group by o.relay
  ) k;

  -- grouped by domain and relay first, labelled after (a label per group, not per event)
  insert into email.metric_outcome_rollups (grain, bucket, workflow, domain, relay, status, events)
  select x.grain, x.bucket, x.workflow, coalesce(email.metric_label('domain', x.domain), 'other'),
    email.metric_label('relay', x.relay), x.status, sum(x.n)
  from (
    select g.grain, email.metric_bucket(g.grain, o.created_at) as bucket, o.workflow, o.domain, o.relay, o.status, count(*) as n
    from _metric_outcomes o, (select g.grain from unnest(array['hour', 'day']) g(grain)) g
    group by 1, 2, 3, 4, 5, 6
  ) x
  group by 1, 2, 3, 4, 5, 6;
  get diagnostics n_outcomes = row_count;
  drop table _metric_outcomes;

  return jsonb_build_object('last_event_id', st.last_event_id, 'tail_events', n_tail,
    'rollup_rows', n_rollups, 'outcome_rollup_rows', n_outcomes,
    'latency_rollup_rows', (select count(*) from email.metric_latency_rollups));
end
$$;
comment on function email.rebuild_metric_rollups(boolean) is 'Rebuilds the metric rollups from the rows (minus the unfolded tail); adopt_history first counts the whole trail as folded';
revoke execute on function email.rebuild_metric_rollups(boolean) from public;
grant execute on function email.rebuild_metric_rollups(boolean) to service_role;

/**
 * The rule behind every exact answer from the rollups, in one place (email_api.metrics and
 * email_api.delivery_series): a window [since, until) of queued_at is cut into whole hours [h0, h1)
 * from the rollups, whole days [d0, d1) among them at the day grain (when the caller can use days),
 * the partial hours [since, h0) and [h1, until) from the rows, and the events the fold has not added
 * yet (their deltas, for deliveries inside the whole buckets).
 */
create or replace function email._metric_window(
  since timestamptz, until timestamptz, days boolean,
  out h0 timestamptz, out h1 timestamptz, out d0 timestamptz, out d1 timestamptz
)
language plpgsql
immutable
set search_path = ''
as $$
begin
  h0 := email.metric_bucket('hour', since);
  if h0 < since then
    h0 := h0 + interval '1 hour';
  end if;
  h1 := email.metric_bucket('hour', until);
  if h1 <= h0 then
    h0 := until;
    h1 := until;
  end if;
  d0 := email.metric_bucket('day', h0);
  if d0 < h0 then
    d0 := d0 + interval '1 day';
  end if;
  d1 := email.metric_bucket('day', h1);
  if d1 <= d0 or not days then
    d0 := h1;
    d1 := h1;
  end if;
end
$$;
comment on function email._metric_window(timestamptz, timestamptz, boolean) is 'Cuts a window into whole hours [h0, h1) and whole days [d0, d1) (none unless days) of the rollups; the rest is read from the rows';

-- The events the fold has not added yet, as arguments of email._metric_facts: after its watermark
-- (after_id) up to the last one (upto), and its gaps that have committed since; none when [h0, h1)
-- is empty.
create or replace function email._metric_tail(h0 timestamptz, h1 timestamptz, out after_id bigint, out upto bigint, out gaps bigint[])
language plpgsql
stable
set search_path = ''
as $$
begin
  select s.last_event_id into after_id from email.metric_state s;
  upto := after_id;
  gaps := '{}';
  if h1 > h0 then
    upto := coalesce((select max(e.id) from email.delivery_events e), after_id);
    select coalesce(array_agg(g.event_id), '{}') into gaps
    from email.metric_gaps g where exists (select from email.delivery_events e where e.id = g.event_id);
  end if;
end
$$;
comment on function email._metric_tail(timestamptz, timestamptz) is 'The unfolded events (id range and committed gaps) an exact answer over whole hours [h0, h1) adds to the rollups';

-- Deliveries queued in [since, until) as signed parts (at, workflow, status, error code, count,
-- attempts, latency): rollup rows (at = their bucket), the unfolded events' deltas and the rows of
-- the partial hours (at = queued_at; latency for the sent ones). Their sums per status are exact.
create or replace function email._metric_deliveries(since timestamptz, until timestamptz, only_workflow text, days boolean)
returns table (at timestamptz, workflow text, status text, error_code text, n bigint, attempts bigint, latency interval)
language plpgsql
stable
set search_path = ''
as $$
declare
  w record;
  t record;
begin
  select * into w from email._metric_window(_metric_deliveries.since, _metric_deliveries.until, days);
  select * into t from email._metric_tail(w.h0, w.h1);
  return query
  with facts as materialized (
    select f.* from email._metric_facts(t.after_id, t.upto, t.gaps, w.h0, w.h1) f
    where _metric_deliveries.only_workflow is null or f.workflow = _metric_deliveries.only_workflow
  )
  select r.bucket, r.workflow, r.status, r.error_code, r.deliveries, r.attempts, null::interval from email.metric_rollups r
  where r.grain = 'day' and r.bucket >= w.d0 and r.bucket < w.d1
    and (_metric_deliveries.only_workflow is null or r.workflow = _metric_deliveries.only_workflow)
  union all
  select r.bucket, r.workflow, r.status, r.error_code, r.deliveries, r.attempts, null from email.metric_rollups r
  where r.grain = 'hour' and r.bucket >= w.h0 and r.bucket < w.d0
    and (_metric_deliveries.only_workflow is null or r.workflow = _metric_deliveries.only_workflow)
  union all
  select r.bucket, r.workflow, r.status, r.error_code, r.deliveries, r.attempts, null from email.metric_rollups r
  where r.grain = 'hour' and r.bucket >= w.d1 and r.bucket < w.h1
    and (_metric_deliveries.only_workflow is null or r.workflow = _metric_deliveries.only_workflow)
  union all
  select f.queued_at, f.workflow, f.before_status, f.before_error, -1::bigint, -f.before_attempts::bigint, null
  from facts f where f.before_status is not null and f.queued_at >= w.h0 and f.queued_at < w.h1
  union all
  select f.queued_at, f.workflow, f.to_status, f.after_error, 1::bigint, f.after_attempts::bigint, f.latency
  from facts f where f.queued_at >= w.h0 and f.queued_at < w.h1
  union all
  -- the partial hours: one range each, through deliveries_queued_at_idx
  select d.queued_at, d.workflow, d.status, d.last_error_code, 1::bigint, d.attempts::bigint,
    case when d.status = 'sent' then d.sent_at - d.queued_at end
  from email.deliveries d
  where d.queued_at >= _metric_deliveries.since and d.queued_at < w.h0
    and (_metric_deliveries.only_workflow is null or d.workflow = _metric_deliveries.only_workflow)
  union all
  select d.queued_at, d.workflow, d.status, d.last_error_code, 1::bigint, d.attempts::bigint,
    case when d.status = 'sent' then d.sent_at - d.queued_at end
  from email.deliveries d
  where d.queued_at >= w.h1 and d.queued_at < _metric_deliveries.until
    and (_metric_deliveries.only_workflow is null or d.workflow = _metric_deliveries.only_workflow);
end
$$;
comment on function email._metric_deliveries(timestamptz, timestamptz, text, boolean) is 'The deliveries of a queued_at window as signed parts from the rollups, the unfolded events and the partial hours (exact sums; email_api.metrics and email_api.delivery_series)';

/**
 * Deliveries over time: how many deliveries queued in [since, until) (of a workflow, or all) are
 * in each current status, per bucket of queued_at of the given width (the dashboard's chart), exact.
 * Buckets start at multiples of the width from 2001-01-01 00:00 UTC (so hours, 6 hours and days
 * start on UTC hour and day boundaries; the first may start before since). Widths that are whole
 * hours are answered from the rollups (email._metric_deliveries: whole days when the width is whole
 * days, else whole hours, plus the tail and the partial hours); shorter or uneven widths read the
 * rows, which is fine for the short windows they serve (the dashboard's 1h and 6h). service_role only.
 */
create or replace function email_api.delivery_series(since timestamptz, until timestamptz, width interval, workflow text default null)
returns table (t timestamptz, status text, n bigint)
language plpgsql
stable
set search_path = ''
as $$
declare
  origin constant timestamptz := '2001-01-01 00:00:00+00';
  secs numeric := extract(epoch from width);
begin
  if since is null or until is null or since > until then
    raise exception 'the window must have since <= until, not % .. %', since, until using errcode = 'EM006';
  end if;
  if width is null or secs <= 0 or extract(month from width) <> 0 or extract(year from width) <> 0 then
    raise exception 'the bucket width must be a positive interval of days, hours, minutes or seconds, not %', width using errcode = 'EM006';
  end if;
  if secs >= 3600 and secs % 3600 = 0 then
    return query
    select date_bin(width, p.at, origin), p.status, sum(p.n)::bigint
    from email._metric_deliveries(since, until, delivery_series.workflow, secs % 86400 = 0) p
    group by 1, 2
    having sum(p.n) <> 0
    order by 1, 2;
  else
    return query
    select date_bin(width, d.queued_at, origin), d.status, count(*)
    from email.deliveries d
    where d.queued_at >= since and d.queued_at < until and (delivery_series.workflow is null or d.workflow = delivery_series.workflow)
    group by 1, 2
    order by 1, 2;
  end if;
end
$$;
comment on function email_api.delivery_series(timestamptz, timestamptz, interval, text) is 'Deliveries queued in a window per bucket of queued_at (UTC-aligned) and current status, exact; from the rollups for whole-hour widths (service_role)';
revoke execute on function email_api.delivery_series(timestamptz, timestamptz, interval, text) from public, anon, authenticated;
grant execute on function email_api.delivery_series(timestamptz, timestamptz, interval, text) to service_role;
revoke execute on function
  email._metric_window(timestamptz, timestamptz, boolean),
  email._metric_tail(timestamptz, timestamptz),
  email._metric_deliveries(timestamptz, timestamptz, text, boolean)
from public, anon, authenticated;
grant execute on function
  email._metric_window(timestamptz, timestamptz, boolean),
  email._metric_tail(timestamptz, timestamptz),
  email._metric_deliveries(timestamptz, timestamptz, text, boolean)
to service_role;

/**
 * Delivery metrics over the deliveries queued in [since, until), per workflow and in total:
 * - total and by_status (counts per current status);
 * - success_rate: sent / completed, where completed counts the terminal statuses of email.statuses
 *   (sent, failed, dead_letter, suppressed, purged; null when none);
 * - avg_attempts: mean attempts of the completed deliveries;
 * - latency_ms p50/p95/p99: from queued_at to sent_at, over the sent ones (exact up to
 *   metric_state.exact_latency_limit deliveries in the window, else within 0.5 %: see the header);
 * - errors: per workflow and last error code, how many deliveries and how they ended;
 * - domains and relays: the attempt outcomes (sent, retrying, failed, dead_letter events) that
 *   happened in [since, until), per recipient domain and per SMTP relay label, with deferral_rate =
 *   retrying / outcomes;
 * - dead_letter_queue: now, regardless of the window: size and age of the oldest dead letter;
 * - source: how it was computed (whole days and hours from the rollups, the unfolded events, the
 *   partial hours read from the rows, exact or histogram latency).
 * Counts are exact: rollups for the whole buckets, the unfolded tail's deltas, the rows of the
 * partial hours. Support staff and service_role only (42501 otherwise). Security definer so it reads
 * the tables without per-row RLS; the caller is checked first.
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
  st email.metric_state;
  h0 timestamptz;
  h1 timestamptz;
  d0 timestamptz;
  d1 timestamptz;
  result jsonb;
begin
  perform email._require_support_or_service();
  if since is null or until is null or since > until then
    raise exception 'the window must have since <= until, not % .. %', since, until using errcode = 'EM006';
  end if;
  select s.* into st from email.metric_state s;

  select w.h0, w.h1, w.d0, w.d1 into h0, h1, d0, d1 from email._metric_window(metrics.since, metrics.until, true) w;

  with facts as materialized (
    select f.* from email._metric_tail(h0, h1) t, email._metric_facts(t.after_id, t.upto, t.gaps, h0, h1) f
    where metrics.workflow is null or f.workflow = metrics.workflow
  ),
  -- Deliveries as (workflow, status, error code, count, attempts, latency), from the three sources.
  parts as materialized (
    select p.workflow, p.status, p.error_code, p.n, p.attempts, p.latency
    from email._metric_deliveries(metrics.since, metrics.until, metrics.workflow, true) p
  ),
  window_size as (
    select coalesce(sum(p.n), 0) as n from parts p
  ),
  -- The latency histogram as (workflow, bin, count), from the same sources.
  bins as (
    select r.workflow, r.bin, r.deliveries as n from email.metric_latency_rollups r
    where r.grain = 'day' and r.bucket >= d0 and r.bucket < d1 and (metrics.workflow is null or r.workflow = metrics.workflow)
    union all
    select r.workflow, r.bin, r.deliveries from email.metric_latency_rollups r
    where r.grain = 'hour' and r.bucket >= h0 and r.bucket < d0 and (metrics.workflow is null or r.workflow = metrics.workflow)
    union all
    select r.workflow, r.bin, r.deliveries from email.metric_latency_rollups r
    where r.grain = 'hour' and r.bucket >= d1 and r.bucket < h1 and (metrics.workflow is null or r.workflow = metrics.workflow)
    union all
    select p.workflow, email.latency_bin(extract(epoch from p.latency)::double precision * 1000), 1
    from parts p where p.latency is not null
  ),
  histogram as materialized (
    select grouping(b.workflow) = 1 as is_total, b.workflow,
      email.latency_percentiles(array_agg(b.bin), array_agg(b.n::bigint), array[0.5, 0.95, 0.99]) as latency
    from bins b
    group by grouping sets ((b.workflow), ())
  ),
  -- Exact percentiles while the window is small (read only then: a one-time filter).
  exact as materialized (
    select grouping(w.workflow) = 1 as is_total, w.workflow,
      percentile_cont(array[0.5, 0.95, 0.99]) within group (order by extract(epoch from w.sent_at - w.queued_at) * 1000) as latency
    from (
      select d.workflow collate "C" as workflow, d.queued_at, d.sent_at
      from email.deliveries d
      where (select z.n from window_size z) <= st.exact_latency_limit
        and d.queued_at >= metrics.since and d.queued_at < metrics.until and d.status = 'sent'
        and (metrics.workflow is null or d.workflow = metrics.workflow)
    ) w
    group by grouping sets ((w.workflow), ())
  ),
  per_workflow as (
    select
      grouping(p.workflow) = 1 as is_total,
      p.workflow,
      sum(p.n) as total,
      coalesce(sum(p.n) filter (where s.terminal), 0) as completed,
      coalesce(sum(p.n) filter (where p.status = 'sent'), 0) as sent,
      sum(p.attempts) filter (where s.terminal) as attempts
    from parts p
    join email.statuses s on s.status = p.status
    group by grouping sets ((p.workflow), ())
    having sum(p.n) > 0
  ),
  per_status as (
    select s.is_total, s.workflow, jsonb_object_agg(s.status, s.n order by s.status) as by_status
    from (
      select grouping(p.workflow) = 1 as is_total, p.workflow, p.status, sum(p.n) as n
      from parts p
      group by grouping sets ((p.workflow, p.status), (p.status))
      having sum(p.n) <> 0
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
        'avg_attempts', round(p.attempts::numeric / nullif(p.completed, 0), 2),
        'latency_ms', jsonb_build_object(
          'p50', round(l.latency[1]::numeric, 1),
          'p95', round(l.latency[2]::numeric, 1),
          'p99', round(l.latency[3]::numeric, 1))
      ) as doc
    from per_workflow p
    cross join lateral (
      select case when (select z.n from window_size z) <= st.exact_latency_limit
        then (select x.latency from exact x where x.is_total = p.is_total and x.workflow is not distinct from p.workflow)
        else (select h.latency from histogram h where h.is_total = p.is_total and h.workflow is not distinct from p.workflow)
      end as latency
    ) l
  ),
  errors as (
    select jsonb_agg(jsonb_build_object(
      'workflow', e.workflow, 'error_code', e.error_code, 'deliveries', e.n,
      'sent', e.sent, 'failed', e.failed, 'dead_letter', e.dead_letter)
      order by e.n desc, e.workflow collate "C", e.error_code) as doc
    from (
      select p.workflow, p.error_code, sum(p.n) as n,
        coalesce(sum(p.n) filter (where s.counts_as = 'sent'), 0) as sent,
        coalesce(sum(p.n) filter (where s.counts_as = 'failed'), 0) as failed,
        coalesce(sum(p.n) filter (where s.counts_as = 'dead_letter'), 0) as dead_letter
      from parts p
      join email.statuses s on s.status = p.status
      where p.error_code is not null
      group by p.workflow, p.error_code
      having sum(p.n) > 0
    ) e
  ),
  -- Attempt outcomes in the window by domain and relay label: rollups, tail and the partial hours
  -- (events by created_at), the last two grouped first and labelled after.
  edge_events as (
    -- one range each, so each reads its partition of the trail through the created_at index
    select e.delivery_id, e.detail ->> 'relay' as relay, e.to_status as status from email.delivery_events e
    where e.created_at >= metrics.since and e.created_at < h0 and email.is_attempt_outcome(e.to_status)
    union all
    select e.delivery_id, e.detail ->> 'relay', e.to_status from email.delivery_events e
    where e.created_at >= h1 and e.created_at < metrics.until and email.is_attempt_outcome(e.to_status)
  ),
  raw_outcomes as (
    select email.recipient_domain(d.recipient) as domain, e.relay, e.status, count(*) as n
    from edge_events e
    join email.deliveries d on d.delivery_id = e.delivery_id
    where metrics.workflow is null or d.workflow = metrics.workflow
    group by 1, 2, 3
    union all
    select f.domain, f.relay, f.to_status, count(*)
    from facts f
    where email.is_attempt_outcome(f.to_status) and f.event_at >= h0 and f.event_at < h1
    group by 1, 2, 3
  ),
  outcomes as materialized (
    select o.domain, o.relay, o.status, o.events as n from email.metric_outcome_rollups o
    where o.grain = 'day' and o.bucket >= d0 and o.bucket < d1 and (metrics.workflow is null or o.workflow = metrics.workflow)
    union all
    select o.domain, o.relay, o.status, o.events from email.metric_outcome_rollups o
    where o.grain = 'hour' and o.bucket >= h0 and o.bucket < d0 and (metrics.workflow is null or o.workflow = metrics.workflow)
    union all
    select o.domain, o.relay, o.status, o.events from email.metric_outcome_rollups o
    where o.grain = 'hour' and o.bucket >= d1 and o.bucket < h1 and (metrics.workflow is null or o.workflow = metrics.workflow)
    union all
    select coalesce(email.metric_label('domain', r.domain), 'other'), email.metric_label('relay', r.relay), r.status, r.n
    from raw_outcomes r
  ),
  by_label as (
    select x.kind, jsonb_agg(jsonb_build_object(x.kind, x.label, 'outcomes', x.n, 'sent', x.sent, 'retrying', x.retrying,
        'failed', x.failed, 'dead_letter', x.dead_letter, 'deferral_rate', round(x.retrying::numeric / x.n, 4))
      order by x.n desc, x.label collate "C") as doc
    from (
      select g.kind, g.label, sum(o.n) as n,
        coalesce(sum(o.n) filter (where o.status = 'sent'), 0) as sent,
        coalesce(sum(o.n) filter (where o.status = 'retrying'), 0) as retrying,
        coalesce(sum(o.n) filter (where o.status = 'failed'), 0) as failed,
        coalesce(sum(o.n) filter (where o.status = 'dead_letter'), 0) as dead_letter
      from outcomes o
      cross join lateral (values ('domain', o.domain), ('relay', o.relay)) g(kind, label)
      group by g.kind, g.label
      having sum(o.n) > 0
    ) x
    group by x.kind
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
    'domains', coalesce((select b.doc from by_label b where b.kind = 'domain'), '[]'::jsonb),
    'relays', coalesce((select b.doc from by_label b where b.kind = 'relay'), '[]'::jsonb),
    'dead_letter_queue', jsonb_build_object(
      'size', coalesce((select (q.doc ->> 'size')::bigint from dlq q where q.is_total), 0),
      'oldest_at', (select q.doc -> 'oldest_at' from dlq q where q.is_total),
      'oldest_age_seconds', (select q.doc -> 'oldest_age_seconds' from dlq q where q.is_total),
      'workflows', coalesce((select jsonb_agg(q.doc order by q.doc ->> 'workflow') from dlq q where not q.is_total), '[]'::jsonb)),
    'source', jsonb_build_object(
      'rollup_days', greatest(extract(epoch from d1 - d0) / 86400, 0)::int,
      'rollup_hours', greatest(extract(epoch from (d0 - h0) + (h1 - d1)) / 3600, 0)::int,
      'rows_before', case when h0 > metrics.since then jsonb_build_array(metrics.since, h0) end,
      'rows_after', case when metrics.until > h1 then jsonb_build_array(h1, metrics.until) end,
      'unfolded_events', (select count(*) from facts),
      'latency', case when (select z.n from window_size z) <= st.exact_latency_limit then 'exact' else 'histogram' end)
  ) into result;
  return result;
end
$$;
comment on function email_api.metrics(timestamptz, timestamptz, text) is 'Delivery metrics over a queued_at window from the rollups (exact counts), outcomes by domain and relay, and the dead-letter queue (support and service_role)';
revoke execute on function email_api.metrics(timestamptz, timestamptz, text) from public;
grant execute on function email_api.metrics(timestamptz, timestamptz, text) to authenticated, service_role;

-- The rollups start from what the database holds now (the fold keeps them from here on).
select email.rebuild_metric_rollups(false);

-- Postgres grants EXECUTE to PUBLIC on every new function: only service_role calls these (email_api.metrics,
-- security definer, reaches them as their owner).
revoke execute on function
  email.metric_bucket(text, timestamptz),
  email.latency_bin(double precision),
  email.latency_bin_value(smallint),
  email.latency_percentiles(smallint[], bigint[], double precision[]),
  email.is_attempt_outcome(text),
  email.metric_label(text, text)
from public, anon, authenticated;
grant execute on function
  email.metric_bucket(text, timestamptz),
  email.latency_bin(double precision),
  email.latency_bin_value(smallint),
  email.latency_percentiles(smallint[], bigint[], double precision[]),
  email.is_attempt_outcome(text),
  email.metric_label(text, text)
to service_role;
