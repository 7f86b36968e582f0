// The schema snapshot (supabase/schema.sql): what the migrations build, as one file a reviewer can read.
// `pg_dump --schema-only` of the project's own schemas (email, email_api; not the Supabase-compat
// bootstrap's auth and extensions), then the rows the migrations themselves insert (statuses,
// transitions, retry policy and the other rule tables), normalised so two runs give the same bytes.
import { existsSync } from "node:fs";
import { spawnSync } from "node:child_process";

/** The schemas the migrations own. */
export const SCHEMAS = ["email", "email_api"];

/** Tables left out of the snapshot: dated partitions (a pg_dump pattern). */
const EXCLUDED_TABLES = "email.delivery_events_p*";

/**
 * The Postgres major the snapshot is taken on. pg_dump cannot dump a newer server, and dumps of other
 * majors differ in small ways, so the snapshot is pg_dump 15 (Debian's postgresql-client-15) of
 * Postgres 15, the version the local stack and `npm test` run first.
 */
export const SNAPSHOT_MAJOR = 15;

function exec(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args[0]} failed (exit ${r.status}):\n${r.stderr}`);
  return r.stdout;
}

const psql = (url, query) => exec("psql", ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", query]);

/** pg_dump of SNAPSHOT_MAJOR: Debian's versioned path first, else the one on PATH (checked below). */
function pgDump() {
  const debian = `/usr/lib/postgresql/${SNAPSHOT_MAJOR}/bin/pg_dump`;
  const bin = existsSync(debian) ? debian : "pg_dump";
  const version = exec(bin, ["--version"]).match(/\) (\d+)/)?.[1];
  if (Number(version) !== SNAPSHOT_MAJOR) {
    throw new Error(
      `the snapshot needs pg_dump ${SNAPSHOT_MAJOR} (found ${
        version ?? "none"
      }): apt-get install postgresql-client-${SNAPSHOT_MAJOR}`,
    );
  }
  return bin;
}

/**
 * Removes what changes between runs, servers and pg_dump builds without changing the schema: the
 * `SET` and `set_config` header, version comments, the random `\restrict` key, pg_dump's
 * `-- Name: ...; Type: ...` banners, trailing blanks and runs of blank lines.
 */
export function normalise(dump) {
  const lines = dump.replace(/\r\n/g, "\n").split("\n").map((l) => l.trimEnd());
  const kept = [];
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (/^SET /.test(l) || /^SELECT pg_catalog\.set_config\(/.test(l)) continue;
    if (/^\\(un)?restrict /.test(l)) continue;
    if (/^-- Dumped (from|by) /.test(l)) continue;
    // Banners are three lines: "--", "-- Name: ...; Type: ...; Schema: ...; Owner: -" (or the dump's
    // title), "--".
    if (
      l === "--" && /^-- (Name: |Data for Name: |PostgreSQL database dump)/.test(lines[i + 1] ?? "") &&
      lines[i + 2] === "--"
    ) {
      i += 2;
      continue;
    }
    kept.push(l);
  }
  return kept.join("\n").replace(/\n{3,}/g, "\n\n").trim() + "\n";
}

/**
 * The rows the migrations insert, one COPY block per non-empty table, rows sorted so the order of
 * the inserts does not matter. Timestamp columns (the time the migration ran) and bytea columns (keys drawn
 * at random per database, such as email.request_hash_key) are left out. Run it on a freshly migrated
 * database: rows written later (by tests) would show up here.
 */
function seedRows(url) {
  const tables = psql(
    url,
    `select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('r', 'p') and n.nspname in (${SCHEMAS.map((s) => `'${s}'`).join(", ")})
     order by n.nspname, c.relname`,
  ).split("\n").filter(Boolean);
  const blocks = [];
  for (const table of tables) {
    if (psql(url, `select exists (select from ${table})`).trim() !== "t") continue;
    const columns = psql(
      url,
      `select quote_ident(attname) || case when attcollation <> 0 then ' collate "C"' else '' end
       from pg_attribute
       where attrelid = '${table}'::regclass and attnum > 0 and not attisdropped
         and atttypid not in ('timestamptz'::regtype, 'timestamp'::regtype, 'bytea'::regtype)
       order by attnum`,
    ).split("\n").filter(Boolean);
    const list = columns.map((c) => c.replace(/ collate "C"$/, "")).join(", ");
    // Sorted column by column, text in bytewise order, so the order does not depend on the server's locale.
    const rows = psql(url, `copy (select ${list} from ${table} order by ${columns.join(", ")}) to stdout`);
    blocks.push(`COPY ${table} (${list}) FROM stdin;\n${rows}\\.\n`);
  }
  return blocks.join("\n");
}

/** The normalised snapshot of the database at `url` (which must run Postgres SNAPSHOT_MAJOR). */
export function snapshot(url) {
  const major = Math.floor(Number(psql(url, "show server_version_num").trim()) / 10000);
  if (major !== SNAPSHOT_MAJOR) {
    throw new Error(
      `the schema snapshot is taken on Postgres ${SNAPSHOT_MAJOR} and this server runs ${major}` +
        ` (run it without DATABASE_URL, or with a Postgres ${SNAPSHOT_MAJOR} server)`,
    );
  }
  const schema = exec(pgDump(), [
    "--schema-only",
    "--no-owner",
    ...SCHEMAS.map((s) => `--schema=${s}`),
    // The weekly partitions of the audit trail are named after the week the migration ran in; the
    // partitioned table, its default partition and email.ensure_event_partitions describe them.
    `--exclude-table=${EXCLUDED_TABLES}`,
    "--dbname",
    url,
  ]);
  const header = "-- The schema the migrations build (generated by scripts/schema_snapshot.mjs; do not edit).\n" +
    "-- `npm test` regenerates it and fails when it differs; `npm run schema:snapshot` updates it.\n\n";
  return header + normalise(schema + "\n-- Rows the migrations insert\n\n" + seedRows(url));
}
