/**
 * The mailer against real SMTP servers, and how a failure is classified: the mailer extracts the facts
 * (reply code, enhanced code, transport code, message) and email.failure_rules, in the real migrated
 * database, decides transient or permanent and the recorded code (what email.record_failure applies).
 */
import postgres from "postgres";
import { createMailer, SmtpError, type SmtpFailure, smtpFailureFacts } from "../functions/_shared/mailer.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { test } from "./support/harness.ts";
import { startSmtpServer } from "./support/smtp.ts";

const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

/** What the database's failure rules make of a failure's facts. */
async function classified(f: SmtpFailure): Promise<{ transient: boolean; code: string; hardBounce: boolean }> {
  const sql = postgres(databaseUrl!, { max: 1, onnotice: () => {} });
  try {
    const [r] = await sql<{ transient: boolean; code: string; hard_bounce: boolean }[]>`
      select (x.rule).class = 'transient' as transient, x.error_code as code, (x.rule).hard_bounce
      from email.failure_rule(${f.replyCode ?? null}::integer, ${f.enhancedCode ?? null}, ${
      f.transportCode ?? null
    }) x`;
    return { transient: r.transient, code: r.code, hardBounce: r.hard_bounce };
  } finally {
    await sql.end();
  }
}

/** A nodemailer send error, classified: facts here, the decision in the database. */
const classifyError = (error: unknown) => classified(smtpFailureFacts(error));

const reply = (response: string) => ({ code: "EENVELOPE", responseCode: Number(response.slice(0, 3)), response });

test("4xx replies are transient", async () => {
  for (const r of ["421 4.7.0 Try again later", "450 4.2.1 Mailbox busy", "451 4.3.0 Local error", "452 4.2.2 Full"]) {
    assertEquals((await classifyError(reply(r))).transient, true, r);
  }
  assertEquals((await classifyError(reply("451 4.3.0 Local error"))).code, "smtp_451");
});

test("5xx replies about the recipient or message are permanent", async () => {
  for (
    const r of [
      "550 5.1.1 No such user",
      "553 5.1.3 Bad address",
      "552 5.2.3 Too big",
      "554 Rejected",
    ]
  ) {
    assertEquals((await classifyError(reply(r))).transient, false, r);
  }
  assertEquals((await classifyError(reply("550 5.1.1 No such user"))).code, "smtp_550_5.1.1");
  assertEquals((await classifyError(reply("554 Rejected"))).code, "smtp_554");
});

test("operator-side 5xx (535, 5.3.x, 5.4.x, 5.7.0) are transient: not the recipient's fault", async () => {
  for (
    const r of [
      "535 5.7.8 Authentication credentials invalid",
      "535 Authentication failed",
      "550 5.7.0 Sender not allowed by relay",
      "554 5.3.0 Mail system full",
      "552 5.3.4 Message too big for system",
      "554 5.4.4 Unable to route",
      "550 5.4.1 Relay access denied",
    ]
  ) {
    assertEquals((await classifyError(reply(r))).transient, true, r);
  }
  assertEquals((await classifyError(reply("550 5.7.1 Message refused as spam"))).transient, false);
});

test("network errors and timeouts are transient; unknown errors too; API errors are permanent", async () => {
  for (const code of ["ETIMEDOUT", "ECONNECTION", "ESOCKET", "EDNS", "ETLS", "ECONNREFUSED", "ECONNRESET"]) {
    assertEquals(smtpFailureFacts(Object.assign(new Error("x"), { code })), { transportCode: code, message: "x" });
    assertEquals(await classifyError(Object.assign(new Error("x"), { code })), {
      transient: true,
      code,
      hardBounce: false,
    });
  }
  assertEquals((await classifyError(new Error("something odd"))).transient, true);
  assertEquals((await classifyError(Object.assign(new Error("bad"), { code: "EENVELOPE" }))).transient, false);
  assertEquals((await classifyError(Object.assign(new Error("big"), { code: "EMESSAGE" }))).transient, false);
});

test("a reply line with CR/LF is flattened to one line in the stored message", () => {
  assertEquals(smtpFailureFacts(reply("550 5.1.1 a\r\n550 5.1.1 b")).message, "550 5.1.1 a 550 5.1.1 b");
});

const smtpConfig = (port: number, extra: Record<string, unknown> = {}) => ({
  host: "127.0.0.1",
  port,
  secure: false,
  requireTls: false, // the test server is a local sink without STARTTLS
  from: "Worker <no-reply@worker.test>",
  connectionTimeoutMs: 1000,
  greetingTimeoutMs: 1000,
  socketTimeoutMs: 1000,
  ...extra,
});

test("against a real server: success returns the message id and the server's reply line", async () => {
  const smtp = await startSmtpServer();
  const mailer = createMailer(smtpConfig(smtp.port));
  try {
    const r = await mailer.send({ to: "ada@example.com", subject: "Hi", text: "t", html: "<p>h</p>" });
    assert(r.messageId.includes("@"), r.messageId);
    assert(r.response.startsWith("250 "), r.response);
    assertEquals(smtp.received[0].messageId, r.messageId);
  } finally {
    mailer.close();
    await smtp.close();
  }
});

test("against a real server: a refused message is classified from the real reply", async () => {
  const smtp = await startSmtpServer();
  const mailer = createMailer(smtpConfig(smtp.port));
  try {
    smtp.respond = () => ({ code: 550, message: "5.1.1 No such user" });
    const e1 = await mailer.send({ to: "ada@example.com", subject: "Hi", text: "t", html: "h" }).catch((e) => e);
    assert(e1 instanceof SmtpError);
    assertEquals(e1.failure, {
      replyCode: 550,
      enhancedCode: "5.1.1",
      transportCode: "EMESSAGE",
      message: e1.failure.message,
    });
    assertEquals(await classified(e1.failure), { transient: false, code: "smtp_550_5.1.1", hardBounce: true });
    smtp.respond = () => ({ code: 451, message: "4.3.0 Later" });
    const e2 = await mailer.send({ to: "ada@example.com", subject: "Hi", text: "t", html: "h" }).catch((e) => e);
    assertEquals(await classified(e2.failure), { transient: true, code: "smtp_451", hardBounce: false });
  } finally {
    mailer.close();
    await smtp.close();
  }
});

test("a server that accepts the connection but never greets times out, transiently", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  (async () => {
    for await (const c of listener) held.push(c);
  })();
  const mailer = createMailer(smtpConfig(listener.addr.port, { greetingTimeoutMs: 300 }));
  try {
    const e = await mailer.send({ to: "ada@example.com", subject: "Hi", text: "t", html: "h" }).catch((e) => e);
    assertEquals((await classified(e.failure)).transient, true);
    assertEquals((await classified(e.failure)).code, "ETIMEDOUT");
  } finally {
    mailer.close();
    listener.close();
    for (const c of held) c.close();
  }
});

test("nothing with CR/LF reaches a header: the mailer refuses it before connecting", async () => {
  const smtp = await startSmtpServer();
  const mailer = createMailer(smtpConfig(smtp.port));
  try {
    const e = await mailer.send({ to: "ada@example.com", subject: "Hi\r\nBcc: eve@evil.test", text: "t", html: "h" })
      .catch((e) => e);
    assertEquals(e.failure, { transportCode: "header_injection", message: "a header value has a line break" });
    assertEquals(await classified(e.failure), { transient: false, code: "header_injection", hardBounce: false });
    assertEquals(smtp.attempts, 0);
  } finally {
    mailer.close();
    await smtp.close();
  }
});
