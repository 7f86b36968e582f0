/**
 * The suppression list end to end: a real SMTP server hard-bounces an address, the worker records the
 * failure, the database suppresses the address, and the next push to it (in other letter case) ends
 * `suppressed` with no SMTP attempt, its event in the trail and in the webhook outbox. Operators use
 * the CLI (`email-status suppressions ...`) against the same database.
 */
import postgres from "postgres";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { test, withHarness } from "./support/harness.ts";
import { envelope, newRecipient, verificationEvent } from "./support/pubsub.ts";
import { suppressionsCommand } from "../cli/suppressions.ts";
import { type CapturedRun, captureOutput } from "./support/cli.ts";

const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

/** Runs `email-status suppressions <args>` and returns its exit code and what it printed. */
function cli(args: string[]): Promise<CapturedRun> {
  return captureOutput(() => suppressionsCommand(args, { DATABASE_URL: databaseUrl }));
}

test("a hard bounce suppresses the address; the next delivery to it ends suppressed without an SMTP attempt", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    const endpoint = (await db.sql<{ id: string }[]>`
      select id::text from email.add_webhook_endpoint('http://127.0.0.1:9/unused', '{email.suppressed}', 'suppressions_test')`)[
      0
    ];
    try {
      const recipient = newRecipient();
      smtp.respond = () => ({ code: 550, message: "5.1.1 No such user" });
      const first = verificationEvent({ recipient });
      assertEquals((await (await worker.push(envelope(first), { token })).json()).status, "failed");
      assertEquals(smtp.attempts, 1);

      const [entry] = await db.sql`select * from email.suppressions where address = ${recipient.toLowerCase()}`;
      assertEquals([entry?.source, entry?.delivery_id, entry?.error_code], [
        "hard_bounce",
        first.deliveryId,
        "smtp_550_5.1.1",
      ]);

      smtp.respond = () => undefined;
      const second = verificationEvent({ recipient: recipient.toUpperCase() });
      const res = await worker.push(envelope(second), { token });
      assertEquals(res.status, 200);
      assertEquals((await res.json()).status, "duplicate");
      assertEquals(smtp.attempts, 1, "no SMTP attempt for a suppressed address");

      const d = await db.delivery(second.deliveryId!);
      assertEquals([d?.status, d?.attempts, d?.last_error_code], ["suppressed", 0, "address_suppressed"]);
      const events = await db.events(second.deliveryId!);
      assertEquals(events.map((e) => e.to_status), ["queued", "suppressed"]);
      const [payload] = await db.sql`select 1 from email.delivery_payloads where delivery_id = ${second.deliveryId!}`;
      assertEquals(payload, undefined, "no template data is kept for it");
      const [hook] = await db
        .sql`select event_type, body from email.webhook_outbox where endpoint_id = ${endpoint.id}::uuid`;
      assertEquals(hook?.event_type, "email.suppressed");
      assertEquals(hook?.body.data.delivery_id, second.deliveryId);
      assertEquals(hook?.body.data.error_code, "address_suppressed");
    } finally {
      await db.sql`select email.remove_webhook_endpoint(${endpoint.id}::uuid)`;
    }
  });
});

test("a refusal by policy (550 5.7.1) fails the delivery but does not suppress the address", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    const recipient = newRecipient();
    smtp.respond = () => ({ code: 550, message: "5.7.1 Message rejected as spam" });
    const event = verificationEvent({ recipient });
    assertEquals((await (await worker.push(envelope(event), { token })).json()).status, "failed");
    const [entry] = await db.sql`select 1 from email.suppressions where address = ${recipient.toLowerCase()}`;
    assertEquals(entry, undefined);
    smtp.respond = () => undefined;
    const next = verificationEvent({ recipient });
    assertEquals((await (await worker.push(envelope(next), { token })).json()).status, "sent");
  });
});

test("operators add, check, list and remove suppressions with the CLI, case-insensitively", async () => {
  const address = `Cli.${crypto.randomUUID().slice(0, 8)}@Example.COM`;
  const lower = address.toLowerCase();
  const sql = postgres(databaseUrl!, { max: 1, onnotice: () => {} });
  try {
    assertEquals((await cli(["add", address])).code, 2, "add without --reason is a usage error");
    const added = await cli(["add", address, "--reason", "asked to stop", "--json"]);
    assertEquals(added.code, 0, added.err);
    const entry = JSON.parse(added.out);
    assertEquals([entry.address, entry.reason, entry.source], [lower, "asked to stop", "operator"]);
    assertMatch(entry.created_by, /^cli:/);

    const id = `sup-cli-${crypto.randomUUID()}`;
    await sql`select email.record_queued(${id}, 'invite', ${address.toUpperCase()}, '{}')`;
    const [d] = await sql`select status from email.deliveries where delivery_id = ${id}`;
    assertEquals(d.status, "suppressed");

    const checked = await cli(["check", address.toUpperCase()]);
    assertEquals(checked.code, 0);
    assertMatch(checked.out, /^suppressed\n/);
    const listed = await cli(["list", "--search", lower.split("@")[0].toUpperCase()]);
    assertEquals(listed.code, 0);
    assert(listed.out.includes(lower) && listed.out.includes("asked to stop"), listed.out);

    assertEquals((await cli(["remove", address])).code, 0);
    assertEquals((await cli(["remove", address])).code, 3, "removing it again: not found");
    assertEquals((await cli(["check", address])).code, 3);
    const again = `sup-cli-${crypto.randomUUID()}`;
    await sql`select email.record_queued(${again}, 'invite', ${address}, '{}')`;
    const [d2] = await sql`select status from email.deliveries where delivery_id = ${again}`;
    assertEquals(d2.status, "queued", "after removal deliveries go out again");

    const bad = await cli(["add", "not-an-address", "--reason", "x"]);
    assertEquals(bad.code, 1);
    assertMatch(bad.err, /not an email address/);
  } finally {
    await sql.end({ timeout: 2 });
  }
});
