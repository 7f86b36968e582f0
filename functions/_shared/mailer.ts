/**
 * SMTP out, through nodemailer. A failed send is reported as its facts (reply code, enhanced status
 * code, transport error code, message); whether it is retried, ends the delivery or is a hard bounce
 * is decided by the database (email.failure_rules, through email.record_failure), not here.
 */
import nodemailer from "nodemailer";
import type { Config } from "./config.ts";
import type { RenderedEmail } from "./workflows/common.ts";

/** What the SMTP server said when it accepted a message. */
export type SendResult = { messageId: string; response: string };

/**
 * The facts of a failed send, as email.record_failure takes them: the SMTP reply code (e.g. 550), the
 * enhanced status code (e.g. "5.1.1"), the transport's error code (nodemailer's, e.g. "ETIMEDOUT", or
 * "header_injection"), each when there is one, and a one-line human message.
 */
export type SmtpFailure = { replyCode?: number; enhancedCode?: string; transportCode?: string; message: string };

/** Sends one rendered email; resolves with the server's answer or rejects with an SmtpError. */
export type Mailer = {
  send(message: { to: string } & RenderedEmail & { headers?: Record<string, string> }): Promise<SendResult>;
  close(): void;
};

/** A send that failed, carrying its facts. */
export class SmtpError extends Error {
  override name = "SmtpError";
  constructor(readonly failure: SmtpFailure, options?: { cause?: unknown }) {
    super(failure.message, options);
  }
}

/** Extracts the facts of a send error (nodemailer's code, responseCode and response); classifies nothing. */
export function smtpFailureFacts(error: unknown): SmtpFailure {
  const e = (error ?? {}) as { code?: unknown; responseCode?: unknown; response?: unknown; message?: unknown };
  const message = oneLine(typeof e.response === "string" && e.response ? e.response : String(e.message ?? error));
  const replyCode = typeof e.responseCode === "number" && e.responseCode >= 200 && e.responseCode <= 599
    ? e.responseCode
    : replyCodeOf(e.response);
  return {
    ...(replyCode !== undefined ? { replyCode } : {}),
    ...(replyCode !== undefined && enhancedCodeOf(e.response) ? { enhancedCode: enhancedCodeOf(e.response) } : {}),
    ...(typeof e.code === "string" && e.code ? { transportCode: e.code.slice(0, 64) } : {}),
    message,
  };
}

function replyCodeOf(response: unknown): number | undefined {
  const m = typeof response === "string" ? /^([2-5]\d\d)\b/.exec(response) : null;
  return m ? Number(m[1]) : undefined;
}

function enhancedCodeOf(response: unknown): string | undefined {
  const m = typeof response === "string" ? /^[2-5]\d\d[ -]([2-5]\.\d{1,3}\.\d{1,3})\b/.exec(response) : null;
  return m ? m[1] : undefined;
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, " ").slice(0, 500);
}

/** Creates the nodemailer-backed mailer from the SMTP config (no file or URL access in messages). */
export function createMailer(smtp: Config["smtp"]): Mailer {
  const transport = nodemailer.createTransport({
    host: smtp.host,
    port: smtp.port,
    secure: smtp.secure,
    // nodemailer keeps only the relay's addresses of the local address's family: binding to the
    // wildcard address of one family is how it is told to use that family alone.
    localAddress: smtp.family === "auto" ? undefined : smtp.family === 6 ? "::" : "0.0.0.0",
    // Without implicit TLS, STARTTLS is mandatory unless turned off for a local sink: a relay that does
    // not offer it (or an attacker who strips it) gets no AUTH and no message.
    requireTLS: !smtp.secure && smtp.requireTls,
    tls: smtp.caCert ? { ca: [smtp.caCert] } : undefined,
    auth: smtp.user ? { user: smtp.user, pass: smtp.password } : undefined,
    connectionTimeout: smtp.connectionTimeoutMs,
    greetingTimeout: smtp.greetingTimeoutMs,
    socketTimeout: smtp.socketTimeoutMs,
    disableFileAccess: true,
    disableUrlAccess: true,
    logger: false,
    debug: false,
  });
  return {
    async send(message) {
      for (const value of [message.to, message.subject, ...Object.values(message.headers ?? {})]) {
        if (/[\r\n]/.test(value)) {
          throw new SmtpError({ transportCode: "header_injection", message: "a header value has a line break" });
        }
      }
      try {
        const info = await transport.sendMail({
          from: smtp.from,
          to: message.to,
          subject: message.subject,
          text: message.text,
          html: message.html,
          headers: message.headers,
          disableFileAccess: true,
          disableUrlAccess: true,
        });
        return { messageId: String(info.messageId ?? ""), response: oneLine(String(info.response ?? "")) };
      } catch (error) {
        throw new SmtpError(smtpFailureFacts(error), { cause: error });
      }
    },
    close() {
      transport.close();
    },
  };
}
