/**
 * Parts (a) and (d) of `npm run bench`, run by scripts/bench.mjs with Deno: N deliveries pushed over
 * real HTTP through the worker's real handler (signed OIDC tokens, the Pub/Sub envelope, rendering,
 * nodemailer) to a local SMTP sink, with tracking on (the tracker on DATABASE_URL) and off (no URL:
 * the no-op tracker), alternating rounds in one run. Then a short counting pass through a TCP proxy in
 * front of Postgres that counts the frontend's round trips (each Sync or simple Query message).
 *   deno run -A bench/e2e.ts --deliveries=400 --concurrency=8 --out=/tmp/e2e.json
 */
import { SMTPServer } from "smtp-server";
import { loadConfig } from "../functions/_shared/config.ts";
import { createLogger } from "../functions/_shared/log.ts";
import { createMailer } from "../functions/_shared/mailer.ts";
import { createStatusTracker } from "../functions/_shared/tracker.ts";
import { createHandler } from "../functions/email-worker/handler.ts";
import { startJwks, testAudience, testServiceAccount } from "../tests/support/jwks.ts";
import { envelope, verificationEvent } from "../tests/support/pubsub.ts";

const args = Object.fromEntries(Deno.args.map((a) => a.replace(/^--/, "").split("=")));
const deliveries = Number(args.deliveries ?? 400);
const concurrency = Number(args.concurrency ?? 8);
const rounds = Number(args.rounds ?? 2);
const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

/** A light SMTP sink: accepts everything and only counts, so the sink's cost does not dilute the ratio. */
async function startSink() {
  const state = { accepted: 0 };
  const server = new SMTPServer({
    secure: false,
    disabledCommands: ["STARTTLS", "AUTH"],
    authOptional: true,
    disableReverseLookup: true,
    logger: false,
    onData(stream, _session, callback) {
      stream.on("data", () => {});
      stream.on("end", () => {
        state.accepted++;
        callback(null, "Ok: queued");
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.server.address() as { port: number }).port;
  return { state, port, close: () => new Promise<void>((r) => server.close(() => r())) };
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

type Worker = { url: string; close(): Promise<void> };

function startWorker(smtpPort: number, jwksUrl: string, dbUrl: string | undefined): Worker {
  const env: Record<string, string> = {
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
    ...(dbUrl ? { DELIVERY_STATUS_DATABASE_URL: dbUrl } : {}),
  };
  const config = loadConfig(env);
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

/** Pushes `n` fresh deliveries with `concurrency` requests in flight; every one must be answered 200 and sent. */
async function pushMany(worker: Worker, token: string, n: number) {
  const bodies = Array.from(
    { length: n },
    () => envelope(verificationEvent({ deliveryId: `bench-${crypto.randomUUID()}` })),
  );
  const latencies: number[] = [];
  let next = 0;
  let failures = 0;
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < bodies.length) {
      const body = bodies[next++];
      const t = performance.now();
      const res = await fetch(worker.url, {
        method: "POST",
        body,
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      });
      const reply = await res.json();
      latencies.push(performance.now() - t);
      if (res.status !== 200 || reply.outcome !== "sent") failures++;
    }
  }));
  const seconds = (performance.now() - start) / 1000;
  return { deliveries: n, failures, seconds, latencies };
}

const sink = await startSink();
const jwks = await startJwks();
const token = await jwks.sign({}, { expiresIn: "1h" });
const workers = {
  off: startWorker(sink.port, jwks.url, undefined),
  on: startWorker(sink.port, jwks.url, databaseUrl),
};
const acc = {
  off: { n: 0, s: 0, lat: [] as number[], failures: 0 },
  on: { n: 0, s: 0, lat: [] as number[], failures: 0 },
};
try {
  // Warm up both (JWKS fetch, SMTP connection, database pool, JIT).
  for (const w of Object.values(workers)) await pushMany(w, token, Math.min(50, deliveries));
  for (let r = 0; r < rounds; r++) {
    for (const mode of (r % 2 === 0 ? ["off", "on"] : ["on", "off"]) as ("off" | "on")[]) {
      const res = await pushMany(workers[mode], token, deliveries);
      acc[mode].n += res.deliveries;
      acc[mode].s += res.seconds;
      acc[mode].lat.push(...res.latencies);
      acc[mode].failures += res.failures;
      console.log(
        `  tracking ${mode.padEnd(3)}: ${res.deliveries} deliveries in ${r2(res.seconds)} s = ${
          r2(res.deliveries / res.seconds)
        }/s, p50 ${r2(quantile(res.latencies, 0.5))} ms`,
      );
    }
  }
} finally {
  await workers.off.close();
  await workers.on.close();
}

// Round trips: a short tracked run through the counting proxy.
const proxy = startCountingProxy(new URL(databaseUrl));
const counted = startWorker(sink.port, jwks.url, proxy.url);
let roundTrips = 0;
const countN = Math.min(100, deliveries);
try {
  await pushMany(counted, token, 5); // opens the pool's connections
  const before = proxy.counter.roundTrips;
  const res = await pushMany(counted, token, countN);
  if (res.failures) throw new Error(`${res.failures} pushes failed in the counting pass`);
  roundTrips = (proxy.counter.roundTrips - before) / countN;
} finally {
  await counted.close();
  proxy.close();
}
await jwks.close();
await sink.close();

const summary = (m: "off" | "on") => ({
  deliveries: acc[m].n,
  failures: acc[m].failures,
  per_second: r2(acc[m].n / acc[m].s),
  p50_ms: r2(quantile(acc[m].lat, 0.5)),
  p99_ms: r2(quantile(acc[m].lat, 0.99)),
  round_trips_per_delivery: m === "on" ? r2(roundTrips) : 0,
});
const out = {
  concurrency,
  rounds,
  off: summary("off"),
  on: summary("on"),
  ratio: 0,
  added_p50_ms: 0,
  added_p99_ms: 0,
  smtp_accepted: sink.state.accepted,
};
out.ratio = r2(out.on.per_second / out.off.per_second);
out.added_p50_ms = r2(out.on.p50_ms - out.off.p50_ms);
out.added_p99_ms = r2(out.on.p99_ms - out.off.p99_ms);
if (out.off.failures || out.on.failures) {
  console.error(`failed pushes: off ${out.off.failures}, on ${out.on.failures}`);
}
if (args.out) await Deno.writeTextFile(args.out, JSON.stringify(out, null, 2));
else console.log(JSON.stringify(out, null, 2));
Deno.exit(out.off.failures || out.on.failures ? 1 : 0);
