/**
 * The mailer's guards that users rely on (issue 14, points 8 and 9), against a real SMTP server:
 * a bare LF or a bare CR in any header value is refused before connecting (not only a CRLF pair),
 * and a 500 reply (the first 5xx) is permanent: the mailer reports its facts, email.failure_rules
 * in the real database classifies them.
 */
import postgres from "postgres";
import { createMailer, SmtpError, smtpFailureFacts } from "../functions/_shared/mailer.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { test } from "./support/harness.ts";
import { startSmtpServer } from "./support/smtp.ts";

const smtpConfig = (port: number) => ({
  host: "127.0.0.1",
  port,
  secure: false,
  from: "Worker <no-reply@worker.test>",
  connectionTimeoutMs: 2000,
  greetingTimeoutMs: 2000,
  socketTimeoutMs: 2000,
  requireTls: false, // the test server speaks plain SMTP on loopback
});

const injections: { name: string; message: { to: string; subject: string; headers?: Record<string, string> } }[] = [
  { name: "a bare LF in the subject", message: { to: "ada@example.com", subject: "Hi\nBcc: eve@evil.test" } },
  { name: "a bare CR in the subject", message: { to: "ada@example.com", subject: "Hi\rBcc: eve@evil.test" } },
  { name: "a bare LF in the recipient", message: { to: "ada@example.com\nBcc: eve@evil.test", subject: "Hi" } },
  { name: "a bare CR in the recipient", message: { to: "ada@example.com\rBcc: eve@evil.test", subject: "Hi" } },
  {
    name: "a bare LF in an extra header",
    message: { to: "ada@example.com", subject: "Hi", headers: { "X-Trace": "a\nBcc: eve@evil.test" } },
  },
  {
    name: "a bare CR in an extra header",
    message: { to: "ada@example.com", subject: "Hi", headers: { "X-Trace": "a\rBcc: eve@evil.test" } },
  },
];

for (const c of injections) {
  test(`the mailer refuses ${c.name} before connecting`, async () => {
    const smtp = await startSmtpServer();
    const mailer = createMailer(smtpConfig(smtp.port));
    try {
      const e = await mailer.send({ ...c.message, text: "t", html: "h" }).then(() => undefined, (e) => e);
      assert(e instanceof SmtpError, `expected an SmtpError, got ${e}`);
      assertEquals(e.failure.transportCode, "header_injection");
      assertEquals(smtp.attempts, 0);
    } finally {
      mailer.close();
      await smtp.close();
    }
  });
}

const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

/** The class and error code email.failure_rules gives these facts. */
async function classify(facts: { replyCode?: number; enhancedCode?: string; transportCode?: string }) {
  const sql = postgres(databaseUrl!, { max: 1, onnotice: () => {} });
  try {
    const [r] = await sql`select (x.rule).class as class, x.error_code from email.failure_rule(
      ${facts.replyCode ?? null}::integer, ${facts.enhancedCode ?? null}, ${facts.transportCode ?? null}) x`;
    return [r.class, r.error_code];
  } finally {
    await sql.end({ timeout: 2 });
  }
}

test("a 500 reply is permanent, with or without an enhanced code and whatever nodemailer's error code", async () => {
  for (const transportCode of ["EENVELOPE", "EMESSAGE", "EPROTOCOL", undefined]) {
    assertEquals(await classify({ replyCode: 500, enhancedCode: "5.5.1", transportCode }), [
      "permanent",
      "smtp_500_5.5.1",
    ], String(transportCode));
    assertEquals(await classify({ replyCode: 500, transportCode }), ["permanent", "smtp_500"], String(transportCode));
  }
  assertEquals(await classify({ replyCode: 499 }), ["transient", "smtp_499"]);
});

test("against a real server: a 500 reply to the message is reported as 500, which is permanent", async () => {
  const smtp = await startSmtpServer();
  const mailer = createMailer(smtpConfig(smtp.port));
  try {
    smtp.respond = () => ({ code: 500, message: "Command unrecognized" });
    const e = await mailer.send({ to: "ada@example.com", subject: "Hi", text: "t", html: "h" }).then(
      () => undefined,
      (e) => e,
    );
    assert(e instanceof SmtpError, `expected an SmtpError, got ${e}`);
    assertEquals(e.failure.replyCode, 500);
    assertEquals(smtpFailureFacts({ code: "EPROTOCOL", response: "500 Command unrecognized" }).replyCode, 500);
    assertEquals((await classify(e.failure))[0], "permanent");
  } finally {
    mailer.close();
    await smtp.close();
  }
});
