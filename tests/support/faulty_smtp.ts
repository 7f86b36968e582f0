/**
 * A small SMTP server on node:net that misbehaves on demand, for the fault tests: it can refuse
 * connections (stop listening), accept and never greet, drop the connection in the middle of DATA,
 * take the whole message and never answer it, take it and drop the connection instead of answering,
 * drop a reused session at its next MAIL FROM, stop answering a reused session and close new ones
 * before their greeting (gone_silent), or answer with a given reply line; it can also close
 * its idle sessions. It keeps its port across refuse/recover, and records each message it accepted
 * with 250, keyed by the worker's X-Email-Delivery-Id header and the session that carried it, so a
 * test can count complete mails per delivery and the connections they came over.
 */
import { createServer, type Server, type Socket } from "node:net";
import { sleep } from "./wait.ts";

/** How the server behaves; a test changes `mode` at any time (setMode for "refuse"). */
export type FaultMode =
  | { kind: "accept"; delayMs?: number }
  | { kind: "refuse" }
  | { kind: "silent" }
  | { kind: "drop_in_data" }
  | { kind: "stall_in_data" }
  | { kind: "drop_after_data" }
  | { kind: "drop_reused_at_mail" }
  | { kind: "gone_silent" }
  | { kind: "reply"; at: "rcpt" | "data"; line: string };

/** One message as the server saw it. */
export type SeenMessage = { deliveryId: string | undefined; to: string[]; data: string; session: number };

/** A running faulty SMTP server. */
export type FaultySmtp = {
  port: number;
  mode: FaultMode;
  /** Whether AUTH succeeds (235) or fails (535); AUTH PLAIN is always advertised. */
  auth: "accept" | "refuse";
  /** Messages answered with 250: complete mails. */
  accepted: SeenMessage[];
  /** Every delivery id whose DATA began (accepted or not), in order. */
  dataStarted: (string | undefined)[];
  /** Messages taken in full but never answered (stall_in_data, drop_after_data). */
  stalled: SeenMessage[];
  /** Connections opened. */
  connections: number;
  /** Connections open now, and the most that were open at once. */
  open: number;
  peakOpen: number;
  /** Ends every session that is between transactions with 421, as a relay's idle timeout does. */
  closeIdle(): Promise<void>;
  /** Complete mails for one delivery. */
  mailsFor(deliveryId: string): SeenMessage[];
  /** Changes the mode; "refuse" stops listening (open connections are cut), any other mode listens again. */
  setMode(mode: FaultMode): Promise<void>;
  close(): Promise<void>;
};

const deliveryHeader = /^X-Email-Delivery-Id:[ \t]*(\S+)/im;

/** Starts the server on a free port (or `port`), in `mode` (accept by default). */
export async function startFaultySmtp(
  options: { port?: number; mode?: FaultMode } = {},
): Promise<FaultySmtp> {
  const sockets = new Set<Socket>();
  const idleClosers = new Set<() => void>();
  let server: Server | undefined;

  const state: FaultySmtp = {
    port: options.port ?? 0,
    mode: { kind: "accept" },
    auth: "accept",
    accepted: [],
    dataStarted: [],
    stalled: [],
    connections: 0,
    open: 0,
    peakOpen: 0,
    async closeIdle() {
      for (const close of idleClosers) close();
      // Until the client has seen the 421 and the end of the session.
      await sleep(100);
    },
    mailsFor: (id) => state.accepted.filter((m) => m.deliveryId === id),
    async setMode(mode) {
      state.mode = mode;
      if (mode.kind === "refuse") await stop();
      else if (!server) await listen();
    },
    async close() {
      await stop();
    },
  };

  function stop(): Promise<void> {
    const s = server;
    server = undefined;
    for (const socket of sockets) socket.destroy();
    sockets.clear();
    return s ? new Promise((resolve) => s.close(() => resolve())) : Promise.resolve();
  }

  function listen(): Promise<void> {
    const s = createServer(session);
    server = s;
    return new Promise((resolve, reject) => {
      s.once("error", reject);
      s.listen(state.port, "127.0.0.1", () => {
        state.port = (s.address() as { port: number }).port;
        resolve();
      });
    });
  }

  function session(socket: Socket) {
    const id = ++state.connections;
    state.peakOpen = Math.max(state.peakOpen, ++state.open);
    sockets.add(socket);
    let inTransaction = false;
    let transactions = 0;
    const closeIfIdle = () => {
      if (inTransaction || socket.destroyed) return;
      write("421 4.4.2 faulty.test idle timeout, closing");
      socket.end();
    };
    idleClosers.add(closeIfIdle);
    socket.on("close", () => {
      sockets.delete(socket);
      idleClosers.delete(closeIfIdle);
      state.open--;
    });
    socket.on("error", () => socket.destroy());
    const write = (line: string) => {
      if (!socket.destroyed) socket.write(`${line}\r\n`);
    };
    if (state.mode.kind === "silent") return; // holds the connection, never greets
    if (state.mode.kind === "gone_silent") return void socket.destroy(); // closes a new connection before its greeting

    let buffer = "";
    let inData = false;
    let authPending = false;
    let to: string[] = [];
    write("220 faulty.test ESMTP");

    socket.on("data", (chunk: Uint8Array) => {
      buffer += new TextDecoder().decode(chunk);
      while (!socket.destroyed) {
        if (inData) {
          if (buffer.length === 0) return;
          const mode = state.mode;
          if (mode.kind === "drop_in_data") {
            // The first bytes of the message arrived: cut the connection before the final dot.
            state.dataStarted.push(deliveryHeader.exec(buffer)?.[1]);
            socket.destroy();
            return;
          }
          const end = buffer.indexOf("\r\n.\r\n");
          if (end < 0) return;
          const data = buffer.slice(0, end + 2);
          buffer = buffer.slice(end + 5);
          inData = false;
          const message = { deliveryId: deliveryHeader.exec(data)?.[1], to, data, session: id };
          state.dataStarted.push(message.deliveryId);
          inTransaction = false;
          transactions++;
          if (mode.kind === "stall_in_data") {
            state.stalled.push(message);
            return; // never answers; the client times out or dies
          }
          if (mode.kind === "drop_after_data") {
            state.stalled.push(message);
            socket.destroy(); // the whole message arrived: cut the connection instead of answering
            return;
          }
          if (mode.kind === "reply" && mode.at === "data") {
            write(mode.line);
            continue;
          }
          const delayMs = mode.kind === "accept" ? mode.delayMs ?? 0 : 0;
          setTimeout(() => {
            if (socket.destroyed) return;
            state.accepted.push(message);
            write(`250 2.0.0 Ok: queued as ${crypto.randomUUID().slice(0, 8)}`);
          }, delayMs);
          continue;
        }
        const eol = buffer.indexOf("\r\n");
        if (eol < 0) return;
        const line = buffer.slice(0, eol);
        buffer = buffer.slice(eol + 2);
        if (authPending) {
          authPending = false;
          write(state.auth === "accept" ? "235 2.7.0 Authentication successful" : authFailure);
          continue;
        }
        command(line);
      }
    });

    const authFailure = "535 5.7.8 Authentication credentials invalid";
    function command(line: string) {
      const verb = line.slice(0, 4).toUpperCase();
      const mode = state.mode;
      if (verb === "EHLO") {
        write("250-faulty.test");
        write("250-AUTH PLAIN");
        write("250 8BITMIME");
      } else if (verb === "HELO") write("250 faulty.test");
      else if (verb === "AUTH") {
        const initial = line.split(" ")[2];
        if (initial) write(state.auth === "accept" ? "235 2.7.0 Authentication successful" : authFailure);
        else {
          authPending = true;
          write("334 ");
        }
      } else if (verb === "MAIL") {
        if (mode.kind === "drop_reused_at_mail" && transactions > 0) {
          socket.destroy(); // a reused session the relay had already given up on
          return;
        }
        if (mode.kind === "gone_silent") return; // a reused session that no longer answers
        inTransaction = true;
        to = [];
        write("250 2.1.0 Ok");
      } else if (verb === "RCPT") {
        if (mode.kind === "reply" && mode.at === "rcpt") return write(mode.line);
        to.push(/<([^>]*)>/.exec(line)?.[1] ?? "");
        write("250 2.1.5 Ok");
      } else if (verb === "DATA") {
        inData = true;
        write("354 End data with <CR><LF>.<CR><LF>");
      } else if (verb === "RSET" || verb === "NOOP") {
        inTransaction = false;
        write("250 2.0.0 Ok");
      } else if (verb === "QUIT") {
        write("221 2.0.0 Bye");
        socket.end();
      } else write("502 5.5.2 Command not recognized");
    }
  }

  const mode = options.mode ?? { kind: "accept" };
  state.mode = mode;
  if (mode.kind === "refuse") {
    // Reserve a port that nothing listens on, so "recover" can listen there later.
    if (!state.port) {
      const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      state.port = probe.addr.port;
      probe.close();
    }
  } else await listen();
  return state;
}
