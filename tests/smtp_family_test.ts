/**
 * SMTP_FAMILY: which address family the mailer uses for a relay name that has both IPv4 and IPv6
 * addresses. nodemailer tries the IPv6 address first, and on the Edge Runtime (Deno 2.1) a send to
 * an IPv6 address that does not answer was seen to hang instead of falling back to IPv4, so the
 * default is IPv4 only.
 *
 * Two real SMTP servers listen on the same port, one on 127.0.0.1 and one on ::1, and the mail
 * shows which one the mailer reached. The one stand-in: DNS. No resolver here can be given a name
 * with an A and an AAAA record on loopback (no /etc/hosts entry for ::1, no way to point the
 * process at a local DNS server), so node:dns's Resolver answers for one made-up name, exactly
 * what a DNS server would (A 127.0.0.1, AAAA ::1), and passes every other name through.
 */
import dns from "node:dns";
import { SMTPServer } from "smtp-server";
import { loadConfig } from "../functions/_shared/config.ts";
import { createMailer } from "../functions/_shared/mailer.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { test } from "./support/harness.ts";

type Listening = { port: number; received: () => number; close(): Promise<void> };

function listen(host: string, port: number): Promise<Listening> {
  let received = 0;
  const server = new SMTPServer({
    secure: false,
    disabledCommands: ["STARTTLS", "AUTH"],
    authOptional: true,
    logger: false,
    onData(stream, _session, callback) {
      stream.on("data", () => {});
      stream.on("end", () => {
        received++;
        callback();
      });
    },
  });
  return new Promise((resolve, reject) => {
    server.server.once("error", reject);
    server.listen(port, host, () =>
      resolve({
        port: (server.server.address() as { port: number }).port,
        received: () => received,
        close: () => new Promise<void>((r) => server.close(() => r())),
      }));
  });
}

/** An SMTP server on 127.0.0.1 and one on ::1, on the same port (a few tries to find a free one). */
async function dualStackRelays(): Promise<{ port: number; v4: Listening; v6: Listening }> {
  for (let i = 0; i < 20; i++) {
    const v4 = await listen("127.0.0.1", 0);
    try {
      return { port: v4.port, v4, v6: await listen("::1", v4.port) };
    } catch {
      await v4.close();
    }
  }
  throw new Error("no port free on both 127.0.0.1 and ::1");
}

/** Makes node:dns answer for `name` with A 127.0.0.1 and AAAA ::1; returns the undo. */
function resolveDualStack(name: string): () => void {
  // deno-lint-ignore no-explicit-any
  const proto = (dns as any).Resolver.prototype;
  const original = { resolve4: proto.resolve4, resolve6: proto.resolve6 };
  const answer = (family: 4 | 6) =>
    function (this: unknown, hostname: string, ...rest: unknown[]) {
      const callback = rest.at(-1) as (err: Error | null, addresses?: string[]) => void;
      if (hostname !== name) return original[`resolve${family}`].call(this, hostname, ...rest);
      setTimeout(() => callback(null, [family === 4 ? "127.0.0.1" : "::1"]), 0);
    };
  proto.resolve4 = answer(4);
  proto.resolve6 = answer(6);
  return () => Object.assign(proto, original);
}

async function sendVia(family: string | undefined): Promise<{ v4: number; v6: number; error?: string }> {
  const { port, v4, v6 } = await dualStackRelays();
  const name = `dual-stack-${crypto.randomUUID().slice(0, 8)}.relay.test`;
  const undo = resolveDualStack(name);
  const config = loadConfig({
    SMTP_HOST: name,
    SMTP_PORT: String(port),
    SMTP_SECURE: "false",
    SMTP_REQUIRE_TLS: "false",
    SMTP_FROM: "no-reply@worker.test",
    SMTP_CONNECTION_TIMEOUT_MS: "3000",
    PUBSUB_VERIFY: "false",
    SMTP_FAMILY: family,
  });
  const mailer = createMailer(config.smtp);
  let error: string | undefined;
  try {
    await mailer.send({ to: "ada@example.com", subject: "family", text: "which relay?", html: "<p>which relay?</p>" });
  } catch (e) {
    error = String((e as Error).message);
  } finally {
    mailer.close();
    undo();
    await v4.close();
    await v6.close();
  }
  return { v4: v4.received(), v6: v6.received(), error };
}

test("by default the mailer reaches a dual-stack relay over IPv4 only", async () => {
  const result = await sendVia(undefined);
  assertEquals(result, { v4: 1, v6: 0, error: undefined });
});

test("SMTP_FAMILY=4 reaches a dual-stack relay over IPv4 only", async () => {
  assertEquals(await sendVia("4"), { v4: 1, v6: 0, error: undefined });
});

test("SMTP_FAMILY=6 never uses the relay's IPv4 address", async () => {
  const result = await sendVia("6");
  assertEquals(result.v4, 0);
  assert(result.v6 === 1 || result.error !== undefined, JSON.stringify(result));
});
