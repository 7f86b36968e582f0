/**
 * Faults of the worker processes themselves, with real separate processes (`deno run` of the Edge
 * Function's entry point) against the test database: a worker SIGKILLed while its send is stuck in
 * DATA (the lease is reaped and the mail goes out exactly once), and several workers receiving the
 * same pushes at the same time (no delivery sent twice). Bounded: one delivery, then 20 × 3 pushes.
 */
import { fileURLToPath } from "node:url";
import { loadConfig } from "../functions/_shared/config.ts";
import { sendingLeaseSeconds } from "../functions/email-worker/deliver.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { openDb } from "./support/db.ts";
import { type FaultySmtp, startFaultySmtp } from "./support/faulty_smtp.ts";
import { test } from "./support/harness.ts";
import { envelope, verificationEvent } from "./support/pubsub.ts";
import { waitFor } from "./support/wait.ts";
import { databaseUrl, startWorker, testSweepSecret, workerDatabaseUrl } from "./support/worker.ts";

const root = fileURLToPath(new URL("../", import.meta.url));

/** A worker running as its own process. */
type WorkerProcess = { url: string; child: Deno.ChildProcess; output: () => string; kill(): Promise<void> };

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** Starts `deno run functions/email-worker/index.ts` on a free port and waits until it answers health. */
async function spawnWorker(smtp: FaultySmtp, env: Record<string, string> = {}): Promise<WorkerProcess> {
  const port = freePort();
  const passthrough = ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME"];
  const inherited = Object.fromEntries(
    passthrough.flatMap((k) => Deno.env.get(k) === undefined ? [] : [[k, Deno.env.get(k)!]]),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "functions/email-worker/index.ts"],
    cwd: root,
    clearEnv: true,
    env: {
      ...inherited,
      NO_COLOR: "1",
      PORT: String(port),
      PUBSUB_VERIFY: "false",
      SMTP_HOST: "127.0.0.1",
      SMTP_PORT: String(smtp.port),
      SMTP_SECURE: "false",
      SMTP_REQUIRE_TLS: "false", // a local sink without STARTTLS
      SMTP_FROM: "Email Worker Test <no-reply@worker.test>",
      DELIVERY_STATUS_DATABASE_URL: workerDatabaseUrl(),
      SWEEP_SECRET: testSweepSecret,
      LOG_LEVEL: "warn",
      ...env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Drain both pipes (a full pipe would block the worker) and keep the text for failure messages.
  let text = "";
  for (const stream of [child.stdout, child.stderr]) {
    stream.pipeThrough(new TextDecoderStream()).pipeTo(
      new WritableStream({ write: (s) => void (text = (text + s).slice(-20_000)) }),
    ).catch(() => {});
  }
  let exited = false;
  child.status.then(() => exited = true);
  const url = `http://127.0.0.1:${port}`;
  const until = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`worker exited at start:\n${text}`);
    if (Date.now() > until) {
      child.kill("SIGKILL");
      throw new Error(`worker did not answer health within 30 s:\n${text}`);
    }
    const ok = await fetch(`${url}/email-worker/health`).then(async (r) => {
      await r.body?.cancel();
      return true;
    }, () => false);
    if (ok) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    child,
    output: () => text,
    async kill() {
      if (!exited) child.kill("SIGKILL");
      await child.status;
    },
  };
}

test("a worker SIGKILLed mid-send: the lease is reaped, the sweep sends the mail, exactly once", async () => {
  const smtp = await startFaultySmtp({ mode: { kind: "stall_in_data" } });
  const db = openDb(databaseUrl());
  // SMTP timeouts long enough that the killed worker is still inside DATA when it dies; the lease it
  // takes as the send starts covers the send's bound (1 + 1 + 4 s, and with pooled connections the
  // wait for one and a re-queued try) plus LEASE_SECONDS.
  const sendEnv = {
    SMTP_CONNECTION_TIMEOUT_MS: "1000",
    SMTP_GREETING_TIMEOUT_MS: "1000",
    SMTP_SOCKET_TIMEOUT_MS: "4000",
  };
  const leaseMs = 1000 * sendingLeaseSeconds({
    leaseSeconds: 2,
    smtp: loadConfig({ SMTP_HOST: "127.0.0.1", SMTP_FROM: "w@worker.test", PUBSUB_VERIFY: "false", ...sendEnv }).smtp,
  });
  const killed = await spawnWorker(smtp, { LEASE_SECONDS: "2", ...sendEnv });
  let survivor: ReturnType<typeof startWorker> | undefined;
  try {
    const event = verificationEvent({ deliveryId: `killed-${crypto.randomUUID()}` });
    const id = event.deliveryId!;
    const body = envelope(event);
    const push = fetch(`${killed.url}/email-worker`, { method: "POST", body }).then(
      (r) => r.status,
      () => "no answer",
    );
    await waitFor("the send to stall in DATA", () => smtp.stalled.some((m) => m.deliveryId === id));
    const claimed = await db.delivery(id);
    assertEquals([claimed?.status, claimed?.attempts], ["in_progress", 1]);

    await killed.kill();
    assertEquals(await push, "no answer", "the killed worker never answered the push");
    assertEquals(smtp.mailsFor(id).length, 0, "the killed attempt never completed DATA");
    assertEquals((await db.delivery(id))?.status, "in_progress", "nobody reported the attempt");

    // A second worker (in this process) sweeps once the lease has run out.
    await smtp.setMode({ kind: "accept" });
    survivor = startWorker({ smtpPort: smtp.port, env: { LEASE_SECONDS: "2", LOG_LEVEL: "warn", ...sendEnv } });
    await waitFor("the lease to expire", async () => {
      const [r] = await db.sql`select lease_expires_at < now() as expired from email.deliveries
        where delivery_id = ${id}`;
      return r.expired === true;
    }, { timeoutMs: leaseMs + 4000 });
    const reap = await survivor.sweep();
    const reapCounts = await reap.json();
    assertEquals(reap.status, 200);
    assert(reapCounts.reaped >= 1, JSON.stringify(reapCounts));
    const reaped = await db.delivery(id);
    // Its DATA had begun: the reaper cannot know whether the relay took it (outcome_unknown) and,
    // at least once, retries it.
    assertEquals([reaped?.status, reaped?.attempts, reaped?.last_error_code], ["retrying", 1, "outcome_unknown"]);
    assertEquals(smtp.mailsFor(id).length, 0, "reaping sends nothing by itself");

    await db.makeDue(id);
    const sweep = await survivor.sweep();
    assertEquals(sweep.status, 200);
    await sweep.body?.cancel();
    const sent = await db.delivery(id);
    assertEquals([sent?.status, sent?.attempts], ["sent", 2]);
    const trail = (await db.events(id)).map((e) =>
      `${e.from_status}>${e.to_status}:${e.attempt}:${e.error_code ?? ""}`
    );
    assertEquals(trail.slice(-4), [
      "null>in_progress:1:",
      "in_progress>retrying:1:outcome_unknown",
      "retrying>in_progress:2:",
      "in_progress>sent:2:",
    ]);

    // Pub/Sub redelivers the push the killed worker never answered: acked, nothing sent again.
    const redelivered = await survivor.push(body);
    assertEquals([redelivered.status, (await redelivered.json()).status], [200, "duplicate"]);
    assertEquals(smtp.mailsFor(id).length, 1, "exactly one complete mail");
    assertEquals(smtp.dataStarted.filter((d) => d === id).length, 2, "the killed DATA and the sweep's");
  } finally {
    await killed.kill();
    await survivor?.close();
    await db.close();
    await smtp.close();
  }
});

test("three worker processes receiving the same 20 pushes 3 times each at once: every push acked, every delivery sent once", async () => {
  // A slow server (100 ms per message) keeps sends in flight while the duplicates arrive.
  const smtp = await startFaultySmtp({ mode: { kind: "accept", delayMs: 100 } });
  const db = openDb(databaseUrl());
  const workers: WorkerProcess[] = [];
  try {
    workers.push(...await Promise.all([0, 1, 2].map(() => spawnWorker(smtp))));
    // Warm each process up (modules compiled, tracker pool connected) so that, on a loaded machine, no
    // process is still starting when the burst arrives and every one of them can win a race.
    for (const w of workers) {
      const warm = verificationEvent({ deliveryId: `warm-${crypto.randomUUID()}` });
      const res = await fetch(`${w.url}/email-worker`, {
        method: "POST",
        body: envelope(warm),
        headers: { "content-type": "application/json" },
        signal: AbortSignal.timeout(20_000),
      });
      assertEquals((await res.json()).outcome, "sent");
    }
    const events = Array.from({ length: 20 }, () => verificationEvent({ deliveryId: `multi-${crypto.randomUUID()}` }));
    const bodies = events.map((e) => envelope(e)); // one Pub/Sub message each, redelivered with the same id
    const answers = await Promise.all(events.flatMap((e, i) =>
      [0, 1, 2].map(async (copy) => {
        const w = workers[(i + copy) % workers.length];
        // The first copy of each message gets a short head start, so each process wins about a third
        // of the races whatever the load; the duplicates still arrive while its send is in flight.
        if (copy > 0) await new Promise((r) => setTimeout(r, 50));
        const res = await fetch(`${w.url}/email-worker`, {
          method: "POST",
          body: bodies[i],
          headers: { "content-type": "application/json" },
          signal: AbortSignal.timeout(20_000),
        });
        return { id: e.deliveryId!, worker: w.url, status: res.status, body: await res.json() };
      })
    ));
    for (const a of answers) assert(a.status >= 200 && a.status < 300, JSON.stringify(a));
    for (const e of events) {
      const id = e.deliveryId!;
      const mine = answers.filter((a) => a.id === id);
      const outcomes = mine.map((a) => a.body.outcome ?? a.body.status).sort();
      assertEquals(outcomes, ["duplicate", "duplicate", "sent"], `${id}: ${JSON.stringify(mine)}`);
      assertEquals(smtp.mailsFor(id).length, 1, `exactly one mail for ${id}`);
      const d = await db.delivery(id);
      assertEquals([d?.status, d?.attempts], ["sent", 1]);
    }
    // The race was real: duplicates arrived while another process was still sending, and more than
    // one process won some deliveries.
    assert(answers.some((a) => a.body.deliveryStatus === "in_progress"), "some duplicates met an in-flight send");
    assert(new Set(answers.filter((a) => a.body.outcome === "sent").map((a) => a.worker)).size >= 2);
  } catch (error) {
    for (const w of workers) console.error(w.output());
    throw error;
  } finally {
    await Promise.all(workers.map((w) => w.kill()));
    await db.close();
    await smtp.close();
  }
});
