// `npm run publish -- --to ada@example.com [--workflow verification-code|invite|password-reset] [--id <deliveryId>]`
// Publishes a test message to the worker that `npm start` runs, exactly as a Pub/Sub push subscription would:
// the JSON envelope with base64 data, and an RS256 OIDC token from the local signer whose JWKS the worker trusts.
// Then it waits for the delivery to settle and prints its status and timeline.
import { parseArgs } from "node:util";
import { randomInt, randomUUID } from "node:crypto";
import postgres from "postgres";
import { loadDevState, loadRuntime, signPushToken } from "./lib/dev_keys.mjs";

const { values } = parseArgs({
  options: {
    to: { type: "string", default: "ada@example.com" },
    workflow: { type: "string", default: "verification-code" },
    id: { type: "string" },
    "no-wrapper": { type: "boolean", default: false },
  },
});

const sampleData = {
  "verification-code": { code: String(randomInt(100000, 999999)), expiresInMinutes: 10 },
  invite: {
    inviterName: "Grace Hopper",
    organizationName: "Analytical Engines",
    inviteUrl: "http://localhost:3000/invite/abc123",
  },
  "password-reset": { resetUrl: "http://localhost:3000/reset/xyz789", expiresInMinutes: 30 },
};

const runtime = loadRuntime();
if (!runtime) {
  console.error("nothing to publish to: run `npm start` first (in another terminal)");
  process.exit(1);
}
const state = await loadDevState();
const deliveryId = values.id ?? `local-${randomUUID()}`;
const event = {
  deliveryId,
  workflow: values.workflow,
  recipient: values.to,
  data: sampleData[values.workflow] ?? {},
  metadata: { source: "npm run publish" },
};
const messageId = String(randomInt(1e12, 9e12));
const now = new Date().toISOString();
const token = await signPushToken(state, runtime.audience);
const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
let body;
if (values["no-wrapper"]) {
  body = JSON.stringify(event);
  Object.assign(headers, {
    "x-goog-pubsub-message-id": messageId,
    "x-goog-pubsub-publish-time": now,
    "x-goog-pubsub-subscription-name": "projects/local/subscriptions/email-worker",
  });
} else {
  body = JSON.stringify({
    message: {
      data: Buffer.from(JSON.stringify(event)).toString("base64"),
      attributes: { source: "npm-run-publish" },
      messageId,
      message_id: messageId,
      publishTime: now,
      publish_time: now,
    },
    subscription: "projects/local/subscriptions/email-worker",
  });
}

const res = await fetch(runtime.workerUrl, { method: "POST", headers, body });
console.log(`push ${deliveryId} -> HTTP ${res.status} ${await res.text()}`);

const sql = postgres(runtime.dbUrl, { max: 1, onnotice: () => {} });
try {
  let d;
  for (let i = 0; i < 50; i++) {
    [d] =
      await sql`select status, attempts, last_error_code, provider_message_id from email.deliveries where delivery_id = ${deliveryId}`;
    if (d && !["queued", "in_progress"].includes(d.status)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  if (!d) {
    console.log("no delivery was recorded (see the reply above)");
  } else {
    console.log(
      `delivery ${deliveryId}: ${d.status} after ${d.attempts} attempt(s)${
        d.last_error_code ? `, last error ${d.last_error_code}` : ""
      }`,
    );
    const events =
      await sql`select created_at, from_status, to_status, attempt, error_code, actor from email.delivery_events where delivery_id = ${deliveryId} order by id`;
    for (const e of events) {
      console.log(
        `  ${e.created_at.toISOString()}  ${(e.from_status ?? "-").padEnd(11)} -> ${
          e.to_status.padEnd(11)
        } attempt ${e.attempt}${e.error_code ? ` ${e.error_code}` : ""}  by ${e.actor}`,
      );
    }
    console.log(`inbox: ${runtime.inbox}`);
  }
} finally {
  await sql.end();
}
