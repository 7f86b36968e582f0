/**
 * SMTP out, through nodemailer, and the one place that decides whether a failure is worth retrying.
 */
import nodemailer from "nodemailer";
import type { Config } from "./config.ts";
import type { RenderedEmail } from "./workflows/common.ts";

/** What the SMTP server said when it accepted a message. */
export type SendResult = { messageId: string; response: string };

/** A failed send, classified: transient failures are retried, permanent ones end the delivery. */
export type SmtpFailure = { transient: boolean; code: string; message: string };

/** Sends one rendered email; resolves with the server's answer or rejects with an SmtpError. */
export type Mailer = {
  send(message: { to: string } & RenderedEmail & { headers?: Record<string, string> }): Promise<SendResult>;
  close(): void;
};

/** A send that failed, carrying its classification. */
export class SmtpError extends Error {
  override name = "SmtpError";
  constructor(readonly failure: SmtpFailure, options?: { cause?: unknown }) {
    super(failure.message, options);
  }
}

const transientCodes = new Set([
  "ETIMEDOUT",
  "ECONNECTION",
  "ESOCKET",
  "EDNS",
  "ETLS",
  "EPROTOCOL",
  "EAUTH",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);
const permanentCodes = new Set(["EENVELOPE", "EMESSAGE", "EREQUIRETLS"]);

/**
 * Classifies a send error. Network errors, timeouts and 4xx replies are transient. 5xx replies are
 * permanent (the recipient's side refused), except failures on our side that a retry after an
 * operator fixes them will cure: 535 (authentication), and the enhanced codes 5.3.x (mail system),
 * 5.4.x (network/routing) and 5.7.0 (our relay's policy, e.g. sender not allowed). Unknown errors
 * are transient, so a bug never burns a message silently; the attempt budget still bounds them.
 */
export function classifySmtpError(error: unknown): SmtpFailure {
  const e = (error ?? {}) as { code?: unknown; responseCode?: unknown; response?: unknown; message?: unknown };
  const message = oneLine(typeof e.response === "string" && e.response ? e.response : String(e.message ?? error));
  // No TLS where it is required (STARTTLS refused or stripped): our side to fix, never the recipient's.
  if (e.code === "ETLS") return { transient: true, code: "ETLS", message };
  const reply = typeof e.responseCode === "number" ? e.responseCode : replyCode(e.response);
  if (reply !== undefined) {
    const code = `smtp_${reply}`;
    if (reply >= 400 && reply < 500) return { transient: true, code, message };
    if (reply >= 500 && reply < 600) {
      const enhanced = enhancedCode(e.response);
      const operatorSide = reply === 535 ||
        (enhanced !== undefined && (/^5\.[34]\./.test(enhanced) || enhanced === "5.7.0"));
      return { transient: operatorSide, code: enhanced ? `${code}_${enhanced}` : code, message };
    }
  }
  const code = typeof e.code === "string" ? e.code : "unknown";
  if (permanentCodes.has(code)) return { transient: false, code, message };
  return { transient: true, code: transientCodes.has(code) ? code : "unknown", message };
}

function replyCode(response: unknown): number | undefined {
  const m = typeof response === "string" ? /^([2-5]\d\d)\b/.exec(response) : null;
  return m ? Number(m[1]) : undefined;
}

function enhancedCode(response: unknown): string | undefined {
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
          throw new SmtpError({
            transient: false,
            code: "header_injection",
            message: "a header value has a line break",
          });
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
        throw new SmtpError(classifySmtpError(error), { cause: error });
      }
    },
    close() {
      transport.close();
    },
  };
}
