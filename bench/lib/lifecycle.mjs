// Parts (b) and (c) of `npm run bench`: complete delivery lifecycles in Postgres.
//
// A lifecycle is the three transactions the worker runs for one delivery, each one statement in
// autocommit (one round trip, one commit): accept, claim, sent. Three variants, measured on the same
// server in the same run, interleaved so drift in the machine's speed hits all of them alike:
//   email        the real RPCs: email.record_queued -> email.mark_in_progress -> email.mark_sent
//                (rules table, BEFORE/AFTER triggers, audit trail, payload erasure, fencing)
//   email-2rt    the same RPCs as the worker's tracker calls them: record_queued and mark_in_progress in
//                one statement (one round trip, one transaction), then mark_sent: two transactions
//   plain        the baseline: tables of the same shape (CREATE TABLE ... LIKE email.x INCLUDING ALL:
//                same columns, checks and indexes, no triggers, no RLS, no foreign keys) written with
//                plain INSERT/UPDATE/DELETE, one statement per transaction
//   plain+audit  the baseline plus a hand-written event row in each of the three statements: what the
//                audit trail costs when written without triggers (for explaining the gap, not a target)
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { median, quantile, round } from "./stats.mjs";

export const VARIANTS = ["email", "email-2rt", "plain", "plain+audit"];

const WORKFLOWS = ["signup-code", "password-reset", "magic-link", "invoice"];

/** Creates the baseline schema bench_baseline next to email, with tables of the same shape. */
export async function createBaseline(sql) {
  await sql.unsafe(`
    drop schema if exists bench_baseline cascade;
    create schema bench_baseline;
    create table bench_baseline.deliveries (like email.deliveries including all);
    create table bench_baseline.delivery_payloads (like email.delivery_payloads including all);
    create table bench_baseline.delivery_events (like email.delivery_events including all);
  `);
}

/** The three statements of one lifecycle for a variant, as functions of (sql, delivery). */
function statements(variant) {
  if (variant === "email") {
    return {
      accept: (sql, d) =>
        sql`select status from email.record_queued(${d.id}, ${d.workflow}, ${d.recipient}, ${
          sql.json(d.payload)
        }, '{}'::jsonb, ${d.userId}::uuid)`,
      claim: (sql, d) => sql`select email.mark_in_progress(${d.id}, 60) as attempt`,
      sent: (sql, d, attempt) =>
        sql`select status from email.mark_sent(${d.id}, ${attempt}, ${d.messageId}, '250 2.0.0 OK queued')`,
    };
  }
  if (variant === "email-2rt") {
    return {
      accept: (sql, d) =>
        sql`select q.status, email.mark_in_progress(q.delivery_id, 60) as attempt
            from email.record_queued(${d.id}, ${d.workflow}, ${d.recipient}, ${
          sql.json(d.payload)
        }, '{}'::jsonb, ${d.userId}::uuid) q`,
      claim: null,
      sent: (sql, d, attempt) =>
        sql`select status from email.mark_sent(${d.id}, ${attempt}, ${d.messageId}, '250 2.0.0 OK queued')`,
    };
  }
  const audit = variant === "plain+audit";
  return {
    accept: (sql, d) =>
      audit
        ? sql`with d as (
              insert into bench_baseline.deliveries (delivery_id, workflow, recipient, user_id, max_attempts, request_hash, metadata, next_attempt_at)
              values (${d.id}, ${d.workflow}, ${d.recipient}, ${d.userId}::uuid, 5,
                      encode(sha256(convert_to(${
          sql.json(d.payload)
        }::text, 'UTF8')), 'hex'), '{}', now() + interval '60 seconds')
              returning delivery_id, status, attempts
            ), p as (
              insert into bench_baseline.delivery_payloads (delivery_id, payload) select delivery_id, ${
          sql.json(d.payload)
        } from d
            )
            insert into bench_baseline.delivery_events (delivery_id, from_status, to_status, attempt, actor)
            select delivery_id, null, status, attempts, current_user from d returning to_status as status`
        : sql`with d as (
              insert into bench_baseline.deliveries (delivery_id, workflow, recipient, user_id, max_attempts, request_hash, metadata, next_attempt_at)
              values (${d.id}, ${d.workflow}, ${d.recipient}, ${d.userId}::uuid, 5,
                      encode(sha256(convert_to(${
          sql.json(d.payload)
        }::text, 'UTF8')), 'hex'), '{}', now() + interval '60 seconds')
              returning delivery_id, status
            )
            insert into bench_baseline.delivery_payloads (delivery_id, payload) select delivery_id, ${
          sql.json(d.payload)
        } from d
            returning 'queued' as status`,
    claim: (sql, d) =>
      audit
        ? sql`with u as (
              update bench_baseline.deliveries
              set status = 'in_progress', attempts = attempts + 1, last_attempted_at = now(), next_attempt_at = null,
                  lease_expires_at = now() + interval '60 seconds', updated_at = now()
              where delivery_id = ${d.id} and status in ('queued', 'retrying')
              returning delivery_id, attempts, lease_expires_at
            )
            insert into bench_baseline.delivery_events (delivery_id, from_status, to_status, attempt, detail, actor)
            select delivery_id, 'queued', 'in_progress', attempts, jsonb_build_object('lease_expires_at', lease_expires_at), current_user
            from u returning attempt`
        : sql`update bench_baseline.deliveries
              set status = 'in_progress', attempts = attempts + 1, last_attempted_at = now(), next_attempt_at = null,
                  lease_expires_at = now() + interval '60 seconds', updated_at = now()
              where delivery_id = ${d.id} and status in ('queued', 'retrying')
              returning attempts as attempt`,
    sent: (sql, d, attempt) =>
      audit
        ? sql`with u as (
              update bench_baseline.deliveries
              set status = 'sent', sent_at = now(), completed_at = now(), lease_expires_at = null,
                  provider_message_id = ${d.messageId}, provider_response = '250 2.0.0 OK queued', updated_at = now()
              where delivery_id = ${d.id} and attempts = ${attempt} and status = 'in_progress'
              returning delivery_id, attempts, provider_message_id, provider_response
            ), e as (
              insert into bench_baseline.delivery_events (delivery_id, from_status, to_status, attempt, detail, actor)
              select delivery_id, 'in_progress', 'sent', attempts,
                     jsonb_build_object('provider_message_id', provider_message_id, 'provider_response', provider_response), current_user
              from u
            )
            delete from bench_baseline.delivery_payloads p using u where p.delivery_id = u.delivery_id returning 'sent' as status`
        : sql`with u as (
              update bench_baseline.deliveries
              set status = 'sent', sent_at = now(), completed_at = now(), lease_expires_at = null,
                  provider_message_id = ${d.messageId}, provider_response = '250 2.0.0 OK queued', updated_at = now()
              where delivery_id = ${d.id} and attempts = ${attempt} and status = 'in_progress'
              returning delivery_id
            )
            delete from bench_baseline.delivery_payloads p using u where p.delivery_id = u.delivery_id returning 'sent' as status`,
  };
}

let serial = 0;
/** A realistic delivery: a short template payload with a code and a link, a user, a recipient. */
function newDelivery(tag) {
  const n = ++serial;
  const code = String(100000 + (n * 7919) % 900000);
  return {
    id: `${tag}-${n}-${randomUUID().slice(0, 8)}`,
    workflow: WORKFLOWS[n % WORKFLOWS.length],
    recipient: `user${n % 50000}@example.com`,
    userId: randomUUID(),
    payload: { code, name: "Ada Lovelace", link: `https://app.example.com/verify?t=${randomUUID()}` },
    messageId: `<${randomUUID()}@bench.example.com>`,
  };
}

/**
 * Runs complete lifecycles of one variant with `clients` concurrent connections for `seconds`, and
 * returns lifecycles per second, latency percentiles of a whole lifecycle and WAL per lifecycle.
 */
export async function runLifecycles(url, { variant, clients, seconds, tag, prepare = false }) {
  // prepare: false by default, as the worker's tracker runs (Supabase's transaction pooler needs it).
  const sql = postgres(url, { max: clients, onnotice: () => {}, idle_timeout: 5, prepare, fetch_types: false });
  const stmts = statements(variant);
  const latencies = [];
  try {
    // Open every connection and warm the prepared statements before timing.
    await Promise.all(Array.from({ length: clients }, () => oneLifecycle(sql, stmts, tag)));
    const [w0] = await sql`select pg_current_wal_lsn() as lsn, (select wal_sync from pg_stat_wal) as syncs`;
    let done = 0;
    const start = performance.now();
    const deadline = start + seconds * 1000;
    await Promise.all(Array.from({ length: clients }, async () => {
      while (performance.now() < deadline) {
        const t = performance.now();
        await oneLifecycle(sql, stmts, tag);
        latencies.push(performance.now() - t);
        done++;
      }
    }));
    const elapsed = (performance.now() - start) / 1000;
    const [w1] = await sql`select pg_wal_lsn_diff(pg_current_wal_lsn(), ${w0.lsn}::pg_lsn)::float8 as bytes,
                                  (select wal_sync from pg_stat_wal) - ${w0.syncs}::bigint as syncs`;
    return {
      variant,
      clients,
      lifecycles: done,
      seconds: round(elapsed, 2),
      per_second: round(done / elapsed, 1),
      p50_ms: round(median(latencies), 2),
      p99_ms: round(quantile(latencies, 0.99), 2),
      wal_bytes_per_lifecycle: round(w1.bytes / done, 0),
      wal_syncs_per_lifecycle: round(Number(w1.syncs) / done, 2),
    };
  } finally {
    await sql.end();
  }
}

async function oneLifecycle(sql, stmts, tag) {
  const d = newDelivery(tag);
  const [q] = await stmts.accept(sql, d);
  if (q?.status !== "queued") throw new Error(`accept of ${d.id} returned ${JSON.stringify(q)}`);
  const [c] = stmts.claim ? await stmts.claim(sql, d) : [q];
  if (!c?.attempt) throw new Error(`claim of ${d.id} returned ${JSON.stringify(c)}`);
  const [s] = await stmts.sent(sql, d, c.attempt);
  if (s?.status !== "sent") throw new Error(`sent of ${d.id} returned ${JSON.stringify(s)}`);
}

/**
 * Measures every variant at every concurrency, `rounds` times in alternating order (A B C, C B A, ...)
 * and keeps, per variant and concurrency, the sum of lifecycles over the sum of seconds.
 */
export async function measureMatrix(url, { clientsList, seconds, rounds, label, log, prepare = false }) {
  const results = [];
  for (const clients of clientsList) {
    const acc = new Map();
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? VARIANTS : [...VARIANTS].reverse();
      for (const variant of order) {
        const res = await runLifecycles(url, {
          variant,
          clients,
          seconds,
          tag: `bench-${label}-${variant.replace("+", "-")}-${clients}`,
          prepare,
        });
        log(
          `  ${label} ${variant.padEnd(11)} ${prepare ? "prepared" : ""} ${
            String(clients).padStart(2)
          } clients: ${res.per_second}/s (p50 ${res.p50_ms} ms)`,
        );
        const a = acc.get(variant) ?? [];
        a.push(res);
        acc.set(variant, a);
      }
    }
    for (const variant of VARIANTS) {
      const runs = acc.get(variant);
      const done = runs.reduce((s, x) => s + x.lifecycles, 0);
      const secs = runs.reduce((s, x) => s + x.seconds, 0);
      results.push({
        label,
        variant,
        clients,
        lifecycles: done,
        per_second: round(done / secs, 1),
        p50_ms: round(median(runs.map((x) => x.p50_ms)), 2),
        p99_ms: round(Math.max(...runs.map((x) => x.p99_ms)), 2),
        wal_bytes_per_lifecycle: round(median(runs.map((x) => x.wal_bytes_per_lifecycle)), 0),
        wal_syncs_per_lifecycle: round(median(runs.map((x) => x.wal_syncs_per_lifecycle)), 2),
        rounds: runs.map((x) => x.per_second),
      });
    }
  }
  return results;
}
