/**
 * The email-status CLI as a subprocess against a real database: a private one (created from
 * TEST_SERVER_URL and migrated here), because requeue --dead-letters, purge and claim_due act on
 * every matching row. The PostgREST transport is checked against a small real HTTP server that
 * verifies the request shape (PostgREST itself cannot run here).
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import postgres from "postgres";
import { restApi } from "../cli/email_status.ts";
import {
  type CliRun,
  createMigratedDatabase,
  dropDatabase as dropMigratedDatabase,
  runCli,
  runCliOnTty,
} from "./support/cli.ts";

const serverUrl = Deno.env.get("TEST_SERVER_URL");
if (!serverUrl) throw new Error("TEST_SERVER_URL must be a superuser URL of the test server");

/** The CLI with stdin piped (the text, then closed), as a script runs it. */
function cli(args: string[], opts: { env?: Record<string, string>; stdin?: string } = {}): Promise<CliRun> {
  return runCli(args, opts.env ?? {}, opts.stdin || "eof");
}

/**
 * The CLI with stdin on a terminal (a pseudo-terminal from util-linux `script`), stdout and stderr
 * still apart: what a person at a terminal, or one piping --json to jq, runs.
 */
function cliOnTty(args: string[], opts: { env?: Record<string, string>; answer: string }): Promise<CliRun> {
  return runCliOnTty(args, opts.env ?? {}, opts.answer);
}

const createPrivateDatabase = (name: string) => createMigratedDatabase(serverUrl, name);
const dropDatabase = (name: string) => dropMigratedDatabase(serverUrl, name);

// npm:postgres keeps sockets and timers across awaits in ways the sanitizers misread.
Deno.test({
  name: "email-status CLI against a real database",
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const dbName = `email_cli_${crypto.randomUUID().slice(0, 8)}`;
  const url = await createPrivateDatabase(dbName);
  const env = { DATABASE_URL: url };
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const deadLetter = async (id: string, workflow: string, ageDays = 0) => {
    await sql`insert into email.retry_policies (workflow, max_attempts) values (${workflow}, 1) on conflict do nothing`;
    await sql`select email.record_queued(${id}, ${workflow}, ${id + "@example.com"}, '{"code":"482913"}'::jsonb)`;
    await sql`select email.mark_in_progress(${id})`;
    await sql`select * from email.record_failure(${id}, 1, 'the relay timed out', transport_code => 'ETIMEDOUT')`;
    if (ageDays) {
      await sql`update email.deliveries set completed_at = now() - make_interval(days => ${ageDays}) where delivery_id = ${id}`;
    }
  };
  try {
    await sql`select email.record_queued('cli-sent', 'welcome', 'ada@example.com', '{}'::jsonb)`;
    await sql`select email.mark_in_progress('cli-sent')`;
    await sql`select email.mark_sent('cli-sent', 1, '<abc@example.com>', '250 2.0.0 queued')`;
    await deadLetter("cli-dead-1", "reset");
    await deadLetter("cli-dead-2", "reset");
    await deadLetter("cli-dead-other", "invoice");
    await deadLetter("cli-dead-old", "invoice", 40);

    await t.step("show prints the delivery and its timeline", async () => {
      const r = await cli(["cli-sent"], { env });
      assertEquals(r.code, 0, r.stderr);
      assert(r.stdout.includes("status     sent"), r.stdout);
      assert(r.stdout.includes("queued → in_progress"), r.stdout);
      assert(r.stdout.includes("<abc@example.com>"), r.stdout);
      assert(!r.stdout.includes("\x1b["), "no colour when stdout is not a terminal");
    });

    await t.step("show --json parses back to the document", async () => {
      const r = await cli(["cli-dead-1", "--json"], { env });
      assertEquals(r.code, 0, r.stderr);
      const doc = JSON.parse(r.stdout);
      assertEquals(doc.status, "dead_letter");
      assertEquals(doc.events.map((e: { to_status: string }) => e.to_status), ["queued", "in_progress", "dead_letter"]);
      assert(!r.stdout.includes("482913"), "no payload in the output");
    });

    await t.step("list filters by status and workflow", async () => {
      const r = await cli(["list", "--status", "dead_letter", "--workflow", "reset", "--json"], { env });
      assertEquals(r.code, 0, r.stderr);
      assertEquals(JSON.parse(r.stdout).map((d: { delivery_id: string }) => d.delivery_id).sort(), [
        "cli-dead-1",
        "cli-dead-2",
      ]);
      const human = await cli(["list", "--recipient", "ADA@example.com", "--since", "1h"], { env });
      assert(human.stdout.includes("cli-sent") && !human.stdout.includes("cli-dead"), human.stdout);
      const limited = await cli(["list", "--limit", "1", "--json"], { env });
      assertEquals(JSON.parse(limited.stdout).length, 1);
    });

    await t.step("requeue asks first, on stderr, and does nothing on no", async () => {
      const r = await cliOnTty(["requeue", "cli-dead-1"], { env, answer: "n\n" });
      assertEquals(r.code, 1, r.stderr);
      assert(r.stderr.includes("Requeue 1 delivery (cli-dead-1)? [y/N]"), r.stderr);
      assertEquals(r.stdout, "", "the question is not output");
      const [d] = await sql`select status from email.deliveries where delivery_id = 'cli-dead-1'`;
      assertEquals(d.status, "dead_letter");
    });

    await t.step("without a terminal and without --yes, requeue and purge refuse and change nothing", async () => {
      const before = await sql`select delivery_id, status from email.deliveries order by 1`;
      for (const args of [["requeue", "cli-dead-1"], ["requeue", "--dead-letters"], ["purge", "--older-than", "1s"]]) {
        const r = await cli([...args, "--json"], { env, stdin: "y\n" });
        assertEquals(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
        assert(JSON.parse(r.stdout).error.message.includes("pass --yes"), r.stdout);
        assert(!r.stdout.includes("[y/N]"), "no question in the JSON output");
      }
      assertEquals(await sql`select delivery_id, status from email.deliveries order by 1`, before);
    });

    await t.step("requeue on yes, then the sweep's RPCs claim it and send it", async () => {
      const r = await cliOnTty(["requeue", "cli-dead-1", "--reason", "relay fixed", "--json"], { env, answer: "y\n" });
      assertEquals(r.code, 0, r.stderr);
      assert(r.stderr.includes("[y/N]"), r.stderr);
      assertEquals(JSON.parse(r.stdout).map((d: { delivery_id: string }) => d.delivery_id), ["cli-dead-1"]);
      const [event] = await sql`select actor, detail ->> 'reason' as reason from email.delivery_events
        where delivery_id = 'cli-dead-1' order by id desc limit 1`;
      assertEquals(event, { actor: "cli:tester", reason: "relay fixed" });
      const claimed = await sql`select delivery_id, attempt, payload from email.claim_due(100)`;
      const mine = claimed.find((c) => c.delivery_id === "cli-dead-1");
      assert(mine, "claim_due picks up the requeued delivery");
      assertEquals(mine.attempt, 2);
      assertEquals(mine.payload, { code: "482913" });
      await sql`select email.mark_sent('cli-dead-1', 2, '<again@example.com>', '250 ok')`;
      const shown = JSON.parse((await cli(["cli-dead-1", "--json"], { env })).stdout);
      assertEquals(shown.status, "sent");
      assertEquals(shown.events.map((e: { to_status: string }) => e.to_status), [
        "queued",
        "in_progress",
        "dead_letter",
        "queued",
        "in_progress",
        "sent",
      ]);
    });

    await t.step("requeue --dead-letters --workflow requeues by filter with --yes", async () => {
      const r = await cli(["requeue", "--dead-letters", "--workflow", "reset", "--since", "1h", "--yes", "--json"], {
        env,
      });
      assertEquals(r.code, 0, r.stderr);
      assertEquals(JSON.parse(r.stdout).map((d: { delivery_id: string }) => d.delivery_id), ["cli-dead-2"]);
      const [other] = await sql`select status from email.deliveries where delivery_id = 'cli-dead-other'`;
      assertEquals(other.status, "dead_letter");
    });

    await t.step("purge --older-than erases old dead letters only, in the trail", async () => {
      const r = await cli(["purge", "--older-than", "30d", "--yes", "--json"], { env });
      assertEquals(r.code, 0, r.stderr);
      assertEquals(
        JSON.parse(r.stdout).map((d: { delivery_id: string; status: string }) => [d.delivery_id, d.status]),
        [
          ["cli-dead-old", "purged"],
        ],
      );
      const payloads = await sql`select delivery_id from email.delivery_payloads
        where delivery_id in ('cli-dead-old', 'cli-dead-other') order by 1`;
      assertEquals(payloads.map((p) => p.delivery_id), ["cli-dead-other"]);
      const [event] = await sql`select to_status, actor from email.delivery_events
        where delivery_id = 'cli-dead-old' order by id desc limit 1`;
      assertEquals(event, { to_status: "purged", actor: "cli:tester" });
    });

    await t.step("metrics, human and --json", async () => {
      const r = await cli(["metrics", "--since", "24h", "--json"], { env });
      assertEquals(r.code, 0, r.stderr);
      const m = JSON.parse(r.stdout);
      assertEquals(m.totals.total, 5);
      assertEquals(m.totals.by_status.sent, 2);
      assertEquals(m.dead_letter_queue.size, 1);
      const human = await cli(["metrics"], { env });
      assertEquals(human.code, 0, human.stderr);
      assert(human.stdout.includes("dead-letter queue  1"), human.stdout);
      assert(/invoice\s+2\s+0\s+0\s+2/.test(human.stdout), human.stdout);
    });

    await t.step("metrics by recipient domain and SMTP relay show which provider defers", async () => {
      for (let i = 1; i <= 4; i++) {
        const id = `cli-relay-${i}`;
        await sql`select email.record_queued(${id}, 'relay', ${`r${i}@${
          i <= 2 ? "slow.test" : "fast.test"
        }`}, '{}'::jsonb)`;
        await sql`select email.mark_in_progress(${id})`;
        if (i <= 2) {
          await sql`select * from email.record_failure(${id}, 1, '451 try later', 451, relay => 'smtp-b.test')`;
        } else await sql`select email.mark_sent(${id}, 1, relay => 'smtp-a.test')`;
      }
      // the fold (pg_cron each minute, and each scrape) gives the new domains and relays their labels
      await sql`select email.fold_metric_events()`;
      const r = await cli(["metrics", "--since", "24h", "--workflow", "relay", "--json"], { env });
      assertEquals(r.code, 0, r.stderr);
      const m = JSON.parse(r.stdout);
      const rows = (list: Record<string, string | number>[], k: string) =>
        list.map((o) => [o[k], o.outcomes, o.sent, o.retrying, Number(o.deferral_rate)]);
      assertEquals(rows(m.domains, "domain"), [["fast.test", 2, 2, 0, 0], ["slow.test", 2, 0, 2, 1]]);
      assertEquals(rows(m.relays, "relay"), [["smtp-a.test", 2, 2, 0, 0], ["smtp-b.test", 2, 0, 2, 1]]);
      const human = await cli(["metrics", "--workflow", "relay"], { env });
      assertEquals(human.code, 0, human.stderr);
      assert(human.stdout.includes("attempt outcomes by recipient domain"), human.stdout);
      assert(/slow\.test\s+2\s+0\s+2\s+0\s+0\s+100\.0%/.test(human.stdout), human.stdout);
      assert(/smtp-a\.test\s+2\s+2\s+0\s+0\s+0\s+0\.0%/.test(human.stdout), human.stdout);
    });

    await t.step("control characters in stored text are shown, not obeyed; --json stays exact", async () => {
      const hostile = "550 5.1.1 \x1b]0;pwned\x07 no such user\x1b[2J \u202egnp.exe\x9b31m";
      // deno-lint-ignore no-control-regex
      const bad = (out: string) => /[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/.test(out);
      const [w] = await sql`select id::text from email.add_webhook_endpoint('https://hooks.example.com/x')`;
      await sql`select email.record_queued('cli-hostile', 'welcome', 'eve@example.com', '{}'::jsonb)`;
      await sql`select email.mark_in_progress('cli-hostile')`;
      await sql`select * from email.record_failure('cli-hostile', 1, ${hostile}, 451)`;
      await sql`select email.set_webhook_endpoint_enabled(${w.id}::uuid, false, ${hostile})`;
      await sql`update email.webhook_outbox set last_error = ${hostile} where endpoint_id = ${w.id}::uuid`;
      await sql`select email.add_suppression('eve@example.com', ${hostile})`;

      const shown = await cli(["cli-hostile"], { env });
      assertEquals(shown.code, 0, shown.stderr);
      assert(!bad(shown.stdout), JSON.stringify(shown.stdout));
      assert(shown.stdout.includes("\\x1b]0;pwned\\x07 no such user\\x1b[2J \\u{202e}gnp.exe\\x9b31m"), shown.stdout);
      const json = await cli(["cli-hostile", "--json"], { env });
      assert(JSON.parse(json.stdout).last_error_message.includes(hostile), json.stdout);
      for (const args of [["webhooks", "list"], ["webhooks", "messages"], ["suppressions", "list"]]) {
        const r = await cli(args, { env });
        assertEquals(r.code, 0, r.stderr);
        assert(r.stdout.includes("\\x1b]0;pwned") && !bad(r.stdout), `${args.join(" ")}: ${JSON.stringify(r.stdout)}`);
      }
      const messages = await cli(["webhooks", "messages", "--endpoint", w.id, "--json"], { env });
      assert(
        JSON.parse(messages.stdout).every((m: { last_error: string }) => m.last_error === hostile),
        messages.stdout,
      );
    });

    await t.step(
      "clear errors: bad id, unknown delivery, unreachable database, missing schema, no config",
      async () => {
        const bad = await cli(["not a valid id"], { env });
        assertEquals(bad.code, 2);
        assert(bad.stderr.includes("not a delivery id"), bad.stderr);
        const missing = await cli(["cli-nope", "--json"], { env });
        assertEquals(missing.code, 3);
        assertEquals(JSON.parse(missing.stdout).error.message, "delivery cli-nope not found");
        const down = await cli(["list"], { env: { DATABASE_URL: "postgresql://postgres:postgres@127.0.0.1:1/none" } });
        assertEquals(down.code, 1);
        assert(down.stderr.includes("cannot reach the database at 127.0.0.1:1/none"), down.stderr);
        const noSchema = await cli(["list"], { env: { DATABASE_URL: serverUrl! } });
        assertEquals(noSchema.code, 1);
        assert(noSchema.stderr.includes("the email_api schema is missing"), noSchema.stderr);
        const none = await cli(["list"]);
        assertEquals(none.code, 2);
        assert(none.stderr.includes("set DATABASE_URL"), none.stderr);
        const both = await cli(["requeue", "cli-dead-2", "--dead-letters"], { env });
        assertEquals(both.code, 2);
        const purgedAgain = await cli(["requeue", "cli-dead-old", "--yes"], { env });
        assertEquals(purgedAgain.code, 1);
        assert(purgedAgain.stderr.includes("cannot be requeued from purged"), purgedAgain.stderr);
      },
    );

    await t.step("DELIVERY_STATUS_DATABASE_URL wins over DATABASE_URL", async () => {
      const r = await cli(["cli-sent"], {
        env: { DELIVERY_STATUS_DATABASE_URL: url, DATABASE_URL: "postgresql://postgres:postgres@127.0.0.1:1/none" },
      });
      assertEquals(r.code, 0, r.stderr);
    });
  } finally {
    await sql.end();
    await dropDatabase(dbName);
  }
});

Deno.test("the PostgREST transport sends the request shape PostgREST expects", async () => {
  const seen: { method: string; path: string; headers: Headers; body: unknown }[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    seen.push({
      method: req.method,
      path: url.pathname + url.search,
      headers: req.headers,
      body: req.method === "POST" ? await req.json() : null,
    });
    if (req.headers.get("apikey") !== "service-key" || req.headers.get("authorization") !== "Bearer service-key") {
      return Response.json({ code: "PGRST301", message: "bad key" }, { status: 401 });
    }
    if (url.pathname === "/rest/v1/rpc/get_delivery") {
      return Response.json(
        req.headers.get("content-profile") === "email_api" ? { delivery_id: "x", events: [] } : null,
      );
    }
    if (url.pathname === "/rest/v1/deliveries") return Response.json([]);
    if (url.pathname === "/rest/v1/rpc/requeue") {
      return Response.json({ code: "EM004", message: "delivery nope does not exist" }, { status: 400 });
    }
    return Response.json({ code: "PGRST106", message: "Invalid schema: email_api" }, { status: 406 });
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    const api = restApi(base, "service-key", "cli:tester");
    assertEquals(await api.getDelivery("x"), { delivery_id: "x", events: [] });
    assertEquals(seen[0].method, "POST");
    assertEquals(seen[0].path, "/rest/v1/rpc/get_delivery");
    assertEquals(seen[0].body, { delivery_id: "x" });
    assertEquals(seen[0].headers.get("content-profile"), "email_api");
    assertEquals(seen[0].headers.get("accept-profile"), "email_api");

    await api.list({ status: "dead_letter", workflow: "reset", since: new Date("2026-01-01T00:00:00Z"), limit: 10 });
    const q = new URL(base + seen[1].path).searchParams;
    assertEquals(seen[1].method, "GET");
    assertEquals(q.get("status"), "eq.dead_letter");
    assertEquals(q.get("workflow"), "eq.reset");
    assertEquals(q.get("queued_at"), "gte.2026-01-01T00:00:00.000Z");
    assertEquals(q.get("limit"), "10");
    assertEquals(seen[1].headers.get("accept-profile"), "email_api");

    const codeOf = (p: Promise<unknown>) => p.then(() => "no error", (e: { code?: string }) => e.code);
    assertEquals(await codeOf(api.requeue(["nope"], "why")), "EM004");
    assertEquals(seen[2].body, { delivery_ids: ["nope"], reason: "why", actor: "cli:tester" });

    assertEquals(await codeOf(api.purgeDeadLetters({ olderThanSeconds: 86400, reason: "retention" })), "PGRST106");
    assertEquals(seen[3].body, { older_than: "86400 seconds", reason: "retention", actor: "cli:tester" });
  } finally {
    await server.shutdown();
  }
});
