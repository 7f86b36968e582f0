/**
 * SMTP connection reuse (issue 12, "SMTP connections"), against a real SMTP server on loopback
 * (tests/support/faulty_smtp.ts, on node:net, counting the connections it accepts and the copies
 * of each message it receives): connections are reused and bounded, closed after their message
 * budget or when idle, replaced when the relay closes them, re-opened after errors, and a
 * connection the relay drops in the middle of DATA ends that send with one recorded outcome and no
 * second copy: the pool never hands a message whose DATA began to another connection.
 */
import { ConfigError, loadConfig } from "../functions/_shared/config.ts";
import { createMailer, type Mailer, sendBoundMs, SmtpError } from "../functions/_shared/mailer.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { openDb } from "./support/db.ts";
import { type FaultySmtp, startFaultySmtp } from "./support/faulty_smtp.ts";
import { test } from "./support/harness.ts";
import { envelope, verificationEvent } from "./support/pubsub.ts";
import { sleep, waitFor } from "./support/wait.ts";
import { databaseUrl, startWorker } from "./support/worker.ts";

/** The worker's environment for `smtp`. */
const mailerEnv = (smtp: FaultySmtp) => ({
  PUBSUB_VERIFY: "false",
  SMTP_HOST: "127.0.0.1",
  SMTP_PORT: String(smtp.port),
  SMTP_SECURE: "false",
  SMTP_REQUIRE_TLS: "false", // a local server without STARTTLS
  SMTP_FROM: "Worker <no-reply@worker.test>",
  SMTP_CONNECTION_TIMEOUT_MS: "2000",
  SMTP_GREETING_TIMEOUT_MS: "2000",
  SMTP_SOCKET_TIMEOUT_MS: "2000",
});

/** A mailer configured from the environment, as the worker's is, pointed at `smtp`. */
function mailerFor(smtp: FaultySmtp, env: Record<string, string> = {}): Mailer {
  return createMailer(loadConfig({ ...mailerEnv(smtp), ...env }).smtp);
}

/** One message, told apart from the others by its X-Email-Delivery-Id header. */
const mail = (id: string) => ({
  to: "ada@example.com",
  subject: "Pooled",
  text: "t",
  html: "<p>h</p>",
  headers: { "X-Email-Delivery-Id": id },
});

async function withServer(fn: (smtp: FaultySmtp) => Promise<void>): Promise<void> {
  const smtp = await startFaultySmtp();
  try {
    await fn(smtp);
  } finally {
    await smtp.close();
  }
}

/** Copies of one message the server received in full (answered 250 or not). */
const copies = (smtp: FaultySmtp, id: string) =>
  smtp.accepted.filter((m) => m.deliveryId === id).length + smtp.stalled.filter((m) => m.deliveryId === id).length;

test("20 messages sent one after another travel over one connection", async () => {
  await withServer(async (smtp) => {
    const mailer = mailerFor(smtp);
    try {
      for (let i = 0; i < 20; i++) await mailer.send(mail(`seq-${i}`));
      assertEquals(smtp.accepted.length, 20);
      assertEquals(smtp.connections, 1);
      assertEquals(new Set(smtp.accepted.map((m) => m.session)).size, 1);
    } finally {
      mailer.close();
    }
  });
});

test("the pool is bounded: 12 sends at once with SMTP_POOL_MAX_CONNECTIONS=2 open 2 connections, all are sent", async () => {
  await withServer(async (smtp) => {
    smtp.mode = { kind: "accept", delayMs: 30 }; // every send takes a while, so they overlap
    const mailer = mailerFor(smtp, { SMTP_POOL_MAX_CONNECTIONS: "2" });
    try {
      await Promise.all(Array.from({ length: 12 }, (_, i) => mailer.send(mail(`bounded-${i}`))));
      assertEquals(smtp.accepted.length, 12);
      assertEquals([smtp.connections, smtp.peakOpen], [2, 2]);
    } finally {
      mailer.close();
    }
  });
});

test("a send that finds no free pooled connection within SMTP_CONNECTION_TIMEOUT_MS fails transiently, before any SMTP", async () => {
  await withServer(async (smtp) => {
    smtp.mode = { kind: "stall_in_data" }; // the one connection never finishes its message
    const mailer = mailerFor(smtp, {
      SMTP_POOL_MAX_CONNECTIONS: "1",
      SMTP_CONNECTION_TIMEOUT_MS: "300",
      SMTP_SOCKET_TIMEOUT_MS: "1500",
    });
    try {
      const first = mailer.send(mail("holds-the-connection")).catch((e) => e);
      const started = performance.now();
      const waited = await mailer.send(mail("waits")).catch((e) => e);
      const ms = performance.now() - started;
      assert(waited instanceof SmtpError, String(waited));
      assertEquals(waited.failure.transportCode, "ETIMEDOUT");
      assert(ms >= 250 && ms < 1200, `waited ${Math.round(ms)} ms for a 300 ms bound`);
      assertEquals(smtp.dataStarted, ["holds-the-connection"]);
      assertEquals((await first).failure.transportCode, "ETIMEDOUT"); // the stalled one, by its socket timeout
      assertEquals(smtp.connections, 1);
    } finally {
      mailer.close();
    }
  });
});

test("a connection carries SMTP_POOL_MAX_MESSAGES messages, then a new one takes over", async () => {
  await withServer(async (smtp) => {
    const mailer = mailerFor(smtp, { SMTP_POOL_MAX_MESSAGES: "3" });
    try {
      for (let i = 0; i < 7; i++) await mailer.send(mail(`budget-${i}`));
      assertEquals(smtp.accepted.length, 7);
      assertEquals(smtp.accepted.map((m) => m.session), [1, 1, 1, 2, 2, 2, 3]);
    } finally {
      mailer.close();
    }
  });
});

test("a connection unused for SMTP_POOL_IDLE_MS is closed by the worker; the next send opens a new one", async () => {
  await withServer(async (smtp) => {
    // The socket timeout would end an idle session too: far beyond the wait below.
    const mailer = mailerFor(smtp, { SMTP_POOL_IDLE_MS: "200", SMTP_SOCKET_TIMEOUT_MS: "20000" });
    try {
      await mailer.send(mail("before-idle"));
      assertEquals(smtp.open, 1);
      await waitFor("the idle connection to be closed", () => smtp.open === 0, { timeoutMs: 1500 });
      await mailer.send(mail("after-idle"));
      assertEquals(smtp.accepted.map((m) => m.session), [1, 2]);
    } finally {
      mailer.close();
    }
  });
});

const relayEndings = [
  {
    name: "the relay closed while idle is replaced transparently",
    // 421 and the end of the session, as a relay's idle timeout does
    end: (smtp: FaultySmtp) => smtp.closeIdle(),
  },
  {
    name: "the relay drops as the next message starts (at MAIL FROM) is replaced: sent once",
    // the relay gave up on the session as it is reused
    end: (smtp: FaultySmtp) => smtp.setMode({ kind: "drop_reused_at_mail" }),
  },
];
for (const ending of relayEndings) {
  test(`a pooled connection ${ending.name}`, async () => {
    await withServer(async (smtp) => {
      const mailer = mailerFor(smtp);
      try {
        await mailer.send(mail("first"));
        await ending.end(smtp);
        const sent = await mailer.send(mail("second"));
        assert(sent.response.startsWith("250"), sent.response);
        assertEquals(smtp.accepted.map((m) => [m.deliveryId, m.session]), [["first", 1], ["second", 2]]);
        assertEquals(smtp.dataStarted, ["first", "second"]);
      } finally {
        mailer.close();
      }
    });
  });
}

test("a reused session gone silent before the message: one re-queue onto a new connection, and the send ends within its bound", async () => {
  await withServer(async (smtp) => {
    const env = { SMTP_CONNECTION_TIMEOUT_MS: "300", SMTP_GREETING_TIMEOUT_MS: "300", SMTP_SOCKET_TIMEOUT_MS: "600" };
    const mailer = mailerFor(smtp, env);
    try {
      await mailer.send(mail("first"));
      smtp.mode = { kind: "gone_silent" }; // the session stops answering; new connections close at once
      const started = performance.now();
      const e = await mailer.send(mail("second")).catch((e) => e);
      const ms = performance.now() - started;
      assert(e instanceof SmtpError, String(e));
      assertEquals(e.failure.transportCode, "ECONNECTION"); // transient: the delivery retries
      assertEquals(smtp.connections, 2, "the silent session, then one new connection (one re-queue)");
      assertEquals(smtp.dataStarted, ["first"]);
      const bound = sendBoundMs(loadConfig({ ...mailerEnv(smtp), ...env }).smtp);
      assert(ms >= 600 * 0.9 && ms < bound, `took ${Math.round(ms)} ms; bound ${bound} ms`);
    } finally {
      mailer.close();
    }
  });
});

test("after errors the pool connects again: refused connections, then a working relay", async () => {
  await withServer(async (smtp) => {
    const mailer = mailerFor(smtp);
    try {
      await mailer.send(mail("before"));
      await smtp.setMode({ kind: "refuse" }); // stops listening and cuts the open session
      const e = await mailer.send(mail("refused")).catch((e) => e);
      assert(e instanceof SmtpError, String(e));
      await smtp.setMode({ kind: "accept" });
      await mailer.send(mail("after"));
      assertEquals(smtp.accepted.map((m) => m.deliveryId), ["before", "after"]);
      assertEquals(smtp.mailsFor("refused").length, 0);
    } finally {
      mailer.close();
    }
  });
});

for (
  const drop of [
    { mode: "drop_after_data" as const, what: "after the whole message arrived, before its reply" },
    { mode: "drop_in_data" as const, what: "after the first bytes of the message" },
  ]
) {
  test(`a reused connection dropped mid-DATA (${drop.what}): one recorded outcome, no second copy, the next push reconnects`, async () => {
    const smtp = await startFaultySmtp();
    const worker = startWorker({
      smtpPort: smtp.port,
      env: { SMTP_SOCKET_TIMEOUT_MS: "2000", LOG_LEVEL: "warn" },
    });
    const db = openDb(databaseUrl());
    const push = async () => {
      const event = verificationEvent({ deliveryId: `pool-${crypto.randomUUID()}` });
      const res = await worker.push(envelope(event));
      return { id: event.deliveryId!, status: res.status, body: await res.json() };
    };
    try {
      const first = await push(); // opens the pooled connection
      assertEquals([first.status, first.body.outcome], [200, "sent"]);
      smtp.mode = { kind: drop.mode };

      const dropped = await push(); // over the same connection, which the relay cuts mid-DATA
      assertEquals([dropped.status, dropped.body.outcome, dropped.body.status, dropped.body.tracked], [
        200,
        "transient_failure",
        "retrying",
        true,
      ], JSON.stringify(dropped.body));
      await sleep(500); // longer than any re-queue delay of the pool
      assertEquals(smtp.dataStarted.filter((id) => id === dropped.id).length, 1, "DATA began once");
      assertEquals(copies(smtp, dropped.id), drop.mode === "drop_after_data" ? 1 : 0, "copies received");
      assertEquals(smtp.accepted.map((m) => m.deliveryId), [first.id]);
      const outcomes = (await db.events(dropped.id)).filter((e) => e.from_status === "in_progress");
      assertEquals(outcomes.map((e) => `${e.to_status}:${e.attempt}`), ["retrying:1"]);
      assertEquals((await db.delivery(dropped.id))?.attempts, 1);

      smtp.mode = { kind: "accept" };
      const next = await push(); // a fresh connection
      assertEquals(next.body.outcome, "sent");
      assertEquals(smtp.accepted.map((m) => [m.deliveryId, m.session]), [[first.id, 1], [next.id, 2]]);
    } finally {
      await worker.close();
      await db.close();
      await smtp.close();
    }
  });
}

test("the worker reuses one SMTP connection across pushes", async () => {
  const smtp = await startFaultySmtp();
  const worker = startWorker({ smtpPort: smtp.port, env: { LOG_LEVEL: "warn" } });
  try {
    for (let i = 0; i < 5; i++) {
      const res = await worker.push(envelope(verificationEvent({ deliveryId: `reuse-${crypto.randomUUID()}` })));
      assertEquals((await res.json()).outcome, "sent");
    }
    assertEquals([smtp.accepted.length, smtp.connections], [5, 1]);
  } finally {
    await worker.close();
    await smtp.close();
  }
});

test("SMTP_POOL_MAX_CONNECTIONS=0 opens a connection per message (no reuse)", async () => {
  await withServer(async (smtp) => {
    const mailer = mailerFor(smtp, { SMTP_POOL_MAX_CONNECTIONS: "0" });
    try {
      for (let i = 0; i < 3; i++) await mailer.send(mail(`unpooled-${i}`));
      assertEquals([smtp.accepted.length, smtp.connections], [3, 3]);
    } finally {
      mailer.close();
    }
  });
});

test("SMTP_POOL_*: 5 connections, 100 messages each, 5 s idle by default; a wrong value stops start-up naming it", () => {
  const minimal = { PUBSUB_VERIFY: "false", SMTP_HOST: "smtp.test", SMTP_FROM: "a@b.test" };
  assertEquals(loadConfig(minimal).smtp.pool, { maxConnections: 5, maxMessages: 100, idleMs: 5000 });
  const set = { SMTP_POOL_MAX_CONNECTIONS: "0", SMTP_POOL_MAX_MESSAGES: "7", SMTP_POOL_IDLE_MS: "250" };
  assertEquals(loadConfig({ ...minimal, ...set }).smtp.pool, { maxConnections: 0, maxMessages: 7, idleMs: 250 });
  for (
    const [name, value] of [
      ["SMTP_POOL_MAX_CONNECTIONS", "-1"],
      ["SMTP_POOL_MAX_CONNECTIONS", "many"],
      ["SMTP_POOL_MAX_MESSAGES", "0"],
      ["SMTP_POOL_IDLE_MS", "5s"],
    ]
  ) {
    try {
      loadConfig({ ...minimal, [name]: value });
      throw new Error(`accepted ${name}=${value}`);
    } catch (e) {
      assert(e instanceof ConfigError && e.message.includes(name), String(e));
    }
  }
});
