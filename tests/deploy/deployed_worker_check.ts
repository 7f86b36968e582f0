/**
 * The deploy simulation's end-to-end checks (run by scripts/deploy_sim.mjs, which sets the
 * environment below; not a `_test.ts` file because it needs the staged upload).
 *
 * The worker runs from DEPLOY_DIR, which holds exactly the files `supabase functions deploy` uploads,
 * under EDGE_DENO (the Deno the Edge Runtime embeds) with the uploaded import map as its config,
 * npm: imports resolved from the registry into EDGE_DENO_DIR, and a user worker's permissions: net,
 * env, read of its own files, sys=hostname (no -A, no write, no run, no ffi). Its environment is what
 * hosted Supabase gives a function (SUPABASE_URL, SUPABASE_DB_URL) plus secrets a user can set with
 * `supabase secrets set`. Everything it talks to is real and local: Postgres, an SMTP server, Google's
 * JWKS stand-in for Pub/Sub tokens, Supabase Auth's JWKS stand-in for user tokens, a webhook receiver.
 */
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { assert, assertEquals } from "../support/assert.ts";
import { openDb } from "../support/db.ts";
import { startJwks, testAudience, testServiceAccount } from "../support/jwks.ts";
import { envelope, verificationEvent } from "../support/pubsub.ts";
import { mailTo, startSmtpServer } from "../support/smtp.ts";

function required(name: string): string {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`${name} must be set (scripts/deploy_sim.mjs sets it)`);
  return value;
}

const dir = required("DEPLOY_DIR");
const metadata = JSON.parse(required("DEPLOY_METADATA")) as { entrypoint_path: string; import_map_path: string };
const edgeDeno = required("EDGE_DENO");
const databaseUrl = required("DATABASE_URL");
const jwtSecret = "deploy-sim-legacy-jwt-secret-0123456789abcdef";
const sweepSecret = "deploy-sim-sweep-secret-0123456789";
const dashboardToken = "deploy-sim-dashboard-token-0123456789";

/** A free loopback port for the worker's PORT. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** The process environment the runtime itself needs (its cache, TLS roots, proxies), nothing else. */
function runtimeEnv(): Record<string, string> {
  const env: Record<string, string> = {
    DENO_DIR: required("EDGE_DENO_DIR"),
    // Deno 2.1 reaches the npm registry here only with the system's CA store.
    DENO_TLS_CA_STORE: "system",
    NO_COLOR: "1",
    RUST_BACKTRACE: "0",
  };
  for (const name of ["SSL_CERT_FILE", "SSL_CERT_DIR", "DENO_CERT", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"]) {
    for (const key of [name, name.toLowerCase()]) {
      const value = Deno.env.get(key);
      if (value) env[key] = value;
    }
  }
  return env;
}

Deno.test({
  name: "the uploaded bundle, alone, runs on the Edge Runtime's Deno and works end to end",
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const smtp = await startSmtpServer();
  const pubsub = await startJwks();
  const authKeys = await generateKeyPair("ES256", { extractable: true });
  const authJwk = { ...(await exportJWK(authKeys.publicKey)), kid: "auth-key-1", alg: "ES256", use: "sig" };
  // Supabase Auth's published signing keys; the worker derives their URL and the issuer from SUPABASE_URL.
  const auth = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/auth/v1/.well-known/jwks.json") return Response.json({ keys: [authJwk] });
    return new Response("not found", { status: 404 });
  });
  const supabaseUrl = `http://127.0.0.1:${auth.addr.port}`;
  const db = openDb(databaseUrl);
  const hooks: { type: string; data: { delivery_id: string; status: string } }[] = [];
  const receiver = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    hooks.push(JSON.parse(await req.text()));
    return new Response(null, { status: 204 });
  });
  const [endpoint] = await db.sql.begin(async (tx) => {
    await tx`set local email.webhook_allow_private = on`;
    return await tx<{ id: string }[]>`
      select id from email.add_webhook_endpoint(${`http://127.0.0.1:${receiver.addr.port}/hooks`}, array['email.sent'])`;
  });
  const port = freePort();
  const base = `http://127.0.0.1:${port}/email-worker`;
  const entrypoint = `${dir}/${metadata.entrypoint_path}`;
  const config = `${dir}/${metadata.import_map_path}`;
  const worker = new Deno.Command(edgeDeno, {
    args: [
      "run",
      "--config",
      config,
      "--no-prompt",
      "--allow-net",
      "--allow-env",
      `--allow-read=${dir}`,
      "--allow-sys=hostname",
      entrypoint,
    ],
    cwd: dir,
    clearEnv: true,
    env: {
      ...runtimeEnv(),
      // What hosted Supabase injects into every function.
      SUPABASE_URL: supabaseUrl,
      SUPABASE_DB_URL: databaseUrl,
      // Secrets set with `supabase secrets set`.
      JWT_SECRET: jwtSecret,
      PUBSUB_JWKS_URL: pubsub.url,
      PUBSUB_AUDIENCE: testAudience,
      PUBSUB_SERVICE_ACCOUNTS: testServiceAccount,
      SMTP_HOST: "127.0.0.1",
      SMTP_PORT: String(smtp.port),
      SMTP_SECURE: "false",
      SMTP_REQUIRE_TLS: "false",
      SMTP_FROM: "Deploy Sim <no-reply@worker.test>",
      SMTP_CONNECTION_TIMEOUT_MS: "5000",
      SMTP_GREETING_TIMEOUT_MS: "5000",
      SWEEP_SECRET: sweepSecret,
      DASHBOARD_TOKEN: dashboardToken,
      // The webhook receiver below is on loopback.
      WEBHOOK_ALLOW_PRIVATE: "true",
      // The Edge Runtime ignores PORT; a local process needs one.
      PORT: String(port),
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let output = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) output += decoder.decode(chunk, { stream: true });
  };
  const collecting = Promise.all([collect(worker.stdout), collect(worker.stderr)]);
  let exited: Deno.CommandStatus | undefined;
  worker.status.then((s) => (exited = s));

  const userToken = (claims: Record<string, unknown>, sign: "jwks" | "secret" = "jwks") => {
    const jwt = new SignJWT({ role: "authenticated", aud: "authenticated", iss: `${supabaseUrl}/auth/v1`, ...claims })
      .setIssuedAt().setExpirationTime("5m");
    return sign === "jwks"
      ? jwt.setProtectedHeader({ alg: "ES256", kid: authJwk.kid, typ: "JWT" }).sign(authKeys.privateKey)
      : jwt.setProtectedHeader({ alg: "HS256", typ: "JWT" }).sign(new TextEncoder().encode(jwtSecret));
  };
  const owner = crypto.randomUUID();
  const sent = verificationEvent({ userId: owner });
  const swept = verificationEvent({ userId: owner });

  try {
    const started = await t.step("the worker starts (first run: npm packages come from the registry)", async () => {
      const until = Date.now() + 180_000;
      let health: Record<string, unknown> | undefined;
      while (!health && !exited && Date.now() < until) {
        try {
          const res = await fetch(`${base}/health`);
          health = await res.json();
        } catch {
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      assert(health, `the deployed worker did not start (exit ${exited?.code ?? "-"}):\n${output}`);
      assertEquals(health.status, "ok", JSON.stringify(health));
    });
    if (!started) throw new Error("the deployed worker did not start; the checks below need it");

    await t.step("a signed Pub/Sub push is sent over SMTP and recorded in Postgres", async () => {
      const unsigned = await fetch(base, { method: "POST", body: envelope(sent) });
      assertEquals(unsigned.status, 401);
      await unsigned.body?.cancel();
      const res = await fetch(base, {
        method: "POST",
        body: envelope(sent),
        headers: { "content-type": "application/json", authorization: `Bearer ${await pubsub.sign()}` },
      });
      const body = await res.json();
      assertEquals([res.status, body.status], [200, "sent"], JSON.stringify(body));
      assertEquals(mailTo(smtp, sent.recipient).length, 1);
      assertEquals((await db.delivery(sent.deliveryId!))?.status, "sent");
    });

    await t.step("a transient SMTP failure is retried by the sweep", async () => {
      smtp.respond = () => ({ code: 451, message: "4.4.1 try again later" });
      const res = await fetch(base, {
        method: "POST",
        body: envelope(swept),
        headers: { "content-type": "application/json", authorization: `Bearer ${await pubsub.sign()}` },
      });
      assertEquals((await res.json()).status, "retrying");
      smtp.respond = () => undefined;
      await db.makeDue(swept.deliveryId!);
      const sweep = await fetch(`${base}/sweep`, {
        method: "POST",
        headers: { authorization: `Bearer ${sweepSecret}` },
      });
      const counts = await sweep.json();
      assertEquals(sweep.status, 200, JSON.stringify(counts));
      assert(counts.sent >= 1, JSON.stringify(counts));
      assertEquals(mailTo(smtp, swept.recipient).length, 1);
      const d = await db.delivery(swept.deliveryId!);
      assertEquals([d?.status, d?.attempts], ["sent", 2]);
    });

    await t.step("the sweep POSTs the email.sent webhook", async () => {
      const ours = () => hooks.filter((h) => h.data?.delivery_id === swept.deliveryId);
      for (let i = 0; i < 5 && ours().length === 0; i++) {
        const sweep = await fetch(`${base}/sweep`, {
          method: "POST",
          headers: { authorization: `Bearer ${sweepSecret}` },
        });
        await sweep.body?.cancel();
      }
      assertEquals(ours().map((h) => [h.type, h.data.status]), [["email.sent", "sent"]]);
    });

    await t.step("the status route answers a user token (JWKS and JWT_SECRET), not another project's", async () => {
      for (const sign of ["jwks", "secret"] as const) {
        const res = await fetch(`${base}/deliveries/${swept.deliveryId}`, {
          headers: { authorization: `Bearer ${await userToken({ sub: owner }, sign)}` },
        });
        const doc = await res.json();
        assertEquals([res.status, doc.status], [200, "sent"], `${sign}: ${JSON.stringify(doc)}`);
        assertEquals(doc.events.map((e: { to_status: string }) => e.to_status).at(-1), "sent");
      }
      const foreign = await fetch(`${base}/deliveries/${swept.deliveryId}`, {
        headers: {
          authorization: `Bearer ${await userToken({
            sub: owner,
            iss: "https://zyxwvutsrqponmlkjihg.supabase.co/auth/v1",
          })}`,
        },
      });
      assertEquals(foreign.status, 401);
      await foreign.body?.cancel();
    });

    await t.step("the dashboard's JSON route answers a support user and the dashboard token", async () => {
      const support = await userToken({ sub: crypto.randomUUID(), app_metadata: { role: "support" } });
      for (const bearer of [support, dashboardToken]) {
        const res = await fetch(`${base}/dashboard/data?since=1h`, { headers: { authorization: `Bearer ${bearer}` } });
        const data = await res.json();
        assertEquals(res.status, 200, JSON.stringify(data));
        assertEquals(res.headers.get("content-type")?.startsWith("application/json"), true);
        assert(data.workflows.includes("verification-code"), JSON.stringify(data.workflows));
      }
    });
  } finally {
    if (!exited) worker.kill("SIGTERM");
    await worker.status;
    await collecting;
    await db.sql`select email.remove_webhook_endpoint(${endpoint.id}::uuid)`;
    await receiver.shutdown();
    await auth.shutdown();
    await pubsub.close();
    await smtp.close();
    await db.close();
  }
});
