import { ConfigError, loadConfig } from "../functions/_shared/config.ts";
import { createCircuitBreaker } from "../functions/_shared/circuit_breaker.ts";
import { maskEmail } from "../functions/_shared/log.ts";
import { decodeBase64 } from "../functions/_shared/pubsub.ts";
import { secretsEqual } from "../functions/_shared/auth.ts";
import { assertEquals, assertRejects } from "./support/assert.ts";
import { test } from "./support/harness.ts";

const minimal = {
  SMTP_HOST: "smtp.test",
  SMTP_FROM: "no-reply@acme.test",
  PUBSUB_AUDIENCE: "https://x.supabase.co/functions/v1/email-worker",
  PUBSUB_SERVICE_ACCOUNTS: "push@p.iam.gserviceaccount.com, Other@p.iam.gserviceaccount.com",
};

test("defaults: port 8000, SMTP 465 over TLS, verification on with Google's JWKS, tracking optional", () => {
  const c = loadConfig(minimal);
  assertEquals(c.port, 8000);
  assertEquals([c.smtp.port, c.smtp.secure], [465, true]);
  assertEquals([c.pubsub.verify, c.pubsub.jwksUrl], [true, "https://www.googleapis.com/oauth2/v3/certs"]);
  assertEquals(c.pubsub.serviceAccounts, ["push@p.iam.gserviceaccount.com", "other@p.iam.gserviceaccount.com"]);
  assertEquals([c.tracking.mode, c.tracking.databaseUrl, c.leaseSeconds, c.sweep.batchSize], [
    "optional",
    undefined,
    60,
    20,
  ]);
});

test("SMTP_SECURE: only the string false (or 0) means false", () => {
  assertEquals(loadConfig({ ...minimal, SMTP_SECURE: "false" }).smtp.secure, false);
  assertEquals(loadConfig({ ...minimal, SMTP_SECURE: "true" }).smtp.secure, true);
});

const bad: [string, Record<string, string | undefined>][] = [
  ["SMTP_HOST", { SMTP_HOST: undefined }],
  ["SMTP_PORT", { SMTP_PORT: "smtp" }],
  ["SMTP_SECURE", { SMTP_SECURE: "yes please" }],
  ["PUBSUB_AUDIENCE", { PUBSUB_AUDIENCE: undefined }],
  ["PUBSUB_SERVICE_ACCOUNTS", { PUBSUB_SERVICE_ACCOUNTS: " , " }],
  ["PUBSUB_JWKS_URL", { PUBSUB_JWKS_URL: "file:///etc/passwd" }],
  ["TRACKING_MODE", { TRACKING_MODE: "sometimes" }],
  ["DELIVERY_STATUS_DATABASE_URL", { TRACKING_MODE: "required" }],
  ["DELIVERY_STATUS_DATABASE_URL", { DELIVERY_STATUS_DATABASE_URL: "mysql://x" }],
  ["SWEEP_SECRET", { SWEEP_SECRET: "short" }],
  ["LEASE_SECONDS", { LEASE_SECONDS: "0" }],
  ["LOG_LEVEL", { LOG_LEVEL: "loud" }],
  ["SMTP_PASSWORD", { SMTP_USER: "relay" }],
  ["PUBSUB_VERIFY", { PUBSUB_VERIFY: "0" }],
  ["PUBSUB_VERIFY", { PUBSUB_VERIFY: "1" }],
  ["PUBSUB_VERIFY", { PUBSUB_VERIFY: "no" }],
  ["SMTP_FAMILY", { SMTP_FAMILY: "ipv4" }],
  ["USER_JWT_ISSUER", { USER_JWT_ISSUER: "supabase" }],
];
for (const [name, env] of bad) {
  test(`a wrong ${name} stops start-up with a message naming it`, async () => {
    await assertRejects(() => loadConfig({ ...minimal, ...env }), new RegExp(name));
    try {
      loadConfig({ ...minimal, ...env });
    } catch (e) {
      assertEquals(e instanceof ConfigError, true);
    }
  });
}

test("PUBSUB_VERIFY=false needs neither audience nor service accounts", () => {
  const c = loadConfig({ SMTP_HOST: "smtp.test", SMTP_FROM: "a@b.test", PUBSUB_VERIFY: "false" });
  assertEquals(c.pubsub.verify, false);
});

test("PUBSUB_VERIFY: only the string false turns push authentication off; true, empty and unset keep it on", () => {
  for (const value of ["true", "", undefined]) {
    assertEquals(loadConfig({ ...minimal, PUBSUB_VERIFY: value }).pubsub.verify, true);
  }
  assertEquals(loadConfig({ ...minimal, PUBSUB_VERIFY: "false" }).pubsub.verify, false);
});

test("SMTP_FAMILY: IPv4 by default, 6 and auto on request", () => {
  assertEquals(loadConfig(minimal).smtp.family, 4);
  assertEquals(loadConfig({ ...minimal, SMTP_FAMILY: "4" }).smtp.family, 4);
  assertEquals(loadConfig({ ...minimal, SMTP_FAMILY: "6" }).smtp.family, 6);
  assertEquals(loadConfig({ ...minimal, SMTP_FAMILY: "auto" }).smtp.family, "auto");
});

test("the legacy JWT secret is read as JWT_SECRET (settable with supabase secrets set), SUPABASE_JWT_SECRET as fallback", () => {
  assertEquals(loadConfig({ ...minimal, JWT_SECRET: "from-jwt-secret" }).api.jwtSecret, "from-jwt-secret");
  assertEquals(loadConfig({ ...minimal, SUPABASE_JWT_SECRET: "from-old-name" }).api.jwtSecret, "from-old-name");
  assertEquals(
    loadConfig({ ...minimal, JWT_SECRET: "from-jwt-secret", SUPABASE_JWT_SECRET: "from-old-name" }).api.jwtSecret,
    "from-jwt-secret",
  );
  assertEquals(loadConfig(minimal).api.jwtSecret, undefined);
});

test("user tokens must carry the project's issuer: <SUPABASE_URL>/auth/v1, or USER_JWT_ISSUER; none without either", () => {
  const hosted = loadConfig({ ...minimal, SUPABASE_URL: "https://abcdefghijklmnopqrst.supabase.co/" });
  assertEquals(hosted.api.jwtIssuer, "https://abcdefghijklmnopqrst.supabase.co/auth/v1");
  assertEquals(hosted.api.jwksUrl, "https://abcdefghijklmnopqrst.supabase.co/auth/v1/.well-known/jwks.json");
  const custom = loadConfig({
    ...minimal,
    SUPABASE_URL: "http://kong:8000",
    USER_JWT_ISSUER: "http://127.0.0.1:54321/auth/v1",
  });
  assertEquals([custom.api.jwtIssuer, custom.api.jwksUrl], [
    "http://127.0.0.1:54321/auth/v1",
    "http://kong:8000/auth/v1/.well-known/jwks.json",
  ]);
  assertEquals(loadConfig(minimal).api.jwtIssuer, undefined);
});

test("the circuit breaker opens after N consecutive failures, half-opens after the cooldown, closes on success", () => {
  let now = 0;
  const b = createCircuitBreaker({ threshold: 2, cooldownMs: 100, now: () => now });
  b.failure();
  assertEquals([b.state(), b.allow()], ["closed", true]);
  b.success();
  b.failure();
  b.failure();
  assertEquals([b.state(), b.allow()], ["open", false]);
  now = 100;
  assertEquals([b.allow(), b.state(), b.allow()], [true, "half_open", false]);
  b.failure();
  assertEquals([b.state(), b.allow()], ["open", false]);
  now = 250;
  assertEquals(b.allow(), true);
  b.success();
  assertEquals([b.state(), b.allow(), b.consecutiveFailures()], ["closed", true, 0]);
});

test("recipients are masked in logs", () => {
  assertEquals(maskEmail("ada.lovelace@example.com"), "a***@example.com");
  assertEquals(maskEmail("nonsense"), "***");
});

test("base64 decoding is strict and accepts both alphabets", () => {
  assertEquals(new TextDecoder().decode(decodeBase64("aGk/Pz4+")!), "hi??>>");
  assertEquals(new TextDecoder().decode(decodeBase64("aGk_Pz4-")!), "hi??>>");
  assertEquals(new TextDecoder().decode(decodeBase64("aGk")!), "hi");
  assertEquals(decodeBase64("a"), undefined);
  assertEquals(decodeBase64("%%%"), undefined);
});

test("sweep secrets compare equal only when identical", async () => {
  assertEquals(await secretsEqual("s3cret-s3cret-s3cret", "s3cret-s3cret-s3cret"), true);
  assertEquals(await secretsEqual("s3cret-s3cret-s3creT", "s3cret-s3cret-s3cret"), false);
  assertEquals(await secretsEqual("", "s3cret-s3cret-s3cret"), false);
});

const entry = new URL("../functions/email-worker/index.ts", import.meta.url).pathname;

test("the entrypoint exits non-zero at start naming the missing variable", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", entry],
    env: { PUBSUB_VERIFY: "false", SMTP_FROM: "a@b.test", SMTP_HOST: "" },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 1);
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals(/SMTP_HOST/.test(stderr), true, stderr);
});

test("in an Edge Runtime user worker, where Deno.exit does nothing, a configuration error fails the start", async () => {
  // The Edge Runtime replaces Deno.exit with a no-op in user workers (ext/runtime/js/bootstrap.js,
  // "exit": "mock"); the entrypoint must then stop by throwing the ConfigError itself.
  const code = `Deno.exit = () => {};
    try {
      await import(${JSON.stringify(new URL("../functions/email-worker/index.ts", import.meta.url).href)});
      console.log(JSON.stringify({ started: true }));
    } catch (error) {
      console.log(JSON.stringify({ name: error.name, message: error.message }));
    }`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    cwd: new URL("..", import.meta.url).pathname,
    env: { PUBSUB_VERIFY: "false", SMTP_FROM: "a@b.test", SMTP_HOST: "", PORT: "0" },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  const result = JSON.parse(stdout || "{}");
  assertEquals(result.name, "ConfigError", stdout + new TextDecoder().decode(out.stderr));
  assertEquals(/SMTP_HOST/.test(result.message), true, result.message);
});

test("the entrypoint serves /email-worker/health on PORT", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", entry],
    env: {
      PORT: String(port),
      PUBSUB_VERIFY: "false",
      SMTP_HOST: "127.0.0.1",
      SMTP_FROM: "a@b.test",
      LOG_LEVEL: "error",
    },
    clearEnv: true,
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    let body: Record<string, unknown> | undefined;
    for (let i = 0; i < 100 && !body; i++) {
      try {
        body = await (await fetch(`http://127.0.0.1:${port}/email-worker/health`)).json();
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assertEquals(body?.status, "ok");
    assertEquals((body?.tracking as { state: string }).state, "off");
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
});
