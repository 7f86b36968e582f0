import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { test, withHarness } from "./support/harness.ts";
import { base64, envelope, newDeliveryId, unwrapped, verificationEvent } from "./support/pubsub.ts";
import { mailTo } from "./support/smtp.ts";

test("a valid push is sent and recorded in_progress (born claimed) -> sent, and the payload is erased", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    const event = verificationEvent();
    const res = await worker.push(envelope(event, { deliveryAttempt: 1 }), { token });
    assertEquals(res.status, 200);
    const body = await res.json();
    assertEquals([body.deliveryId, body.status, body.attempt, body.tracked], [event.deliveryId, "sent", 1, true]);

    const [mail] = mailTo(smtp, event.recipient);
    assertEquals(mail.subject, "Your verification code");
    assertMatch(mail.text ?? "", /493817/);
    assertEquals(mail.headers.get("x-email-delivery-id"), event.deliveryId);

    const d = await db.delivery(event.deliveryId!);
    assertEquals([d?.status, d?.attempts], ["sent", 1]);
    assertMatch(String(d?.provider_response), /^250 /);
    assertEquals(d?.provider_message_id, mail.messageId);
    const events = await db.events(event.deliveryId!);
    assertEquals(events.map((e) => [e.from_status, e.to_status]), [[null, "in_progress"], ["in_progress", "sent"]]);
    const [{ n }] = await db.sql`select count(*)::int as n from email.delivery_payloads where delivery_id = ${event
      .deliveryId!}`;
    assertEquals(n, 0);
  });
});

test("the no-wrapper form (raw event body, x-goog-pubsub-* headers) is accepted", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    const event = verificationEvent();
    const { body, headers } = unwrapped(event);
    const res = await worker.push(body, { token, headers });
    assertEquals((await res.json()).status, "sent");
    assertEquals(mailTo(smtp, event.recipient).length, 1);
    assertEquals((await db.delivery(event.deliveryId!))?.status, "sent");
  });
});

test("without a deliveryId the Pub/Sub messageId is the idempotency key", async () => {
  await withHarness(async ({ worker, db, token }) => {
    const messageId = String(Date.now()) + String(Math.floor(Math.random() * 1e6));
    const event = verificationEvent({ deliveryId: undefined });
    const first = await (await worker.push(envelope(event, { messageId }), { token })).json();
    assertEquals([first.deliveryId, first.status], [messageId, "sent"]);
    const again = await (await worker.push(envelope(event, { messageId }), { token })).json();
    assertEquals([again.status, again.deliveryStatus], ["duplicate", "sent"]);
    assertEquals((await db.delivery(messageId))?.attempts, 1);
  });
});

const invalidInputs: { name: string; reasonCode: string; body: (id: string) => string }[] = [
  { name: "an envelope whose message is not an object", reasonCode: "invalid_envelope", body: () => '{"message": 42}' },
  { name: "a message without data", reasonCode: "invalid_envelope", body: () => '{"message": {"messageId": "1"}}' },
  {
    name: "data that is not base64",
    reasonCode: "invalid_encoding",
    body: () => envelope(null, { rawData: "%%% not base64 %%%" }),
  },
  {
    name: "data that is not JSON",
    reasonCode: "invalid_json",
    body: () => envelope(null, { rawData: base64("{nope") }),
  },
  { name: "a body that is not JSON", reasonCode: "invalid_json", body: () => "this is not json" },
  {
    name: "a recipient with CR/LF (header injection)",
    reasonCode: "invalid_event",
    body: (id) => envelope(verificationEvent({ deliveryId: id, recipient: "ada@example.com\r\nBcc: eve@evil.test" })),
  },
  {
    name: "two recipients",
    reasonCode: "invalid_event",
    body: (id) => envelope(verificationEvent({ deliveryId: id, recipient: "ada@example.com, bob@example.com" })),
  },
  {
    name: "a deliveryId with forbidden characters",
    reasonCode: "invalid_event",
    body: () => envelope(verificationEvent({ deliveryId: "a b/c" })),
  },
  {
    name: "a NUL character in data or metadata (Postgres cannot store it)",
    reasonCode: "invalid_event",
    body: (id) => envelope(verificationEvent({ deliveryId: id, metadata: { note: "a\u0000b" } })),
  },
  {
    name: "a lone surrogate in data (not storable text)",
    reasonCode: "invalid_event",
    body: (id) =>
      envelope(null, {
        rawData: base64(
          `{"deliveryId":"${id}","workflow":"verification-code","recipient":"ada@example.com",` +
            `"data":{"code":"123456","expiresInMinutes":10,"x":"\\ud800"}}`,
        ),
      }),
  },
  {
    name: "an unknown workflow",
    reasonCode: "unknown_workflow",
    body: (id) => envelope(verificationEvent({ deliveryId: id, workflow: "newsletter" })),
  },
  {
    name: "workflow data that fails its schema",
    reasonCode: "invalid_data",
    body: (id) => envelope(verificationEvent({ deliveryId: id, data: { code: "<b>", expiresInMinutes: 10 } })),
  },
];

/** The event inside a wrapped push body (message.data), parsed. */
function eventIn(body: string): unknown {
  const data = JSON.parse(body).message.data as string;
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(data), (ch) => ch.charCodeAt(0))));
}

for (const c of invalidInputs) {
  test(`invalid input (${c.name}) is stored in rejected_messages with its raw body and acked with the reason`, async () => {
    await withHarness(async ({ smtp, worker, db, token }) => {
      const id = newDeliveryId("rejected");
      const body = c.body(id);
      const messageId = (() => {
        try {
          return JSON.parse(body)?.message?.messageId as string | undefined;
        } catch {
          return undefined;
        }
      })();
      const res = await worker.push(body, { token });
      assertEquals(res.status, 200);
      const reply = await res.json();
      assertEquals([reply.status, reply.reasonCode], ["rejected", c.reasonCode]);
      assert(typeof reply.reason === "string" && reply.reason.length > 0);
      const [row] = await db.sql<
        { reason_code: string; raw_body: Uint8Array; redacted: string[]; body_bytes: number; headers: unknown }[]
      >`select reason_code, raw_body, to_jsonb(redacted) as redacted, body_bytes, headers from email.rejected_messages
        where id = ${reply.rejectedId}`;
      assertEquals(row.reason_code, c.reasonCode);
      const stored = new TextDecoder().decode(row.raw_body);
      if (row.redacted.length === 0) {
        assertEquals(stored, body);
      } else {
        // The verification code is the one secret of these events: replaced, the rest as it was.
        assertEquals(row.redacted, ["message.data:data.code"]);
        const sent = eventIn(body) as { data: Record<string, unknown> };
        assertEquals(eventIn(stored), { ...sent, data: { ...sent.data, code: "[redacted]" } });
      }
      assertEquals(row.body_bytes, row.raw_body.length);
      assert(!JSON.stringify(row.headers).toLowerCase().includes("authorization"));
      if (messageId) assertEquals((await db.rejected({ messageId })).length >= 1, true);
      assertEquals(smtp.attempts, 0);
      assertEquals(await db.delivery(id), undefined);
    });
  });
}

test("invalid input that cannot be stored gets 503 so Pub/Sub redelivers it", async () => {
  await withHarness(async ({ smtp, worker, token }) => {
    const res = await worker.push('{"message": 42}', { token });
    assertEquals(res.status, 503);
    assertEquals((await res.json()).error.code, "rejection_not_stored");
    assertEquals(smtp.attempts, 0);
  }, {
    env: {
      DELIVERY_STATUS_DATABASE_URL: "postgresql://postgres:postgres@127.0.0.1:1/none",
      TRACKER_TIMEOUT_MS: "1000",
    },
  });
});

test("the same deliveryId with different content is stored as an idempotency conflict, acked, and nothing more is sent", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    const event = verificationEvent();
    assertEquals((await (await worker.push(envelope(event), { token })).json()).status, "sent");
    const changed = { ...event, data: { code: "111111", expiresInMinutes: 10 } };
    const res = await worker.push(envelope(changed), { token });
    assertEquals(res.status, 200);
    const reply = await res.json();
    assertEquals([reply.status, reply.reasonCode], ["rejected", "idempotency_conflict"]);
    const rows = await db.rejected({ deliveryId: event.deliveryId });
    assertEquals(rows.map((r) => r.reason_code), ["idempotency_conflict"]);
    assertEquals(smtp.received.length, 1);
  });
});

test("a duplicate push of a sent delivery sends nothing", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    const event = verificationEvent();
    await worker.push(envelope(event), { token });
    const res = await worker.push(envelope(event), { token });
    assertEquals(res.status, 200);
    assertEquals(await res.json(), { deliveryId: event.deliveryId, status: "duplicate", deliveryStatus: "sent" });
    assertEquals(smtp.attempts, 1);
    assertEquals(
      (await db.events(event.deliveryId!)).length,
      2,
      "born in_progress, then sent: nothing for the duplicate",
    );
  });
});

test("a duplicate push of a failed delivery sends nothing", async () => {
  await withHarness(async ({ smtp, worker, token }) => {
    smtp.respond = () => ({ code: 550, message: "5.1.1 No such user" });
    const event = verificationEvent();
    assertEquals((await (await worker.push(envelope(event), { token })).json()).status, "failed");
    const again = await (await worker.push(envelope(event), { token })).json();
    assertEquals([again.status, again.deliveryStatus], ["duplicate", "failed"]);
    assertEquals(smtp.attempts, 1);
  });
});

test("a duplicate push while the delivery is in progress under a live lease sends nothing", async () => {
  await withHarness(async ({ smtp, worker, token }) => {
    smtp.delayMs = 800;
    const event = verificationEvent();
    const first = worker.push(envelope(event), { token });
    await new Promise((r) => setTimeout(r, 300));
    const second = await (await worker.push(envelope(event), { token })).json();
    assertEquals([second.status, second.deliveryStatus], ["duplicate", "in_progress"]);
    assertEquals((await (await first).json()).status, "sent");
    assertEquals(smtp.attempts, 1);
  });
});

test("a transient SMTP failure (451) is recorded as retrying with next_attempt_at and acked", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    smtp.respond = () => ({ code: 451, message: "4.3.0 Try again later" });
    const event = verificationEvent();
    const res = await worker.push(envelope(event), { token });
    assertEquals(res.status, 200);
    const reply = await res.json();
    assertEquals([reply.outcome, reply.status, reply.errorCode], ["transient_failure", "retrying", "smtp_451"]);
    const d = await db.delivery(event.deliveryId!);
    assertEquals([d?.status, d?.last_error_code], ["retrying", "smtp_451"]);
    assert((d?.next_attempt_at as Date) > new Date());
  });
});

test("a permanent SMTP failure (550 5.1.1) ends the delivery failed and is acked", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    smtp.respond = () => ({ code: 550, message: "5.1.1 No such user" });
    const event = verificationEvent();
    const res = await worker.push(envelope(event), { token });
    assertEquals(res.status, 200);
    assertEquals((await res.json()).status, "failed");
    const d = await db.delivery(event.deliveryId!);
    assertEquals([d?.status, d?.last_error_code], ["failed", "smtp_550_5.1.1"]);
  });
});

test("an operator-side refusal from our relay (550 5.7.0) is retried, not failed", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    smtp.respond = () => ({ code: 550, message: "5.7.0 Sender address not allowed by relay policy" });
    const event = verificationEvent();
    assertEquals((await (await worker.push(envelope(event), { token })).json()).status, "retrying");
    assertEquals((await db.delivery(event.deliveryId!))?.status, "retrying");
  });
});

test("wrong SMTP credentials (535) are retried, not failed", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    const event = verificationEvent();
    const reply = await (await worker.push(envelope(event), { token })).json();
    assertEquals([reply.status, reply.errorCode], ["retrying", "smtp_535_5.7.8"]);
    assertEquals((await db.delivery(event.deliveryId!))?.status, "retrying");
    assertEquals(smtp.received.length, 0);
  }, { smtpAuth: { user: "relay", pass: "right" }, env: { SMTP_USER: "relay", SMTP_PASSWORD: "wrong" } });
});

test("with valid SMTP credentials the mail goes out authenticated", async () => {
  await withHarness(async ({ smtp, worker, token }) => {
    const event = verificationEvent();
    assertEquals((await (await worker.push(envelope(event), { token })).json()).status, "sent");
    assertEquals(mailTo(smtp, event.recipient).length, 1);
  }, { smtpAuth: { user: "relay", pass: "right" }, env: { SMTP_USER: "relay", SMTP_PASSWORD: "right" } });
});

const unreachable = {
  DELIVERY_STATUS_DATABASE_URL: "postgresql://postgres:postgres@127.0.0.1:1/none",
  TRACKER_TIMEOUT_MS: "1000",
};

test("tracking unreachable, TRACKING_MODE=optional: the mail is sent anyway and acked", async () => {
  await withHarness(async ({ smtp, worker, token }) => {
    const event = verificationEvent();
    const res = await worker.push(envelope(event), { token });
    assertEquals(res.status, 200);
    const reply = await res.json();
    assertEquals([reply.outcome, reply.tracked], ["sent", false]);
    assertEquals(mailTo(smtp, event.recipient).length, 1);
    assert(worker.logs.some((l) => l.action === "sending_untracked"));
  }, { env: unreachable });
});

// With nothing recorded, only Pub/Sub can retry: the answer to a failed send says whether it should.
for (
  const c of [
    {
      name: "a transient failure answers 5xx so Pub/Sub redelivers",
      reply: { code: 421, message: "4.7.0 Try again later" },
      status: 503,
      outcome: "transient_failure",
    },
    {
      name: "a permanent failure is acked",
      reply: { code: 550, message: "5.1.1 No such user" },
      status: 200,
      outcome: "permanent_failure",
    },
  ]
) {
  test(`tracking unreachable, TRACKING_MODE=optional: ${c.name}`, async () => {
    await withHarness(async ({ smtp, worker, token }) => {
      smtp.respond = () => c.reply;
      const res = await worker.push(envelope(verificationEvent()), { token });
      assertEquals(res.status, c.status);
      assertEquals((await res.json()).outcome, c.outcome);
    }, { env: unreachable });
  });
}

test("tracking unreachable, TRACKING_MODE=required: 503 and nothing is sent", async () => {
  await withHarness(async ({ smtp, worker, token }) => {
    const res = await worker.push(envelope(verificationEvent()), { token });
    assertEquals(res.status, 503);
    assertEquals((await res.json()).error.code, "tracking_unavailable");
    assertEquals(smtp.attempts, 0);
    assertEquals((await worker.health()).status, 503);
  }, { env: { ...unreachable, TRACKING_MODE: "required", TRACKER_BREAKER_THRESHOLD: "1" } });
});

test("ten concurrent pushes of one message send exactly one mail", async () => {
  await withHarness(async ({ smtp, worker, db, token }) => {
    const event = verificationEvent();
    const body = envelope(event);
    const replies = await Promise.all(
      Array.from({ length: 10 }, async () => (await worker.push(body, { token })).json()),
    );
    assertEquals(replies.filter((r) => r.status === "sent").length, 1);
    assertEquals(replies.filter((r) => r.status === "duplicate").length, 9);
    assertEquals(mailTo(smtp, event.recipient).length, 1);
    const d = await db.delivery(event.deliveryId!);
    assertEquals([d?.status, d?.attempts], ["sent", 1]);
  });
});

test("logs are JSON lines with component, action and deliveryId; recipients masked; no code, link or token", async () => {
  await withHarness(async ({ worker, token }) => {
    const event = verificationEvent({
      workflow: "password-reset",
      data: { resetUrl: "https://app.test/reset?token=SECRET-RESET-TOKEN", expiresInMinutes: 30 },
    });
    await worker.push(envelope(event), { token });
    const verify = verificationEvent({ data: { code: "SECRETCODE77", expiresInMinutes: 5 } });
    await worker.push(envelope(verify), { token });
    const all = worker.rawLogs.join("\n");
    for (const secret of [event.recipient, verify.recipient, "SECRET-RESET-TOKEN", "SECRETCODE77", token]) {
      assert(!all.includes(secret), `a log line contains ${secret.slice(0, 12)}...`);
    }
    const sent = worker.logs.find((l) => l.action === "sent" && l.deliveryId === event.deliveryId);
    assertEquals([sent?.component, sent?.attempt, sent?.recipient], ["email-worker", 1, `u***@example.com`]);
  });
});
