/**
 * The migration freeze (scripts/migrations_release.mjs): a released migration never changes, because
 * `supabase db push` tracks versions, not content, and would silently skip the edit on every database
 * that already has it. These tests run the real script on copies of supabase/migrations.
 */
import { assert, assertEquals } from "./support/assert.ts";

const root = new URL("../", import.meta.url);
const script = new URL("scripts/migrations_release.mjs", root).pathname;
const migrations = new URL("supabase/migrations/", root);

type Run = { code: number; out: string };

/** Runs the script with `args` (Node, as `npm test` does). */
async function release(...args: string[]): Promise<Run> {
  const r = await new Deno.Command("node", { args: [script, ...args], stdout: "piped", stderr: "piped" }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: r.code, out: text(r.stdout) + text(r.stderr) };
}

/** A temporary copy of the migrations folder with an empty manifest; `fn` gets both paths. */
async function withCopy(fn: (dir: string, manifest: string) => Promise<void>): Promise<void> {
  const tmp = await Deno.makeTempDir({ prefix: "migration-freeze-" });
  try {
    const dir = `${tmp}/migrations`;
    await Deno.mkdir(dir);
    for (const f of Deno.readDirSync(migrations)) await Deno.copyFile(new URL(f.name, migrations), `${dir}/${f.name}`);
    const manifest = `${tmp}/released_migrations.json`;
    await Deno.writeTextFile(manifest, JSON.stringify({ released: {} }));
    await fn(dir, manifest);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

const firstMigration = () =>
  [...Deno.readDirSync(migrations)].map((f) => f.name).filter((f) => f.endsWith(".sql")).sort()[0];

Deno.test("the checked-in released migrations are unchanged", async () => {
  const r = await release("--check");
  assertEquals(r.code, 0, r.out);
});

Deno.test("an edited released migration fails the check, naming the file", async () => {
  await withCopy(async (dir, manifest) => {
    const opts = ["--dir", dir, "--manifest", manifest];
    assertEquals((await release(...opts)).code, 0);
    assertEquals((await release("--check", ...opts)).code, 0);
    const file = firstMigration();
    await Deno.writeTextFile(`${dir}/${file}`, "\n-- a fix-up\n", { append: true });
    const r = await release("--check", ...opts);
    assertEquals(r.code, 1, r.out);
    assert(r.out.includes(`${file}: released, but its content changed`), r.out);
    assert(r.out.includes("released migrations never change: add a new migration"), r.out);
  });
});

Deno.test("a deleted released migration fails the check, naming the file", async () => {
  await withCopy(async (dir, manifest) => {
    const opts = ["--dir", dir, "--manifest", manifest];
    assertEquals((await release(...opts)).code, 0);
    const file = firstMigration();
    await Deno.remove(`${dir}/${file}`);
    const r = await release("--check", ...opts);
    assertEquals(r.code, 1, r.out);
    assert(r.out.includes(`${file}: released, but the file is gone`), r.out);
  });
});

Deno.test("releasing refuses to bless an edited released migration", async () => {
  await withCopy(async (dir, manifest) => {
    const opts = ["--dir", dir, "--manifest", manifest];
    assertEquals((await release(...opts)).code, 0);
    const before = await Deno.readTextFile(manifest);
    await Deno.writeTextFile(`${dir}/${firstMigration()}`, "\n-- a fix-up\n", { append: true });
    const r = await release(...opts);
    assertEquals(r.code, 1, r.out);
    assertEquals(await Deno.readTextFile(manifest), before);
  });
});

Deno.test("a new migration is allowed until released; a CRLF checkout of a released one passes", async () => {
  await withCopy(async (dir, manifest) => {
    const opts = ["--dir", dir, "--manifest", manifest];
    assertEquals((await release(...opts)).code, 0);
    await Deno.writeTextFile(`${dir}/29991231000000_next.sql`, "select 1;\n");
    const file = firstMigration();
    const text = await Deno.readTextFile(`${dir}/${file}`);
    await Deno.writeTextFile(`${dir}/${file}`, text.replaceAll("\n", "\r\n"));
    const r = await release("--check", ...opts);
    assertEquals(r.code, 0, r.out);
    assert(r.out.includes("not yet released: 29991231000000_next.sql"), r.out);
    assertEquals((await release(...opts)).code, 0);
    const released = JSON.parse(await Deno.readTextFile(manifest)).released;
    assert("29991231000000_next.sql" in released);
    await Deno.writeTextFile(`${dir}/29991231000000_next.sql`, "select 2;\n");
    assertEquals((await release("--check", ...opts)).code, 1);
  });
});

Deno.test("a missing manifest fails the check", async () => {
  await withCopy(async (dir, manifest) => {
    await Deno.remove(manifest);
    const r = await release("--check", "--dir", dir, "--manifest", manifest);
    assertEquals(r.code, 1, r.out);
    assert(r.out.includes("is missing"), r.out);
  });
});
