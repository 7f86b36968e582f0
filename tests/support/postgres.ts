/**
 * A private Postgres server a test can stop and start (the circuit-breaker test), made by
 * scripts/lib/postgres.mjs like the suite's own server (the same major: TEST_PG_MAJOR, default 15; as
 * root the binaries and data sit where the `postgres` user can reach them) and migrated the same way.
 */
import { createCluster, migrate } from "../../scripts/lib/postgres.mjs";

/** A private server on its own port with its data in a temp dir. */
export type PrivatePostgres = {
  url: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  destroy(): Promise<void>;
};

/** A TCP port that was free a moment ago (the kernel picks it), so parallel runs do not collide. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Creates, starts and (unless `migrate: false`) migrates a private server on a free port. */
export async function startPrivatePostgres(options: { migrate?: boolean } = {}): Promise<PrivatePostgres> {
  const cluster = await createCluster({
    major: Number(Deno.env.get("TEST_PG_MAJOR") ?? 15),
    flags: ["-c", "fsync=off"],
    log: () => {},
  });
  await cluster.start();
  const pg: PrivatePostgres = {
    url: cluster.url,
    start: () => cluster.start(),
    stop: () => cluster.stop({ mode: "immediate" }),
    destroy: () => cluster.destroy(),
  };
  if (options.migrate !== false) {
    try {
      await migrate(pg.url, { log: () => {} });
    } catch (e) {
      await pg.destroy();
      throw e;
    }
  }
  return pg;
}
