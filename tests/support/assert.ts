/** The few assertions the tests use (node:assert, since jsr:@std/assert is unreachable here). */
import { deepStrictEqual, ok } from "node:assert";

/** Asserts that `value` is truthy. */
export function assert(value: unknown, message?: string): asserts value {
  ok(value, message ?? "assertion failed");
}

/** Asserts deep equality. */
export function assertEquals<T>(actual: unknown, expected: T, message?: string): void {
  if (message === undefined) deepStrictEqual(actual, expected);
  else deepStrictEqual(actual, expected, message);
}

/** Asserts that `actual` matches `re`. */
export function assertMatch(actual: string, re: RegExp, message?: string): void {
  ok(re.test(actual), message ?? `${JSON.stringify(actual)} does not match ${re}`);
}

/** Asserts that `fn` throws (or rejects) with a message matching `re`. */
export async function assertRejects(fn: () => unknown, re: RegExp): Promise<void> {
  try {
    await fn();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    ok(re.test(message), `error ${JSON.stringify(message)} does not match ${re}`);
    return;
  }
  throw new Error(`expected an error matching ${re}`);
}
