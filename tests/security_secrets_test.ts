/**
 * "Secrets are not kept", on every path through the real push route: after a delivery is sent,
 * fails, conflicts with an earlier one, fails its schema, is suppressed, or dead-letters and is
 * purged, no table holds a verification code or a link token in a form a reader could recover: not
 * as text, not inside a stored raw body (bytes, base64 inside it), and not behind the request hash
 * (the brute force a table reader would run finds nothing).
 */
import { assert, assertEquals } from "./support/assert.ts";
import { test, withHarness } from "./support/harness.ts";
import { base64, envelope, newDeliveryId, newRecipient, verificationEvent } from "./support/pubsub.ts";
import type { TestDb } from "./support/db.ts";

/** A unique secret-looking token (letters and digits, valid as a verification code). */
function token(prefix: string): string {
  return `${prefix}${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
}

/** Every text a reader could get out of a value: itself, bytea (\x...) as UTF-8, and base64 inside. */
function readable(text: string): string[] {
  const out = [text];
  for (const hex of text.matchAll(/\\\\x([0-9a-f]+)/g)) {
    const bytes = Uint8Array.from(hex[1].match(/../g) ?? [], (h) => parseInt(h, 16));
    out.push(new TextDecoder().decode(bytes));
  }
  for (const t of [...out]) {
    for (const run of t.matchAll(/[A-Za-z0-9+/_-]{16,}={0,2}/g)) {
      try {
        out.push(
          new TextDecoder().decode(
            Uint8Array.from(atob(run[0].replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0)),
          ),
        );
      } catch { /* not base64 */ }
    }
  }
  return out;
}

/**
 * Which of `secrets` some row of some table holds in a readable form: "schema.table: secret". Only
 * rows written (inserted or updated) by transactions since `sinceXid` are read: no earlier row can
 * hold a secret made up later, and the shared test database holds megabytes of other tests' rows.
 */
async function findSecrets(db: TestDb, secrets: string[], sinceXid: string): Promise<string[]> {
  const tables = await db.sql<{ schema: string; name: string }[]>`
    select table_schema as schema, table_name as name from information_schema.tables
    where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')`;
  const found: string[] = [];
  for (const t of tables) {
    const rows = await db.sql.unsafe<{ row: string }[]>(
      `select to_jsonb(t)::text as row from "${t.schema}"."${t.name}" t where t.xmin::text::bigint >= $1`,
      [sinceXid],
    );
    for (const { row } of rows) {
      const texts = readable(row);
      for (const s of secrets) {
        if (texts.some((x) => x.includes(s))) found.push(`${t.schema}.${t.name}: ${s}`);
      }
    }
  }
  return found;
}

test("after every path (sent, failed, conflict, schema failure, suppressed, dead letter purged) no table holds a code or link a reader can recover", async () => {
  await withHarness(async ({ smtp, worker, db, token: auth }) => {
    const secrets: string[] = [];
    const code = () => {
      const c = token("C");
      secrets.push(c);
      return c;
    };
    const link = () => {
      const t = token("tok");
      secrets.push(t);
      return `https://app.example.com/reset?token=${t}`;
    };
    const push = async (body: string) => (await worker.push(body, { token: auth })).json();
    const [{ xid: since }] = await db.sql<{ xid: string }[]>`select (txid_current() % 4294967296)::text as xid`;

    // sent: a 6-digit code (for the brute force below) and an alphanumeric one.
    const sixDigit = String(100000 + Math.floor(Math.random() * 900000));
    const sent = verificationEvent({ data: { code: sixDigit, expiresInMinutes: 10 } });
    assertEquals((await push(envelope(sent))).status, "sent");
    assertEquals(
      (await push(envelope(verificationEvent({ data: { code: code(), expiresInMinutes: 10 } })))).status,
      "sent",
    );

    // conflict: the same delivery id with a new code.
    const conflict = await push(envelope({ ...sent, data: { code: code(), expiresInMinutes: 10 } }));
    assertEquals(conflict.reasonCode, "idempotency_conflict");

    // failed: the relay refuses the mailbox for good.
    const refused = newRecipient();
    smtp.respond = (mail) =>
      mail.to && JSON.stringify(mail.to).includes(refused) ? { code: 550, message: "5.1.1 No such user" } : undefined;
    const failed = await push(envelope({
      deliveryId: newDeliveryId("failed"),
      workflow: "password-reset",
      recipient: refused,
      data: { resetUrl: link(), expiresInMinutes: 30 },
    }));
    assertEquals(failed.status, "failed");

    // schema failures: expiresInMinutes 0 with a reset link; an unknown workflow with a code; an event
    // that is not JSON (cut off) with a code; the no-wrapper form with a link.
    const schema = await push(envelope({
      deliveryId: newDeliveryId("schema"),
      workflow: "password-reset",
      recipient: newRecipient(),
      data: { resetUrl: link(), expiresInMinutes: 0 },
    }));
    assertEquals(schema.reasonCode, "invalid_data");
    const unknown = await push(envelope(verificationEvent({ workflow: "newsletter", data: { code: code() } })));
    assertEquals(unknown.reasonCode, "unknown_workflow");
    const cut = await push(envelope(null, {
      rawData: base64(
        `{"deliveryId":"${newDeliveryId("cut")}","workflow":"verification-code","data":{"code": "${code()}"`,
      ),
    }));
    assertEquals(cut.reasonCode, "invalid_json");
    const bare = await worker.push(
      JSON.stringify({
        deliveryId: newDeliveryId("bare"),
        workflow: "invite",
        recipient: "not an address",
        data: { inviterName: "Ada", organizationName: "Corp", inviteUrl: link() },
      }),
      { token: auth, headers: { "x-goog-pubsub-message-id": String(Date.now()) } },
    );
    assertEquals((await bare.json()).reasonCode, "invalid_event");

    // suppressed: the address is on the suppression list.
    const suppressed = newRecipient();
    await db.sql`select email.add_suppression(${suppressed}, 'security_secrets_test')`;
    const sup = await push(
      envelope(verificationEvent({ recipient: suppressed, data: { code: code(), expiresInMinutes: 10 } })),
    );
    assertEquals(sup.status, "duplicate");
    assertEquals(sup.deliveryStatus, "suppressed");

    // dead letter, purged: one attempt allowed, a transient refusal, then the retention purge.
    const [{ inserted }] = await db.sql<{ inserted: boolean }[]>`
      with i as (insert into email.retry_policies (workflow, max_attempts) values ('invite', 1)
        on conflict do nothing returning 1) select exists (select from i) as inserted`;
    try {
      const flaky = newRecipient();
      smtp.respond = (mail) =>
        mail.to && JSON.stringify(mail.to).includes(flaky) ? { code: 451, message: "4.3.0 Try later" } : undefined;
      const dlId = newDeliveryId("dead");
      const dl = await push(envelope({
        deliveryId: dlId,
        workflow: "invite",
        recipient: flaky,
        data: { inviterName: "Ada", organizationName: "Corp", inviteUrl: link() },
      }));
      assertEquals(dl.status, "dead_letter");
      await db.sql`update email.deliveries set completed_at = now() - interval '400 days' where delivery_id = ${dlId}`;
      const purged = await db
        .sql`select delivery_id from email.purge_dead_letters('399 days', 'security_secrets_test')`;
      assertEquals(purged.map((r) => r.delivery_id), [dlId]);
    } finally {
      if (inserted) await db.sql`delete from email.retry_policies where workflow = 'invite'`;
    }

    // Every table, every row written since the test began, as text, bytes and base64: none of the
    // codes or link tokens.
    assertEquals(secrets.length, 9);
    assertEquals(await findSecrets(db, secrets, since), []);
    // The search does find a secret where there is one: a raw body as the old code stored it.
    const planted = code();
    const [{ id: plantedId }] = await db.sql<{ id: string }[]>`select email.record_rejected('invalid_data', 'planted',
      convert_to(${envelope(verificationEvent({ data: { code: planted } }))}, 'UTF8')) as id`;
    try {
      assertEquals(await findSecrets(db, [planted], since), [`email.rejected_messages: ${planted}`]);
    } finally {
      await db.sql`delete from email.rejected_messages where id = ${plantedId}`;
    }

    // The request hash of the sent 6-digit code: every 6-digit code, hashed the way the request is
    // built but without the key (what a reader of email.deliveries can do), finds nothing.
    const [{ request_hash: stored }] = await db.sql<{ request_hash: string }[]>`
      select request_hash from email.deliveries where delivery_id = ${sent.deliveryId!}`;
    const [{ matches }] = await db.sql<{ matches: number }[]>`
      with request as materialized (
        select jsonb_build_object('workflow', 'verification-code', 'recipient', lower(${sent.recipient}),
          'payload', jsonb_build_object('code', ${sixDigit}::text, 'expiresInMinutes', 10), 'user_id', null)::text as text
      )
      select count(*)::int as matches
      from request r, generate_series(0, 999999) g
      where sha256(convert_to(replace(r.text, ${sixDigit}, lpad(g::text, 6, '0')), 'UTF8')) = decode(${stored}, 'hex')`;
    assertEquals(matches, 0);
  });
});

test("a rejected body keeps what helps debugging: the fields as sent, the secret replaced, and where", async () => {
  await withHarness(async ({ worker, db, token: auth }) => {
    const id = newDeliveryId("debug");
    const resetUrl = `https://app.example.com/reset?token=${token("tok")}`;
    const reply = await (await worker.push(
      envelope({
        deliveryId: id,
        workflow: "password-reset",
        recipient: "ada@example.com",
        data: { resetUrl, expiresInMinutes: 0 },
      }),
      { token: auth },
    )).json();
    assertEquals(reply.reasonCode, "invalid_data");
    const [row] = await db.sql<{ raw_body: Uint8Array; redacted: string[]; reason: string }[]>`
      select raw_body, to_jsonb(redacted) as redacted, reason from email.rejected_messages where id = ${reply.rejectedId}`;
    assertEquals(row.redacted, ["message.data:data.resetUrl"]);
    const stored = JSON.parse(new TextDecoder().decode(row.raw_body));
    const event = JSON.parse(atob(stored.message.data));
    assertEquals(event, {
      deliveryId: id,
      workflow: "password-reset",
      recipient: "ada@example.com",
      data: { resetUrl: "[redacted]", expiresInMinutes: 0 },
    });
    assert(row.reason.includes("expiresInMinutes"), "the reason names the field that failed");
    assertEquals(stored.subscription, "projects/test-project/subscriptions/email-worker-push");
  });
});
