/**
 * One call that brings up everything a worker test needs (SMTP server, JWKS server, the worker on
 * HTTP, a database reader) and tears it down, plus `test` with sanitizers off (npm:postgres and
 * smtp-server keep sockets and timers across awaits in ways Deno's sanitizers misread) and
 * `pushOwnedDelivery` for the tests of the routes users call.
 */
import { assertEquals } from "./assert.ts";
import { openDb, type TestDb } from "./db.ts";
import { startJwks, type TestJwks } from "./jwks.ts";
import { envelope, newDeliveryId, verificationEvent } from "./pubsub.ts";
import { startSmtpServer, type TestSmtp } from "./smtp.ts";
import { databaseUrl, startWorker, type TestWorker } from "./worker.ts";

/** Everything a worker test uses. */
export type Harness = { smtp: TestSmtp; jwks: TestJwks; worker: TestWorker; db: TestDb; token: string };

/** Deno.test with the resource and op sanitizers off. */
export function test(name: string, fn: () => Promise<void> | void): void {
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });
}

/** Runs `fn` with a fresh harness; `env` overrides the worker's environment. */
export async function withHarness(
  fn: (h: Harness) => Promise<void>,
  options: { env?: Record<string, string | undefined>; smtpAuth?: { user: string; pass: string } } = {},
): Promise<void> {
  const smtp = await startSmtpServer({ auth: options.smtpAuth });
  const jwks = await startJwks();
  const worker = await startWorker({ smtpPort: smtp.port, jwksUrl: jwks.url, env: options.env });
  const db = openDb(databaseUrl());
  try {
    await fn({ smtp, jwks, worker, db, token: await jwks.sign() });
  } finally {
    await worker.close();
    await db.close();
    await jwks.close();
    await smtp.close();
  }
}

/** Pushes a new verification event of a new user (its user_id), which must be answered 200; returns both ids. */
export async function pushOwnedDelivery(
  { worker, token }: Pick<Harness, "worker" | "token">,
  prefix: string,
): Promise<{ owner: string; id: string }> {
  const owner = crypto.randomUUID();
  const id = newDeliveryId(prefix);
  const push = await worker.push(envelope(verificationEvent({ deliveryId: id, userId: owner })), { token });
  assertEquals(push.status, 200);
  await push.body?.cancel();
  return { owner, id };
}
