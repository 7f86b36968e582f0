/**
 * email: status webhooks (Standard Webhooks, https://www.standardwebhooks.com).
 *
 * - email.webhook_endpoints: where to POST, the signing secret (`whsec_` + base64), the event types
 *   wanted (empty: all), enabled or disabled with a reason. A rotated secret stays valid (we sign with
 *   it too) until its expiry, so receivers can switch without losing a message.
 * - email.webhook_outbox: one row per (endpoint, audit event), written by the trigger _800_webhook_outbox
 *   on email.delivery_events in the same transaction as the transition: a committed transition always
 *   has its rows, a rolled-back one never does. The body is fixed when the row is written, so every
 *   retry sends the same bytes under the same webhook-id (`msg_<event id>`).
 * - The dispatcher (functions/_shared/webhooks.ts, run by the sweep) claims due rows with
 *   claim_webhook_messages (skip locked), renews each claim with renew_webhook_claim right before its
 *   POST (a message claimed again meanwhile is skipped), and reports each outcome to record_webhook_result,
 *   which decides everything that follows: delivered; a retry after 5 s, 5 min, 30 min, 2 h, 5 h,
 *   10 h, 10 h (or after the receiver's Retry-After); given up after the last; the endpoint disabled
 *   on 410 Gone or when it has been failing for more than 5 days.
 * - replay_webhook_message and replay_webhook_messages send one message, or the events of a time
 *   range, again.
 * - Endpoints may not point inside the network: the trigger _050_refuse_private_target refuses
 *   addresses in email.webhook_refused_networks (private, loopback, link-local, other special-purpose),
 *   localhost and ambiguous IPv4 forms; the dispatcher checks every address a name resolves to at send
 *   time. A session opts in for local development with `set email.webhook_allow_private = on`.
 * All tables are service_role only (RLS enabled, no policies).
 */

create extension if not exists pgcrypto with schema extensions;

-- ---------------------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------------------

create table email.webhook_endpoints (
  id uuid primary key default gen_random_uuid(),
  url text not null check (url ~ '^https?://[^\s/]+' and char_length(url) <= 2000),
  description text check (char_length(description) <= 500),
  secret text not null check (secret ~ '^whsec_[A-Za-z0-9+/]+={0,2}$'),
  previous_secrets jsonb not null default '[]' check (jsonb_typeof(previous_secrets) = 'array'),
  event_types text[] not null default '{}'
    constraint webhook_endpoints_event_types_format check (array_to_string(event_types, ',') ~ '^(email\.[a-z_]+(,email\.[a-z_]+)*)?$'),
  enabled boolean not null default true,
  disabled_reason text check (char_length(disabled_reason) <= 500),
  disabled_at timestamptz,
  failing_since timestamptz,
  created_at timestamptz not null default now(),
  created_by text not null,
  updated_at timestamptz not null default now(),
  constraint webhook_endpoints_disabled_has_reason check (enabled or disabled_reason is not null)
);
alter table email.webhook_endpoints enable row level security;
comment on table email.webhook_endpoints is 'Webhook receivers: url, whsec_ secret (and rotated ones still valid), wanted event types (empty: all)';
comment on column email.webhook_endpoints.previous_secrets is 'Rotated secrets still signed with until their expiry: [{"secret": "whsec_...", "expires_at": "..."}]';
comment on column email.webhook_endpoints.failing_since is 'Start of the current run of failed requests (null after a success); over 5 days disables the endpoint';

create table email.webhook_outbox (
  id bigint generated always as identity primary key,
  endpoint_id uuid not null references email.webhook_endpoints on delete cascade,
  event_id bigint not null references email.delivery_events on delete cascade,
  message_id text not null,
  event_type text not null,
  body jsonb not null,
  status text not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
  attempts integer not null default 0 check (attempts >= 0),
  schedule_offset integer not null default 0 check (schedule_offset >= 0),
  next_attempt_at timestamptz not null default now(),
  last_attempt_at timestamptz,
  last_status_code integer,
  last_error text check (char_length(last_error) <= 500),
  delivered_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint webhook_outbox_endpoint_event_key unique (endpoint_id, event_id)
);
alter table email.webhook_outbox enable row level security;
comment on table email.webhook_outbox is 'One webhook message per endpoint and audit event, written in the transition''s transaction';
comment on column email.webhook_outbox.message_id is 'The webhook-id header: msg_<event id>, the same for every retry and endpoint (receivers dedup on it)';
comment on column email.webhook_outbox.schedule_offset is 'Attempts made before the last replay: the retry schedule counts from there';

create table email.webhook_refused_networks (
  network cidr primary key,
  description text not null
);
alter table email.webhook_refused_networks enable row level security;
comment on table email.webhook_refused_networks is 'Networks webhooks never reach (IANA special-purpose): refused at registration and on every resolved address at send time';

-- From the IANA IPv4 and IPv6 special-purpose address registries, plus multicast and 6to4/NAT64 (they
-- can carry a private IPv4 address). The dispatcher reads this table; nothing else lists them.
insert into email.webhook_refused_networks (network, description) values
  ('0.0.0.0/8', '"this network"'),
  ('10.0.0.0/8', 'private'),
  ('100.64.0.0/10', 'shared address space (carrier-grade NAT)'),
  ('127.0.0.0/8', 'loopback'),
  ('169.254.0.0/16', 'link-local (cloud metadata)'),
  ('172.16.0.0/12', 'private'),
  ('192.0.0.0/24', 'IETF protocol assignments'),
  ('192.0.2.0/24', 'documentation (TEST-NET-1)'),
  ('192.88.99.0/24', '6to4 relay anycast'),
  ('192.168.0.0/16', 'private'),
  ('198.18.0.0/15', 'benchmarking'),
  ('198.51.100.0/24', 'documentation (TEST-NET-2)'),
  ('203.0.113.0/24', 'documentation (TEST-NET-3)'),
  ('224.0.0.0/4', 'multicast'),
  ('240.0.0.0/4', 'reserved, and broadcast'),
  ('::/96', 'unspecified, loopback and IPv4-compatible'),
  ('::ffff:0:0/96', 'IPv4-mapped'),
  ('64:ff9b::/96', 'IPv4/IPv6 translation'),
  ('64:ff9b:1::/48', 'local IPv4/IPv6 translation'),
  ('100::/64', 'discard-only'),
  ('2001::/23', 'IETF protocol assignments (Teredo, ...)'),
  ('2001:db8::/32', 'documentation'),
  ('2002::/16', '6to4'),
  ('fc00::/7', 'unique local (private)'),
  ('fe80::/10', 'link-local'),
  ('fec0::/10', 'site-local (deprecated)'),
  ('ff00::/8', 'multicast');

create index webhook_outbox_due_idx on email.webhook_outbox (next_attempt_at) where status = 'pending';
create index webhook_outbox_message_id_idx on email.webhook_outbox (message_id);
create index webhook_outbox_event_id_idx on email.webhook_outbox (event_id);

-- ---------------------------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------------------------

/** A new signing secret: `whsec_` + base64 of 32 random bytes. */
create or replace function email.new_webhook_secret()
returns text
language sql
volatile
set search_path = ''
as $$
  select 'whsec_' || encode(extensions.gen_random_bytes(32), 'base64')
$$;
comment on function email.new_webhook_secret() is 'A fresh whsec_ signing secret (32 random bytes)';
grant execute on function email.new_webhook_secret() to service_role;

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
grant execute on function email.webhook_body(email.delivery_events, text) to service_role;

/**
 * Why a webhook URL's host is refused, or null. Refused: an address in email.webhook_refused_networks
 * (IPv6 in brackets included), localhost, an IPv4 address written other than as four decimal numbers
 * (a URL parser reads 2130706433, 0x7f.1 and 0177.0.0.1 as 127.0.0.1), and percent-escapes,
 * backslashes or non-ASCII in the host (a URL parser decodes them into another host). A name is
 * not resolved here: the dispatcher checks every address it resolves to at send time.
 */
create or replace function email.webhook_target_refusal(url text)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
  authority text := substring(url from '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)');
  host text := lower(regexp_replace(authority, '^.*@', '')); -- the user info ends at the last @
  address inet;
begin
  if host is null or host = '' then
    return 'not an http(s) URL with a host';
  end if;
  if authority ~ '[\\]' or host ~ '[%]' or host ~ '[^!-~]' then
    return 'percent-escapes, backslashes and non-ASCII characters are not accepted in the host (use punycode)';
  end if;
  if host like '[%' then
    begin
      address := substring(host from '^\[([^]]*)\]')::inet;
    exception when invalid_text_representation then
      return 'not an IPv6 address';
    end;
  else
    host := regexp_replace(regexp_replace(host, ':[0-9]*$', ''), '\.$', '');
    if host = 'localhost' or host like '%.localhost' then
      return 'localhost';
    end if;
    if substring(host from '[^.]*$') !~ '^(0x[0-9a-f]*|[0-9]+)$' then
      return null; -- a name
    end if;
    if host !~ '^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$' then
      return 'an IPv4 address must be written as four decimal numbers';
    end if;
    address := host::inet;
  end if;
  return (
    select format('%s is %s', host(address), n.description)
    from email.webhook_refused_networks n
    where address <<= n.network
    order by masklen(n.network) desc
    limit 1
  );
end
$$;
comment on function email.webhook_target_refusal(text) is 'Why a webhook URL''s host is refused (private, loopback, link-local, special-purpose, ambiguous), or null';
grant execute on function email.webhook_target_refusal(text) to service_role;

/** Whether an endpoint wants an event type (an empty list: every type). */
create or replace function email._webhook_wants(event_types text[], event_type text)
returns boolean
language plpgsql
immutable
set search_path = ''
as $$
begin
  return cardinality(event_types) = 0 or event_type = any (event_types);
end
$$;
-- The trigger runs as whoever writes the transition (service_role).
grant execute on function email._webhook_wants(text[], text) to service_role;

/**
 * The delay before the retry after failed attempt number `n` (counted since the last replay): the
 * Standard Webhooks schedule 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; null after the last (give up).
 */
create or replace function email.webhook_retry_delay(n integer)
returns interval
language sql
immutable
set search_path = ''
as $$
  select (array[
    interval '5 seconds', interval '5 minutes', interval '30 minutes', interval '2 hours',
    interval '5 hours', interval '10 hours', interval '10 hours'
  ])[n]
$$;
comment on function email.webhook_retry_delay(integer) is 'Retry schedule after failed attempt n: 5s, 5m, 30m, 2h, 5h, 10h, 10h, then null (give up)';
grant execute on function email.webhook_retry_delay(integer) to service_role;

-- ---------------------------------------------------------------------------------------------
-- The outbox trigger
-- ---------------------------------------------------------------------------------------------

/** Writes one outbox row per enabled endpoint that wants the event, in the transition's transaction. */
create or replace function email.tg_delivery_events__webhook_outbox()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  event_type text := 'email.' || new.to_status;
  body jsonb;
begin
  if not exists (select from email.webhook_endpoints w where w.enabled and email._webhook_wants(w.event_types, event_type)) then
    return null;
  end if;
  body := email.webhook_body(new, (select d.workflow from email.deliveries d where d.delivery_id = new.delivery_id));
  insert into email.webhook_outbox (endpoint_id, event_id, message_id, event_type, body)
  select w.id, new.id, 'msg_' || new.id, event_type, body
  from email.webhook_endpoints w
  where w.enabled and email._webhook_wants(w.event_types, event_type);
  return null;
end
$$;

create trigger _800_webhook_outbox
after insert on email.delivery_events
for each row execute function email.tg_delivery_events__webhook_outbox();

/**
 * Refuses an endpoint whose URL targets the inside of the network (email.webhook_target_refusal),
 * whoever writes it, unless the session opted in for local development:
 * `set email.webhook_allow_private = on` (the CLI does so with WEBHOOK_ALLOW_PRIVATE=true).
 */
create or replace function email.tg_webhook_endpoints__refuse_private_target()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  refusal text;
begin
  if coalesce(current_setting('email.webhook_allow_private', true), '') in ('on', 'true') then
    return new;
  end if;
  refusal := email.webhook_target_refusal(new.url);
  if refusal is not null then
    raise exception 'webhook target refused: %', refusal using errcode = 'EM007',
      hint = 'Webhooks go to public addresses only; for local development set email.webhook_allow_private = on (WEBHOOK_ALLOW_PRIVATE=true for the CLI and the worker)';
  end if;
  return new;
end
$$;

create trigger _050_refuse_private_target
before insert or update of url on email.webhook_endpoints
for each row execute function email.tg_webhook_endpoints__refuse_private_target();

-- updated_at on endpoints and outbox rows: the schema's shared trigger function (lifecycle migration).
create trigger _100_touch_updated_at
before update on email.webhook_endpoints
for each row execute function email.tg__touch_updated_at();

create trigger _100_touch_updated_at
before update on email.webhook_outbox
for each row execute function email.tg__touch_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Endpoint management (the CLI: `email-status webhooks ...`)
-- ---------------------------------------------------------------------------------------------

/** Registers an endpoint with a fresh secret (or the given one); returns it, secret included. */
create or replace function email.add_webhook_endpoint(
  url text,
  event_types text[] default '{}',
  description text default null,
  secret text default null
)
returns email.webhook_endpoints
language plpgsql
volatile
set search_path = ''
as $$
declare
  w email.webhook_endpoints;
begin
  if add_webhook_endpoint.url is null or add_webhook_endpoint.url !~ '^https?://[^\s/]+' then
    raise exception 'not an http(s) URL: %', add_webhook_endpoint.url using errcode = 'EM006';
  end if;
  if exists (
    select from unnest(coalesce(add_webhook_endpoint.event_types, '{}')) t
    where not exists (select from email.statuses s where 'email.' || s.status = t)
  ) then
    raise exception 'unknown event type in %', add_webhook_endpoint.event_types
      using errcode = 'EM006', hint = 'Event types are email.<status>, one per row of email.statuses';
  end if;
  insert into email.webhook_endpoints as x (url, event_types, description, secret, created_by)
  values (add_webhook_endpoint.url, coalesce(add_webhook_endpoint.event_types, '{}'), add_webhook_endpoint.description,
    coalesce(add_webhook_endpoint.secret, email.new_webhook_secret()), email._actor())
  returning x.* into w;
  return w;
end
$$;
comment on function email.add_webhook_endpoint(text, text[], text, text) is 'Register a webhook endpoint; returns it with its whsec_ secret';
grant execute on function email.add_webhook_endpoint(text, text[], text, text) to service_role;

/**
 * Replaces an endpoint's secret with a fresh one; the old one stays valid (messages are signed with
 * both) for keep_previous. Returns the endpoint with the new secret.
 */
create or replace function email.rotate_webhook_secret(endpoint_id uuid, keep_previous interval default interval '24 hours')
returns email.webhook_endpoints
language plpgsql
volatile
set search_path = ''
as $$
declare
  w email.webhook_endpoints;
begin
  if keep_previous is null or keep_previous < interval '0' then
    raise exception 'keep_previous must not be negative' using errcode = 'EM006';
  end if;
  update email.webhook_endpoints x
  set previous_secrets = (
        select coalesce(jsonb_agg(p), '[]') from jsonb_array_elements(x.previous_secrets) p
        where (p ->> 'expires_at')::timestamptz > now()
      ) || case when keep_previous > interval '0'
             then jsonb_build_array(jsonb_build_object('secret', x.secret, 'expires_at', now() + keep_previous))
             else '[]'::jsonb end,
      secret = email.new_webhook_secret()
  where x.id = rotate_webhook_secret.endpoint_id
  returning x.* into w;
  if not found then
    raise exception 'webhook endpoint % does not exist', endpoint_id using errcode = 'EM004';
  end if;
  return w;
end
$$;
comment on function email.rotate_webhook_secret(uuid, interval) is 'New secret; the old one is still signed with for keep_previous';
grant execute on function email.rotate_webhook_secret(uuid, interval) to service_role;

/** The secrets a message is signed with now: the current one and the rotated ones not yet expired. */
create or replace function email.webhook_signing_secrets(w email.webhook_endpoints)
returns text[]
language sql
stable
set search_path = ''
as $$
  select array[w.secret] || coalesce(array(
    select p ->> 'secret' from jsonb_array_elements(w.previous_secrets) p
    where (p ->> 'expires_at')::timestamptz > now()
  ), '{}')
$$;
comment on function email.webhook_signing_secrets(email.webhook_endpoints) is 'Current secret plus rotated secrets not yet expired';
grant execute on function email.webhook_signing_secrets(email.webhook_endpoints) to service_role;

/** Enables or disables an endpoint (a reason is required to disable); enabling clears the failure run. */
create or replace function email.set_webhook_endpoint_enabled(endpoint_id uuid, enabled boolean, reason text default null)
returns email.webhook_endpoints
language plpgsql
volatile
set search_path = ''
as $$
declare
  w email.webhook_endpoints;
begin
  if not coalesce(set_webhook_endpoint_enabled.enabled, false) and coalesce(btrim(reason), '') = '' then
    raise exception 'disabling an endpoint needs a reason' using errcode = 'EM006';
  end if;
  update email.webhook_endpoints x
  set enabled = set_webhook_endpoint_enabled.enabled,
      disabled_reason = case when set_webhook_endpoint_enabled.enabled then null else left(reason, 500) end,
      disabled_at = case when set_webhook_endpoint_enabled.enabled then null else now() end,
      failing_since = case when set_webhook_endpoint_enabled.enabled then null else x.failing_since end
  where x.id = set_webhook_endpoint_enabled.endpoint_id
  returning x.* into w;
  if not found then
    raise exception 'webhook endpoint % does not exist', endpoint_id using errcode = 'EM004';
  end if;
  return w;
end
$$;
comment on function email.set_webhook_endpoint_enabled(uuid, boolean, text) is 'Enable, or disable with a reason, a webhook endpoint';
grant execute on function email.set_webhook_endpoint_enabled(uuid, boolean, text) to service_role;

/** Deletes an endpoint and its outbox rows; true when it existed. */
create or replace function email.remove_webhook_endpoint(endpoint_id uuid)
returns boolean
language sql
volatile
set search_path = ''
as $$
  with gone as (delete from email.webhook_endpoints x where x.id = remove_webhook_endpoint.endpoint_id returning 1)
  select exists (select from gone)
$$;
comment on function email.remove_webhook_endpoint(uuid) is 'Delete a webhook endpoint and its outbox';
grant execute on function email.remove_webhook_endpoint(uuid) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Dispatch: claim, then record the outcome (the retry decision lives here)
-- ---------------------------------------------------------------------------------------------

/**
 * Claims up to max_count due messages of enabled endpoints (FOR UPDATE SKIP LOCKED, so concurrent
 * sweeps never share one). Each claimed row's attempts grows and it is not due again for
 * lock_seconds, so a dispatcher that dies mid-request only delays it. Returns what a sender needs:
 * the exact body text to sign and send, and the secrets to sign with.
 */
create or replace function email.claim_webhook_messages(max_count integer, lock_seconds integer default 60)
returns table (
  outbox_id bigint, attempt integer, endpoint_id uuid, url text, secrets text[],
  message_id text, event_type text, body text
)
language plpgsql
volatile
set search_path = ''
as $$
begin
  if lock_seconds is null or lock_seconds < 1 then
    raise exception 'lock_seconds must be at least 1, not %', lock_seconds using errcode = 'EM006';
  end if;
  return query
  with due as (
    select o.id from email.webhook_outbox o
    join email.webhook_endpoints w on w.id = o.endpoint_id and w.enabled
    where o.status = 'pending' and o.next_attempt_at <= now()
    order by o.next_attempt_at, o.id
    limit greatest(coalesce(max_count, 0), 0)
    for update of o skip locked
  ), claimed as (
    update email.webhook_outbox o
    set attempts = o.attempts + 1, last_attempt_at = now(), next_attempt_at = now() + make_interval(secs => lock_seconds)
    from due
    where o.id = due.id
    returning o.*
  )
  select c.id, c.attempts, w.id, w.url, email.webhook_signing_secrets(w), c.message_id, c.event_type, c.body::text
  from claimed c
  join email.webhook_endpoints w on w.id = c.endpoint_id
  order by c.next_attempt_at, c.id;
end
$$;
comment on function email.claim_webhook_messages(integer, integer) is 'Claim due webhook messages of enabled endpoints (skip locked)';
grant execute on function email.claim_webhook_messages(integer, integer) to service_role;

/**
 * Renews the claim of attempt `attempt` of an outbox message right before its request is sent: the
 * message is not due again for lock_seconds from now, and last_attempt_at says when the request went
 * out. A batch is sent in waves, so a claim made for the whole batch may have run out by the time a
 * message's turn comes; this is the per-message check. Fenced by the attempt, like
 * record_webhook_result: a claim that ran out is still ours as long as nobody claimed the message
 * again (a claim increments attempts), else EM003 and the dispatcher skips the message, so no
 * message is ever in flight from two dispatchers. Returns when the claim now ends.
 */
create or replace function email.renew_webhook_claim(outbox_id bigint, attempt integer, lock_seconds integer)
returns timestamptz
language plpgsql
volatile
set search_path = ''
as $$
declare
  o email.webhook_outbox;
begin
  if lock_seconds is null or lock_seconds < 1 then
    raise exception 'lock_seconds must be at least 1, not %', lock_seconds using errcode = 'EM006';
  end if;
  select x.* into o from email.webhook_outbox x where x.id = renew_webhook_claim.outbox_id for update;
  if not found then
    raise exception 'webhook message % does not exist', renew_webhook_claim.outbox_id using errcode = 'EM004';
  end if;
  if o.attempts is distinct from renew_webhook_claim.attempt or o.status <> 'pending' then
    raise exception 'attempt % of webhook message % is stale: it is % at attempt %',
      renew_webhook_claim.attempt, renew_webhook_claim.outbox_id, o.status, o.attempts using errcode = 'EM003';
  end if;
  update email.webhook_outbox x
  set next_attempt_at = now() + make_interval(secs => lock_seconds), last_attempt_at = now()
  where x.id = o.id
  returning x.next_attempt_at into o.next_attempt_at;
  return o.next_attempt_at;
end
$$;
comment on function email.renew_webhook_claim(bigint, integer, integer) is 'Renew a webhook message''s claim right before its request (fenced by attempt: EM003 once claimed again)';
grant execute on function email.renew_webhook_claim(bigint, integer, integer) to service_role;

/**
 * Records the outcome of attempt `attempt` of an outbox message and decides what follows:
 * - 2xx: delivered; the endpoint's failure run ends;
 * - 410 Gone: the message fails and the endpoint is disabled (the receiver asked us to stop);
 * - anything else (other status, timeout, connection error: status_code null): the next attempt is
 *   due after Retry-After seconds when the receiver sent one (within 1 s .. 1 day), else after the
 *   schedule's delay (webhook_retry_delay); after the schedule's last retry the message fails; an
 *   endpoint failing without a success for more than 5 days is disabled with the reason.
 * Fenced like the deliveries: a stale attempt raises EM003, an unknown message EM004.
 * Returns the message's new status and, when pending, when it is due.
 */
create or replace function email.record_webhook_result(
  outbox_id bigint,
  attempt integer,
  status_code integer,
  error text default null,
  retry_after_seconds integer default null
)
returns table (status text, next_attempt_at timestamptz, endpoint_disabled boolean)
language plpgsql
volatile
set search_path = ''
as $$
declare
  o email.webhook_outbox;
  w email.webhook_endpoints;
  delay interval;
  disable_reason text;
  failing_for_days constant interval := interval '5 days';
begin
  select x.* into o from email.webhook_outbox x where x.id = record_webhook_result.outbox_id for update;
  if not found then
    raise exception 'webhook message % does not exist', record_webhook_result.outbox_id using errcode = 'EM004';
  end if;
  if o.attempts is distinct from record_webhook_result.attempt or o.status <> 'pending' then
    raise exception 'attempt % of webhook message % is stale: it is % at attempt %',
      record_webhook_result.attempt, record_webhook_result.outbox_id, o.status, o.attempts using errcode = 'EM003';
  end if;
  select x.* into w from email.webhook_endpoints x where x.id = o.endpoint_id for update;

  if status_code between 200 and 299 then
    update email.webhook_outbox x
    set status = 'delivered', delivered_at = now(), last_status_code = record_webhook_result.status_code, last_error = null
    where x.id = o.id;
    update email.webhook_endpoints x set failing_since = null where x.id = w.id and x.failing_since is not null;
    return query select 'delivered'::text, null::timestamptz, false;
    return;
  end if;

  if status_code = 410 then
    disable_reason := 'the endpoint answered 410 Gone';
    delay := null;
  else
    if w.failing_since is not null and now() - w.failing_since > failing_for_days then
      disable_reason := format('failing since %s (more than %s) without a success',
        to_char(w.failing_since at time zone 'UTC', 'YYYY-MM-DD HH24:MI"Z"'), failing_for_days);
    end if;
    delay := case
      when retry_after_seconds is not null and retry_after_seconds >= 0
        then make_interval(secs => least(greatest(retry_after_seconds, 1), 86400))
      else email.webhook_retry_delay(o.attempts - o.schedule_offset)
    end;
    if email.webhook_retry_delay(o.attempts - o.schedule_offset) is null then
      delay := null; -- the schedule is exhausted, whatever the receiver asked for
    end if;
  end if;

  update email.webhook_outbox x
  set status = case when delay is null then 'failed' else 'pending' end,
      next_attempt_at = coalesce(now() + delay, x.next_attempt_at),
      last_status_code = record_webhook_result.status_code,
      last_error = left(coalesce(record_webhook_result.error, 'HTTP ' || record_webhook_result.status_code, 'failed'), 500)
  where x.id = o.id
  returning x.* into o;

  update email.webhook_endpoints x
  set failing_since = coalesce(x.failing_since, now()),
      enabled = x.enabled and disable_reason is null,
      disabled_reason = coalesce(x.disabled_reason, disable_reason),
      disabled_at = case when disable_reason is not null and x.enabled then now() else x.disabled_at end
  where x.id = w.id;

  return query select o.status, case when o.status = 'pending' then o.next_attempt_at end, disable_reason is not null;
end
$$;
comment on function email.record_webhook_result(bigint, integer, integer, text, integer) is 'Record a webhook attempt; the database decides delivered, retry (schedule or Retry-After), failed, endpoint disabled';
grant execute on function email.record_webhook_result(bigint, integer, integer, text, integer) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Replay
-- ---------------------------------------------------------------------------------------------

/** Sends one message again (to every endpoint that had it, or one): due now, a fresh retry schedule. Returns how many rows. */
create or replace function email.replay_webhook_message(message_id text, endpoint_id uuid default null)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  n integer;
begin
  update email.webhook_outbox x
  set status = 'pending', next_attempt_at = now(), schedule_offset = x.attempts, delivered_at = null
  where x.message_id = replay_webhook_message.message_id
    and (replay_webhook_message.endpoint_id is null or x.endpoint_id = replay_webhook_message.endpoint_id);
  get diagnostics n = row_count;
  if n = 0 then
    raise exception 'webhook message % does not exist', replay_webhook_message.message_id using errcode = 'EM004';
  end if;
  return n;
end
$$;
comment on function email.replay_webhook_message(text, uuid) is 'Send one webhook message again (same webhook-id), due now';
grant execute on function email.replay_webhook_message(text, uuid) to service_role;

/**
 * Sends the events of [since, until) again to the enabled endpoints that want them (or one endpoint):
 * existing messages become due now with a fresh schedule, and events an endpoint never had (it was
 * added later, or disabled then) get their message. Returns how many messages are due.
 */
create or replace function email.replay_webhook_messages(since timestamptz, until timestamptz, endpoint_id uuid default null)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  n integer;
begin
  if since is null or until is null or until <= since then
    raise exception 'a replay needs since < until' using errcode = 'EM006';
  end if;
  insert into email.webhook_outbox as x (endpoint_id, event_id, message_id, event_type, body)
  select w.id, e.id, 'msg_' || e.id, 'email.' || e.to_status, email.webhook_body(e, d.workflow)
  from email.delivery_events e
  join email.deliveries d on d.delivery_id = e.delivery_id
  join email.webhook_endpoints w on w.enabled
    and (replay_webhook_messages.endpoint_id is null or w.id = replay_webhook_messages.endpoint_id)
    and email._webhook_wants(w.event_types, 'email.' || e.to_status)
  where e.created_at >= since and e.created_at < until
  on conflict on constraint webhook_outbox_endpoint_event_key do update
    set status = 'pending', next_attempt_at = now(), schedule_offset = x.attempts, delivered_at = null;
  get diagnostics n = row_count;
  return n;
end
$$;
comment on function email.replay_webhook_messages(timestamptz, timestamptz, uuid) is 'Send the webhook messages of a time range again (and the ones never written)';
grant execute on function email.replay_webhook_messages(timestamptz, timestamptz, uuid) to service_role;

-- ---------------------------------------------------------------------------------------------
-- Privileges: service_role only
-- ---------------------------------------------------------------------------------------------

revoke all on email.webhook_endpoints, email.webhook_outbox, email.webhook_refused_networks from public, anon, authenticated;
grant select, insert, update, delete on email.webhook_endpoints, email.webhook_outbox to service_role;
grant select on email.webhook_refused_networks to service_role;
grant usage, select on sequence email.webhook_outbox_id_seq to service_role;

-- Postgres grants EXECUTE to PUBLIC on every new function: take it back; the grants above remain.
revoke execute on function
  email.new_webhook_secret(), email.webhook_body(email.delivery_events, text), email._webhook_wants(text[], text),
  email.webhook_target_refusal(text), email.tg_webhook_endpoints__refuse_private_target(),
  email.webhook_retry_delay(integer), email.tg_delivery_events__webhook_outbox(),
  email.add_webhook_endpoint(text, text[], text, text), email.rotate_webhook_secret(uuid, interval),
  email.webhook_signing_secrets(email.webhook_endpoints), email.set_webhook_endpoint_enabled(uuid, boolean, text),
  email.remove_webhook_endpoint(uuid), email.claim_webhook_messages(integer, integer),
  email.renew_webhook_claim(bigint, integer, integer),
  email.record_webhook_result(bigint, integer, integer, text, integer), email.replay_webhook_message(text, uuid),
  email.replay_webhook_messages(timestamptz, timestamptz, uuid)
from public, anon, authenticated;
