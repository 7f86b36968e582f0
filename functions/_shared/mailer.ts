/**
 * SMTP out, through nodemailer. A failed send is reported as its facts (reply code, enhanced status
 * code, transport error code, message); whether it is retried, ends the delivery or is a hard bounce
 * is decided by the database (email.failure_rules, through email.record_failure), not here.
 *
 * Connections are reused within the isolate (nodemailer's pool, `SMTP_POOL_*`): at most
 * `maxConnections` sessions, each closed after `maxMessages` messages or `idleMs` without one, and
 * replaced when the relay drops it or it fails. What the pool may do with a message whose connection
 * dies (nodemailer 10.6, smtp-pool/pool-resource.js), and why no message goes out twice:
 * - a message is handed to another connection only when its session ended before a single byte of
 *   the message was read (the relay closed a reused connection before or at MAIL FROM, or a new one
 *   before its greeting); a server cannot have accepted a message it was never sent;
 * - once the message stream has been read (from the relay's acceptance of the envelope on, so DATA
 *   included), a broken connection fails the send with the transport's error, which the caller
 *   records; the pool never sends it again. nodemailer tells the two apart by the stream's
 *   `readableDidRead`; were a runtime's node:stream to lack it, the check fails safe (no re-queue).
 *   tests/smtp_pool_test.ts holds nodemailer to this against a server that drops the connection
 *   mid-DATA (a nodemailer upgrade must pass it);
 * - such re-queueing happens at most once (`maxRequeues: 1`), so a send still ends within a bounded
 *   time (sendBoundMs).
 * The attempt is marked as started (email.renew_lease with starting_send) before `send` is called,
 * so waiting for a pooled connection and the conversation both count as "started".
 * Every new pooled connection goes through the same options as a connection per message did:
 * STARTTLS required, the CA, the address family, the timeouts.
 * On the Edge Runtime the pool lives and dies with its isolate (one per isolate, from that isolate's
 * config): an idle session holds its socket, and so its process or isolate, for at most
 * SMTP_POOL_IDLE_MS (seen under Deno: a script that never calls close() exits once the idle close
 * has ended the session; close() ends idle sessions at once), the gate's timer runs only while a
 * send waits, and an isolate torn down mid-send leaves an attempt marked as started, which the
 * reaper settles (outcome_unknown).
 */
import nodemailer from "nodemailer";
import { type Config, smtpPoolDefaults } from "./config.ts";
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
  const pool = smtp.pool ?? smtpPoolDefaults;
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
    // maxConnections 0: a new connection (and TLS handshake) per message, as before pooling.
    ...(pool.maxConnections > 0
      ? {
        pool: true,
        maxConnections: pool.maxConnections,
        maxMessages: pool.maxMessages,
        // An idle session is closed by us (its timer does not keep the isolate alive): before the
        // relay's own idle timeout ends it in the middle of handing it the next message.
        idleTimeout: pool.idleMs,
        // A message whose connection closed before any byte of it was read goes to a fresh
        // connection at most once; then the send fails (ECONNECTION), transient (see sendBoundMs).
        maxRequeues: 1,
      }
      : {}),
    disableFileAccess: true,
    disableUrlAccess: true,
    logger: false,
    debug: false,
  });
  // The pool reports a broken connection to the send it carried; nothing else should reach here, and
  // an unhandled 'error' event would end the isolate with every send in flight.
  transport.on("error", () => {});
  // Sends beyond maxConnections wait here, in order and for a bounded time, rather than in
  // nodemailer's queue, which has no timeout: a send's duration stays within sendTimeoutMs.
  const gate = pool.maxConnections > 0 ? createGate(pool.maxConnections) : undefined;
  return {
    async send(message) {
      for (const value of [message.to, message.subject, ...Object.values(message.headers ?? {})]) {
        if (/[\r\n]/.test(value)) {
          throw new SmtpError({ transportCode: "header_injection", message: "a header value has a line break" });
        }
      }
      if (gate && !(await gate.enter(poolWaitMs(smtp)))) {
        throw new SmtpError({
          transportCode: "ETIMEDOUT",
          message: `no pooled SMTP connection was free within ${poolWaitMs(smtp)} ms`,
        });
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
      } finally {
        gate?.leave();
      }
    },
    close() {
      transport.close();
    },
  };
}

/**
 * How long a send may wait for a pooled connection to be free: SMTP_CONNECTION_TIMEOUT_MS when
 * connections are pooled (a wait stands in for connecting), 0 otherwise.
 */
function poolWaitMs(smtp: Config["smtp"]): number {
  return (smtp.pool ?? smtpPoolDefaults).maxConnections > 0 ? smtp.connectionTimeoutMs : 0;
}

/** The pool's own delays before it hands a re-queued message to a new connection (about 0.2 s), rounded up. */
const requeueSlackMs = 1000;

/**
 * The longest one send may take before the mailer gives up on a silent relay: nodemailer's
 * connection, greeting and socket (idle) timeouts, one after the other. Pooled, also the wait for a
 * free connection, and the one try the pool may make before re-queueing the message on a new
 * connection (`maxRequeues: 1`): a reused session that goes silent before a byte of the message was
 * read (the socket timeout), or a new one that closes before its greeting.
 */
export function sendBoundMs(smtp: Config["smtp"]): number {
  const conversation = smtp.connectionTimeoutMs + smtp.greetingTimeoutMs + smtp.socketTimeoutMs;
  const wait = poolWaitMs(smtp);
  if (wait === 0) return conversation;
  const requeuedTry = Math.max(smtp.socketTimeoutMs, smtp.connectionTimeoutMs + smtp.greetingTimeoutMs);
  return wait + requeuedTry + requeueSlackMs + conversation;
}

/** At most `size` holders at once; the others wait in arrival order, each for at most the time it asks. */
function createGate(size: number) {
  let held = 0;
  const waiting: (() => void)[] = [];
  return {
    enter(waitMs: number): Promise<boolean> {
      if (held < size && waiting.length === 0) {
        held++;
        return Promise.resolve(true);
      }
      return new Promise((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          held++;
          resolve(true);
        };
        const timer = setTimeout(() => {
          waiting.splice(waiting.indexOf(wake), 1);
          resolve(false);
        }, waitMs);
        waiting.push(wake);
      });
    },
    leave() {
      held--;
      waiting.shift()?.();
    },
  };
}
