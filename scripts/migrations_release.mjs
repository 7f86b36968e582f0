// The migration freeze (scripts/lib/migration_freeze.mjs).
//   node scripts/migrations_release.mjs           marks every migration in supabase/migrations released
//   node scripts/migrations_release.mjs --check   fails when a released migration changed or is gone
// --dir and --manifest point it at another migrations folder and manifest (the tests use copies).
import path from "node:path";
import { fileURLToPath } from "node:url";
import { checkFrozen, releaseAll } from "./lib/migration_freeze.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? path.resolve(args[i + 1]) : fallback;
};
const dir = option("--dir", path.join(root, "supabase/migrations"));
const manifest = option("--manifest", path.join(root, "supabase/released_migrations.json"));
const log = (m) => console.log(`[migrations] ${m}`);

if (args.includes("--check")) {
  const { problems, unreleased } = checkFrozen(dir, manifest);
  for (const p of problems) console.error(`[migrations] ${p}`);
  if (problems.length) process.exit(1);
  log(`released migrations unchanged${unreleased.length ? `; not yet released: ${unreleased.join(", ")}` : ""}`);
} else {
  try {
    const added = releaseAll(dir, manifest);
    log(added.length ? `released: ${added.join(", ")}` : "nothing new to release");
  } catch (e) {
    console.error(`[migrations] ${e.message}`);
    process.exit(1);
  }
}
