/**
 * The worker's second pool (deliveries endpoint, dashboard, webhooks) must work through a
 * transaction-mode pooler (Supavisor or PgBouncer on port 6543), where consecutive statements can
 * land on different server connections: so it never leaves a named prepared statement behind.
 * Checked on a real Postgres connection through pg_prepared_statements.
 */
import { loadConfig } from "../functions/_shared/config.ts";
import { createServiceDb } from "../functions/_shared/service_db.ts";
import { assertEquals } from "./support/assert.ts";
import { test } from "./support/harness.ts";
import { databaseUrl } from "./support/worker.ts";

test("the service pool prepares no statements, so a transaction-mode pooler can carry it", async () => {
  const config = loadConfig({
    SMTP_HOST: "127.0.0.1",
    SMTP_FROM: "a@b.test",
    PUBSUB_VERIFY: "false",
    DELIVERY_STATUS_DATABASE_URL: databaseUrl(),
  });
  const sql = createServiceDb(config.tracking)!;
  const conn = await sql.reserve();
  try {
    for (let i = 0; i < 3; i++) await conn`select count(*) from email.deliveries where delivery_id = ${`x-${i}`}`;
    const [{ n }] = await conn<{ n: number }[]>`select count(*)::int as n from pg_prepared_statements`;
    assertEquals(n, 0);
  } finally {
    conn.release();
    await sql.end({ timeout: 1 });
  }
});
