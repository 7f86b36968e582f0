// The migration freeze: once a migration is released (applied to someone's database), `supabase db push`
// never applies it again, even when its file changes (it tracks versions, not content), so an edited
// released file silently never reaches those databases. supabase/released_migrations.json lists every
// released migration with the sha256 of its content; `npm test` fails when a listed file changed or is gone.
// New (unlisted) migrations are free to change until they are released too.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

const MIGRATION = /^\d+_[^/]+\.sql$/;

/** sha256 of a migration's text; line endings normalised so a CRLF checkout hashes the same. */
export function migrationHash(text) {
  return createHash("sha256").update(text.replace(/\r\n/g, "\n")).digest("hex");
}

/** The migration files in `dir` (the names `supabase db push` applies), sorted. */
export function migrationFiles(dir) {
  return readdirSync(dir).filter((f) => MIGRATION.test(f)).sort();
}

/** Reads the manifest: `{ released: { "<file>": "<sha256>" } }`. */
export function readManifest(manifestPath) {
  return JSON.parse(readFileSync(manifestPath, "utf8"));
}

/**
 * Compares the released migrations in the manifest with the files in `dir`. Returns one problem per
 * released file that changed or disappeared (empty when all is well), and the unreleased files.
 */
export function checkFrozen(dir, manifestPath) {
  if (!existsSync(manifestPath)) {
    return { problems: [`${manifestPath} is missing: it lists the released migrations`], unreleased: [] };
  }
  const { released } = readManifest(manifestPath);
  const problems = [];
  for (const [file, hash] of Object.entries(released)) {
    const full = path.join(dir, file);
    if (!existsSync(full)) {
      problems.push(`${file}: released, but the file is gone (released migrations never change: add a new migration)`);
    } else if (migrationHash(readFileSync(full, "utf8")) !== hash) {
      problems.push(
        `${file}: released, but its content changed (released migrations never change: add a new migration)`,
      );
    }
  }
  const unreleased = migrationFiles(dir).filter((f) => !(f in released));
  return { problems, unreleased };
}

/** Marks every migration in `dir` released (after checking the released ones are unchanged). */
export function releaseAll(dir, manifestPath) {
  if (!existsSync(manifestPath)) writeFileSync(manifestPath, JSON.stringify({ released: {} }) + "\n");
  const { problems } = checkFrozen(dir, manifestPath);
  if (problems.length) throw new Error(problems.join("\n"));
  const manifest = readManifest(manifestPath);
  const released = { ...manifest.released };
  const added = [];
  for (const file of migrationFiles(dir)) {
    if (file in released) continue;
    released[file] = migrationHash(readFileSync(path.join(dir, file), "utf8"));
    added.push(file);
  }
  const sorted = Object.fromEntries(Object.entries(released).sort(([a], [b]) => a.localeCompare(b)));
  writeFileSync(manifestPath, JSON.stringify({ ...manifest, released: sorted }, null, 2) + "\n");
  return added;
}
