/**
 * Fault: Postgres stops in the middle of a run of pushes (a private server the test stops and
 * starts; pg_ctl -m immediate, like a crash). Bounded: 30 pushes, a few seconds.
 */
import { assert, assertEquals } from "./support/assert.ts";
import { test, withHarness } from "./support/harness.ts";
import { startPrivatePostgres } from "./support/postgres.ts";
import { envelope, verificationEvent } from "./support/pubsub.ts";
import { mailTo } from "./support/smtp.ts";
import { openDb } from "./support/db.ts";

const trackerEnv = {
  TRACKER_TIMEOUT_MS: "800",
  TRACKER_BREAKER_THRESHOLD: "2",
  TRACKER_BREAKER_COOLDOWN_MS: "200",
};

type Pushed = { recipient: string; deliveryId: string; status: number; body: Record<string, unknown> };

test("Postgres stopped mid-run with TRACKING_MODE=optional: every push is sent or answered 5xx, and tracking resumes", async () => {
  const pg = await startPrivatePostgres();
  const db = openDb(pg.url);
  try {
    await withHarness(async ({ smtp, worker, token }) => {
      const pushed: Pushed[] = [];
      let stopped = false;
      const pushOne = async () => {
        const event = verificationEvent();
        const res = await worker.push(envelope(event), { token });
        pushed.push({
          recipient: event.recipient,
          deliveryId: event.deliveryId!,
          status: res.status,
          body: await res.json(),
        });
      };
      // Three pushers; Postgres goes away after the 8th answer, while pushes are in flight, and comes
      // back 2 s later (a push whose send started waits for it to record the outcome; the others go on).
      let outage: Promise<void> | undefined;
      await Promise.all([0, 1, 2].map(async () => {
        for (let i = 0; i < 8; i++) {
          await pushOne();
          if (pushed.length >= 8 && !stopped) {
            stopped = true;
            await pg.stop();
            outage = new Promise((r) => setTimeout(r, 2000)).then(() => pg.start());
          }
        }
      }));
      assert(stopped);
      await outage;

      // Nothing lost, nothing acked unsent: a 2xx means the mail went out, anything else is a 5xx.
      for (const p of pushed) {
        const mails = mailTo(smtp, p.recipient).length;
        if (p.status >= 200 && p.status < 300) {
          assertEquals([p.body.outcome, mails >= 1], ["sent", true], JSON.stringify(p));
        } else {
          assert(p.status >= 500, JSON.stringify(p));
          assertEquals(mails, 0, JSON.stringify(p));
        }
      }
      assert(pushed.some((p) => p.body.tracked === false), "some pushes ran while Postgres was down");
      assert(pushed.slice(0, 6).every((p) => p.body.tracked === true), "pushes before the stop were tracked");

      // Tracking resumes by itself once the breaker's cooldown lets a trial call through.
      let resumed: Pushed | undefined;
      for (let i = 0; i < 20 && !resumed; i++) {
        await new Promise((r) => setTimeout(r, 150));
        await pushOne();
        const last = pushed[pushed.length - 1];
        if (last.body.tracked === true) resumed = last;
      }
      assert(resumed, "tracking resumed after Postgres came back");
      assertEquals((await db.delivery(resumed.deliveryId))?.status, "sent");
      assertEquals((await (await worker.health()).json()).tracking.state, "closed");

      // Sweeps after recovery (expired leases reaped, retries made due at once) send no push that was
      // answered "sent" again; a claimed push answered 5xx (nothing sent) is sent by them, once.
      await new Promise((r) => setTimeout(r, 2500)); // past LEASE_SECONDS
      for (let round = 0; round < 4; round++) {
        await (await worker.sweep()).body?.cancel();
        for (const p of pushed) {
          await db.sql`update email.deliveries set next_attempt_at = now() - interval '1 second'
            where status = 'retrying' and delivery_id = ${p.deliveryId}`;
        }
      }
      for (const p of pushed) {
        const mails = mailTo(smtp, p.recipient).length;
        if (p.status >= 200 && p.status < 300) assertEquals(mails, 1, `sent once: ${JSON.stringify(p)}`);
        else assert(mails <= 1, `at most once: ${JSON.stringify(p)}`);
      }
    }, { env: { DELIVERY_STATUS_DATABASE_URL: pg.url, TRACKING_MODE: "optional", LEASE_SECONDS: "2", ...trackerEnv } });
  } finally {
    await db.close();
    await pg.destroy();
  }
});

/**
 * TRACKING_MODE=required across an outage: the pushes made while Postgres is down (one at a time, or
 * all at once, more than the tracker's pool has connections) are nacked and send nothing; Pub/Sub's
 * redeliveries after Postgres is back are sent, once each.
 */
async function requiredModeOutage(pushes: "one at a time" | "all at once"): Promise<void> {
  const pg = await startPrivatePostgres();
  try {
    await withHarness(async ({ smtp, worker, token }) => {
      const before = verificationEvent();
      assertEquals((await (await worker.push(envelope(before), { token })).json()).tracked, true);

      await pg.stop();
      const down = Array.from({ length: 8 }, () => verificationEvent());
      const push = async (e: typeof before) => {
        const res = await worker.push(envelope(e), { token });
        await res.body?.cancel();
        return res.status;
      };
      const statuses: number[] = [];
      if (pushes === "all at once") statuses.push(...await Promise.all(down.map(push)));
      else for (const e of down) statuses.push(await push(e));
      assertEquals(statuses, down.map(() => 503));
      for (const e of down) assertEquals(mailTo(smtp, e.recipient).length, 0);
      assertEquals(smtp.received.length, 1);

      // Pub/Sub redelivers after Postgres is back: the same pushes are then sent, once each.
      await pg.start();
      let pending = [...down];
      for (let i = 0; i < 30 && pending.length > 0; i++) {
        await new Promise((r) => setTimeout(r, 150));
        const e = pending[0];
        const res = await worker.push(envelope(e), { token });
        const body = await res.json();
        if (res.status === 200) {
          assertEquals([body.outcome, body.tracked], ["sent", true]);
          pending = pending.slice(1);
        }
      }
      assertEquals(pending.length, 0, "every nacked push was sent after Postgres came back");
      for (const e of down) assertEquals(mailTo(smtp, e.recipient).length, 1);
    }, { env: { DELIVERY_STATUS_DATABASE_URL: pg.url, TRACKING_MODE: "required", ...trackerEnv } });
  } finally {
    await pg.destroy();
  }
}

test("Postgres stopped with TRACKING_MODE=required: nothing is sent while it is down, every push is nacked, redeliveries are sent after", async () => {
  await requiredModeOutage("one at a time");
});

test("an outage with more pushes in flight than tracker connections: tracking still resumes and the nacked pushes are sent", async () => {
  await requiredModeOutage("all at once");
});
