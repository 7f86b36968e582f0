/**
 * Parts (a) and (d) of `npm run bench`, run by scripts/bench.mjs with Deno: deliveries pushed over
 * real HTTP through the worker's real handler (signed OIDC tokens, the Pub/Sub envelope, rendering,
 * nodemailer) to a local SMTP sink, with tracking on (the tracker on DATABASE_URL) and off (no URL:
 * the no-op tracker), and the SMTP leg alone (the worker's mailer sending the same rendered messages
 * straight to the sink with the same number in flight: the limit of the full path), each with SMTP
 * connections pooled (the default) and with a connection per message (SMTP_POOL_MAX_CONNECTIONS=0,
 * the behaviour before pooling), at each concurrency, in alternating rounds of one run. Every cell
 * checks that the sink received exactly the messages it sent (a run that loses work is invalid).
 *
 * The sink (bench/lib/smtp_sink.mjs) is a raw SMTP server on node:net in its own process; its own
 * capacity is measured first by a raw client pipelining the worker's exact message bytes, so the
 * figures show it is not the bottleneck. The pushes are made from a Web Worker (another thread), so
 * the client's work does not count against the handler. Then a short counting pass through a TCP proxy in front of
 * Postgres counts the frontend's round trips (each Sync or simple Query message).
 *   deno run -A bench/e2e.ts --deliveries=300 --concurrency=8,32 --rounds=2 --out=/tmp/e2e.json
 */
import { loadConfig } from "../functions/_shared/config.ts";
import { createLogger } from "../functions/_shared/log.ts";
import { createMailer, type Mailer } from "../functions/_shared/mailer.ts";
import { createStatusTracker } from "../functions/_shared/tracker.ts";
import { checkWorkflow, renderEmail } from "../functions/_shared/workflows/registry.ts";
import { createHandler } from "../functions/email-worker/handler.ts";
import { startJwks, testAudience, testServiceAccount } from "../tests/support/jwks.ts";
import { envelope, verificationEvent } from "../tests/support/pubsub.ts";

const args = Object.fromEntries(Deno.args.map((a) => a.replace(/^--/, "").split("=")));
const deliveries = Number(args.deliveries ?? 300);
const concurrencies = String(args.concurrency ?? "8,32").split(",").map(Number);
const rounds = Number(args.rounds ?? 2);
const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

type SinkStat = { accepted: number; connections: number; bytes: number };

/** Starts bench/lib/smtp_sink.mjs under node; `ask` sends one control command and reads its JSON answer. */
async function startSink() {
  const child = new Deno.Command("node", {
    args: [new URL("./lib/smtp_sink.mjs", import.meta.url).pathname],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  async function line(): Promise<string> {
    for (;;) {
      const eol = pending.indexOf("\n");
      if (eol >= 0) {
        const l = pending.slice(0, eol);
        pending = pending.slice(eol + 1);
        return l;
      }
      const { value, done } = await reader.read();
      if (done) throw new Error("the SMTP sink exited");
      pending += value;
    }
  }
  const { port } = JSON.parse(await line()) as { port: number };
  async function ask<T>(command: string): Promise<T> {
    await writer.write(new TextEncoder().encode(command + "\n"));
    return JSON.parse(await line()) as T;
  }
  return {
    port,
    pid: child.pid,
    stat: () => ask<SinkStat>("stat"),
    sample: async () => Uint8Array.from(atob((await ask<{ sample: string }>("sample")).sample), (c) => c.charCodeAt(0)),
    async close() {
      await writer.close();
      await child.status;
    },
  };
}

/**
 * CPU time (ms) from /proc (Linux; zeros elsewhere): the bench process's main thread (the worker's
 * handler, tracker and mailer: the thread one Edge Runtime isolate runs on), its other threads (the
 * push client's Web Worker, I/O, GC), every Postgres process, and the sink's process. Sampled around
 * each cell, it says where each delivery's CPU goes and which thread bounds the rate.
 */
type CpuTimes = { main: number; other: number; postgres: number; sink: number };
const hz = 100; // USER_HZ
function ticks(statPath: string): number {
  try {
    const s = Deno.readTextFileSync(statPath);
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
}
function cpuTimes(sinkPid: number): CpuTimes {
  let all = 0;
  let postgresTicks = 0;
  try {
    for (const task of Deno.readDirSync("/proc/self/task")) all += ticks(`/proc/self/task/${task.name}/stat`);
    for (const p of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(p.name)) continue;
      try {
        if (Deno.readTextFileSync(`/proc/${p.name}/comm`).trim() === "postgres") {
          postgresTicks += ticks(`/proc/${p.name}/stat`);
        }
      } catch { /* gone meanwhile */ }
    }
  } catch {
    return { main: 0, other: 0, postgres: 0, sink: 0 };
  }
  const main = ticks(`/proc/self/task/${Deno.pid}/stat`);
  const ms = (t: number) => (t * 1000) / hz;
  return {
    main: ms(main),
    other: ms(all - main),
    postgres: ms(postgresTicks),
    sink: ms(ticks(`/proc/${sinkPid}/stat`)),
  };
}

/**
 * The sink's capacity: `n` copies of `message` over `concurrency` raw connections, each a plain SMTP
 * transaction (MAIL, RCPT and DATA pipelined, the message after the 354), no MIME work at all.
 */
async function rawBlast(port: number, message: Uint8Array, n: number, concurrency: number) {
  const enc = new TextEncoder();
  const envelopeCommands = enc.encode("MAIL FROM:<bench@bench.test>\r\nRCPT TO:<sink@bench.test>\r\nDATA\r\n");
  const body = new Uint8Array(message.length + 3);
  body.set(message);
  body.set(enc.encode(".\r\n"), message.length); // the sample ends with CRLF
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    const buf = new Uint8Array(64 * 1024);
    let text = "";
    /** Waits for `count` final reply lines ("ddd " lines; "ddd-" continues a reply). */
    const replies = async (count: number) => {
      for (;;) {
        let complete = 0;
        let at = 0;
        for (let eol = text.indexOf("\r\n"); eol >= 0; eol = text.indexOf("\r\n", at)) {
          if (text[at + 3] === " ") complete++;
          at = eol + 2;
          if (complete === count) {
            text = text.slice(at);
            return;
          }
        }
        const read = await conn.read(buf);
        if (read === null) throw new Error("the sink closed a connection");
        text += new TextDecoder().decode(buf.subarray(0, read));
      }
    };
    await replies(1);
    await conn.write(enc.encode("EHLO raw.bench\r\n"));
    await replies(1);
    while (next < n) {
      next++;
      await conn.write(envelopeCommands);
      await replies(3);
      await conn.write(body);
      await replies(1);
    }
    await conn.write(enc.encode("QUIT\r\n"));
    await replies(1);
    conn.close();
  }));
  return { n, seconds: (performance.now() - started) / 1000 };
}

/** A TCP proxy to Postgres counting the client's round trips (Sync and simple Query messages). */
function startCountingProxy(target: URL) {
  const counter = { roundTrips: 0 };
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const client of listener) {
      (async () => {
        const server = await Deno.connect({ hostname: target.hostname, port: Number(target.port || 5432) });
        const down = server.readable.pipeTo(client.writable).catch(() => {});
        let buffered = new Uint8Array(0);
        let startup = true;
        const up = client.readable.pipeThrough(
          new TransformStream<Uint8Array, Uint8Array>({
            transform(chunk, ctl) {
              const merged = new Uint8Array(buffered.length + chunk.length);
              merged.set(buffered);
              merged.set(chunk, buffered.length);
              let i = 0;
              for (;;) {
                if (startup) {
                  if (merged.length - i < 4) break;
                  const len = new DataView(merged.buffer, merged.byteOffset + i).getInt32(0);
                  if (merged.length - i < len) break;
                  i += len;
                  startup = false;
                  continue;
                }
                if (merged.length - i < 5) break;
                const type = merged[i];
                const len = new DataView(merged.buffer, merged.byteOffset + i + 1).getInt32(0);
                if (merged.length - i < len + 1) break;
                if (type === 0x53 /* S: Sync */ || type === 0x51 /* Q: Query */) counter.roundTrips++;
                i += len + 1;
              }
              buffered = merged.slice(i);
              ctl.enqueue(chunk);
            },
          }),
        ).pipeTo(server.writable).catch(() => {});
        await Promise.all([up, down]);
      })().catch(() => {});
    }
  })().catch(() => {});
  const url = new URL(target.toString());
  url.hostname = "127.0.0.1";
  url.port = String((listener.addr as Deno.NetAddr).port);
  return { url: url.toString(), counter, close: () => listener.close() };
}

type WorkerProcess = { url: string; close(): Promise<void> };

/** The worker's environment: the sink, and a connection per message when `pooled` is false. */
function workerEnv(smtpPort: number, jwksUrl: string, dbUrl: string | undefined, pooled: boolean) {
  return {
    PUBSUB_VERIFY: "true",
    PUBSUB_JWKS_URL: jwksUrl,
    PUBSUB_AUDIENCE: testAudience,
    PUBSUB_SERVICE_ACCOUNTS: testServiceAccount,
    SMTP_HOST: "127.0.0.1",
    SMTP_PORT: String(smtpPort),
    SMTP_SECURE: "false",
    SMTP_REQUIRE_TLS: "false", // a local sink without STARTTLS
    SMTP_FROM: "Bench <no-reply@bench.test>",
    LOG_LEVEL: "warn",
    ...(pooled ? {} : { SMTP_POOL_MAX_CONNECTIONS: "0" }),
    ...(dbUrl ? { DELIVERY_STATUS_DATABASE_URL: dbUrl } : {}),
  };
}

function startWorker(smtpPort: number, jwksUrl: string, dbUrl: string | undefined, pooled = true): WorkerProcess {
  const config = loadConfig(workerEnv(smtpPort, jwksUrl, dbUrl, pooled));
  const logger = createLogger("email-worker", { level: config.logLevel, sink: () => {} });
  const tracker = createStatusTracker(config.tracking, { logger: logger.child("tracker") });
  const mailer = createMailer(config.smtp);
  const handler = createHandler({ config, tracker, mailer, logger });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, handler);
  return {
    url: `http://127.0.0.1:${server.addr.port}/email-worker`,
    async close() {
      await server.shutdown();
      mailer.close();
      await tracker.close();
    },
  };
}

function quantile(values: number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}
const r2 = (x: number) => Math.round(x * 100) / 100;

type Run = { deliveries: number; failures: number; seconds: number; latencies: number[] };

/** Runs `n` jobs with `concurrency` in flight, timing each; a job returns false when it failed. */
async function inFlight(n: number, concurrency: number, job: (i: number) => Promise<boolean>): Promise<Run> {
  const latencies: number[] = [];
  let next = 0;
  let failures = 0;
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) {
      const i = next++;
      const t = performance.now();
      if (!(await job(i))) failures++;
      latencies.push(performance.now() - t);
    }
  }));
  return { deliveries: n, failures, seconds: (performance.now() - start) / 1000, latencies };
}

/** The HTTP client, in a Web Worker of its own (bench/lib/push_client.ts). */
const client = new Worker(new URL("./lib/push_client.ts", import.meta.url).href, { type: "module" });

/** Pushes `n` fresh deliveries from the client's thread; every one must be answered 200 and sent. */
function pushMany(worker: WorkerProcess, token: string, n: number, concurrency: number): Promise<Run> {
  const bodies = Array.from(
    { length: n },
    () => envelope(verificationEvent({ deliveryId: `bench-${crypto.randomUUID()}` })),
  );
  return new Promise((resolve) => {
    client.onmessage = (e: MessageEvent<{ seconds: number; latencies: number[]; failures: number }>) =>
      resolve({ deliveries: n, ...e.data });
    client.postMessage({ url: worker.url, token, bodies, concurrency });
  });
}

/** The SMTP leg alone: the same messages the worker renders, sent by the worker's mailer straight to the sink. */
function mailMany(mailer: Mailer, n: number, concurrency: number): Promise<Run> {
  const messages = Array.from({ length: n }, () => {
    const event = verificationEvent({ deliveryId: `bench-${crypto.randomUUID()}` });
    const check = checkWorkflow(event.workflow, event.data);
    if (!check.ok) throw new Error(check.reason);
    return { to: event.recipient, ...renderEmail(check.email), headers: { "X-Email-Delivery-Id": event.deliveryId! } };
  });
  return inFlight(n, concurrency, (i) => mailer.send(messages[i]).then(() => true, () => false));
}

type Variant = "smtp_alone" | "untracked" | "tracked";
type Pooling = "pooled" | "per_message";

const sink = await startSink();
const jwks = await startJwks();
const token = await jwks.sign({}, { expiresIn: "1h" });
const poolings: Pooling[] = ["pooled", "per_message"];
const variants: Variant[] = ["smtp_alone", "untracked", "tracked"];
const smtpConfig = (pooled: boolean) => loadConfig(workerEnv(sink.port, jwks.url, undefined, pooled)).smtp;
const mailers = { pooled: createMailer(smtpConfig(true)), per_message: createMailer(smtpConfig(false)) };
const workers = {
  pooled: {
    untracked: startWorker(sink.port, jwks.url, undefined, true),
    tracked: startWorker(sink.port, jwks.url, databaseUrl, true),
  },
  per_message: {
    untracked: startWorker(sink.port, jwks.url, undefined, false),
    tracked: startWorker(sink.port, jwks.url, databaseUrl, false),
  },
};
const acc = new Map<
  string,
  { n: number; s: number; lat: number[]; failures: number; connections: number; cpu: CpuTimes }
>();
const capacity: { concurrency: number; messages: number; per_second: number }[] = [];
let messageBytes = 0;
let lost = 0;

/** Runs one cell and checks the sink received exactly what it sent. */
async function cell(
  pooling: Pooling,
  variant: Variant,
  concurrency: number,
  n: number,
): Promise<Run & { connections: number; cpu: CpuTimes }> {
  const before = await sink.stat();
  const cpu0 = cpuTimes(sink.pid);
  const run = variant === "smtp_alone"
    ? await mailMany(mailers[pooling], n, concurrency)
    : await pushMany(workers[pooling][variant], token, n, concurrency);
  const cpu1 = cpuTimes(sink.pid);
  const after = await sink.stat();
  const received = after.accepted - before.accepted;
  if (received !== n - run.failures || run.failures) {
    lost += Math.abs(n - received);
    console.error(
      `  ${pooling} ${variant} @${concurrency}: ${run.failures} failed, the sink received ${received} of ${n}`,
    );
  }
  const cpu = {
    main: cpu1.main - cpu0.main,
    other: cpu1.other - cpu0.other,
    postgres: cpu1.postgres - cpu0.postgres,
    sink: cpu1.sink - cpu0.sink,
  };
  return { ...run, connections: after.connections - before.connections, cpu };
}

try {
  // Warm up every path (JWKS fetch, SMTP connections, database pool, JIT), then take a sample message.
  for (const pooling of poolings) {
    for (const variant of variants) await cell(pooling, variant, 8, Math.min(50, deliveries));
  }
  const sample = await sink.sample();
  messageBytes = sample.length;

  console.log(`  the sink alone (raw pipelining client, ${messageBytes}-byte messages as the worker sends them):`);
  for (const c of concurrencies) {
    const n = Math.max(3000, deliveries * 10);
    const before = await sink.stat();
    const r = await rawBlast(sink.port, sample, n, c);
    const received = (await sink.stat()).accepted - before.accepted;
    if (received !== n) throw new Error(`the sink received ${received} of ${n} raw messages`);
    capacity.push({ concurrency: c, messages: n, per_second: r2(n / r.seconds) });
    console.log(`    ${c} in flight: ${n} messages in ${r2(r.seconds)} s = ${r2(n / r.seconds)}/s`);
  }

  for (const c of concurrencies) {
    const order = poolings.flatMap((p) => variants.map((v) => [p, v] as const));
    for (let r = 0; r < rounds; r++) {
      for (const [pooling, variant] of r % 2 === 0 ? order : [...order].reverse()) {
        const res = await cell(pooling, variant, c, deliveries);
        const key = `${pooling}/${variant}/${c}`;
        const a = acc.get(key) ??
          { n: 0, s: 0, lat: [], failures: 0, connections: 0, cpu: { main: 0, other: 0, postgres: 0, sink: 0 } };
        a.n += res.deliveries;
        a.s += res.seconds;
        a.lat.push(...res.latencies);
        a.failures += res.failures;
        a.connections += res.connections;
        for (const k of ["main", "other", "postgres", "sink"] as const) a.cpu[k] += res.cpu[k];
        acc.set(key, a);
        console.log(
          `  ${String(c).padStart(2)} in flight, ${pooling.padEnd(11)} ${variant.padEnd(10)}: ${res.deliveries} in ${
            r2(res.seconds)
          } s = ${r2(res.deliveries / res.seconds)}/s, p50 ${
            r2(quantile(res.latencies, 0.5))
          } ms, ${res.connections} SMTP connections`,
        );
      }
    }
  }
} finally {
  for (const w of Object.values(workers)) {
    await w.untracked.close();
    await w.tracked.close();
  }
  mailers.pooled.close();
  mailers.per_message.close();
}

// Round trips: a short tracked run through the counting proxy.
const proxy = startCountingProxy(new URL(databaseUrl));
const counted = startWorker(sink.port, jwks.url, proxy.url);
let roundTrips = 0;
const countN = Math.min(100, deliveries);
try {
  await pushMany(counted, token, 5, 8); // opens the pool's connections
  const before = proxy.counter.roundTrips;
  const res = await pushMany(counted, token, countN, 8);
  if (res.failures) throw new Error(`${res.failures} pushes failed in the counting pass`);
  roundTrips = (proxy.counter.roundTrips - before) / countN;
} finally {
  await counted.close();
  proxy.close();
}
client.terminate();
await jwks.close();
const total = await sink.stat();
await sink.close();

const summary = (pooling: Pooling, variant: Variant, c: number) => {
  const a = acc.get(`${pooling}/${variant}/${c}`)!;
  return {
    pooling,
    variant,
    concurrency: c,
    deliveries: a.n,
    failures: a.failures,
    per_second: r2(a.n / a.s),
    p50_ms: r2(quantile(a.lat, 0.5)),
    p99_ms: r2(quantile(a.lat, 0.99)),
    smtp_connections: a.connections,
    // CPU ms per delivery by thread or process, and how busy the worker's thread was (1 = always).
    cpu_ms_per_delivery: {
      worker_thread: r2(a.cpu.main / a.n),
      bench_other_threads: r2(a.cpu.other / a.n),
      postgres: r2(a.cpu.postgres / a.n),
      sink: r2(a.cpu.sink / a.n),
    },
    worker_thread_busy: r2(a.cpu.main / 1000 / a.s),
  };
};
const cells = concurrencies.flatMap((c) => poolings.flatMap((p) => variants.map((v) => summary(p, v, c))));
const find = (p: Pooling, v: Variant, c: number) =>
  cells.find((x) => x.pooling === p && x.variant === v && x.concurrency === c)!;
const ratios = concurrencies.flatMap((c) =>
  poolings.map((p) => ({
    pooling: p,
    concurrency: c,
    end_to_end_over_smtp_alone: r2(find(p, "tracked", c).per_second / find(p, "smtp_alone", c).per_second),
    tracked_over_untracked: r2(find(p, "tracked", c).per_second / find(p, "untracked", c).per_second),
  }))
);
// The figures scripts/bench.mjs has always printed: pooled, at the first concurrency.
const c0 = concurrencies[0];
const legacy = (v: Variant) => {
  const x = find("pooled", v, c0);
  return {
    deliveries: x.deliveries,
    failures: x.failures,
    per_second: x.per_second,
    p50_ms: x.p50_ms,
    p99_ms: x.p99_ms,
    round_trips_per_delivery: v === "tracked" ? r2(roundTrips) : 0,
  };
};
const out = {
  concurrency: c0,
  concurrencies,
  rounds,
  off: legacy("untracked"),
  on: legacy("tracked"),
  ratio: 0,
  added_p50_ms: 0,
  added_p99_ms: 0,
  smtp_accepted: total.accepted,
  sink: {
    what: "raw SMTP server on node:net in its own process (bench/lib/smtp_sink.mjs): PIPELINING, no parsing",
    message_bytes: messageBytes,
    capacity,
  },
  cells,
  ratios,
  lost,
};
out.ratio = r2(out.on.per_second / out.off.per_second);
out.added_p50_ms = r2(out.on.p50_ms - out.off.p50_ms);
out.added_p99_ms = r2(out.on.p99_ms - out.off.p99_ms);
const failed = cells.some((x) => x.failures) || lost > 0;
if (failed) console.error("failed or lost deliveries: this run is invalid");
if (args.out) await Deno.writeTextFile(args.out, JSON.stringify(out, null, 2));
else console.log(JSON.stringify(out, null, 2));
Deno.exit(failed ? 1 : 0);
