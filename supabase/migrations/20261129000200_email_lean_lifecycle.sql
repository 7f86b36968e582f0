/**
 * email: the lean lifecycle (issue 12).
 *
 * What a delivery costs the database, per lifecycle, measured by `npm run bench` (docs/performance.md
 * has the figures of each change):
 * - the worker's push path is one RPC, email.queue_and_claim: a new delivery is born in_progress
 *   (attempt 1, under a lease) instead of being inserted queued and updated in_progress in the same
 *   statement. One row version and one audit event fewer. The audit trail still has one event per
 *   transition: a pushed delivery that is sent writes two events,
 *     (null -> in_progress, attempt 1, detail.lease_expires_at)  and  (in_progress -> sent, attempt 1);
 *   a delivery accepted without a claim (email.record_queued: the API, a suppressed recipient) still
 *   starts with (null -> queued). Webhook receivers and the metrics see email.in_progress as the first
 *   event of a pushed delivery.
 * - email.deliveries keeps only the indexes something reads: the key, the two end-user (RLS) indexes,
 *   the metrics' queued_at index and the partial ones (due, lease, dead letters, and the dashboard's
 *   failing or suppressed ones by updated_at), which cost nothing to rows outside their statuses. Gone:
 *   (status, updated_at), whose one reader (the dashboard) the partial index serves, (recipient,
 *   updated_at), which no query used, and the open-recipient index, which duplicated deliveries_recipient_lower_idx for the
 *   few deliveries of one address a new suppression looks at. fillfactor 80 leaves room on each page,
 *   so an update's new row version usually lands on its page (a smaller WAL record).
 * - status no longer references email.statuses by a foreign key, which took a share lock on the
 *   status row on every transition (a WAL record, and a MultiXact when clients collide on the same
 *   status): the BEFORE trigger already admits only the transitions of email.transitions (whose rows
 *   reference email.statuses) and inserts that start queued or in_progress.
 * - updated_at is kept by the transition trigger (one trigger call fewer per update), and mark_sent
 *   updates under its fence in one statement (no SELECT ... FOR UPDATE first, whose lock is another
 *   WAL record); it falls back to the fence's checks only when the update finds nothing.
 *
 * The relay of each attempt's outcome: mark_sent and record_failure take the SMTP relay host the
 * worker sent through (`relay`, its SMTP_HOST; optional, null when unknown, e.g. for the reaper) and
 * record it in the outcome's audit event as detail->>'relay' (sent, retrying, failed, dead_letter).
 * The per-relay metrics read it from there.
 */

-- ---------------------------------------------------------------------------------------------
-- email.deliveries: only the indexes something reads, room for updates, no lock on email.statuses
-- ---------------------------------------------------------------------------------------------

drop index email.deliveries_status_updated_at_idx;
drop index email.deliveries_recipient_updated_at_idx;
-- A new suppression finds the address's open deliveries by deliveries_recipient_lower_idx.
drop index email.deliveries_open_recipient_idx;
-- What the dashboard lists as needing a look (the failing statuses and suppressed, latest first) read
-- the (status, updated_at) index; a partial index serves it without an entry for a delivery that is
-- sent. Literal, as partial-index predicates must be: the statuses with failing or counts_as =
-- 'suppressed' in email.statuses (supabase/tests/010 checks they are the same).
create index deliveries_attention_idx on email.deliveries (updated_at)
  where status in ('retrying', 'failed', 'dead_letter', 'suppressed');
alter table email.deliveries set (fillfactor = 80);
-- The transition trigger admits only known statuses (see the header).
alter table email.deliveries drop constraint deliveries_status_fkey;

-- updated_at is kept by _200_apply_transition now.
drop trigger _100_touch_updated_at on email.deliveries;

/**
 * Refuses inserts that do not start queued or in_progress, and status changes that are not in
 * email.transitions (EM001); derives what each transition implies, so no caller can get it wrong:
 * - entering in_progress (by an update, or born in_progress by email.queue_and_claim): attempts + 1
 *   (the only place attempts grows), last_attempted_at, a lease, nothing due, and no send started
 *   yet (send_started_at, set by renew_lease when the SMTP conversation starts);
 * - leaving in_progress: no lease;
 * - entering a terminal state: completed_at (and sent_at for sent), nothing due;
 * - entering queued (requeue): due now, not completed, a fresh attempt budget.
 * attempts never changes outside a transition into in_progress; updated_at is now on every update.
 */
create or replace function email.tg_deliveries__apply_transition()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  policy email.retry_policies;
  entered email.statuses;
begin
  new.last_error_message := left(new.last_error_message, 512);
  new.provider_response := left(new.provider_response, 512);

  if tg_op = 'INSERT' then
    if new.status = 'in_progress' then
      new.attempts := 1;
      new.last_attempted_at := now();
      new.send_started_at := null;
      new.next_attempt_at := null;
      new.lease_expires_at := coalesce(new.lease_expires_at, now() + interval '60 seconds');
      return new;
    end if;
    if new.status <> 'queued' then
      raise exception 'delivery % must start queued or in_progress, not %', new.delivery_id, new.status using errcode = 'EM001';
    end if;
    new.attempts := 0;
    new.next_attempt_at := coalesce(new.next_attempt_at, now());
    return new;
  end if;

  new.updated_at := now();
  if new.status is not distinct from old.status then
    if new.attempts is distinct from old.attempts then
      raise exception 'delivery % attempts only grow when an attempt starts', new.delivery_id using errcode = 'EM001';
    end if;
    return new;
  end if;

  if not exists (
    select from email.transitions t where t.from_status = old.status and t.to_status = new.status
  ) then
    raise exception 'delivery % cannot go from % to %', new.delivery_id, old.status, new.status
      using errcode = 'EM001', hint = 'The allowed transitions are in email.transitions';
  end if;

  select s.* into entered from email.statuses s where s.status = new.status;
  new.attempts := old.attempts;
  if new.status = 'in_progress' then
    new.attempts := old.attempts + 1;
    new.last_attempted_at := now();
    new.send_started_at := null;
    new.next_attempt_at := null;
    new.lease_expires_at := coalesce(new.lease_expires_at, now() + interval '60 seconds');
  else
    new.lease_expires_at := null;
  end if;

  if entered.waiting then
    new.next_attempt_at := coalesce(new.next_attempt_at, now());
    new.completed_at := null;
  elsif entered.terminal then
    new.next_attempt_at := null;
    new.completed_at := now();
  end if;

  if new.status = 'sent' then
    new.sent_at := now();
  end if;

  if new.status = 'queued' then
    -- A requeue grants a fresh attempt budget; attempts keeps counting, so attempt numbers stay unique.
    policy := email.retry_policy(new.workflow);
    new.max_attempts := new.attempts + policy.max_attempts;
    new.next_attempt_at := now();
  end if;
  return new;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- Accepting a delivery: the payload of a delivery suppressed on arrival is never stored
-- ---------------------------------------------------------------------------------------------

-- record_queued decides that itself now (below): no trigger query on every payload insert.
drop trigger _100_skip_suppressed on email.delivery_payloads;
drop function email.tg_delivery_payloads__skip_suppressed();

/**
 * Accepts a delivery: queued, with its payload kept apart. Idempotent on delivery_id: the same
 * request again returns the existing row and changes nothing; the same id with different content
 * (workflow, recipient, user or payload) raises EM002, which the caller stores in
 * email.rejected_messages with record_rejected (a raise rolls back anything written here).
 * A queued delivery is due for the sweep a minute later, in case no push claims it. A delivery that
 * ended as soon as it was queued (suppressed: the recipient is on the suppression list) never has
 * its payload stored.
 */
create or replace function email.record_queued(
  delivery_id text,
  workflow text,
  recipient text,
  payload jsonb,
  metadata jsonb default '{}',
  user_id uuid default null
)
returns email.deliveries
language plpgsql
volatile
set search_path = ''
as $$
declare
  h text := email._request_hash(record_queued.workflow, record_queued.recipient, coalesce(record_queued.payload, '{}'), record_queued.user_id);
  d email.deliveries;
begin
  insert into email.deliveries as x (delivery_id, workflow, recipient, user_id, max_attempts, request_hash, metadata, next_attempt_at)
  values (
    record_queued.delivery_id, record_queued.workflow, record_queued.recipient, record_queued.user_id,
    (email.retry_policy(record_queued.workflow)).max_attempts, h, coalesce(record_queued.metadata, '{}'),
    now() + interval '60 seconds'
  )
  on conflict on constraint deliveries_pkey do nothing
  returning x.* into d;

  if found then
    -- Read the row again: triggers of later migrations may already have moved it on (suppressed).
    select x.* into d from email.deliveries x where x.delivery_id = record_queued.delivery_id;
    if not exists (select from email.statuses s where s.status = d.status and s.terminal) then
      insert into email.delivery_payloads (delivery_id, payload)
      values (record_queued.delivery_id, coalesce(record_queued.payload, '{}'));
    end if;
    return d;
  end if;

  select x.* into d from email.deliveries x where x.delivery_id = record_queued.delivery_id;
  if d.request_hash <> h then
    raise exception 'delivery % already exists with different content', record_queued.delivery_id
      using errcode = 'EM002', hint = 'Use a new delivery id for a different email';
  end if;
  return d;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- The worker's push path: queue and claim at once
-- ---------------------------------------------------------------------------------------------

/**
 * Accepts a delivery and claims it for attempt 1 in one call (the worker's push path): a new delivery
 * is inserted in_progress under a lease of lease_seconds, its payload kept apart, and the trail gets
 * one event (null -> in_progress). Returns the status and the attempt to make. Anything else goes the
 * two-step way, with the same answers as email.record_queued followed by email.mark_in_progress:
 * - the delivery exists (a redelivered push): idempotent on delivery_id (EM002 on different content),
 *   claimed when it is claimable (queued, retrying and due, or in_progress under an expired lease,
 *   which is reaped first), else attempt null and its status (sent, in_progress under a live lease...);
 * - the recipient is suppressed: it is queued and at once suppressed (null -> queued -> suppressed,
 *   no payload stored), attempt null.
 */
create or replace function email.queue_and_claim(
  delivery_id text,
  workflow text,
  recipient text,
  payload jsonb,
  metadata jsonb default '{}',
  user_id uuid default null,
  lease_seconds integer default 60
)
returns table (status text, attempt integer)
language plpgsql
volatile
set search_path = ''
as $$
declare
  d email.deliveries;
begin
  if lease_seconds is null or lease_seconds < 1 then
    raise exception 'lease_seconds must be at least 1, not %', lease_seconds using errcode = 'EM006';
  end if;
  if not email.is_suppressed(queue_and_claim.recipient) then
    insert into email.deliveries as x (
      delivery_id, workflow, recipient, user_id, status, max_attempts, request_hash, metadata, lease_expires_at)
    values (
      queue_and_claim.delivery_id, queue_and_claim.workflow, queue_and_claim.recipient, queue_and_claim.user_id,
      'in_progress', (email.retry_policy(queue_and_claim.workflow)).max_attempts,
      email._request_hash(queue_and_claim.workflow, queue_and_claim.recipient, coalesce(queue_and_claim.payload, '{}'),
        queue_and_claim.user_id),
      coalesce(queue_and_claim.metadata, '{}'), now() + make_interval(secs => lease_seconds)
    )
    on conflict on constraint deliveries_pkey do nothing
    returning x.* into d;
    if found then
      insert into email.delivery_payloads (delivery_id, payload)
      values (queue_and_claim.delivery_id, coalesce(queue_and_claim.payload, '{}'));
      return query select d.status, d.attempts;
      return;
    end if;
  end if;
  return query
  select case when c.attempt is null then q.status else 'in_progress' end, c.attempt
  from email.record_queued(queue_and_claim.delivery_id, queue_and_claim.workflow, queue_and_claim.recipient,
         queue_and_claim.payload, queue_and_claim.metadata, queue_and_claim.user_id) q,
       lateral (select email.mark_in_progress(q.delivery_id, lease_seconds) as attempt) c;
end
$$;
comment on function email.queue_and_claim(text, text, text, jsonb, jsonb, uuid, integer) is 'Accept a delivery and claim attempt 1 at once (born in_progress); else as record_queued + mark_in_progress';
grant execute on function email.queue_and_claim(text, text, text, jsonb, jsonb, uuid, integer) to service_role;

-- ---------------------------------------------------------------------------------------------
-- The relay of an attempt's outcome
-- ---------------------------------------------------------------------------------------------

-- A new optional argument changes the signature: the old functions go, so no call is ambiguous.
drop function email.mark_sent(text, integer, text, text);
drop function email.record_failure(text, integer, text, integer, text, text);

/**
 * Records that attempt `attempt` was accepted by the SMTP server (through `relay`, recorded in the
 * event's detail). Idempotent for the same attempt. Accepted too when the attempt's lease was reaped
 * but nobody re-claimed it yet: the mail did go out. The update is its own fence (delivery, attempt
 * and status in one WHERE, by key: one statement, one row lock); only when it finds nothing does
 * email._fence say why (EM004, EM003) or find the attempt already sent.
 */
create or replace function email.mark_sent(
  delivery_id text,
  attempt integer,
  provider_message_id text default null,
  provider_response text default null,
  relay text default null
)
returns email.deliveries
language plpgsql
volatile
set search_path = ''
as $$
declare
  -- The statuses an attempt's success may end: its own in_progress, or retrying after a reap.
  accepted constant text[] := array['in_progress', 'retrying'];
  d email.deliveries;
begin
  perform email._set_event_detail(jsonb_strip_nulls(jsonb_build_object('relay', left(mark_sent.relay, 255))));
  for i in 1..2 loop
    update email.deliveries x
    set status = 'sent',
        provider_message_id = mark_sent.provider_message_id,
        provider_response = mark_sent.provider_response
    where x.delivery_id = mark_sent.delivery_id and x.attempts = mark_sent.attempt and x.status = any (accepted)
    returning x.* into d;
    exit when found;
    -- Nothing updated: EM004 or EM003 from the fence, or this attempt was already recorded sent
    -- (the fence locks the row, so the second pass sees what it saw).
    d := email._fence(mark_sent.delivery_id, mark_sent.attempt, accepted || 'sent'::text);
    if d.status = 'sent' then
      perform email._set_event_detail(null); -- no event: the detail is not left for a later one
      return d;
    end if;
  end loop;
  return d;
end
$$;
comment on function email.mark_sent(text, integer, text, text, text) is 'Record a successful attempt (fenced by attempt number) and the relay it went through';
grant execute on function email.mark_sent(text, integer, text, text, text) to service_role;

/**
 * Records a failed attempt from its facts (the SMTP reply code, the enhanced status code, the
 * transport's error code, a human message, and the relay it was sent through) and lets the database
 * decide what follows: email.failure_rule says transient or permanent (and hard bounce, which the
 * trail's detail carries to the suppressions trigger); permanent ends it failed, an exhausted budget
 * dead_letter, anything else is retrying after the policy's backoff. The only caller-facing way to
 * retrying or dead_letter: security definer, so mark_retrying and mark_dead_letter stay internal.
 */
create or replace function email.record_failure(
  delivery_id text,
  attempt integer,
  message text,
  reply_code integer default null,
  enhanced_code text default null,
  transport_code text default null,
  relay text default null
)
returns table (status text, next_attempt_at timestamptz, error_code text, hard_bounce boolean)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  d email.deliveries := email._fence(record_failure.delivery_id, record_failure.attempt, array['in_progress']);
  enhanced text := left(record_failure.enhanced_code, 16);
  transport text := left(record_failure.transport_code, 64);
  f record;
begin
  select x.rule, x.error_code into f from email.failure_rule(record_failure.reply_code, enhanced, transport) x;
  -- The facts, the rule's verdict and the relay go into the trail (the audit trigger consumes the detail).
  perform email._set_event_detail(coalesce(nullif(current_setting('email.event_detail', true), '')::jsonb, '{}')
    || jsonb_strip_nulls(jsonb_build_object('relay', left(record_failure.relay, 255)))
    || jsonb_build_object('failure', jsonb_strip_nulls(jsonb_build_object(
      'reply_code', record_failure.reply_code, 'enhanced_code', enhanced, 'transport_code', transport,
      'rule', (f.rule).priority, 'class', (f.rule).class, 'hard_bounce', (f.rule).hard_bounce))));
  if (f.rule).class = 'permanent' then
    d := email.mark_failed(d.delivery_id, d.attempts, f.error_code, message);
  elsif d.attempts >= d.max_attempts then
    d := email.mark_dead_letter(d.delivery_id, d.attempts, f.error_code, message);
  else
    perform email.mark_retrying(d.delivery_id, d.attempts, f.error_code, message);
    select x.* into d from email.deliveries x where x.delivery_id = record_failure.delivery_id;
  end if;
  return query select d.status, d.next_attempt_at, f.error_code, (f.rule).hard_bounce and d.status = 'failed';
end
$$;
comment on function email.record_failure(text, integer, text, integer, text, text, text) is 'Record a failed attempt from its facts and relay; email.failure_rules and the retry policy decide retrying, failed or dead_letter';
grant execute on function email.record_failure(text, integer, text, integer, text, text, text) to service_role;

-- ---------------------------------------------------------------------------------------------
-- The Prometheus scrape without the dropped indexes
-- ---------------------------------------------------------------------------------------------

/**
 * email.metric_samples as in the observability migration, but for the open-deliveries gauge, which
 * now counts the waiting (queued, retrying) and the in-progress deliveries apart, each through its
 * partial index, instead of reading the whole table (supabase/tests/095_plans checks it).
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
    from (
      -- apart, each with the predicate of a partial index (deliveries_due_idx, deliveries_lease_idx):
      -- one IN list of all three matches no index since the open-recipient index went, and read
      -- every delivery (2 s of each scrape at 10 million)
      select x.workflow, x.status from email.deliveries x where x.status in ('queued', 'retrying')
      union all
      select x.workflow, x.status from email.deliveries x where x.status = 'in_progress'
    ) d
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

-- Postgres grants EXECUTE to PUBLIC on every new function: take it back (not with "all functions":
-- the rls migration granted authenticated its read helpers).
revoke execute on function
  email.queue_and_claim(text, text, text, jsonb, jsonb, uuid, integer),
  email.mark_sent(text, integer, text, text, text),
  email.record_failure(text, integer, text, integer, text, text, text)
from public, anon, authenticated;
