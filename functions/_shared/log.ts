/**
 * Structured JSON logs: one line per event with `component` and `action`, plus `deliveryId`,
 * `attempt` and other plain fields. Callers pass only what is safe to log: never payloads, codes,
 * links, passwords or tokens; recipients go through maskEmail first.
 */

/** Log levels, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Fields of one log line besides level, component and action. */
export type LogFields = Record<string, string | number | boolean | null | undefined>;

/** A structured logger bound to one component. */
export type Logger = {
  debug(action: string, fields?: LogFields): void;
  info(action: string, fields?: LogFields): void;
  warn(action: string, fields?: LogFields): void;
  error(action: string, fields?: LogFields): void;
  /** The same sink and level for another component. */
  child(component: string): Logger;
};

const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Creates a logger writing JSON lines to `sink` (console by default) at `level` and above. */
export function createLogger(
  component: string,
  options: { level?: LogLevel; sink?: (line: string, level: LogLevel) => void } = {},
): Logger {
  const level = options.level ?? "info";
  const sink = options.sink ??
    ((line: string, l: LogLevel) => (l === "error" ? console.error(line) : console.log(line)));
  const write = (l: LogLevel) => (action: string, fields: LogFields = {}) => {
    if (order[l] < order[level]) return;
    sink(JSON.stringify({ ts: new Date().toISOString(), level: l, component, action, ...fields }), l);
  };
  return {
    debug: write("debug"),
    info: write("info"),
    warn: write("warn"),
    error: write("error"),
    child: (c) => createLogger(c, { level, sink }),
  };
}

/** Masks an address for logs: `ada@example.com` becomes `a***@example.com`. */
export function maskEmail(address: string): string {
  const at = address.lastIndexOf("@");
  if (at < 1) return "***";
  return `${address[0]}***${address.slice(at)}`;
}
