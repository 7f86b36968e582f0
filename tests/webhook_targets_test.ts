/**
 * Webhook targets inside the network (issue 10 item 8): refused when an endpoint is registered (the
 * CLI resolves and checks, the database checks the URL) and at send time on every address the name
 * resolves to, with the connection made to the address that was checked. Real database, real HTTP
 * receivers on loopback; a lookup function stands in for DNS where a test needs a name to resolve
 * to a chosen address (no DNS server can be run here).
 */
import postgres from "postgres";
import { assert, assertEquals } from "./support/assert.ts";
import { dispatchWebhooks } from "../functions/_shared/webhooks.ts";
import {
  checkTarget,
  guardedFetch,
  loadRefusedNetworks,
  RefusedTarget,
  refusingNetwork,
} from "../functions/_shared/net_guard.ts";
import { webhooksCommand } from "../cli/webhooks.ts";
import { type CapturedRun, captureOutput } from "./support/cli.ts";
import { test } from "./support/harness.ts";
import { makeCertificates } from "./support/certs.ts";

const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

function startReceiver() {
  const received: { host: string | null; url: string }[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    received.push({ host: req.headers.get("host"), url: req.url });
    await req.body?.cancel();
    return new Response(null, { status: 204 });
  });
  return { port: server.addr.port, received, close: () => server.shutdown() };
}

/** Runs `email-status webhooks add <args> --description webhook_targets_test` with `env` added. */
function cli(args: string[], env: Record<string, string> = {}): Promise<CapturedRun> {
  return captureOutput(() =>
    webhooksCommand(["add", ...args, "--description", "webhook_targets_test"], { DATABASE_URL: databaseUrl, ...env })
  );
}

test("the CLI refuses to register a target inside the network, however it is written", async () => {
  const sql = postgres(databaseUrl!, { max: 1, onnotice: () => {} });
  const dbPort = new URL(databaseUrl!).port || "5432";
  try {
    for (
      const url of [
        "http://127.0.0.1:8080/hooks",
        "http://[::1]/hooks",
        "http://2130706433/hooks",
        "http://0x7f.1/hooks",
        `http://localhost:${dbPort}/`,
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.3.7/hooks",
        "http://[::ffff:7f00:1]/hooks",
      ]
    ) {
      const r = await cli([url]);
      assertEquals(r.code, 1, `${url}: ${r.err}`);
      assert(r.err.includes("refusing") && r.err.includes("not a public address"), r.err);
    }
    const [{ n }] =
      await sql`select count(*)::int as n from email.webhook_endpoints where description = 'webhook_targets_test'`;
    assertEquals(n, 0, "nothing registered");

    const allowed = await cli(["http://127.0.0.1:8080/hooks", "--json"], { WEBHOOK_ALLOW_PRIVATE: "true" });
    assertEquals(allowed.code, 0, allowed.err);
    await sql`select email.remove_webhook_endpoint(${JSON.parse(allowed.out).id}::uuid)`;
  } finally {
    await sql.end({ timeout: 2 });
  }
});

test("the database refuses such a target from any writer unless the session opts in", async () => {
  const sql = postgres(databaseUrl!, { max: 1, onnotice: () => {} });
  try {
    for (const url of ["http://127.0.0.1:8080/", "http://2130706433/", "http://169.254.169.254/", "http://[::1]/"]) {
      const code = await sql`select (email.add_webhook_endpoint(${url})).id`.then(
        async ([w]) => (await sql`select email.remove_webhook_endpoint(${w.id})`, "added"),
        (e) => e.code,
      );
      assertEquals(code, "EM007", url);
    }
  } finally {
    await sql.end({ timeout: 2 });
  }
});

test("at send time a name resolving to loopback, a decimal IP and the database port are refused, unseen", async () => {
  const receiver = startReceiver();
  // Registered by a session that opted in (as if the names had resolved elsewhere when registered).
  const sql = postgres(databaseUrl!, {
    max: 2,
    onnotice: () => {},
    connection: { "email.webhook_allow_private": "on" },
  });
  const dbPort = new URL(databaseUrl!).port || "5432";
  const urls = [
    `http://localhost:${receiver.port}/hooks`,
    `http://2130706433:${receiver.port}/hooks`,
    `http://127.0.0.1:${dbPort}/`,
  ];
  const ids: string[] = [];
  try {
    for (const url of urls) {
      const [w] = await sql<{ id: string }[]>`
        select id::text from email.add_webhook_endpoint(${url}, '{email.queued}', 'webhook_targets_test')`;
      ids.push(w.id);
    }
    const deliveryId = `wh-target-${crypto.randomUUID()}`;
    await sql`select email.record_queued(${deliveryId}, 'invite', ${`${deliveryId}@example.com`}, '{}')`;
    // Only these endpoints' messages are due now.
    await sql`update email.webhook_outbox set next_attempt_at = now() + interval '1 hour'
      where status = 'pending' and next_attempt_at <= now() and endpoint_id <> all(${ids}::uuid[])`;

    const result = await dispatchWebhooks(sql, { batchSize: 100, timeoutMs: 3000 });
    assertEquals([result.claimed, result.delivered, result.retrying], [3, 0, 3]);
    assertEquals(receiver.received.length, 0, "nothing reached the receiver");
    const rows = await sql<{ last_error: string; last_status_code: number | null }[]>`
      select last_error, last_status_code from email.webhook_outbox where endpoint_id = any(${ids}::uuid[])`;
    for (const row of rows) {
      assertEquals(row, { last_error: "target refused: not a public address", last_status_code: null });
    }
  } finally {
    for (const id of ids) await sql`select email.remove_webhook_endpoint(${id}::uuid)`;
    await sql.end({ timeout: 2 });
    await receiver.close();
  }
});

test("every resolved address is checked, and the request goes to the address that was checked", async () => {
  const sql = postgres(databaseUrl!, { max: 1, onnotice: () => {} });
  const networks = await loadRefusedNetworks(sql);
  await sql.end({ timeout: 2 });
  for (
    const address of ["127.0.0.1", "10.1.2.3", "169.254.169.254", "100.64.0.1", "::1", "::ffff:127.0.0.1", "fe80::1"]
  ) {
    assert(refusingNetwork(address, networks), `${address} is refused`);
  }
  for (const address of ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"]) {
    assertEquals(refusingNetwork(address, networks), undefined, `${address} is public`);
  }

  // One private address among public ones refuses the name.
  const mixed = () => Promise.resolve(["93.184.216.34", "10.0.0.7"]);
  const refused = await checkTarget(new URL("https://hooks.example.com/x"), { networks, lookup: mixed }).then(
    () => null,
    (e) => e,
  );
  assert(refused instanceof RefusedTarget, String(refused));

  // The name resolves once, to the address checked; the connection goes there (a second lookup of
  // "rebind.invalid" would fail), with the URL's host in the Host header.
  const receiver = startReceiver();
  try {
    const lookups: string[] = [];
    const doFetch = guardedFetch({
      allowPrivate: false,
      networks: () => Promise.resolve(["10.0.0.0/8"]), // loopback allowed here, so the receiver can answer
      lookup: (host) => {
        lookups.push(host);
        return Promise.resolve(["127.0.0.1"]);
      },
    });
    const response = await doFetch(`http://rebind.invalid:${receiver.port}/hooks`, { method: "POST", body: "{}" });
    assertEquals(response.status, 204);
    assertEquals(lookups, ["rebind.invalid"]);
    assertEquals(receiver.received.map((r) => r.host), [`rebind.invalid:${receiver.port}`]);

    // A receiver that does not answer in time: the request ends as a timeout.
    const slow = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async () => {
      await new Promise((r) => setTimeout(r, 3000));
      return new Response(null, { status: 204 });
    });
    try {
      const started = Date.now();
      const error = await doFetch(`http://slow.invalid:${slow.addr.port}/`, { signal: AbortSignal.timeout(200) })
        .then(() => null, (e) => e);
      assertEquals(error?.name, "TimeoutError");
      assert(Date.now() - started < 2500, "it did not wait for the answer");
    } finally {
      await slow.shutdown();
    }

    // The same over TLS: the certificate is checked against the URL's name, not the address.
    const { ca, key, cert } = await makeCertificates(["hooks.example.test"]);
    const tls = Deno.serve(
      { port: 0, hostname: "127.0.0.1", key, cert, onListen: () => {} },
      (req) => new Response(req.headers.get("host")),
    );
    try {
      const viaTls = guardedFetch({
        allowPrivate: false,
        networks: () => Promise.resolve(["10.0.0.0/8"]),
        lookup: () => Promise.resolve(["127.0.0.1"]),
        ca: [ca],
      });
      const r = await viaTls(`https://hooks.example.test:${tls.addr.port}/hooks`, { method: "POST", body: "{}" });
      assertEquals([r.status, await r.text()], [200, `hooks.example.test:${tls.addr.port}`]);
      const wrongName = await viaTls(`https://other.example.test:${tls.addr.port}/`).then(
        () => "connected",
        () => "refused",
      );
      assertEquals(wrongName, "refused", "a certificate for another name is refused");
    } finally {
      await tls.shutdown();
    }

    // The same over IPv6.
    const v6 = Deno.serve(
      { port: 0, hostname: "::1", onListen: () => {} },
      (req) => new Response(req.headers.get("host")),
    );
    try {
      const viaV6 = guardedFetch({
        allowPrivate: false,
        networks: () => Promise.resolve(["fc00::/7"]),
        lookup: () => Promise.resolve(["::1"]),
      });
      const r6 = await viaV6(`http://rebind6.invalid:${v6.addr.port}/`);
      assertEquals(await r6.text(), `rebind6.invalid:${v6.addr.port}`);
    } finally {
      await v6.shutdown();
    }
  } finally {
    await receiver.close();
  }
});
