/**
 * The mailer's guards that users rely on (issue 14, points 8 and 9), against a real SMTP server:
 * a bare LF or a bare CR in any header value is refused before connecting (not only a CRLF pair),
 * and a 500 reply (the first 5xx) is permanent.
 */
import { classifySmtpError, createMailer, SmtpError } from "../functions/_shared/mailer.ts";
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
      assertEquals([e.failure.transient, e.failure.code], [false, "header_injection"]);
      assertEquals(smtp.attempts, 0);
    } finally {
      mailer.close();
      await smtp.close();
    }
  });
}

test("a 500 reply is permanent, with or without an enhanced code and whatever nodemailer's error code", () => {
  for (const code of ["EENVELOPE", "EMESSAGE", "EPROTOCOL", undefined]) {
    assertEquals(
      classifySmtpError({ code, responseCode: 500, response: "500 5.5.1 Syntax error" }),
      { transient: false, code: "smtp_500_5.5.1", message: "500 5.5.1 Syntax error" },
      String(code),
    );
    assertEquals(
      classifySmtpError({ code, responseCode: 500, response: "500 Command unrecognized" }),
      { transient: false, code: "smtp_500", message: "500 Command unrecognized" },
      String(code),
    );
  }
  // Without responseCode the reply code is read from the response line.
  assertEquals(classifySmtpError({ code: "EPROTOCOL", response: "500 Command unrecognized" }).transient, false);
});

test("against a real server: a 500 reply to the message is permanent", async () => {
  const smtp = await startSmtpServer();
  const mailer = createMailer(smtpConfig(smtp.port));
  try {
    smtp.respond = () => ({ code: 500, message: "Command unrecognized" });
    const e = await mailer.send({ to: "ada@example.com", subject: "Hi", text: "t", html: "h" }).then(
      () => undefined,
      (e) => e,
    );
    assert(e instanceof SmtpError, `expected an SmtpError, got ${e}`);
    assertEquals([e.failure.transient, e.failure.code], [false, "smtp_500"]);
  } finally {
    mailer.close();
    await smtp.close();
  }
});
