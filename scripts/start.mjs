// `npm start`: the whole service on an embedded default, on this machine:
//   Postgres (embedded, or DATABASE_URL) with the bootstrap and migrations applied by the Supabase CLI,
//   a local SMTP sink with a web inbox (maildev), a JWKS standing in for Google's, the email-worker function
//   under `deno run`, and the sweep on a timer (standing in for pg_cron). `npm run publish` sends a test push.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import postgres from "postgres";
import { MailDev } from "maildev";
import { databaseUrl, migrate, preferredPort, root, startServer } from "./lib/postgres.mjs";
import { loadDevState, PUBLISHER, saveRuntime } from "./lib/dev_keys.mjs";

const env = process.env;
// A port set in the environment is used as is; a default steps aside for a free port when taken (a
// second clone running `npm start`). Where things ended up is printed and saved for `npm run publish`.
const port = async (name, preferred) => env[name] ? Number(env[name]) : await preferredPort(preferred);
const ports = {
  pg: await port("PG_PORT", 54329),
  worker: await port("PORT", 8000),
  smtp: await port("MAILDEV_SMTP_PORT", 1025),
  inbox: await port("MAILDEV_WEB_PORT", 1080),
  jwks: await port("JWKS_PORT", 8089),
};
const sweepEverySeconds = Number(env.SWEEP_INTERVAL_SECONDS ?? 30);
const say = (m) => console.log(`[start] ${m}`);
const stoppers = [];

async function main() {
  const state = await loadDevState();

  say("starting Postgres");
  const server = await startServer({ name: "pg", port: ports.pg, log: say });
  stoppers.push(() => server.stop());
  const dbUrl = server.embedded ? await ensureDatabase(server.url, "email_worker") : server.url;
  say("applying the Supabase-compat bootstrap and migrations (supabase db push)");
  await migrate(dbUrl, { log: (m) => m && say(m.replace(/\n/g, "\n[start] ")) });

  say("starting the SMTP sink (maildev)");
  // A folder of this run's own: maildev's default (/tmp/maildev) is shared by every user and clone.
  const mailDirectory = mkdtempSync(path.join(os.tmpdir(), "email-worker-maildev-"));
  stoppers.push(() => rmSync(mailDirectory, { recursive: true, force: true }));
  const maildev = new MailDev({
    mailDirectory,
    smtp: ports.smtp,
    web: ports.inbox,
    ip: "127.0.0.1",
    webIp: "127.0.0.1",
    silent: true,
  });
  await maildev.start();
  stoppers.push(() => maildev.stop());

  const jwks = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=300" });
    res.end(JSON.stringify({ keys: [state.publicJwk] }));
  });
  await new Promise((r) => jwks.listen(ports.jwks, "127.0.0.1", r));
  stoppers.push(() => new Promise((r) => jwks.close(r)));

  const workerUrl = `http://127.0.0.1:${ports.worker}/email-worker`;
  const workerEnv = {
    ...env,
    PORT: String(ports.worker),
    PUBSUB_VERIFY: "true",
    PUBSUB_JWKS_URL: `http://127.0.0.1:${ports.jwks}/certs`,
    PUBSUB_AUDIENCE: workerUrl,
    PUBSUB_SERVICE_ACCOUNTS: PUBLISHER,
    SMTP_HOST: "127.0.0.1",
    SMTP_PORT: String(ports.smtp),
    SMTP_SECURE: "false",
    SMTP_REQUIRE_TLS: "false", // a local sink without STARTTLS
    SMTP_FROM: env.SMTP_FROM ?? "Email Worker <no-reply@localhost>",
    DELIVERY_STATUS_DATABASE_URL: dbUrl,
    SWEEP_SECRET: state.sweepSecret,
    DASHBOARD_TOKEN: state.dashboardToken,
  };
  say("starting the email-worker function (deno run)");
  const worker = spawn(path.join(root, "node_modules/.bin/deno"), ["run", "-A", "functions/email-worker/index.ts"], {
    cwd: root,
    env: workerEnv,
    stdio: ["ignore", "inherit", "inherit"],
  });
  stoppers.unshift(() => worker.kill("SIGTERM"));
  worker.on("exit", (code) => {
    say(`the worker exited (code ${code})`);
    shutdown(1);
  });
  await waitForHealth(`${workerUrl}/health`);

  const sweep = setInterval(async () => {
    try {
      const r = await fetch(`${workerUrl}/sweep`, {
        method: "POST",
        headers: { authorization: `Bearer ${state.sweepSecret}` },
      });
      const body = await r.json();
      if (r.status !== 200 || Object.values(body).some((v) => typeof v === "number" && v > 0)) {
        say(`sweep: ${r.status} ${JSON.stringify(body)}`);
      }
    } catch (e) {
      say(`sweep failed: ${e.message}`);
    }
  }, sweepEverySeconds * 1000);
  stoppers.unshift(() => clearInterval(sweep));

  saveRuntime({ workerUrl, dbUrl, audience: workerUrl, inbox: `http://127.0.0.1:${ports.inbox}` });
  const masked = dbUrl.replace(/:[^:@/]*@/, ":***@");
  console.log(`
  email-worker is running
    worker (Pub/Sub push)  POST ${workerUrl}
    health                 GET  ${workerUrl}/health
    dashboard              ${workerUrl}/dashboard#token=${state.dashboardToken}
    sweep (every ${sweepEverySeconds}s)     POST ${workerUrl}/sweep
    inbox (maildev)        http://127.0.0.1:${ports.inbox}   (SMTP on 127.0.0.1:${ports.smtp})
    database               ${masked}
    JWKS (local Google)    http://127.0.0.1:${ports.jwks}/certs

  publish a test message:  npm run publish -- --to ada@example.com
  delivery status:         DATABASE_URL=${dbUrl} npm run email-status -- list
  stop:                    Ctrl-C
`);
}

async function ensureDatabase(serverUrl, name) {
  const sql = postgres(serverUrl, { max: 1, onnotice: () => {} });
  try {
    const [{ exists }] = await sql`select exists (select from pg_database where datname = ${name}) as exists`;
    if (!exists) await sql.unsafe(`create database "${name}"`);
  } finally {
    await sql.end();
  }
  return databaseUrl(serverUrl, name);
}

async function waitForHealth(url, timeoutMs = 60_000) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`the worker did not answer ${url} within ${timeoutMs / 1000}s`);
}

let stopping = false;
async function shutdown(code = 0) {
  if (stopping) return;
  stopping = true;
  for (const stop of stoppers) {
    try {
      await stop();
    } catch { /* best effort */ }
  }
  process.exit(code);
}
process.on("SIGINT", () => shutdown(0));
process.on("SIGTERM", () => shutdown(0));

main().catch(async (e) => {
  console.error(`[start] ${e.message}`);
  await shutdown(1);
});
