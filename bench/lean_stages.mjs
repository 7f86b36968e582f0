// What each change of the lean-lifecycle migration bought (docs/performance.md, "The lean lifecycle").
//   node bench/lean_stages.mjs [--seconds=3] [--rounds=2] [--clients=8]
// Starts from the schema before it (the migrations before it and the relay change of commit 602478b),
// then applies the migration's changes one at a time on the same database, and after each one
// measures (1) WAL per lifecycle of the worker path, serially (pg_walinspect: the records' bytes without
// full-page images), and (2) lifecycles per second of the worker path, the plain baseline (its
// tables re-created LIKE email.* after each change: same indexes) and pg-boss, interleaved, with
// every lifecycle verified (bench/lib/lifecycle.mjs). Prints one row per change.
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import postgres from "postgres";
import { recreateDatabase, root, startServer } from "../scripts/lib/postgres.mjs";
import { createBaseline, runLifecycles } from "./lib/lifecycle.mjs";
import { round, table } from "./lib/stats.mjs";

const flags = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, "").split("=")));
const seconds = Number(flags.seconds ?? 3), rounds = Number(flags.rounds ?? 2), clients = Number(flags.clients ?? 8);
const LEAN = "supabase/migrations/20261129000200_email_lean_lifecycle.sql";
const lean = readFileSync(path.join(root, LEAN), "utf8");

/** The text of the lean migration from the line starting with `from` up to the one starting with `to`. */
function slice(from, to) {
  const a = lean.indexOf(from), b = to ? lean.indexOf(to, a + 1) : lean.length;
  if (a < 0 || b < 0) throw new Error(`${LEAN} has no ${a < 0 ? from : to}`);
  return lean.slice(a, b);
}
const statement = (s) => slice(s, "\n").trim();

// The changes, in the order they are applied; the worker path calls queue_and_claim once it exists.
const STAGES = [
  { name: "before (main before this migration, with the relay change)", sql: null, bornClaimed: false },
  {
    name: "born in_progress (email.queue_and_claim)",
    sql: slice("create or replace function email.tg_deliveries__apply_transition()", "-- ------") +
      slice("create or replace function email.queue_and_claim(", "-- ------"),
    bornClaimed: true,
  },
  {
    name: "3 indexes dropped (1 partial instead), fillfactor 80",
    sql: [
      statement("drop index email.deliveries_status_updated_at_idx;"),
      statement("drop index email.deliveries_recipient_updated_at_idx;"),
      statement("drop index email.deliveries_open_recipient_idx;"),
      slice("create index deliveries_attention_idx", "\nalter table email.deliveries set"),
      statement("alter table email.deliveries set (fillfactor = 80);"),
    ].join("\n"),
    bornClaimed: true,
  },
  {
    name: "no foreign key lock on email.statuses",
    sql: statement("alter table email.deliveries drop constraint deliveries_status_fkey;"),
    bornClaimed: true,
  },
  {
    name: "updated_at in the transition trigger, mark_sent in one UPDATE, no payload trigger",
    sql: statement("drop trigger _100_touch_updated_at on email.deliveries;") + "\n" +
      slice("drop trigger _100_skip_suppressed on email.delivery_payloads;", "-- ------") +
      slice("create or replace function email.mark_sent(", "comment on function email.mark_sent"),
    bornClaimed: true,
  },
];

/** The schema before the lean migration: the released files and the relay change (commit 602478b). */
function beforeFiles() {
  const dir = path.join(root, "supabase/migrations");
  const released = readdirSync(dir).filter((f) => f.endsWith(".sql") && f < path.basename(LEAN)).sort()
    .map((f) => readFileSync(path.join(dir, f), "utf8"));
  const relay = execFileSync("git", ["show", `602478b:${LEAN}`], { cwd: root, encoding: "utf8" });
  return [readFileSync(path.join(root, "sql/bootstrap_supabase_compat.sql"), "utf8"), ...released, relay];
}

/** WAL bytes per lifecycle of the worker path, `n` lifecycles on one connection. */
async function walPerLifecycle(sql, bornClaimed, n = 500) {
  const tag = `wal-${randomUUID().slice(0, 8)}`;
  const one = async (i) => {
    const id = `${tag}-${i}`;
    const payload = { code: "123456", name: "Ada Lovelace", link: `https://app.example.com/verify?t=${randomUUID()}` };
    const [q] = bornClaimed
      ? await sql`select attempt from email.queue_and_claim(${id}, 'signup-code', ${`user${i}@example.com`},
          ${sql.json(payload)}, '{}'::jsonb, ${randomUUID()}::uuid, 60)`
      : await sql`select email.mark_in_progress(q.delivery_id, 60) as attempt from email.record_queued(${id},
          'signup-code', ${`user${i}@example.com`}, ${sql.json(payload)}, '{}'::jsonb, ${randomUUID()}::uuid) q`;
    const [s] = await sql`select status from email.mark_sent(${id}, ${q.attempt}, ${`<${randomUUID()}@x>`}, '250 ok')`;
    if (s.status !== "sent") throw new Error(`${id} not sent`);
  };
  for (let i = 0; i < 20; i++) await one(`w${i}`);
  const [a] = await sql`select pg_current_wal_lsn() as lsn`;
  for (let i = 0; i < n; i++) await one(i);
  // Without full-page images: how many a change causes depends on when the last checkpoint was and
  // on which pages a vacuum left room in, not on the change (the bench's figures at 8 clients have them).
  const [b] = await sql`select (sum(record_length) - sum(fpi_length))::float8 / ${n} as bytes
                        from pg_get_wal_records_info(${a.lsn}::pg_lsn, pg_current_wal_lsn())`;
  return Math.round(b.bytes);
}

const server = await startServer({ name: "pg-lean-stages" });
const rows = [];
try {
  const url = await recreateDatabase(server.url, "email_lean_stages");
  const sql = postgres(url, { max: 1, onnotice: () => {}, prepare: false, fetch_types: false });
  // This server is the script's own: no autovacuum, whose WAL (pg-boss's and the baseline's tables
  // churn too) would land in the serial measurement; the email tables are vacuumed before it instead.
  await sql`create extension if not exists pg_walinspect`;
  await sql`alter system set autovacuum = off`;
  await sql`select pg_reload_conf()`;
  for (const file of beforeFiles()) await sql.unsafe(file).simple();
  let previous = null;
  for (const stage of STAGES) {
    if (stage.sql) await sql.unsafe(stage.sql).simple();
    await createBaseline(sql);
    const wal = await walPerLifecycle(sql, stage.bornClaimed);
    const worker = stage.bornClaimed ? "email-2rt-lean" : "email-2rt-before";
    const acc = { [worker]: [], plain: [], "pg-boss": [] };
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? Object.keys(acc) : Object.keys(acc).reverse();
      for (const variant of order) {
        const tag = `stage${STAGES.indexOf(stage)}-${variant}-r${r}`.replaceAll("+", "-");
        acc[variant].push(await runLifecycles(url, { variant, clients, seconds, tag }));
      }
    }
    const rate = (v) => acc[v].reduce((s, x) => s + x.lifecycles, 0) / acc[v].reduce((s, x) => s + x.seconds, 0);
    const row = {
      change: stage.name,
      wal_serial: wal,
      wal_at_clients: Math.round(acc[worker].reduce((s, x) => s + x.wal_bytes_per_lifecycle, 0) / rounds),
      per_second: round(rate(worker), 1),
      vs_plain: round(rate(worker) / rate("plain"), 2),
      vs_pgboss: round(rate(worker) / rate("pg-boss"), 2),
    };
    row.wal_saved = previous ? previous.wal_serial - wal : null;
    previous = row;
    rows.push(row);
    console.log(JSON.stringify(row));
  }
  await sql.end();
} finally {
  await server.stop();
}
console.log(
  `\nper change, worker path (queue+claim, then sent); rates at ${clients} clients, ${rounds} interleaved rounds of ${seconds} s`,
);
console.log(table(
  ["change", "WAL B/lifecycle (serial, no FPI)", "saved", `WAL B @${clients}`, "lifecycles/s", "/ plain", "/ pg-boss"],
  rows.map((r) => [r.change, r.wal_serial, r.wal_saved, r.wal_at_clients, r.per_second, r.vs_plain, r.vs_pgboss]),
));
