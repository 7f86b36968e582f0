/**
 * A circuit breaker for the tracking database: closed while calls succeed; open after `threshold`
 * consecutive failures, refusing calls at once; half-open after `cooldownMs`, letting one trial call
 * through, whose success closes it and whose failure opens it for another cooldown.
 */

/** The breaker's state. */
export type BreakerState = "closed" | "open" | "half_open";

/**
 * A circuit breaker; ask allow() before a call and report success() or failure() after it, or
 * release() when the call said nothing about the server (it failed on our side before an answer).
 */
export type CircuitBreaker = {
  allow(): boolean;
  success(): void;
  failure(): void;
  release(): void;
  state(): BreakerState;
  consecutiveFailures(): number;
};

/** Creates a breaker that opens after `threshold` consecutive failures for `cooldownMs`. */
export function createCircuitBreaker(
  options: { threshold: number; cooldownMs: number; now?: () => number; onChange?: (s: BreakerState) => void },
): CircuitBreaker {
  const now = options.now ?? Date.now;
  let state: BreakerState = "closed";
  let failures = 0;
  let openedAt = 0;
  let trialInFlight = false;
  const set = (next: BreakerState) => {
    if (next !== state) {
      state = next;
      options.onChange?.(next);
    }
  };
  return {
    allow() {
      if (state === "closed") return true;
      if (state === "open" && now() - openedAt >= options.cooldownMs) {
        set("half_open");
        trialInFlight = true;
        return true;
      }
      if (state === "half_open" && !trialInFlight) {
        trialInFlight = true;
        return true;
      }
      return false;
    },
    success() {
      failures = 0;
      trialInFlight = false;
      set("closed");
    },
    release() {
      trialInFlight = false;
    },
    failure() {
      failures += 1;
      trialInFlight = false;
      if (state === "half_open" || failures >= options.threshold) {
        openedAt = now();
        set("open");
      }
    },
    state: () => state,
    consecutiveFailures: () => failures,
  };
}
