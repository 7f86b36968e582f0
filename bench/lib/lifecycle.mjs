// Parts (b) and (c) of `npm run bench`: complete delivery lifecycles in Postgres.
//
// A lifecycle is the three transactions the worker runs for one delivery, each one statement in
// autocommit (one round trip, one commit): accept, claim, sent. Three variants, measured on the same
// server in the same run, interleaved so drift in the machine's speed hits all of them alike:
//   email        the real RPCs: email.record_queued -> email.mark_in_progress -> email.mark_sent
//                (rules table, BEFORE/AFTER triggers, audit trail, payload erasure, fencing)
//   email-2rt    the worker's path, as its tracker calls it: email.queue_and_claim with starting_send
//                (the delivery is born in_progress, its send started: one round trip, one transaction),
//                then mark_sent: two transactions
//   plain        the baseline: tables of the same shape (CREATE TABLE ... LIKE email.x INCLUDING ALL:
//                same columns, checks and indexes, no triggers, no RLS, no foreign keys) written with
//                plain INSERT/UPDATE/DELETE, one statement per transaction
//   plain+audit  the baseline plus a hand-written event row in each of the three statements: what the
//                audit trail costs when written without triggers (for explaining the gap, not a target)
//   pg-boss      what a Node team would pick instead (npm pg-boss, a bench-only devDependency): on the same
//                server, a pool of `clients` connections (node-postgres, no prepared statements), one queue
//                per measurement; a lifecycle is send(distinct job) -> fetch(batchSize 1) -> complete: three
//                round trips (the job fetched may be another client's: a queue hands out the oldest)
// Every measurement is verified when it ends: each lifecycle it counted must be in the database
// finished (sent with its `sent` event; a pg-boss job completed) and nothing else may be left over;
// otherwise the run stops (a benchmark that loses work is invalid).
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { PgBoss } from "pg-boss";
import { median, quantile, round, table } from "./stats.mjs";

export const VARIANTS = ["email", "email-2rt", "plain", "plain+audit", "pg-boss"];

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
  if (variant === "email-2rt-before") {
    // The worker's path before email.queue_and_claim (bench/lean_stages.mjs measures the change).
    return {
      accept: (sql, d) =>
        sql`select 'in_progress' as status, email.mark_in_progress(q.delivery_id, 60) as attempt
            from email.record_queued(${d.id}, ${d.workflow}, ${d.recipient}, ${
          sql.json(d.payload)
        }, '{}'::jsonb, ${d.userId}::uuid) q`,
      claim: null,
      sent: (sql, d, attempt) =>
        sql`select status from email.mark_sent(${d.id}, ${attempt}, ${d.messageId}, '250 2.0.0 OK queued')`,
    };
  }
  if (variant === "email-2rt") {
    // The statements the worker's tracker makes for a delivery whose calls go alone (every client
    // here has one delivery in flight; when several calls wait in one isolate they go as one
    // statement to the *_many functions, tests/tracker_batch_test.ts): the claim records the send's
    // start under the sending lease, then the outcome.
    return {
      accept: (sql, d) =>
        sql`select status, attempt from email.queue_and_claim(${d.id}, ${d.workflow}, ${d.recipient}, ${
          sql.json(d.payload)
        }, '{}'::jsonb, ${d.userId}::uuid, 90, true)`,
      claim: null,
      sent: (sql, d, attempt) =>
        sql`select status from email.mark_sent(${d.id}, ${attempt}, ${d.messageId}, '250 2.0.0 OK queued')`,
    };
  }
  if (variant === "email-2rt-lean") {
    // The worker's path as the lean lifecycle migration left it (bench/lean_stages.mjs, whose stages
    // predate queue_and_claim's starting_send).
    return {
      accept: (sql, d) =>
        sql`select status, attempt from email.queue_and_claim(${d.id}, ${d.workflow}, ${d.recipient}, ${
          sql.json(d.payload)
        }, '{}'::jsonb, ${d.userId}::uuid, 60)`,
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
  const admin = postgres(url, { max: 1, onnotice: () => {}, fetch_types: false });
  const runner = variant === "pg-boss" ? await bossRunner(url, { clients, queue: tag }) : sqlRunner(
    postgres(url, { max: clients, onnotice: () => {}, idle_timeout: 5, prepare, fetch_types: false }),
    variant,
    tag,
  );
  const latencies = [];
  try {
    // Open every connection and warm the statements before timing.
    await Promise.all(Array.from({ length: clients }, () => runner.one()));
    const warm = clients;
    const [w0] = await admin`select pg_current_wal_lsn() as lsn, (select wal_sync from pg_stat_wal) as syncs`;
    let done = 0;
    const start = performance.now();
    const deadline = start + seconds * 1000;
    await Promise.all(Array.from({ length: clients }, async () => {
      while (performance.now() < deadline) {
        const t = performance.now();
        await runner.one();
        latencies.push(performance.now() - t);
        done++;
      }
    }));
    const elapsed = (performance.now() - start) / 1000;
    const [w1] = await admin`select pg_wal_lsn_diff(pg_current_wal_lsn(), ${w0.lsn}::pg_lsn)::float8 as bytes,
                                  (select wal_sync from pg_stat_wal) - ${w0.syncs}::bigint as syncs`;
    const verified = await verify(admin, variant, tag, warm + done);
    return {
      variant,
      clients,
      lifecycles: done,
      verified,
      seconds: round(elapsed, 2),
      per_second: round(done / elapsed, 1),
      p50_ms: round(median(latencies), 2),
      p99_ms: round(quantile(latencies, 0.99), 2),
      wal_bytes_per_lifecycle: round(w1.bytes / done, 0),
      wal_syncs_per_lifecycle: round(Number(w1.syncs) / done, 2),
      empty_fetches: runner.emptyFetches(),
    };
  } finally {
    await runner.close();
    await admin.end();
  }
}

/** Runs one SQL variant's lifecycles on a postgres.js pool. */
function sqlRunner(sql, variant, tag) {
  const stmts = statements(variant);
  return { one: () => oneLifecycle(sql, stmts, tag), emptyFetches: () => 0, close: () => sql.end() };
}

/**
 * pg-boss on its own schema (bench_pgboss, installed by its first start) with a pool of `clients`
 * connections and no background work (supervise, schedule off), and a fresh queue: each lifecycle
 * sends a distinct job, fetches one and completes it.
 */
async function bossRunner(url, { clients, queue }) {
  const boss = new PgBoss({
    connectionString: url,
    max: clients,
    schema: "bench_pgboss",
    supervise: false,
    schedule: false,
  });
  let failure = null;
  boss.on("error", (e) => (failure = e));
  await boss.start();
  await boss.createQueue(queue);
  let emptyFetches = 0;
  return {
    emptyFetches: () => emptyFetches,
    async one() {
      if (failure) throw failure;
      const d = newDelivery(queue);
      const id = await boss.send(queue, {
        deliveryId: d.id,
        workflow: d.workflow,
        recipient: d.recipient,
        payload: d.payload,
      });
      if (!id) throw new Error(`pg-boss send of ${d.id} returned no id`);
      // With many clients every created job can be locked by other clients' fetches for a moment:
      // fetch again, as a polling worker would (counted: each one is a round trip more).
      let [job] = await boss.fetch(queue, { batchSize: 1 });
      for (let i = 0; !job; i++) {
        if (i === 1000) throw new Error(`pg-boss fetch on ${queue} found no job 1000 times`);
        emptyFetches++;
        [job] = await boss.fetch(queue, { batchSize: 1 });
      }
      await boss.complete(queue, job.id);
    },
    close: () => boss.stop({ graceful: false, wait: true }),
  };
}

/**
 * Checks that the `expected` lifecycles of a measurement are all in the database, finished, and that
 * nothing of it was left half-done; throws otherwise. Returns what it counted.
 */
async function verify(sql, variant, tag, expected) {
  let counts;
  if (variant === "pg-boss") {
    [counts] = await sql`select count(*) filter (where state = 'completed')::int as finished,
                                count(*) filter (where state <> 'completed')::int as unfinished, 0::int as events
                         from bench_pgboss.job where name = ${tag}`;
    counts.events = counts.finished;
  } else if (variant.startsWith("plain")) {
    [counts] = await sql`select count(*) filter (where status = 'sent')::int as finished,
                                count(*) filter (where status <> 'sent')::int as unfinished,
                                (select count(*) from bench_baseline.delivery_payloads p where p.delivery_id like ${
      tag + "-%"
    })::int as payloads
                         from bench_baseline.deliveries where delivery_id like ${tag + "-%"}`;
    counts.events = counts.finished;
    if (counts.payloads !== 0) counts.unfinished += counts.payloads;
  } else {
    [counts] = await sql`select count(*) filter (where status = 'sent')::int as finished,
                                count(*) filter (where status <> 'sent')::int as unfinished,
                                (select count(*) from email.delivery_events e
                                 where e.delivery_id like ${tag + "-%"} and e.to_status = 'sent')::int as events
                         from email.deliveries where delivery_id like ${tag + "-%"}`;
  }
  if (counts.finished !== expected || counts.unfinished !== 0 || counts.events !== expected) {
    throw new Error(
      `${variant} ${tag}: ${expected} lifecycles counted, but the database has ${JSON.stringify(counts)}`,
    );
  }
  return counts.finished;
}

async function oneLifecycle(sql, stmts, tag) {
  const d = newDelivery(tag);
  const [q] = await stmts.accept(sql, d);
  if (q?.status !== (stmts.claim ? "queued" : "in_progress")) {
    throw new Error(`accept of ${d.id} returned ${JSON.stringify(q)}`);
  }
  const [c] = stmts.claim ? await stmts.claim(sql, d) : [q];
  if (!c?.attempt) throw new Error(`claim of ${d.id} returned ${JSON.stringify(c)}`);
  const [s] = await stmts.sent(sql, d, c.attempt);
  if (s?.status !== "sent") throw new Error(`sent of ${d.id} returned ${JSON.stringify(s)}`);
}

/**
 * Measures every variant at every concurrency, `rounds` times in alternating order (A B C, C B A, ...)
 * and keeps, per variant and concurrency, the sum of lifecycles over the sum of seconds.
 */
export async function measureMatrix(
  url,
  { clientsList, seconds, rounds, label, log, prepare = false, variants = VARIANTS },
) {
  const results = [];
  for (const clients of clientsList) {
    const acc = new Map();
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? variants : [...variants].reverse();
      for (const variant of order) {
        const res = await runLifecycles(url, {
          variant,
          clients,
          seconds,
          tag: `bench-${label}-${variant.replace("+", "-")}-${clients}-r${r}`,
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
    for (const variant of variants) {
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
        verified: runs.reduce((s, x) => s + x.verified, 0),
        empty_fetches: runs.reduce((s, x) => s + x.empty_fetches, 0),
      });
    }
  }
  return results;
}

/** The targets of issue 12 for the lifecycle: [label, variant, versus, clients, at least]. */
const TARGETS = [
  ["worker path vs pg-boss send -> fetch(1) -> complete", "email-2rt", "pg-boss", 1, 1.2],
  ["worker path vs pg-boss send -> fetch(1) -> complete", "email-2rt", "pg-boss", 8, 1.5],
  ["worker path vs pg-boss send -> fetch(1) -> complete", "email-2rt", "pg-boss", 32, 1.2],
  ["worker path vs the plain-SQL baseline", "email-2rt", "plain", 8, 1.0],
];
/** WAL per lifecycle of the worker path at 8 clients, at most (bytes). */
const WAL_TARGET = 3500;

/**
 * The lean-lifecycle section of the report: the worker path against pg-boss and the plain baseline
 * (the ratio of the summed rounds, and each interleaved round's own ratio), WAL per lifecycle, and the
 * worker path with the history in place; each target MET or SHORT. Returns the verdicts.
 */
export function leanReport(r, { log }) {
  if (!r.lifecycle) return [];
  const key = (list) => new Map(list.map((x) => [`${x.variant}/${x.clients}`, x]));
  const e = key(r.lifecycle);
  const g = r.growth?.lifecycle ? key(r.growth.lifecycle) : null;
  const verdicts = [];
  const rows = [];
  for (const [what, variant, versus, clients, atLeast] of TARGETS) {
    const a = e.get(`${variant}/${clients}`), b = e.get(`${versus}/${clients}`);
    if (!a || !b) continue;
    const ratio = round(a.per_second / b.per_second, 2);
    const perRound = a.rounds.map((x, i) => round(x / b.rounds[i], 2));
    const met = ratio >= atLeast;
    verdicts.push({ what, clients, ratio, at_least: atLeast, met, per_round: perRound });
    rows.push([
      what,
      clients,
      a.per_second,
      b.per_second,
      ratio,
      perRound.join(" "),
      `>= ${atLeast}`,
      met ? "MET" : "SHORT",
    ]);
  }
  const wal = e.get("email-2rt/8");
  if (wal) {
    const met = wal.wal_bytes_per_lifecycle <= WAL_TARGET;
    verdicts.push({ what: "WAL per lifecycle (worker path)", clients: 8, bytes: wal.wal_bytes_per_lifecycle, met });
    rows.push([
      "WAL bytes per lifecycle (worker path)",
      8,
      wal.wal_bytes_per_lifecycle,
      "-",
      "-",
      "-",
      `<= ${WAL_TARGET}`,
      met ? "MET" : "SHORT",
    ]);
  }
  const grown = g?.get("email-2rt/8"), empty = e.get("email-2rt/8");
  if (grown && empty) {
    const ratio = round(grown.per_second / empty.per_second, 2);
    const met = ratio >= 0.9;
    verdicts.push({ what: "worker path with the history vs empty", clients: 8, ratio, at_least: 0.9, met });
    rows.push([
      `worker path @${r.growth.history.deliveries} rows vs empty`,
      8,
      grown.per_second,
      empty.per_second,
      ratio,
      "-",
      ">= 0.9",
      met ? "MET" : "SHORT",
    ]);
  }
  log("\nlean lifecycle (issue 12): the worker path (email-2rt: queue+claim, then the outcome)");
  log(table(["target", "clients", "rate", "versus", "ratio", "per round", "wanted", ""], rows));
  const walRows = [...new Set(r.lifecycle.map((x) => x.variant))].map((v) => {
    const x = e.get(`${v}/8`);
    return x ? [v, x.per_second, x.wal_bytes_per_lifecycle, x.wal_syncs_per_lifecycle, x.verified] : null;
  }).filter(Boolean);
  log("\nat 8 clients: rate, WAL bytes and fsyncs per lifecycle, lifecycles verified in the database");
  log(table(["variant", "per second", "WAL bytes", "WAL fsyncs", "verified"], walRows));
  return verdicts;
}
