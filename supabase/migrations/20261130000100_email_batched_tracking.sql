/**
 * email: the tracker's calls in batches, and a push claimed with its send already starting (issue 12).
 *
 * The end-to-end bench (docs/performance.md) found the tracked path at a third of the untracked one,
 * bound by the database's work per call rather than by SMTP or fsync: each pushed delivery took three
 * transactions (queue_and_claim, renew_lease as the send starts, mark_sent), each a statement parsed,
 * planned, executed and committed for one row. Two changes, the rules unchanged:
 * - email.queue_and_claim takes starting_send: the push path sends right after its claim, so the
 *   claim itself records that the SMTP conversation starts (send_started_at) under the sending lease,
 *   and the renew_lease round trip before the send goes. The reaper's reading of an attempt that
 *   never reports is the conservative one either way (outcome_unknown: it may have been sent).
 * - email.queue_and_claim_many and email.mark_sent_many take a batch of calls (a jsonb array) and
 *   make each one, in delivery_id order, through the single-call function in a block of its own: one
 *   statement and one commit for the batch, each call's own answer or error (SQLSTATE and message) in
 *   its own row, and one call's error (EM002, EM003, bad data) never undoes another's work. The
 *   worker's tracker gathers the calls made while its connections are busy into one (tracker_batch.ts);
 *   a call that finds a connection free goes alone, to the single-call function (no subtransaction). A deadlock or a serialization
 *   failure is not one call's answer: it is raised, and the whole batch fails, to be made again.
 * Both are only a transport for the single-call functions, which stay the one home of the rules.
 */

-- ---------------------------------------------------------------------------------------------
-- A delivery born starting its send
-- ---------------------------------------------------------------------------------------------

/**
 * As before (20261129000200_email_lean_lifecycle.sql), but for one line: a delivery born in_progress
 * may say its send starts at once (send_started_at, set to now() whatever the insert gave); otherwise
 * no send has started yet.
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
      -- Born starting its send (queue_and_claim with starting_send): now, and nothing else.
      new.send_started_at := case when new.send_started_at is not null then now() end;
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

-- A new optional argument changes the signature: the old function goes, so no call is ambiguous.
drop function email.queue_and_claim(text, text, text, jsonb, jsonb, uuid, integer);

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
 * starting_send: the caller starts the SMTP conversation as soon as the claim is committed, so an
 * attempt claimed here has send_started_at set (as renew_lease with starting_send would set it): if
 * its lease expires without an outcome, the reaper records outcome_unknown. lease_seconds should then
 * cover the send (the worker asks for its send timeout plus LEASE_SECONDS).
 */
create or replace function email.queue_and_claim(
  delivery_id text,
  workflow text,
  recipient text,
  payload jsonb,
  metadata jsonb default '{}',
  user_id uuid default null,
  lease_seconds integer default 60,
  starting_send boolean default false
)
returns table (status text, attempt integer)
language plpgsql
volatile
set search_path = ''
as $$
declare
  d email.deliveries;
  claimed_attempt integer;
  q_status text;
begin
  if lease_seconds is null or lease_seconds < 1 then
    raise exception 'lease_seconds must be at least 1, not %', lease_seconds using errcode = 'EM006';
  end if;
  if not email.is_suppressed(queue_and_claim.recipient) then
    insert into email.deliveries as x (
      delivery_id, workflow, recipient, user_id, status, max_attempts, request_hash, metadata, lease_expires_at,
      send_started_at)
    values (
      queue_and_claim.delivery_id, queue_and_claim.workflow, queue_and_claim.recipient, queue_and_claim.user_id,
      'in_progress', (email.retry_policy(queue_and_claim.workflow)).max_attempts,
      email._request_hash(queue_and_claim.workflow, queue_and_claim.recipient, coalesce(queue_and_claim.payload, '{}'),
        queue_and_claim.user_id),
      coalesce(queue_and_claim.metadata, '{}'), now() + make_interval(secs => lease_seconds),
      case when coalesce(queue_and_claim.starting_send, false) then now() end
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
  select q.status, email.mark_in_progress(q.delivery_id, lease_seconds) into q_status, claimed_attempt
  from email.record_queued(queue_and_claim.delivery_id, queue_and_claim.workflow, queue_and_claim.recipient,
         queue_and_claim.payload, queue_and_claim.metadata, queue_and_claim.user_id) q;
  if claimed_attempt is not null and coalesce(queue_and_claim.starting_send, false) then
    perform email.renew_lease(queue_and_claim.delivery_id, claimed_attempt, lease_seconds, true);
  end if;
  return query select case when claimed_attempt is null then q_status else 'in_progress' end, claimed_attempt;
end
$$;
comment on function email.queue_and_claim(text, text, text, jsonb, jsonb, uuid, integer, boolean) is 'Accept a delivery and claim attempt 1 at once (born in_progress; with starting_send, its send started); else as record_queued + mark_in_progress';
grant execute on function email.queue_and_claim(text, text, text, jsonb, jsonb, uuid, integer, boolean) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Batches of calls: one statement, one commit, each call's own answer
-- ---------------------------------------------------------------------------------------------

/** The largest batch the *_many functions take: each call in it is a subtransaction. */
create or replace function email._check_batch(items jsonb)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  if items is null or jsonb_typeof(items) <> 'array' then
    raise exception 'a batch is a JSON array of calls' using errcode = 'EM006';
  end if;
  if jsonb_array_length(items) > 50 then
    raise exception 'a batch holds at most 50 calls, not %', jsonb_array_length(items) using errcode = 'EM006';
  end if;
end
$$;

/**
 * email.queue_and_claim for each element of items (objects with delivery_id, workflow, recipient,
 * payload, metadata, user_id, lease_seconds, starting_send, as its arguments), in delivery_id order.
 * One row per call: ord (its 1-based place in items), and either its status and attempt or, when the
 * call raised, its error_state (SQLSTATE) and error_message (what it wrote is undone; the others' is kept). A deadlock or
 * a serialization failure (40P01, 40001) is raised, failing the batch.
 */
create or replace function email.queue_and_claim_many(items jsonb)
returns table (ord integer, status text, attempt integer, error_state text, error_message text)
language plpgsql
volatile
set search_path = ''
as $$
declare
  call record;
  err_state text;
  err_message text;
begin
  perform email._check_batch(items);
  for call in
    select i.value as v, i.ordinality::integer as n
    from jsonb_array_elements(items) with ordinality i
    order by i.value ->> 'delivery_id', i.ordinality
  loop
    ord := call.n;
    begin
      select q.status, q.attempt into queue_and_claim_many.status, queue_and_claim_many.attempt
      from email.queue_and_claim(
        call.v ->> 'delivery_id', call.v ->> 'workflow', call.v ->> 'recipient', call.v -> 'payload',
        coalesce(call.v -> 'metadata', '{}'), (call.v ->> 'user_id')::uuid,
        coalesce((call.v ->> 'lease_seconds')::integer, 60), coalesce((call.v ->> 'starting_send')::boolean, false)) q;
      error_state := null;
      error_message := null;
    exception when others then
      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
      if err_state in ('40P01', '40001') then
        raise;
      end if;
      status := null;
      attempt := null;
      error_state := err_state;
      error_message := err_message;
    end;
    return next;
  end loop;
end
$$;
comment on function email.queue_and_claim_many(jsonb) is 'email.queue_and_claim for a batch of calls (at most 50): one row per call with its answer or its error';
grant execute on function email.queue_and_claim_many(jsonb) to service_role;

/**
 * email.mark_sent for each element of items (objects with delivery_id, attempt, provider_message_id,
 * provider_response, relay), in delivery_id order. One row per call: ord (its 1-based place in items),
 * and either the status recorded or, when the call raised (EM003 stale, EM004 unknown...), its
 * error_state (SQLSTATE) and error_message. A deadlock or a serialization failure is raised, failing the batch.
 */
create or replace function email.mark_sent_many(items jsonb)
returns table (ord integer, status text, error_state text, error_message text)
language plpgsql
volatile
set search_path = ''
as $$
declare
  call record;
  err_state text;
  err_message text;
begin
  perform email._check_batch(items);
  for call in
    select i.value as v, i.ordinality::integer as n
    from jsonb_array_elements(items) with ordinality i
    order by i.value ->> 'delivery_id', i.ordinality
  loop
    ord := call.n;
    begin
      select s.status into mark_sent_many.status
      from email.mark_sent(call.v ->> 'delivery_id', (call.v ->> 'attempt')::integer,
        call.v ->> 'provider_message_id', call.v ->> 'provider_response', call.v ->> 'relay') s;
      error_state := null;
      error_message := null;
    exception when others then
      get stacked diagnostics err_state = returned_sqlstate, err_message = message_text;
      if err_state in ('40P01', '40001') then
        raise;
      end if;
      status := null;
      error_state := err_state;
      error_message := err_message;
    end;
    return next;
  end loop;
end
$$;
comment on function email.mark_sent_many(jsonb) is 'email.mark_sent for a batch of calls (at most 50): one row per call with its answer or its error';
grant execute on function email.mark_sent_many(jsonb) to service_role;
grant execute on function email._check_batch(jsonb) to service_role;

-- Postgres grants EXECUTE to PUBLIC on every new function: take it back.
revoke execute on function
  email.queue_and_claim(text, text, text, jsonb, jsonb, uuid, integer, boolean),
  email._check_batch(jsonb),
  email.queue_and_claim_many(jsonb),
  email.mark_sent_many(jsonb)
from public, anon, authenticated;
