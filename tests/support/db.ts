/** Reads the test database for assertions (the worker itself only calls the RPCs). */
import postgres from "postgres";

/** A connection to the test database. */
export type TestDb = ReturnType<typeof openDb>;

/** Opens a small pool on `url` with helpers to read deliveries, events and rejected input. */
export function openDb(url: string) {
  // Tests register loopback webhook receivers: this reader opts in (as local development does).
  const sql = postgres(url, {
    max: 2,
    onnotice: () => {},
    fetch_types: false,
    connection: { "email.webhook_allow_private": "on" },
  });
  return {
    sql,
    async delivery(id: string) {
      const [d] = await sql`select * from email.deliveries where delivery_id = ${id}`;
      return d as Record<string, unknown> & { status: string; attempts: number } | undefined;
    },
    async events(id: string) {
      return await sql<{ from_status: string | null; to_status: string; attempt: number; error_code: string | null }[]>`
        select from_status, to_status, attempt, error_code, detail, actor from email.delivery_events
        where delivery_id = ${id} order by id`;
    },
    async rejected(where: { deliveryId?: string; messageId?: string }) {
      return await sql<
        { reason_code: string; reason: string; raw_body: Uint8Array | null; body_bytes: number; headers: unknown }[]
      >`select * from email.rejected_messages
        where (${where.deliveryId ?? null}::text is not null and delivery_id = ${where.deliveryId ?? null})
           or (${where.messageId ?? null}::text is not null and message_id = ${where.messageId ?? null})
        order by id`;
    },
    /** Makes a waiting delivery due now, and first in claim_due's order (the test's clock jump). */
    async makeDue(id: string) {
      await sql`update email.deliveries set next_attempt_at = now() - interval '10 years' where delivery_id = ${id}`;
    },
    close: () => sql.end({ timeout: 2 }),
  };
}
