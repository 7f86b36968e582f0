/**
 * A real SMTP server in the test process (smtp-server), parsing what arrives with mailparser. A test
 * decides each reply with `respond`: accept (undefined), or refuse with a code and message; it can
 * also hold the reply back for a while (a slow server).
 */
import { type ParsedMail, simpleParser } from "mailparser";
import { SMTPServer } from "smtp-server";
import { Buffer } from "node:buffer";

/** How the server answers one message: undefined accepts it. */
export type Reply = { code: number; message: string } | undefined;

/** A running test SMTP server. */
export type TestSmtp = {
  port: number;
  /** Messages accepted, parsed. */
  received: ParsedMail[];
  /** Every DATA the server saw, accepted or not. */
  attempts: number;
  respond: (mail: ParsedMail) => Reply;
  delayMs: number;
  /** Waits until `n` messages were accepted (or fails after `timeoutMs`). */
  waitForReceived(n: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
};

/** Starts the server on a free port; `auth` makes it require AUTH with that user and password. */
export async function startSmtpServer(options: { auth?: { user: string; pass: string } } = {}): Promise<TestSmtp> {
  const state: TestSmtp = {
    port: 0,
    received: [],
    attempts: 0,
    respond: () => undefined,
    delayMs: 0,
    waitForReceived: async (n, timeoutMs = 5000) => {
      const until = Date.now() + timeoutMs;
      while (state.received.length < n) {
        if (Date.now() > until) throw new Error(`expected ${n} messages, got ${state.received.length}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = new SMTPServer({
    secure: false,
    disabledCommands: options.auth ? ["STARTTLS"] : ["STARTTLS", "AUTH"],
    authOptional: !options.auth,
    allowInsecureAuth: true,
    hideENHANCEDSTATUSCODES: true,
    logger: false,
    onAuth(auth, _session, callback) {
      if (options.auth && auth.username === options.auth.user && auth.password === options.auth.pass) {
        return callback(null, { user: auth.username });
      }
      const error = Object.assign(new Error("5.7.8 Authentication credentials invalid"), { responseCode: 535 });
      callback(error);
    },
    onData(stream, _session, callback) {
      const chunks: Uint8Array[] = [];
      stream.on("data", (c: Uint8Array) => chunks.push(c));
      stream.on("end", async () => {
        state.attempts++;
        const mail = await simpleParser(Buffer.concat(chunks));
        if (state.delayMs > 0) await new Promise((r) => setTimeout(r, state.delayMs));
        const reply = state.respond(mail);
        if (reply) return callback(Object.assign(new Error(reply.message), { responseCode: reply.code }));
        state.received.push(mail);
        callback(null, `Ok: queued as ${crypto.randomUUID().slice(0, 8)}`);
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  state.port = (server.server.address() as { port: number }).port;
  return state;
}

/** Messages among `received` addressed to `to`. */
export function mailTo(smtp: TestSmtp, to: string): ParsedMail[] {
  return smtp.received.filter((m) => {
    const addrs = Array.isArray(m.to) ? m.to : m.to ? [m.to] : [];
    return addrs.some((a) => a.value.some((v) => v.address?.toLowerCase() === to.toLowerCase()));
  });
}
