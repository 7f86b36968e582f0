/**
 * email: the lifecycle rules.
 *
 * Every rule of the delivery lifecycle lives here, in one place each:
 * - which transition is allowed: email.transitions, enforced by the BEFORE UPDATE trigger
 *   _200_apply_transition, which also derives the columns a transition implies (attempts grows when
 *   an attempt starts and only then; leases, terminal timestamps, due times);
 * - the audit trail: the AFTER trigger _500_audit writes one event per insert and status change;
 * - secrets are not retained: _600_erase_payload deletes the payload when a delivery ends sent or failed,
 *   and the request hash that stays is keyed (email._request_hash);
 * - which statuses exist and what each one is: email.statuses (terminal, waiting, failing); the
 *   triggers read it instead of naming statuses;
 * - what a failed send leads to: record_failure, the one caller-facing failure RPC: email.failure_rules
 *   (through email.failure_rule) decides transient or permanent from the facts the worker reports, and
 *   email.retry_policies when to retry and when to give up (mark_retrying and mark_dead_letter are its
 *   internals, not callable by service_role);
 * - who may call what: execute is granted to service_role under each function, and revoked from public,
 *   anon and authenticated for every function at the end (Postgres grants execute to PUBLIC by default).
 *
 * Small helpers called on every transition are plpgsql, not `language sql`: a SQL function with a
 * SET clause is never inlined and is planned again on every call, while plpgsql keeps its plans for
 * the connection (measured by `npm run bench`, see docs/performance.md).
 *
 * SQLSTATEs callers can match:
 *   EM001 transition not allowed        EM002 idempotency conflict     EM003 stale attempt (fencing)
 *   EM004 delivery not found            EM005 audit trail is immutable EM006 invalid argument
 */

-- ---------------------------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------------------------

/**
 * Who is acting: the email.actor setting, else the JWT's subject, else the database role and
 * application. The role is the session's (its SET ROLE, else the login role), not current_user, so a
 * security definer function (record_failure) records its caller, not its owner.
 */
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
    coalesce(nullif(current_setting('role', true), 'none'), session_user)
      || coalesce('@' || nullif(current_setting('application_name', true), ''), '')
  );
end
$$;
comment on function email._actor() is 'The actor recorded in the audit trail';
grant execute on function email._actor() to service_role;

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
grant execute on function email.retry_policy(text) to service_role;

/**
 * The delay before retry number `attempt` + 1: exponential (base * 2^(attempt-1)), capped at
 * max_delay, with "equal jitter": uniformly between half the capped delay and the capped delay, so
 * retries of many failed deliveries spread out instead of arriving together.
 */
create or replace function email.backoff_delay(workflow text, attempt integer)
returns interval
language plpgsql
volatile
set search_path = ''
as $$
declare
  p email.retry_policies := email.retry_policy(backoff_delay.workflow);
  capped interval;
begin
  if attempt is null or attempt < 1 then
    raise exception 'attempt must be at least 1, not %', attempt using errcode = 'EM006';
  end if;
  capped := least(p.max_delay, p.base_delay * power(2, least(attempt - 1, 30)));
  return capped * (0.5 + random() * 0.5);
end
$$;
comment on function email.backoff_delay(text, integer) is 'Exponential backoff with equal jitter: between half and all of min(max_delay, base_delay * 2^(attempt-1))';
grant execute on function email.backoff_delay(text, integer) to service_role;

/**
 * HMAC-SHA256 over what makes a request the same request: workflow, recipient, user and payload,
 * keyed with email.request_hash_key. Security definer so that it can read the key, which nobody else
 * can: the hash of a short code cannot be brute-forced from the table (supabase/tests/065).
 */
create or replace function email._request_hash(workflow text, recipient text, payload jsonb, user_id uuid)
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  return encode(extensions.hmac(
    convert_to(jsonb_build_object(
      'workflow', workflow, 'recipient', lower(recipient), 'payload', payload, 'user_id', user_id
    )::text, 'UTF8'),
    (select k.key from email.request_hash_key k),
    'sha256'
  ), 'hex');
end
$$;
comment on function email._request_hash(text, text, jsonb, uuid) is 'HMAC-SHA256 of a request with the key only this function reads';
grant execute on function email._request_hash(text, text, jsonb, uuid) to service_role;

/** Sets the detail the audit trigger attaches to the next event in this transaction. */
create or replace function email._set_event_detail(detail jsonb)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  perform set_config('email.event_detail', coalesce(detail, '{}')::text, true);
end
$$;
grant execute on function email._set_event_detail(jsonb) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Triggers on email.deliveries
-- ---------------------------------------------------------------------------------------------

/** Keeps updated_at true; shared by every table of the schema that has the column. */
create or replace function email.tg__touch_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create trigger _100_touch_updated_at
before update on email.deliveries
for each row execute function email.tg__touch_updated_at();

/**
 * Refuses inserts that do not start queued, and status changes that are not in email.transitions
 * (EM001); derives what each transition implies, so no caller can get it wrong:
 * - entering in_progress: attempts + 1 (the only place attempts grows), last_attempted_at, a lease,
 *   and no send started yet (send_started_at, set by renew_lease when the SMTP conversation starts);
 * - leaving in_progress: no lease;
 * - entering a terminal state: completed_at (and sent_at for sent), nothing due;
 * - entering queued (requeue): due now, not completed, a fresh attempt budget.
 * attempts never changes outside a transition into in_progress.
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
    if new.status <> 'queued' then
      raise exception 'delivery % must start queued, not %', new.delivery_id, new.status using errcode = 'EM001';
    end if;
    new.attempts := 0;
    new.next_attempt_at := coalesce(new.next_attempt_at, now());
    return new;
  end if;

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

create trigger _200_apply_transition
before insert or update on email.deliveries
for each row execute function email.tg_deliveries__apply_transition();

/** Writes the audit trail: one event for the insert and one for every status change. */
create or replace function email.tg_deliveries__audit()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  detail jsonb := coalesce(nullif(current_setting('email.event_detail', true), '')::jsonb, '{}');
  failing boolean := (select s.failing from email.statuses s where s.status = new.status);
begin
  if tg_op = 'UPDATE' and new.status is not distinct from old.status then
    return null;
  end if;
  if new.status = 'retrying' then
    detail := detail || jsonb_build_object('next_attempt_at', new.next_attempt_at);
  elsif new.status = 'sent' then
    detail := detail || jsonb_strip_nulls(jsonb_build_object(
      'provider_message_id', new.provider_message_id, 'provider_response', new.provider_response));
  elsif new.status = 'in_progress' then
    detail := detail || jsonb_build_object('lease_expires_at', new.lease_expires_at);
  end if;
  insert into email.delivery_events (delivery_id, from_status, to_status, attempt, error_code, error_message, detail, actor)
  values (
    new.delivery_id,
    case when tg_op = 'UPDATE' then old.status end,
    new.status,
    new.attempts,
    case when failing then new.last_error_code end,
    case when failing then new.last_error_message end,
    detail,
    email._actor()
  );
  perform set_config('email.event_detail', '', true);
  return null;
end
$$;

create trigger _500_audit
after insert or update on email.deliveries
for each row execute function email.tg_deliveries__audit();

/** Erases the secret-bearing payload once a delivery ends sent or failed. */
create or replace function email.tg_deliveries__erase_payload()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  delete from email.delivery_payloads p where p.delivery_id = new.delivery_id;
  return null;
end
$$;

create trigger _600_erase_payload
after update of status on email.deliveries
for each row when (new.status in ('sent', 'failed') and old.status is distinct from new.status)
execute function email.tg_deliveries__erase_payload();

-- ---------------------------------------------------------------------------------------------
-- The audit trail is append-only
-- ---------------------------------------------------------------------------------------------

/** Refuses UPDATE, DELETE and TRUNCATE on the audit trail. */
create or replace function email.tg_delivery_events__refuse_change()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception 'email.delivery_events is append-only: % refused', tg_op using errcode = 'EM005';
end
$$;

create trigger _100_refuse_change
before update or delete on email.delivery_events
for each row execute function email.tg_delivery_events__refuse_change();

create trigger _110_refuse_truncate
before truncate on email.delivery_events
for each statement execute function email.tg_delivery_events__refuse_change();

-- ---------------------------------------------------------------------------------------------
-- Lifecycle RPCs (the contract the Edge Function's tracker calls)
-- ---------------------------------------------------------------------------------------------

/**
 * Accepts a delivery: queued, with its payload kept apart. Idempotent on delivery_id: the same
 * request again returns the existing row and changes nothing; the same id with different content
 * (workflow, recipient, user or payload) raises EM002, which the caller stores in
 * email.rejected_messages with record_rejected (a raise rolls back anything written here).
 * A queued delivery is due for the sweep a minute later, in case no push claims it.
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
    insert into email.delivery_payloads (delivery_id, payload)
    values (record_queued.delivery_id, coalesce(record_queued.payload, '{}'));
    -- Read the row again: triggers of later migrations may already have moved it on (e.g. suppressed).
    select x.* into d from email.deliveries x where x.delivery_id = record_queued.delivery_id;
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
comment on function email.record_queued(text, text, text, jsonb, jsonb, uuid) is 'Accept a delivery (idempotent on delivery_id; EM002 on a conflicting reuse)';
grant execute on function email.record_queued(text, text, text, jsonb, jsonb, uuid) to service_role;

/**
 * Claims a delivery for an attempt and returns the attempt number, or null when it is not claimable
 * (sent, failed, dead_letter, in progress under a live lease, retrying but not yet due). Among
 * concurrent callers exactly one wins: the row lock serialises them and the losers re-check the
 * condition. An in_progress delivery whose lease expired is reaped first (in the trail): it becomes
 * retrying (or dead_letter) and is claimable again once its backoff is due, so this call returns null.
 */
create or replace function email.mark_in_progress(delivery_id text, lease_seconds integer default 60)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  claimed integer;
  current_status text;
  lease_end timestamptz;
begin
  if lease_seconds is null or lease_seconds < 1 then
    raise exception 'lease_seconds must be at least 1, not %', lease_seconds using errcode = 'EM006';
  end if;
  -- Look the delivery up by its key alone: with the lease condition in the same WHERE, the cached
  -- generic plan walks deliveries_lease_idx over every expired lease instead (found by npm run bench).
  select d.status, d.lease_expires_at into current_status, lease_end
  from email.deliveries d where d.delivery_id = mark_in_progress.delivery_id;
  if current_status = 'in_progress' and lease_end < now() then
    perform email._reap(mark_in_progress.delivery_id);
  end if;

  update email.deliveries d
  set status = 'in_progress', lease_expires_at = now() + make_interval(secs => lease_seconds)
  where d.delivery_id = mark_in_progress.delivery_id
    and (d.status = 'queued' or (d.status = 'retrying' and d.next_attempt_at <= now()))
  returning d.attempts into claimed;
  return claimed;
end
$$;
comment on function email.mark_in_progress(text, integer) is 'Claim a delivery for an attempt: the attempt number, or null when not claimable';
grant execute on function email.mark_in_progress(text, integer) to service_role;

/**
 * Locks a delivery for the outcome of attempt `attempt` (fencing). Raises EM004 when it does not
 * exist and EM003 when the attempt is not the current one in one of the expected states, so a caller
 * whose lease was reaped and re-claimed cannot overwrite the newer attempt.
 */
create or replace function email._fence(delivery_id text, attempt integer, expected text[])
returns email.deliveries
language plpgsql
volatile
set search_path = ''
as $$
declare
  d email.deliveries;
begin
  select x.* into d from email.deliveries x where x.delivery_id = _fence.delivery_id for update;
  if not found then
    raise exception 'delivery % does not exist', _fence.delivery_id using errcode = 'EM004';
  end if;
  if d.attempts is distinct from _fence.attempt or not (d.status = any (expected)) then
    raise exception 'attempt % of delivery % is stale: the delivery is % at attempt %',
      _fence.attempt, _fence.delivery_id, d.status, d.attempts using errcode = 'EM003';
  end if;
  return d;
end
$$;
grant execute on function email._fence(text, integer, text[]) to service_role;

/**
 * Keeps the lease of attempt `attempt` alive: it then ends lease_seconds from now (never earlier than
 * it did). Fenced: EM003 unless the delivery is in_progress at that attempt under a lease that has
 * not expired. An expired lease belongs to the reaper, so a worker never starts, nor carries on with,
 * an SMTP conversation on it. With starting_send = true the worker says its SMTP conversation starts
 * now (it asks for a lease that outlasts the send's timeout): from then on the attempt may have been
 * sent, and if its lease expires without an outcome the reaper records outcome_unknown, not
 * lease_expired. The worker calls it right before each send and as a heartbeat while it sends and
 * while it retries the outcome write. Returns when the lease now ends.
 */
create or replace function email.renew_lease(
  delivery_id text,
  attempt integer,
  lease_seconds integer,
  starting_send boolean default false
)
returns timestamptz
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
  d := email._fence(renew_lease.delivery_id, renew_lease.attempt, array['in_progress']);
  if d.lease_expires_at <= now() then
    raise exception 'the lease of attempt % of delivery % expired at %', renew_lease.attempt, renew_lease.delivery_id,
      d.lease_expires_at using errcode = 'EM003', hint = 'The reaper decides what an expired attempt leads to';
  end if;
  update email.deliveries x
  set lease_expires_at = greatest(x.lease_expires_at, now() + make_interval(secs => lease_seconds)),
      send_started_at = case when coalesce(starting_send, false) then coalesce(x.send_started_at, now()) else x.send_started_at end
  where x.delivery_id = renew_lease.delivery_id
  returning x.lease_expires_at into d.lease_expires_at;
  return d.lease_expires_at;
end
$$;
comment on function email.renew_lease(text, integer, integer, boolean) is 'Renew a live lease (fenced by attempt); starting_send records that the SMTP conversation starts';
grant execute on function email.renew_lease(text, integer, integer, boolean) to service_role;

/**
 * Records that attempt `attempt` was accepted by the SMTP server. Idempotent for the same attempt.
 * Accepted too when the attempt's lease was reaped but nobody re-claimed it yet: the mail did go out.
 */
create or replace function email.mark_sent(
  delivery_id text,
  attempt integer,
  provider_message_id text default null,
  provider_response text default null
)
returns email.deliveries
language plpgsql
volatile
set search_path = ''
as $$
declare
  d email.deliveries := email._fence(mark_sent.delivery_id, mark_sent.attempt, array['in_progress', 'retrying', 'sent']);
begin
  if d.status = 'sent' then
    return d;
  end if;
  update email.deliveries x
  set status = 'sent',
      provider_message_id = mark_sent.provider_message_id,
      provider_response = mark_sent.provider_response
  where x.delivery_id = mark_sent.delivery_id
  returning x.* into d;
  return d;
end
$$;
comment on function email.mark_sent(text, integer, text, text) is 'Record a successful attempt (fenced by attempt number)';
grant execute on function email.mark_sent(text, integer, text, text) to service_role;

/** Sets status and last error of a fenced delivery; the shared body of the explicit failure transitions. */
create or replace function email._fail(
  delivery_id text,
  to_status text,
  error_code text,
  error_message text,
  next_attempt_at timestamptz default null
)
returns email.deliveries
language plpgsql
volatile
set search_path = ''
as $$
declare
  d email.deliveries;
begin
  update email.deliveries x
  set status = _fail.to_status,
      last_error_code = left(_fail.error_code, 64),
      last_error_message = left(_fail.error_message, 512),
      next_attempt_at = _fail.next_attempt_at
  where x.delivery_id = _fail.delivery_id
  returning x.* into d;
  return d;
end
$$;
-- Not granted to service_role: only the fenced failure transitions below reach it.

/** in_progress -> retrying, due after the policy's backoff; returns next_attempt_at. */
create or replace function email.mark_retrying(delivery_id text, attempt integer, error_code text, error_message text)
returns timestamptz
language plpgsql
volatile
set search_path = ''
as $$
declare
  d email.deliveries := email._fence(mark_retrying.delivery_id, mark_retrying.attempt, array['in_progress']);
begin
  d := email._fail(d.delivery_id, 'retrying', error_code, error_message, now() + email.backoff_delay(d.workflow, d.attempts));
  return d.next_attempt_at;
end
$$;
comment on function email.mark_retrying(text, integer, text, text) is 'in_progress -> retrying after the backoff (fenced); internal to record_failure';

/**
 * in_progress -> failed (permanent, from record_failure), or queued|in_progress -> failed when the
 * worker cannot render the email (render_failed): no SMTP rule applies to that.
 */
create or replace function email.mark_failed(delivery_id text, attempt integer, error_code text, error_message text)
returns email.deliveries
language plpgsql
volatile
security definer -- it reaches email._fail, which service_role may not call
set search_path = ''
as $$
begin
  perform email._fence(mark_failed.delivery_id, mark_failed.attempt, array['in_progress', 'queued']);
  return email._fail(mark_failed.delivery_id, 'failed', error_code, error_message);
end
$$;
comment on function email.mark_failed(text, integer, text, text) is 'in_progress|queued -> failed (fenced)';
grant execute on function email.mark_failed(text, integer, text, text) to service_role;

/** in_progress|retrying -> dead_letter: attempts exhausted, kept for an operator. */
create or replace function email.mark_dead_letter(delivery_id text, attempt integer, error_code text, error_message text)
returns email.deliveries
language plpgsql
volatile
set search_path = ''
as $$
begin
  perform email._fence(mark_dead_letter.delivery_id, mark_dead_letter.attempt, array['in_progress', 'retrying']);
  return email._fail(mark_dead_letter.delivery_id, 'dead_letter', error_code, error_message);
end
$$;
comment on function email.mark_dead_letter(text, integer, text, text) is 'in_progress|retrying -> dead_letter (fenced); internal to record_failure';

/**
 * The rule of email.failure_rules that decides a failure with these facts (the lowest-priority match;
 * the catch-all row always matches), and the error code the delivery records for it.
 */
create or replace function email.failure_rule(reply_code integer, enhanced_code text, transport_code text)
returns table (rule email.failure_rules, error_code text)
language plpgsql
stable
set search_path = ''
as $$
declare
  r email.failure_rules;
begin
  select x.* into r from email.failure_rules x
  where (x.reply_code_from is null or failure_rule.reply_code between x.reply_code_from and x.reply_code_to)
    and (x.enhanced_pattern is null or coalesce(failure_rule.enhanced_code, '') like x.enhanced_pattern)
    and (x.transport_code is null or failure_rule.transport_code = x.transport_code)
  order by x.priority
  limit 1;
  if not found then
    raise exception 'no rule of email.failure_rules matches (% % %)', reply_code, enhanced_code, transport_code
      using errcode = 'EM006', hint = 'email.failure_rules needs a catch-all row (every condition null)';
  end if;
  return query select r, case
    when r.reply_code_from is not null then
      'smtp_' || failure_rule.reply_code || case when r.code_with_enhanced then coalesce('_' || failure_rule.enhanced_code, '') else '' end
    when r.transport_code is not null then r.transport_code
    else 'unknown'
  end;
end
$$;
comment on function email.failure_rule(integer, text, text) is 'The failure rule (transient, permanent, hard bounce) for a reply code, enhanced code and transport code';
grant execute on function email.failure_rule(integer, text, text) to service_role;

/**
 * Records a failed attempt from its facts (the SMTP reply code, the enhanced status code, the
 * transport's error code, and a human message) and lets the database decide what follows:
 * email.failure_rule says transient or permanent (and hard bounce, which the trail's detail carries
 * to the suppressions trigger); permanent ends it failed, an exhausted budget dead_letter, anything
 * else is retrying after the policy's backoff. The only caller-facing way to retrying or dead_letter:
 * security definer, so mark_retrying and mark_dead_letter stay internal (not granted to service_role).
 */
create or replace function email.record_failure(
  delivery_id text,
  attempt integer,
  message text,
  reply_code integer default null,
  enhanced_code text default null,
  transport_code text default null
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
  -- The facts and the rule's verdict go into the trail (the audit trigger consumes the detail).
  perform email._set_event_detail(coalesce(nullif(current_setting('email.event_detail', true), '')::jsonb, '{}')
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
comment on function email.record_failure(text, integer, text, integer, text, text) is 'Record a failed attempt from its facts; email.failure_rules and the retry policy decide retrying, failed or dead_letter';
grant execute on function email.record_failure(text, integer, text, integer, text, text) to service_role;

/**
 * Reaps one in_progress delivery whose lease expired, and decides, explicitly, what an attempt that
 * never reported leads to:
 * - its SMTP conversation never started (send_started_at is null): nothing went out, so it is an
 *   ordinary transient failure, code lease_expired: retrying, or dead_letter when exhausted;
 * - it started (renew_lease with starting_send): the relay may have accepted the mail and the worker
 *   died, or could not reach the database for the whole lease, before recording it. Code
 *   outcome_unknown, and still retried like a transient failure: the delivery guarantee is at least
 *   once (a verification code or a reset link held for an operator is as good as lost), and this is
 *   the one path on which a mail can go out twice (docs/architecture.md, "Delivery guarantee").
 *   The attempt's own late success is still recorded (retrying -> sent) until a new attempt claims it.
 */
create or replace function email._reap(delivery_id text)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
  d email.deliveries;
begin
  -- By key alone, then the condition: see mark_in_progress on why not in one WHERE.
  select x.* into d from email.deliveries x where x.delivery_id = _reap.delivery_id for update;
  if found and d.status = 'in_progress' and d.lease_expires_at < now() then
    if d.send_started_at is null then
      perform email.record_failure(d.delivery_id, d.attempts,
        'the attempt did not start sending before its lease expired', transport_code => 'lease_expired');
    else
      perform email.record_failure(d.delivery_id, d.attempts,
        'the attempt started sending and did not report an outcome before its lease expired: it may have been sent',
        transport_code => 'outcome_unknown');
    end if;
  end if;
end
$$;
grant execute on function email._reap(text) to service_role;

/** in_progress deliveries whose lease has expired -> retrying (or dead_letter when exhausted); returns how many. */
create or replace function email.reap_expired_leases()
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  n integer := 0;
  id text;
begin
  for id in
    select x.delivery_id from email.deliveries x
    where x.status = 'in_progress' and x.lease_expires_at < now()
    order by x.lease_expires_at
    for update skip locked
  loop
    perform email._reap(id);
    n := n + 1;
  end loop;
  return n;
end
$$;
comment on function email.reap_expired_leases() is 'Reap expired leases: in_progress -> retrying or dead_letter (lease_expired or outcome_unknown); returns the count';
grant execute on function email.reap_expired_leases() to service_role;

/**
 * Claims up to max_count due deliveries (retries whose time has come, requeued deliveries, and
 * queued ones no push claimed) with FOR UPDATE SKIP LOCKED, so concurrent sweeps never share one,
 * and returns what a sender needs.
 */
create or replace function email.claim_due(max_count integer, lease_seconds integer default 60)
returns table (delivery_id text, attempt integer, workflow text, recipient text, payload jsonb, user_id uuid, metadata jsonb)
language plpgsql
volatile
set search_path = ''
as $$
begin
  if lease_seconds is null or lease_seconds < 1 then
    raise exception 'lease_seconds must be at least 1, not %', lease_seconds using errcode = 'EM006';
  end if;
  return query
  with due as (
    select x.delivery_id from email.deliveries x
    -- The waiting statuses, literally: the predicate of the partial index deliveries_due_idx.
    where x.status in ('queued', 'retrying') and x.next_attempt_at <= now()
    order by x.next_attempt_at
    limit greatest(coalesce(max_count, 0), 0)
    for update skip locked
  ), claimed as (
    update email.deliveries d
    set status = 'in_progress', lease_expires_at = now() + make_interval(secs => lease_seconds)
    from due
    where d.delivery_id = due.delivery_id
    returning d.delivery_id, d.attempts, d.workflow, d.recipient, d.user_id, d.metadata
  )
  select c.delivery_id, c.attempts, c.workflow, c.recipient, coalesce(p.payload, '{}'::jsonb), c.user_id, c.metadata
  from claimed c
  left join email.delivery_payloads p on p.delivery_id = c.delivery_id;
end
$$;
comment on function email.claim_due(integer, integer) is 'Claim due retries, requeued and orphaned queued deliveries (skip locked)';
grant execute on function email.claim_due(integer, integer) to service_role;

/** failed|dead_letter -> queued, for operators; the reason and actor are in the audit trail. */
create or replace function email.requeue(delivery_id text, reason text)
returns email.deliveries
language plpgsql
volatile
set search_path = ''
as $$
declare
  d email.deliveries;
begin
  if coalesce(btrim(reason), '') = '' then
    raise exception 'a requeue needs a reason' using errcode = 'EM006';
  end if;
  select x.* into d from email.deliveries x where x.delivery_id = requeue.delivery_id for update;
  if not found then
    raise exception 'delivery % does not exist', requeue.delivery_id using errcode = 'EM004';
  end if;
  if not exists (select from email.transitions t where t.from_status = d.status and t.to_status = 'queued') then
    raise exception 'delivery % cannot be requeued from %', requeue.delivery_id, d.status
      using errcode = 'EM001', hint = 'Only the statuses with a transition to queued in email.transitions can be requeued';
  end if;
  if not exists (select from email.delivery_payloads p where p.delivery_id = d.delivery_id) then
    raise exception 'delivery % cannot be requeued: its payload was erased', requeue.delivery_id
      using errcode = 'EM001', hint = 'Publish the event again with a new delivery id';
  end if;
  perform email._set_event_detail(jsonb_build_object('reason', left(reason, 500)));
  update email.deliveries x set status = 'queued' where x.delivery_id = requeue.delivery_id returning x.* into d;
  return d;
end
$$;
comment on function email.requeue(text, text) is 'Operator requeue: failed|dead_letter -> queued, with a reason in the trail';
grant execute on function email.requeue(text, text) to service_role;

/**
 * Stores input that could not be accepted, with its reason, so nothing is lost; returns its id.
 * The caller redacts secrets from raw_body first and lists where in `redacted` (the worker:
 * functions/_shared/redaction.ts). Rows older than the retention are purged (api migration).
 */
create or replace function email.record_rejected(
  reason_code text,
  reason text,
  raw_body bytea default null,
  delivery_id text default null,
  message_id text default null,
  headers jsonb default '{}',
  body_bytes integer default null,
  redacted text[] default '{}'
)
returns bigint
language sql
volatile
set search_path = ''
as $$
  insert into email.rejected_messages (reason_code, reason, raw_body, redacted, delivery_id, message_id, headers, body_bytes, body_truncated)
  values (
    reason_code, left(reason, 2000), raw_body, coalesce(redacted, '{}'), left(delivery_id, 200), left(message_id, 200),
    coalesce(headers, '{}'),
    coalesce(body_bytes, octet_length(raw_body), 0),
    coalesce(body_bytes, octet_length(raw_body), 0) > coalesce(octet_length(raw_body), 0)
  )
  returning id
$$;
comment on function email.record_rejected(text, text, bytea, text, text, jsonb, integer, text[]) is 'Store rejected input (secrets already redacted) with its reason';
grant execute on function email.record_rejected(text, text, bytea, text, text, jsonb, integer, text[]) to service_role;

-- Postgres grants EXECUTE to PUBLIC on every new function, and a per-schema default privilege cannot
-- take that back: revoke it here, so only the grants under each function remain.
revoke execute on all functions in schema email from public, anon, authenticated;
