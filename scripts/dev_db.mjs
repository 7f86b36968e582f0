// Development helper: starts an embedded Postgres (or uses DATABASE_URL), recreates a database, applies
// the bootstrap and migrations, prints its URL and keeps the server running until Ctrl-C.
//   [PG_PORT=54349] node scripts/dev_db.mjs [database-name]   (without PG_PORT: a free port)
import { migrate, recreateDatabase, startServer } from "./lib/postgres.mjs";

const port = process.env.PG_PORT ? Number(process.env.PG_PORT) : undefined;
const name = process.argv[2] ?? "email_worker_dev";
const server = await startServer({ name: port ? `pg-${port}` : undefined, port });
const url = await recreateDatabase(server.url, name);
await migrate(url, { log: () => {} });
console.log(`DATABASE_URL=${url}`);
console.log(`TEST_SERVER_URL=${server.url}`);
const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
setInterval(() => {}, 1 << 30);
