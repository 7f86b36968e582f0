/** Waiting in tests: a pause, and polling until a condition holds (bounded, naming what it waited for). */

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` every `everyMs` until it holds; throws "timed out waiting for <what>" after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  options: { timeoutMs?: number; everyMs?: number } = {},
): Promise<void> {
  const until = Date.now() + (options.timeoutMs ?? 10_000);
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(options.everyMs ?? 50);
  }
}
