/**
 * The email-status CLI as a subprocess, for tests: with stdin piped, from /dev/null, or on a
 * pseudo-terminal (util-linux `script`), the way a person at a terminal runs it; a subcommand run in
 * the test's own process with what it prints captured; and a private, migrated database on the test
 * server for tests that act on every matching row.
 */
import postgres from "postgres";

const root = new URL("../../", import.meta.url);

// Only what Deno itself needs, so the CLI sees no DATABASE_URL unless the test gives it one.
const passThrough = Object.fromEntries(
  ["HOME", "PATH", "DENO_DIR", "TMPDIR"].flatMap((k) => Deno.env.get(k) ? [[k, Deno.env.get(k)!]] : []),
);

/** The whole environment a CLI subprocess gets (with clearEnv): what Deno needs, no colour, a user, and `env`. */
export function cliEnv(env: Record<string, string> = {}): Record<string, string> {
  return { ...passThrough, NO_COLOR: "1", USER: "tester", ...env };
}

/** What a CLI run printed and how it exited. */
export type CliRun = { code: number; stdout: string; stderr: string };

/** What a subcommand run in-process printed (console.log lines in `out`, console.error in `err`) and its exit code. */
export type CapturedRun = { code: number; out: string; err: string };

/** Runs a subcommand in this process (`command` returns its exit code), capturing what it prints. */
export async function captureOutput(command: () => Promise<number>): Promise<CapturedRun> {
  const out: string[] = [];
  const err: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  try {
    const code = await command();
    return { code, out: out.join("\n"), err: err.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

/** Runs the CLI with stdin not a terminal: text written then closed, "eof" (closed at once) or "null" (/dev/null). */
export async function runCli(args: string[], env: Record<string, string>, stdin: string): Promise<CliRun> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/email_status.ts", ...args],
    cwd: root,
    env: cliEnv(env),
    clearEnv: true,
    stdin: stdin === "null" ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== "null") {
    const writer = child.stdin.getWriter();
    if (stdin !== "eof") await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

/**
 * Runs the CLI with stdin on a pseudo-terminal that receives `typed` (Ctrl-D, "\x04", at the start of
 * a line is EOF there); stdout and stderr are kept apart.
 */
export async function runCliOnTty(args: string[], env: Record<string, string>, typed: string): Promise<CliRun> {
  const dir = await Deno.makeTempDir({ prefix: "cli_tty_" });
  const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const command = [Deno.execPath(), "run", "-A", "cli/email_status.ts", ...args].map(quote).join(" ");
  try {
    const child = new Deno.Command("script", {
      args: ["-qec", `${command} >${quote(`${dir}/out`)} 2>${quote(`${dir}/err`)}`, "/dev/null"],
      cwd: root,
      env: cliEnv(env),
      clearEnv: true,
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(typed));
    await writer.close();
    const { code } = await child.status;
    return { code, stdout: await Deno.readTextFile(`${dir}/out`), stderr: await Deno.readTextFile(`${dir}/err`) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Creates database `name` on the server at `serverUrl`, with the bootstrap and every migration applied. */
export async function createMigratedDatabase(serverUrl: string, name: string): Promise<string> {
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`drop database if exists "${name}" with (force)`);
  await admin.unsafe(`create database "${name}"`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const sql = postgres(url.toString(), { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(await Deno.readTextFile(new URL("sql/bootstrap_supabase_compat.sql", root))).simple();
    const dir = new URL("supabase/migrations/", root);
    const files = [...Deno.readDirSync(dir)].map((f) => f.name).filter((f) => f.endsWith(".sql")).sort();
    for (const f of files) await sql.unsafe(await Deno.readTextFile(new URL(f, dir))).simple();
  } finally {
    await sql.end();
  }
  return url.toString();
}

/** Drops database `name` on the server at `serverUrl`. */
export async function dropDatabase(serverUrl: string, name: string): Promise<void> {
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`drop database if exists "${name}" with (force)`);
  await admin.end();
}
