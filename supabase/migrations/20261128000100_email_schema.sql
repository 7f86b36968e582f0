/**
 * email: the delivery lifecycle's tables.
 *
 * Postgres owns the lifecycle of every email: the tables here hold the deliveries, their append-only
 * audit trail, the secret-bearing template data (kept apart and erased when a delivery ends), the
 * retry policy and the allowed transitions as data, and every input that could not be accepted.
 * The rules that act on them live in the lifecycle migration; RLS is enabled on every table here and
 * its policies live in the rls migration.
 */
create schema if not exists email;
comment on schema email is 'Transactional email delivery lifecycle (private: end users read it only under RLS)';

-- gen_random_bytes and hmac (Supabase has pgcrypto in schema extensions already).
create extension if not exists pgcrypto with schema extensions;

-- A per-schema default cannot take back a global one (EXECUTE on functions for PUBLIC is global), so
-- the lifecycle and rls migrations revoke execute explicitly, and the rls migration table privileges.
alter default privileges in schema email revoke all on tables from anon, authenticated;

-- The states a delivery can be in, and what each one is: the one list of statuses. Every other
-- place that needs a set of statuses (the triggers, the metrics, the sweep, the dashboard, the CLI)
-- derives it from these columns: SQL reads the table, TypeScript reads functions/_shared/statuses.gen.ts,
-- which scripts/gen_statuses.mjs writes from this table (tests/statuses_test.ts fails when they differ).
-- Only CHECK constraints and partial-index predicates repeat a set as literals: Postgres requires
-- them immutable, so they cannot read a table (each one says so where it is).
create table email.statuses (
  status text primary key,
  terminal boolean not null,
  waiting boolean not null,
  failing boolean not null,
  counts_as text not null check (counts_as in ('open', 'sent', 'failed', 'dead_letter', 'suppressed')),
  position smallint not null unique,
  description text not null,
  constraint statuses_waiting_is_open check (not (waiting and terminal)),
  constraint statuses_open_iff_not_terminal check ((counts_as = 'open') = (not terminal))
);
alter table email.statuses enable row level security;
comment on table email.statuses is 'The states of a delivery, and the sets every other place derives from them; terminal ones end it (a requeue can reopen failed and dead_letter)';
comment on column email.statuses.terminal is 'Ends the delivery (completed_at is set): the metrics'' "completed" set';
comment on column email.statuses.waiting is 'Waiting for an attempt: due at next_attempt_at, claimable by the sweep, ended by a new suppression';
comment on column email.statuses.failing is 'Entered because of a failure: the audit trail records its error code and message, and the dashboard lists it';
comment on column email.statuses.counts_as is 'The column the metrics count it in: open (not ended), sent, failed, dead_letter (purged ones too) or suppressed';
comment on column email.statuses.position is 'Display order (dashboard, CLI)';

insert into email.statuses (status, terminal, waiting, failing, counts_as, position, description) values
  ('queued', false, true, false, 'open', 20, 'accepted, waiting for an attempt'),
  ('in_progress', false, false, false, 'open', 30, 'an attempt holds the lease and is sending'),
  ('retrying', false, true, true, 'open', 40, 'an attempt failed transiently; the next one is due at next_attempt_at'),
  ('sent', true, false, false, 'sent', 10, 'the SMTP server accepted the message'),
  ('failed', true, false, true, 'failed', 50, 'permanently refused, or could not be rendered'),
  ('dead_letter', true, false, true, 'dead_letter', 60, 'attempts exhausted; kept for an operator to requeue or purge');

-- The allowed transitions, as data. A BEFORE UPDATE trigger refuses any other.
create table email.transitions (
  from_status text not null references email.statuses,
  to_status text not null references email.statuses,
  description text not null,
  primary key (from_status, to_status)
);
alter table email.transitions enable row level security;
comment on table email.transitions is 'Allowed status transitions of a delivery; anything else raises EM001';

insert into email.transitions (from_status, to_status, description) values
  ('queued', 'in_progress', 'an attempt claims the delivery'),
  ('queued', 'failed', 'render or validation failure after enqueue'),
  ('in_progress', 'sent', 'the SMTP server accepted the message'),
  ('in_progress', 'retrying', 'transient failure, or the lease expired (lease_expired: never sent; outcome_unknown: may have been sent), with attempts left'),
  ('in_progress', 'failed', 'permanent failure'),
  ('in_progress', 'dead_letter', 'transient failure (or an expired lease) with no attempts left'),
  ('retrying', 'in_progress', 'the next attempt claims the delivery'),
  ('retrying', 'sent', 'a reaped attempt reports success late, before anyone re-claimed it'),
  ('retrying', 'dead_letter', 'given up without another attempt'),
  ('failed', 'queued', 'an operator requeues it'),
  ('dead_letter', 'queued', 'an operator requeues it');

-- The retry policy, as data: one row per workflow, and the default row ('*').
create table email.retry_policies (
  workflow text primary key,
  max_attempts integer not null default 5 check (max_attempts between 1 and 100),
  base_delay interval not null default interval '30 seconds' check (base_delay > interval '0'),
  max_delay interval not null default interval '1 hour',
  constraint retry_policies_delay_order check (max_delay >= base_delay)
);
alter table email.retry_policies enable row level security;
comment on table email.retry_policies is 'Retry policy per workflow; the row ''*'' applies to every workflow without its own';

insert into email.retry_policies (workflow) values ('*');

/**
 * What a failed send leads to, as data: the one place that says which SMTP failures are retried, which
 * end the delivery, and which are hard bounces (the suppressions migration suppresses the recipient).
 * The worker only reports the facts of a failure (the reply code, the enhanced status code, the
 * transport's error code and a message) to email.record_failure; email.failure_rule picks the
 * matching rule with the lowest priority. A rule matches when each of its conditions that is set
 * holds: the reply code within [reply_code_from, reply_code_to], the enhanced code LIKE
 * enhanced_pattern ('' matches a reply without one), the transport code equal to transport_code. The
 * delivery's error code names what the rule matched on: smtp_<reply>[_<enhanced>] for a reply rule
 * (the enhanced code only where code_with_enhanced: not for 4xx, whose enhanced codes vary by relay and
 * would split the metrics' error counts), the transport code for a transport rule, `unknown` for the
 * catch-all.
 */
create table email.failure_rules (
  priority integer primary key,
  reply_code_from integer check (reply_code_from between 200 and 599),
  reply_code_to integer check (reply_code_to between 200 and 599),
  enhanced_pattern text,
  transport_code text,
  class text not null check (class in ('transient', 'permanent')),
  hard_bounce boolean not null default false,
  code_with_enhanced boolean not null default true,
  description text not null,
  constraint failure_rules_reply_range check ((reply_code_from is null) = (reply_code_to is null) and reply_code_from <= reply_code_to),
  constraint failure_rules_enhanced_needs_reply check (enhanced_pattern is null or reply_code_from is not null),
  constraint failure_rules_hard_bounce_is_permanent check (not hard_bounce or class = 'permanent')
);
alter table email.failure_rules enable row level security;
comment on table email.failure_rules is 'SMTP failure classification (transient, permanent, hard bounce): the lowest-priority matching rule decides';
comment on column email.failure_rules.code_with_enhanced is 'Whether the recorded error code carries the enhanced code (smtp_550_5.1.1) or only the reply (smtp_451)';

insert into email.failure_rules (priority, reply_code_from, reply_code_to, enhanced_pattern, transport_code, class, hard_bounce, code_with_enhanced, description) values
  (10, null, null, null, 'ETLS', 'transient', false, true, 'no TLS where it is required (STARTTLS refused or stripped): ours to fix, whatever the reply'),
  (20, 535, 535, null, null, 'transient', false, true, 'authentication failed: an operator fixes the credentials'),
  (30, 500, 599, '5.3.%', null, 'transient', false, true, 'mail system status: the relay''s side'),
  (31, 500, 599, '5.4.%', null, 'transient', false, true, 'network or routing: the relay''s side'),
  (32, 500, 599, '5.7.0', null, 'transient', false, true, 'our relay''s policy (e.g. the sender is not allowed): an operator fixes it'),
  (40, 500, 599, '5.1.%', null, 'permanent', true, true, 'bad destination mailbox or address: a hard bounce'),
  (41, 550, 551, '', null, 'permanent', true, true, 'mailbox unavailable or not local, without an enhanced code: a hard bounce'),
  (42, 553, 553, '', null, 'permanent', true, true, 'mailbox name not allowed, without an enhanced code: a hard bounce'),
  (50, 500, 599, null, null, 'permanent', false, true, 'any other 5xx: the recipient''s side refused (policy, content, mailbox full)'),
  (60, 400, 499, null, null, 'transient', false, false, 'any 4xx: try again later'),
  (70, null, null, null, 'EENVELOPE', 'permanent', false, true, 'the envelope was refused'),
  (71, null, null, null, 'EMESSAGE', 'permanent', false, true, 'the message could not be built'),
  (72, null, null, null, 'EREQUIRETLS', 'permanent', false, true, 'REQUIRETLS is not supported on the path'),
  (73, null, null, null, 'header_injection', 'permanent', false, true, 'a header value has a line break: never sent'),
  (80, null, null, null, 'ETIMEDOUT', 'transient', false, true, 'timed out'),
  (81, null, null, null, 'ECONNECTION', 'transient', false, true, 'connection error'),
  (82, null, null, null, 'ESOCKET', 'transient', false, true, 'socket error'),
  (83, null, null, null, 'EDNS', 'transient', false, true, 'DNS lookup failed'),
  (84, null, null, null, 'EPROTOCOL', 'transient', false, true, 'unexpected SMTP conversation'),
  (85, null, null, null, 'EAUTH', 'transient', false, true, 'authentication failed'),
  (86, null, null, null, 'ECONNREFUSED', 'transient', false, true, 'connection refused'),
  (87, null, null, null, 'ECONNRESET', 'transient', false, true, 'connection reset'),
  (88, null, null, null, 'EPIPE', 'transient', false, true, 'broken pipe'),
  (89, null, null, null, 'EHOSTUNREACH', 'transient', false, true, 'host unreachable'),
  (90, null, null, null, 'ENETUNREACH', 'transient', false, true, 'network unreachable'),
  (91, null, null, null, 'ENOTFOUND', 'transient', false, true, 'host not found'),
  (92, null, null, null, 'EAI_AGAIN', 'transient', false, true, 'DNS lookup failed temporarily'),
  (93, null, null, null, 'lease_expired', 'transient', false, true, 'the reaper: the attempt did not start sending before its lease expired'),
  (94, null, null, null, 'outcome_unknown', 'transient', false, true, 'the reaper: the attempt started sending and never reported (at least once: retried)'),
  (1000, null, null, null, null, 'transient', false, true, 'anything else: retried, so a bug never burns a message silently; the attempt budget bounds it');

create table email.deliveries (
  delivery_id text primary key
    constraint deliveries_delivery_id_format check (delivery_id ~ '^[A-Za-z0-9._:-]{1,200}$'),
  workflow text not null check (workflow ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  recipient text not null
    constraint deliveries_recipient_single_line check (recipient !~ '[\r\n]' and char_length(recipient) between 3 and 320),
  user_id uuid,
  status text not null default 'queued' references email.statuses,
  attempts integer not null default 0 check (attempts >= 0),
  max_attempts integer not null check (max_attempts >= 1),
  last_error_code text check (char_length(last_error_code) <= 64),
  last_error_message text
    constraint deliveries_last_error_message_length check (char_length(last_error_message) <= 512),
  queued_at timestamptz not null default now(),
  last_attempted_at timestamptz,
  next_attempt_at timestamptz,
  lease_expires_at timestamptz,
  send_started_at timestamptz,
  sent_at timestamptz,
  completed_at timestamptz,
  provider_message_id text check (char_length(provider_message_id) <= 998),
  provider_response text check (char_length(provider_response) <= 512),
  request_hash text not null,
  metadata jsonb not null default '{}' check (jsonb_typeof(metadata) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint deliveries_lease_iff_in_progress check ((status = 'in_progress') = (lease_expires_at is not null)),
  -- Literal (a CHECK cannot read email.statuses): the statuses with waiting = true.
  constraint deliveries_due_iff_waiting check ((status in ('queued', 'retrying')) = (next_attempt_at is not null))
);
alter table email.deliveries enable row level security;
comment on table email.deliveries is 'One row per email to send, keyed by the caller''s idempotency key';
comment on column email.deliveries.request_hash is 'HMAC-SHA256 (key: email.request_hash_key) of workflow, recipient, user and payload: tells a redelivery from a conflicting reuse of the id';
comment on column email.deliveries.completed_at is 'When the delivery reached a terminal status (email.statuses.terminal); null while it is open';
comment on column email.deliveries.send_started_at is 'When the current (or last) attempt began its SMTP conversation; null while it has not: an expired lease is then safe to retry';
comment on column email.deliveries.next_attempt_at is 'When the sweep may claim it: due retries, requeued deliveries, and queued ones no push claimed';

create index deliveries_status_updated_at_idx on email.deliveries (status, updated_at);
create index deliveries_recipient_updated_at_idx on email.deliveries (recipient, updated_at);
-- The two end-user policies (rls migration): own by user_id, own by the JWT's email in any case.
create index deliveries_user_id_idx on email.deliveries (user_id) where user_id is not null;
create index deliveries_recipient_lower_idx on email.deliveries (lower(recipient));
-- Partial-index predicates must be immutable, so they name statuses literally: here the waiting ones.
create index deliveries_due_idx on email.deliveries (next_attempt_at) where status in ('queued', 'retrying');
create index deliveries_lease_idx on email.deliveries (lease_expires_at) where status = 'in_progress';

/**
 * The key of deliveries.request_hash. The hash covers the payload, so an unkeyed hash of a 6-digit
 * code would give the code back to anyone who can read the column (a million guesses take seconds).
 * Keyed, it gives nothing without the key, and the key is readable by nobody but the owner of the
 * migrations: RLS without policies, and no privilege for anon, authenticated or service_role (the rls
 * migration takes service_role's back). Only the security definer function email._request_hash reads
 * it. Generated here, at `supabase db push`, from pgcrypto's strong random bytes: no manual step.
 */
create table email.request_hash_key (
  singleton boolean primary key default true check (singleton),
  key bytea not null check (octet_length(key) >= 32),
  created_at timestamptz not null default now()
);
alter table email.request_hash_key enable row level security;
comment on table email.request_hash_key is 'The HMAC key of deliveries.request_hash: readable only by its owner, through email._request_hash';
revoke all on email.request_hash_key from public, anon, authenticated, service_role;

insert into email.request_hash_key (key) values (extensions.gen_random_bytes(32));

-- Secret-bearing template data, apart from deliveries: erased when a delivery ends sent or failed.
create table email.delivery_payloads (
  delivery_id text primary key references email.deliveries on delete cascade,
  payload jsonb not null check (jsonb_typeof(payload) = 'object'),
  created_at timestamptz not null default now()
);
alter table email.delivery_payloads enable row level security;
comment on table email.delivery_payloads is 'Template data (codes, links): service_role only, erased when the delivery ends sent or failed';

-- The append-only audit trail, written by a trigger on deliveries.
create table email.delivery_events (
  id bigint generated always as identity primary key,
  delivery_id text not null references email.deliveries on delete restrict,
  from_status text,
  to_status text not null,
  attempt integer not null,
  error_code text,
  error_message text,
  detail jsonb not null default '{}',
  actor text not null,
  created_at timestamptz not null default now()
);
alter table email.delivery_events enable row level security;
comment on table email.delivery_events is 'Append-only audit trail: one row per insert and status change of a delivery';

create index delivery_events_delivery_id_idx on email.delivery_events (delivery_id, id);
create index delivery_events_created_at_idx on email.delivery_events (created_at);

-- Input that could not be accepted, with the reason, so nothing is lost.
create table email.rejected_messages (
  id bigint generated always as identity primary key,
  reason_code text not null check (reason_code ~ '^[a-z_]{1,40}$'),
  reason text not null check (char_length(reason) <= 2000),
  delivery_id text,
  message_id text,
  raw_body bytea,
  redacted text[] not null default '{}',
  body_bytes integer not null default 0,
  body_truncated boolean not null default false,
  headers jsonb not null default '{}',
  received_at timestamptz not null default now()
);
alter table email.rejected_messages enable row level security;
comment on table email.rejected_messages is 'Rejected input (bad envelope, base64, JSON, schema, idempotency conflict) with its reason and raw body (secrets redacted); purged after email.settings.rejected_message_retention';
comment on column email.rejected_messages.raw_body is 'The body as received, except that the values listed in `redacted` (codes, links) were replaced by "[redacted]" before it was stored';
comment on column email.rejected_messages.redacted is 'Where raw_body was redacted (e.g. {message.data:data.code}): empty when it is byte for byte what arrived';

create index rejected_messages_received_at_idx on email.rejected_messages (received_at);
create index rejected_messages_delivery_id_idx on email.rejected_messages (delivery_id) where delivery_id is not null;
