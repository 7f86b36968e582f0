/**
 * TLS to the relay (issue 10 item 7), against a real smtp-server: with SMTP_SECURE=false, STARTTLS is
 * required by default, so a relay that does not offer it (or a network attacker who strips it) sees no
 * AUTH and no message; a relay that offers it gets both only after the upgrade, over a certificate the
 * worker verifies. The certificates are made with openssl for each run (a test CA, SMTP_CA_CERT).
 */
import { SMTPServer, type SMTPServerOptions } from "smtp-server";
import { assert, assertEquals } from "./support/assert.ts";
import { ConfigError, loadConfig } from "../functions/_shared/config.ts";
import postgres from "postgres";
import { createMailer, SmtpError, type SmtpFailure } from "../functions/_shared/mailer.ts";
import { test, withHarness } from "./support/harness.ts";
import { envelope, verificationEvent } from "./support/pubsub.ts";
import { makeCertificates } from "./support/certs.ts";

const base = {
  PUBSUB_VERIFY: "false",
  SMTP_HOST: "127.0.0.1",
  SMTP_SECURE: "false",
  SMTP_USER: "relay",
  SMTP_PASSWORD: "relay-password",
  SMTP_FROM: "Worker <no-reply@worker.test>",
  SMTP_CONNECTION_TIMEOUT_MS: "3000",
  SMTP_GREETING_TIMEOUT_MS: "3000",
  SMTP_SOCKET_TIMEOUT_MS: "5000",
};

/** What the relay saw: every AUTH, MAIL FROM and DATA, and whether the session was TLS then. */
type Seen = { auth: boolean[]; mailFrom: boolean[]; data: boolean[]; upgraded: number };

async function startRelay(options: Partial<SMTPServerOptions>) {
  const seen: Seen = { auth: [], mailFrom: [], data: [], upgraded: 0 };
  const server = new SMTPServer({
    secure: false,
    authOptional: false,
    allowInsecureAuth: true, // the relay would take AUTH in clear: only the client can refuse
    hideENHANCEDSTATUSCODES: true,
    logger: false,
    onSecure(_socket, _session, callback) {
      seen.upgraded++;
      callback();
    },
    onAuth(auth, session, callback) {
      seen.auth.push(session.secure);
      if (auth.username === "relay" && auth.password === "relay-password") return callback(null, { user: "relay" });
      callback(new Error("bad credentials"));
    },
    onMailFrom(_address, session, callback) {
      seen.mailFrom.push(session.secure);
      callback();
    },
    onData(stream, session, callback) {
      stream.resume();
      stream.on("end", () => {
        seen.data.push(session.secure);
        callback(null, "Ok: queued");
      });
    },
    ...options,
  });
  server.on("error", () => {}); // a client that refuses our certificate ends its handshake with an alert
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.server.address() as { port: number }).port;
  return { port, seen, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

const message = { to: "ada@example.com", subject: "Your code", text: "123456", html: "<p>123456</p>" };

async function sendError(mailer: ReturnType<typeof createMailer>): Promise<SmtpError> {
  try {
    await mailer.send(message);
  } catch (e) {
    if (e instanceof SmtpError) return e;
    throw e;
  }
  throw new Error("the send succeeded");
}

/** Whether the database's failure rules (email.failure_rules) retry a failure with these facts. */
async function isTransient(f: SmtpFailure): Promise<boolean> {
  const sql = postgres(Deno.env.get("DATABASE_URL")!, { max: 1, onnotice: () => {} });
  try {
    const [r] = await sql<{ transient: boolean }[]>`
      select (x.rule).class = 'transient' as transient
      from email.failure_rule(${f.replyCode ?? null}::integer, ${f.enhancedCode ?? null}, ${
      f.transportCode ?? null
    }) x`;
    return r.transient;
  } finally {
    await sql.end();
  }
}

test("a relay without STARTTLS gets no AUTH and no message: the send fails, to be retried", async () => {
  const relay = await startRelay({ disabledCommands: ["STARTTLS"] });
  const mailer = createMailer(loadConfig({ ...base, SMTP_PORT: String(relay.port) }).smtp);
  try {
    const error = await sendError(mailer);
    assertEquals([error.failure.transportCode, await isTransient(error.failure)], ["ETLS", true]);
    assertEquals(relay.seen, { auth: [], mailFrom: [], data: [], upgraded: 0 }, "nothing but EHLO and STARTTLS");
  } finally {
    mailer.close();
    await relay.close();
  }
});

test("a relay offering STARTTLS with a certificate from SMTP_CA_CERT gets AUTH and the message over TLS", async () => {
  const { ca, key, cert } = await makeCertificates();
  const relay = await startRelay({ key, cert });
  const mailer = createMailer(loadConfig({ ...base, SMTP_PORT: String(relay.port), SMTP_CA_CERT: ca }).smtp);
  try {
    const sent = await mailer.send(message);
    assert(sent.response.includes("Ok: queued"), sent.response);
    assertEquals(relay.seen, { auth: [true], mailFrom: [true], data: [true], upgraded: 1 });
  } finally {
    mailer.close();
    await relay.close();
  }
});

test("pooled: three messages share one STARTTLS session, authenticated once, each over TLS", async () => {
  const { ca, key, cert } = await makeCertificates();
  const relay = await startRelay({ key, cert });
  const mailer = createMailer(loadConfig({ ...base, SMTP_PORT: String(relay.port), SMTP_CA_CERT: ca }).smtp);
  try {
    for (let i = 0; i < 3; i++) await mailer.send(message);
    assertEquals(relay.seen, { auth: [true], mailFrom: [true, true, true], data: [true, true, true], upgraded: 1 });
  } finally {
    mailer.close();
    await relay.close();
  }
});

test("pooled: every new connection to a relay without STARTTLS is refused again: no AUTH, no message", async () => {
  const relay = await startRelay({ disabledCommands: ["STARTTLS"] });
  const mailer = createMailer(loadConfig({ ...base, SMTP_PORT: String(relay.port) }).smtp);
  try {
    for (let i = 0; i < 3; i++) assertEquals((await sendError(mailer)).failure.transportCode, "ETLS");
    assertEquals(relay.seen, { auth: [], mailFrom: [], data: [], upgraded: 0 });
  } finally {
    mailer.close();
    await relay.close();
  }
});

test("the worker with default settings sends nothing to a relay without STARTTLS: the delivery retries", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    const event = verificationEvent();
    const reply = await (await worker.push(envelope(event), { token })).json();
    assertEquals([reply.status, reply.errorCode], ["retrying", "ETLS"]);
    assertEquals((await db.delivery(event.deliveryId!))?.status, "retrying");
    assertEquals(smtp.attempts, 0, "no DATA");
    assertEquals(worker.logs.filter((l) => l.action === "smtp_tls_optional").length, 0);
  }, { env: { SMTP_REQUIRE_TLS: undefined } }); // the harness's local sink opts out; this worker does not
});

test("a worker that opts out of TLS says so at start", async () => {
  await withHarness(({ worker }) => {
    assertEquals(worker.logs.filter((l) => l.action === "smtp_tls_optional" && l.level === "warn").length, 1);
    return Promise.resolve();
  });
});

test("a certificate the worker does not trust is refused: no AUTH, no message", async () => {
  const { key, cert } = await makeCertificates();
  const relay = await startRelay({ key, cert });
  const mailer = createMailer(loadConfig({ ...base, SMTP_PORT: String(relay.port) }).smtp);
  try {
    const error = await sendError(mailer);
    assert(await isTransient(error.failure), JSON.stringify(error.failure));
    assertEquals([relay.seen.auth, relay.seen.mailFrom, relay.seen.data], [[], [], []]);
  } finally {
    mailer.close();
    await relay.close();
  }
});

test("SMTP_REQUIRE_TLS: on by default; plain text only when turned off, credentials in clear only to loopback", () => {
  assertEquals(loadConfig(base).smtp.requireTls, true);
  assertEquals(loadConfig({ ...base, SMTP_REQUIRE_TLS: "false" }).smtp.requireTls, false);
  const remote = { ...base, SMTP_HOST: "smtp.example.com", SMTP_REQUIRE_TLS: "false" };
  try {
    loadConfig(remote);
    throw new Error("accepted credentials in clear to a remote relay");
  } catch (e) {
    assert(e instanceof ConfigError && e.message.includes("SMTP_REQUIRE_TLS=false with SMTP_USER"), String(e));
  }
  assertEquals(loadConfig({ ...remote, SMTP_USER: "", SMTP_PASSWORD: "" }).smtp.requireTls, false);
  assertEquals(loadConfig({ ...remote, SMTP_SECURE: "true" }).smtp.secure, true);
  try {
    loadConfig({ ...base, SMTP_CA_CERT: "not a certificate" });
    throw new Error("accepted a CA that is not PEM");
  } catch (e) {
    assert(e instanceof ConfigError && e.message.includes("SMTP_CA_CERT"), String(e));
  }
});
