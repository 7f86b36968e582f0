/**
 * email: the lean lifecycle (issue 12).
 *
 * The relay of each attempt's outcome: mark_sent and record_failure take the SMTP relay host the
 * worker sent through (`relay`, its SMTP_HOST; optional, null when unknown, e.g. for the reaper) and
 * record it in the outcome's audit event as detail->>'relay' (sent, retrying, failed, dead_letter).
 * The per-relay metrics read it from there.
 */

-- ---------------------------------------------------------------------------------------------
-- The relay of an attempt's outcome
-- ---------------------------------------------------------------------------------------------

-- A new optional argument changes the signature: the old functions go, so no call is ambiguous.
drop function email.mark_sent(text, integer, text, text);
drop function email.record_failure(text, integer, text, integer, text, text);

/**
 * Records that attempt `attempt` was accepted by the SMTP server (through `relay`, recorded in the
 * event's detail). Idempotent for the same attempt. Accepted too when the attempt's lease was reaped
 * but nobody re-claimed it yet: the mail did go out.
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
  d email.deliveries := email._fence(mark_sent.delivery_id, mark_sent.attempt, array['in_progress', 'retrying', 'sent']);
begin
  if d.status = 'sent' then
    return d;
  end if;
  perform email._set_event_detail(jsonb_strip_nulls(jsonb_build_object('relay', left(mark_sent.relay, 255))));
  update email.deliveries x
  set status = 'sent',
      provider_message_id = mark_sent.provider_message_id,
      provider_response = mark_sent.provider_response
  where x.delivery_id = mark_sent.delivery_id
  returning x.* into d;
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

-- Postgres grants EXECUTE to PUBLIC on every new function: take it back (not with "all functions":
-- the rls migration granted authenticated its read helpers).
revoke execute on function
  email.mark_sent(text, integer, text, text, text),
  email.record_failure(text, integer, text, integer, text, text, text)
from public, anon, authenticated;
