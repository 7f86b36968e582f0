/**
 * email: the suppression list.
 *
 * An address that hard-bounced (a permanent SMTP refusal about the mailbox) is never sent to again:
 * - email.suppressions holds the address (lower-cased, so addresses compare case-insensitively), why,
 *   and the delivery that bounced; operators add and remove entries with add_suppression and
 *   remove_suppression (the CLI: `email-status suppressions ...`);
 * - the trigger _700_suppress_hard_bounce on email.delivery_events adds the recipient when a delivery
 *   fails on a hard bounce: email.record_failure records in the event's detail what the matching row
 *   of email.failure_rules says (failure.hard_bounce); nothing here parses an error code;
 * - a delivery to a suppressed address ends in the terminal status `suppressed` without any SMTP
 *   attempt: the trigger _700_suppress_recipient moves it there as soon as it is queued (on insert,
 *   on a requeue, and when a retry is scheduled), and adding a suppression moves the address's open
 *   queued and retrying deliveries there too, so email.mark_in_progress returns null for them and
 *   email.claim_due never returns them. The move is an ordinary transition: it is in the trail (and so
 *   in the webhooks), and the payload is erased (never even stored when suppressed on insert).
 *
 * The status lives in email.statuses, like every other (deliveries.status references that table).
 */

-- ---------------------------------------------------------------------------------------------
-- The status `suppressed`
-- ---------------------------------------------------------------------------------------------

insert into email.statuses (status, terminal, waiting, failing, counts_as, position, description) values
  ('suppressed', true, false, false, 'suppressed', 70, 'not sent: the recipient is on the suppression list');

insert into email.transitions (from_status, to_status, description) values
  ('queued', 'suppressed', 'the recipient is on the suppression list: ended without an SMTP attempt'),
  ('retrying', 'suppressed', 'the recipient was suppressed while a retry was pending');

-- ---------------------------------------------------------------------------------------------
-- The table
-- ---------------------------------------------------------------------------------------------

create table email.suppressions (
  address text primary key
    constraint suppressions_address_normalized check (address = lower(btrim(address)) and address ~ '^[^\s@]+@[^\s@]+$'),
  reason text not null check (char_length(reason) between 1 and 500),
  source text not null default 'operator' check (source in ('operator', 'hard_bounce')),
  delivery_id text references email.deliveries on delete set null,
  error_code text,
  created_at timestamptz not null default now(),
  created_by text not null
);
alter table email.suppressions enable row level security;
comment on table email.suppressions is 'Addresses never sent to again (hard bounces and operator entries); lower-cased, compared case-insensitively';
comment on column email.suppressions.delivery_id is 'The delivery whose hard bounce added the address, when it came from one';

create index suppressions_created_at_idx on email.suppressions (created_at);
-- Finds the open deliveries of a newly suppressed address without a scan of all deliveries (a
-- partial-index predicate must be immutable: the waiting statuses of email.statuses, literally).
create index deliveries_open_recipient_idx on email.deliveries (lower(recipient)) where status in ('queued', 'retrying');

-- ---------------------------------------------------------------------------------------------
-- Functions
-- ---------------------------------------------------------------------------------------------

/** The address part of a recipient, lower-cased: `Ada <ADA@Example.com>` becomes `ada@example.com`. */
create or replace function email.normalize_address(address text)
returns text
language plpgsql
immutable
set search_path = ''
as $$
begin
  return lower(btrim(coalesce(substring(address from '<([^<>]*)>\s*$'), address)));
end
$$;
comment on function email.normalize_address(text) is 'Lower-cased bare address of a recipient (the part in <...> when present)';
grant execute on function email.normalize_address(text) to service_role;

/** Whether an address is suppressed (case-insensitive). */
create or replace function email.is_suppressed(address text)
returns boolean
language plpgsql
stable
set search_path = ''
as $$
begin
  return exists (select from email.suppressions s where s.address = email.normalize_address(is_suppressed.address));
end
$$;
comment on function email.is_suppressed(text) is 'Whether the address is on the suppression list (case-insensitive)';
grant execute on function email.is_suppressed(text) to service_role;

/**
 * Puts an address on the suppression list (or updates why it is there) and ends its open queued and
 * retrying deliveries as suppressed (through the trigger on the table). Returns the entry.
 */
create or replace function email.add_suppression(
  address text,
  reason text,
  delivery_id text default null,
  error_code text default null,
  source text default 'operator'
)
returns email.suppressions
language plpgsql
volatile
set search_path = ''
as $$
declare
  a text := email.normalize_address(add_suppression.address);
  s email.suppressions;
begin
  if a is null or a !~ '^[^\s@]+@[^\s@]+$' then
    raise exception 'not an email address: %', add_suppression.address using errcode = 'EM006';
  end if;
  if coalesce(btrim(add_suppression.reason), '') = '' then
    raise exception 'a suppression needs a reason' using errcode = 'EM006';
  end if;
  insert into email.suppressions as x (address, reason, source, delivery_id, error_code, created_by)
  values (a, left(btrim(add_suppression.reason), 500), coalesce(add_suppression.source, 'operator'),
    add_suppression.delivery_id, left(add_suppression.error_code, 64), email._actor())
  on conflict on constraint suppressions_pkey do update
    set reason = excluded.reason, source = excluded.source,
        delivery_id = coalesce(excluded.delivery_id, x.delivery_id), error_code = coalesce(excluded.error_code, x.error_code)
  returning x.* into s;
  return s;
end
$$;
comment on function email.add_suppression(text, text, text, text, text) is 'Suppress an address (case-insensitive); its open deliveries end suppressed';
grant execute on function email.add_suppression(text, text, text, text, text) to service_role;

/** Takes an address off the suppression list; true when it was on it. Later deliveries are sent again. */
create or replace function email.remove_suppression(address text)
returns boolean
language sql
volatile
set search_path = ''
as $$
  with gone as (
    delete from email.suppressions s where s.address = email.normalize_address(remove_suppression.address) returning 1
  )
  select exists (select from gone)
$$;
comment on function email.remove_suppression(text) is 'Unsuppress an address; true when it was suppressed';
grant execute on function email.remove_suppression(text) to service_role;

/** Moves one open delivery to suppressed, with the suppression's reason in the trail. */
create or replace function email._suppress_delivery(delivery_id text, s email.suppressions)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  perform email._set_event_detail(jsonb_build_object(
    'error_code', 'address_suppressed',
    'suppression', jsonb_build_object('reason', s.reason, 'source', s.source, 'since', s.created_at)
  ));
  update email.deliveries d
  set status = 'suppressed', last_error_code = 'address_suppressed',
      last_error_message = left('the recipient is on the suppression list: ' || s.reason, 512)
  where d.delivery_id = _suppress_delivery.delivery_id
    and d.status in (select st.status from email.statuses st where st.waiting);
  perform email._set_event_detail(null);
  delete from email.delivery_payloads p where p.delivery_id = _suppress_delivery.delivery_id;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- Triggers
-- ---------------------------------------------------------------------------------------------

/** A delivery that is (again) waiting for an attempt and whose recipient is suppressed ends suppressed. */
create or replace function email.tg_deliveries__suppress_recipient()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  s email.suppressions;
begin
  select x.* into s from email.suppressions x where x.address = email.normalize_address(new.recipient);
  if found then
    perform email._suppress_delivery(new.delivery_id, s);
  end if;
  return null;
end
$$;

-- A trigger's WHEN cannot read a table: the waiting statuses of email.statuses, literally.
create trigger _700_suppress_recipient
after insert or update of status on email.deliveries
for each row when (new.status in ('queued', 'retrying'))
execute function email.tg_deliveries__suppress_recipient();

/** The template data of a delivery that already ended suppressed is not stored at all. */
create or replace function email.tg_delivery_payloads__skip_suppressed()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if exists (select from email.deliveries d where d.delivery_id = new.delivery_id and d.status = 'suppressed') then
    return null;
  end if;
  return new;
end
$$;

create trigger _100_skip_suppressed
before insert on email.delivery_payloads
for each row execute function email.tg_delivery_payloads__skip_suppressed();

/** A new suppression ends the address's open queued and retrying deliveries as suppressed. */
create or replace function email.tg_suppressions__suppress_open_deliveries()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  id text;
begin
  for id in
    select d.delivery_id from email.deliveries d
    -- The waiting statuses, literally: the predicate of deliveries_open_recipient_idx.
    where lower(d.recipient) = new.address and d.status in ('queued', 'retrying')
      and email.normalize_address(d.recipient) = new.address
    for update
  loop
    perform email._suppress_delivery(id, new);
  end loop;
  -- Recipients written as `Name <address>` do not match the index on lower(recipient).
  for id in
    select d.delivery_id from email.deliveries d
    where d.status in (select st.status from email.statuses st where st.waiting) and d.recipient like '%<%'
      and email.normalize_address(d.recipient) = new.address
    for update
  loop
    perform email._suppress_delivery(id, new);
  end loop;
  return null;
end
$$;

create trigger _500_suppress_open_deliveries
after insert on email.suppressions
for each row execute function email.tg_suppressions__suppress_open_deliveries();

/**
 * A delivery that failed on a hard bounce puts its recipient on the suppression list. Whether it was
 * one, email.failure_rules decided when record_failure recorded the failure (the event's detail).
 */
create or replace function email.tg_delivery_events__suppress_hard_bounce()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  recipient text;
begin
  select d.recipient into recipient from email.deliveries d where d.delivery_id = new.delivery_id;
  if not email.is_suppressed(recipient) then
    perform email.add_suppression(recipient, left('hard bounce: ' || coalesce(new.error_message, new.error_code), 500),
      new.delivery_id, new.error_code, 'hard_bounce');
  end if;
  return null;
end
$$;

create trigger _700_suppress_hard_bounce
after insert on email.delivery_events
for each row when (new.to_status = 'failed' and coalesce((new.detail -> 'failure' ->> 'hard_bounce')::boolean, false))
execute function email.tg_delivery_events__suppress_hard_bounce();

-- ---------------------------------------------------------------------------------------------
-- Privileges: service_role only (RLS is enabled and has no policy for anyone else)
-- ---------------------------------------------------------------------------------------------

revoke all on email.suppressions from public, anon, authenticated;
-- The triggers run as whoever writes the transition (service_role): it needs the helpers they call.
grant execute on function email._suppress_delivery(text, email.suppressions) to service_role;
grant select, insert, update, delete on email.suppressions to service_role;
revoke execute on function
  email.normalize_address(text), email.is_suppressed(text),
  email.add_suppression(text, text, text, text, text), email.remove_suppression(text),
  email._suppress_delivery(text, email.suppressions), email.tg_deliveries__suppress_recipient(),
  email.tg_delivery_payloads__skip_suppressed(), email.tg_suppressions__suppress_open_deliveries(),
  email.tg_delivery_events__suppress_hard_bounce()
from public, anon, authenticated;
-- The triggers run as whoever writes the transition (service_role): it needs the helpers they call.
grant execute on function email._suppress_delivery(text, email.suppressions) to service_role;
