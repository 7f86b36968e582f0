/** The worker's second, small pool (apart from the tracker's) for reads and webhooks. */
import postgres, { type Sql } from "postgres";
import type { Config } from "./config.ts";

/**
 * A client of the tracking database for the deliveries endpoint, the dashboard and webhook dispatch,
 * so none of them can take a connection the email path is waiting for; undefined without a URL.
 * No prepared statements, so it works through a transaction-mode pooler (Supavisor or PgBouncer
 * on port 6543), where consecutive statements may run on different server connections.
 */
export function createServiceDb(tracking: Config["tracking"]): Sql | undefined {
  if (!tracking.databaseUrl) return undefined;
  return postgres(tracking.databaseUrl, {
    max: 2,
    prepare: false,
    idle_timeout: 30,
    connect_timeout: Math.ceil(tracking.timeoutMs / 1000),
    connection: { application_name: "email-worker-api" },
    onnotice: () => {},
  });
}
