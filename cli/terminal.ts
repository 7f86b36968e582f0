/**
 * Text from the database, made safe to print on a terminal. Stored strings carry what relays,
 * receivers and operators wrote (an SMTP reply, a webhook error, a reason), and a terminal obeys
 * control bytes: `ESC ]0;...BEL` retitles the window, other sequences move the cursor, rewrite
 * lines or worse, and bidi overrides make text read differently than it is. Human output shows each
 * such character as a visible escape (`\x1b`, `\u{202e}`); --json stays exact (JSON escapes them).
 */

// C0 controls, DEL and C1 controls; bidi marks, embeddings, overrides and isolates; the Unicode line
// and paragraph separators.
// deno-lint-ignore no-control-regex
const unsafe = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** `text` with every control character visible; line breaks and tabs become spaces, or stay with keepNewlines. */
export function safeText(text: string, options: { keepNewlines?: boolean } = {}): string {
  return text.replace(unsafe, (c) => {
    if (c === "\n" && options.keepNewlines) return c;
    if (c === "\n" || c === "\r" || c === "\t") return " ";
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u{${code.toString(16)}}`;
  });
}

/** A copy of `value` with safeText applied to every string in it (arrays and plain objects, deeply). */
export function safeValue<T>(value: T): T {
  if (typeof value === "string") return safeText(value) as T;
  if (Array.isArray(value)) return value.map((v) => safeValue(v)) as T;
  if (value !== null && typeof value === "object") {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return value; // a Date, a Uint8Array ...
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [safeText(k), safeValue(v)])) as T;
  }
  return value;
}
