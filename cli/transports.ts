/**
 * How the CLI reaches the database: directly over Postgres (npm:postgres), or over PostgREST with the
 * service role key. The delivery commands go through the email_api schema on both, so both do the
 * same thing (`Api`); the webhook, suppression and dashboard commands need schema email, which only
 * a Postgres connection reaches (`cliSql`).
 */
import postgres from "postgres";
import { CliError, type Connection, connectionFromEnv } from "./common.ts";

/** A delivery as the API lists it (email_api.deliveries). */
export type Delivery = {
  delivery_id: string;
  workflow: string;
  recipient: string;
  user_id: string | null;
  status: string;
  attempts: number;
  max_attempts: number;
  last_error_code: string | null;
  last_error_message: string | null;
  queued_at: string;
  last_attempted_at: string | null;
  next_attempt_at: string | null;
  sent_at: string | null;
  completed_at: string | null;
  provider_message_id: string | null;
  provider_response: string | null;
};

/** One event of a delivery's timeline. */
export type DeliveryEvent = {
  id: number;
  from_status: string | null;
  to_status: string;
  attempt: number;
  error_code: string | null;
  error_message: string | null;
  detail: Record<string, unknown>;
  actor: string;
  created_at: string;
};

/** A status a delivery can be in (a row of email.statuses); terminal ones end it. */
export type DeliveryStatus = { status: string; terminal: boolean };

/** Filters of `list`. */
export type ListFilters = { status?: string; workflow?: string; recipient?: string; since?: Date; limit: number };

/** What the CLI asks of the database; the same over Postgres and over PostgREST. */
export type Api = {
  /** The statuses of email.statuses, non-terminal first; null where the transport cannot read them. */
  statuses(): Promise<DeliveryStatus[] | null>;
  getDelivery(id: string): Promise<(Delivery & { events: DeliveryEvent[] }) | null>;
  list(filters: ListFilters): Promise<Delivery[]>;
  requeue(ids: string[], reason: string): Promise<Delivery[]>;
  requeueDeadLetters(filter: { workflow?: string; since?: Date; reason: string }): Promise<Delivery[]>;
  purgeDeadLetters(filter: { olderThanSeconds?: number; reason: string }): Promise<Delivery[]>;
  metrics(filter: { since: Date; until: Date; workflow?: string }): Promise<Record<string, unknown>>;
  close(): Promise<void>;
};

/** Opens the CLI's Postgres connection: one connection, short timeouts, application_name email-status. */
export function openPostgres(url: string, options: { fetchTypes?: boolean } = {}): postgres.Sql {
  return postgres(url, {
    max: 1,
    connect_timeout: 5,
    idle_timeout: 5,
    onnotice: () => {},
    fetch_types: options.fetchTypes ?? true,
    connection: { application_name: "email-status" },
  });
}

/** Opens a Postgres connection for the CLI (a postgres:// URL is required: schema email is not exposed). */
export function cliSql(env: Record<string, string | undefined>): postgres.Sql {
  const conn = connectionFromEnv(env);
  if (conn.kind !== "postgres") {
    throw new CliError(
      "this command needs DATABASE_URL (or DELIVERY_STATUS_DATABASE_URL): schema email is not exposed over PostgREST",
      2,
    );
  }
  return openPostgres(conn.url);
}

/** The API over `conn`, with `actor` in the audit trail of what it changes. */
export function openApi(conn: Connection, actor: string): Api {
  return conn.kind === "postgres" ? postgresApi(conn.url, actor) : restApi(conn.url, conn.key, actor);
}

/** The API over a direct Postgres connection (npm:postgres). */
export function postgresApi(url: string, actor: string): Api {
  const sql = openPostgres(url, { fetchTypes: false });
  let prepared = false;
  const ready = async () => {
    if (!prepared) {
      await sql`select set_config('email.actor', ${actor}, false)`;
      prepared = true;
    }
  };
  const rows = (r: readonly unknown[]) => [...r] as Delivery[];
  return {
    async statuses() {
      await ready();
      return [...await sql<DeliveryStatus[]>`select status, terminal from email.statuses order by terminal, status`];
    },
    async getDelivery(id) {
      await ready();
      const [row] = await sql`select email_api.get_delivery(${id}) as doc`;
      return row?.doc ?? null;
    },
    async list(f) {
      await ready();
      return rows(
        await sql`select * from email_api.deliveries where true
          ${f.status ? sql`and status = ${f.status}` : sql``}
          ${f.workflow ? sql`and workflow = ${f.workflow}` : sql``}
          ${f.recipient ? sql`and lower(recipient) = lower(${f.recipient})` : sql``}
          ${f.since ? sql`and queued_at >= ${f.since}` : sql``}
          order by queued_at desc, delivery_id limit ${f.limit}`,
      );
    },
    async requeue(ids, reason) {
      await ready();
      return rows(
        await sql`select * from email_api.requeue(
          array(select jsonb_array_elements_text(${JSON.stringify(ids)}::text::jsonb)), ${reason}, ${actor})`,
      );
    },
    async requeueDeadLetters(f) {
      await ready();
      return rows(
        await sql`select * from email_api.requeue_dead_letters(${f.workflow ?? null}, ${
          f.since ?? null
        }::timestamptz, ${f.reason}, ${actor})`,
      );
    },
    async purgeDeadLetters(f) {
      await ready();
      const olderThan = f.olderThanSeconds === undefined ? null : `${f.olderThanSeconds} seconds`;
      return rows(await sql`select * from email_api.purge_dead_letters(${olderThan}::interval, ${f.reason}, ${actor})`);
    },
    async metrics(f) {
      await ready();
      const [row] = await sql`select email_api.metrics(${f.since}, ${f.until}, ${f.workflow ?? null}) as doc`;
      return row.doc;
    },
    async close() {
      await sql.end({ timeout: 2 });
    },
  };
}

/** The API over PostgREST (`<SUPABASE_URL>/rest/v1`, profile email_api) with the service role key. */
export function restApi(baseUrl: string, key: string, actor: string): Api {
  const headers = {
    apikey: key,
    authorization: `Bearer ${key}`,
    "accept-profile": "email_api",
    "content-profile": "email_api",
    "content-type": "application/json",
    accept: "application/json",
  };
  const call = async (path: string, init: RequestInit = {}) => {
    let res: Response;
    try {
      res = await fetch(`${baseUrl}/rest/v1/${path}`, { ...init, headers, signal: AbortSignal.timeout(15_000) });
    } catch (e) {
      throw new CliError(`cannot reach ${baseUrl}: ${e instanceof Error ? e.message : e}`);
    }
    const text = await res.text();
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = { message: text };
    }
    if (!res.ok) {
      const b = (body ?? {}) as { code?: string; message?: string; hint?: string };
      throw Object.assign(new Error(b.message ?? `HTTP ${res.status}`), {
        code: b.code,
        hint: b.hint,
        status: res.status,
      });
    }
    return body;
  };
  const rpc = (name: string, args: Record<string, unknown>) =>
    call(`rpc/${name}`, { method: "POST", body: JSON.stringify(args) });
  return {
    // email.statuses is not exposed through email_api: a --status filter goes to PostgREST unchecked.
    statuses() {
      return Promise.resolve(null);
    },
    async getDelivery(id) {
      return (await rpc("get_delivery", { delivery_id: id })) as Awaited<ReturnType<Api["getDelivery"]>>;
    },
    async list(f) {
      const q = new URLSearchParams({ select: "*", order: "queued_at.desc,delivery_id", limit: String(f.limit) });
      if (f.status) q.set("status", `eq.${f.status}`);
      if (f.workflow) q.set("workflow", `eq.${f.workflow}`);
      if (f.recipient) q.set("recipient", `ilike.${f.recipient.replace(/[%_*\\]/g, "\\$&")}`);
      if (f.since) q.set("queued_at", `gte.${f.since.toISOString()}`);
      return (await call(`deliveries?${q}`)) as Delivery[];
    },
    async requeue(ids, reason) {
      return (await rpc("requeue", { delivery_ids: ids, reason, actor })) as Delivery[];
    },
    async requeueDeadLetters(f) {
      return (await rpc("requeue_dead_letters", {
        workflow: f.workflow ?? null,
        since: f.since?.toISOString() ?? null,
        reason: f.reason,
        actor,
      })) as Delivery[];
    },
    async purgeDeadLetters(f) {
      const olderThan = f.olderThanSeconds === undefined ? null : `${f.olderThanSeconds} seconds`;
      return (await rpc("purge_dead_letters", { older_than: olderThan, reason: f.reason, actor })) as Delivery[];
    },
    async metrics(f) {
      return (await rpc("metrics", {
        since: f.since.toISOString(),
        until: f.until.toISOString(),
        workflow: f.workflow ?? null,
      })) as Record<string, unknown>;
    },
    async close() {},
  };
}
