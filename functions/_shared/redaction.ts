/**
 * Redaction of rejected input before it is stored: the secret fields every workflow declares (codes,
 * links with tokens; workflows/registry.ts allSecretFields) are replaced by "[redacted]" in the raw
 * push body, wherever the event sits in it (the wrapped envelope's base64 `message.data`, or the
 * no-wrapper body itself). The rest stays as it arrived, so the stored body still shows what was
 * wrong with it; the paths of what was replaced are returned for email.rejected_messages.redacted.
 *
 * A body that parses as JSON is redacted field by field (and re-serialised: whitespace and key
 * escapes may change). One that does not (invalid JSON, invalid base64 inside) is redacted as text:
 * the value after every `"<secret field>":` is replaced, so a truncated or malformed event with a
 * code in it does not keep the code either.
 */
import { decodeBase64 } from "./pubsub.ts";
import { allSecretFields } from "./workflows/registry.ts";

/** What stands in for a redacted value. */
export const redactedMarker = "[redacted]";

/** A push body with its secrets replaced, and the paths (e.g. `message.data:data.code`) that were. */
export type RedactedBody = { body: Uint8Array; redacted: string[] };

const encoder = new TextEncoder();
const secretValue = new RegExp(
  `"(${allSecretFields.map((f) => f.replace(/[^A-Za-z0-9_]/g, "")).join("|")})"(\\s*:\\s*)` +
    `("(?:[^"\\\\]|\\\\.)*"?|[^,}\\]\\s]+)`,
  "g",
);

/** Redacts the secrets of the event in a push body (wrapped or not). Never throws. */
export function redactPushBody(body: Uint8Array): RedactedBody {
  const text = new TextDecoder("utf-8").decode(body);
  try {
    return fromJson(body, JSON.parse(text), text);
  } catch {
    // Not JSON (or too much of it to re-serialise): redact as text.
    const out = fromText(text, "");
    return out.redacted.length ? out : { body, redacted: [] };
  }
}

function fromJson(body: Uint8Array, json: unknown, text: string): RedactedBody {
  const redacted: string[] = [];
  const message = isObject(json) ? json.message : undefined;
  if (isObject(message) && typeof message.data === "string") {
    const bytes = decodeBase64(message.data);
    if (!bytes) {
      const out = fromText(text, "");
      return out.redacted.length ? out : { body, redacted: [] };
    }
    const inner = redactEvent(bytes, "message.data:");
    if (inner.redacted.length === 0) return { body, redacted: [] };
    message.data = toBase64(inner.body);
    redacted.push(...inner.redacted);
  } else {
    const event = redactEventValue(json, "");
    if (event.length === 0) return { body, redacted: [] };
    redacted.push(...event);
  }
  return { body: encoder.encode(JSON.stringify(json)), redacted };
}

/** Redacts the event JSON in `bytes` (field by field, or as text when it is not JSON). */
function redactEvent(bytes: Uint8Array, prefix: string): RedactedBody {
  const text = new TextDecoder("utf-8").decode(bytes);
  let event: unknown;
  try {
    event = JSON.parse(text);
  } catch {
    const out = fromText(text, prefix);
    return out.redacted.length ? out : { body: bytes, redacted: [] };
  }
  const redacted = redactEventValue(event, prefix);
  return redacted.length ? { body: encoder.encode(JSON.stringify(event)), redacted } : { body: bytes, redacted };
}

/** Replaces the secret fields of `event.data` in place; returns their paths. */
function redactEventValue(event: unknown, prefix: string): string[] {
  const data = isObject(event) ? event.data : undefined;
  if (!isObject(data)) return [];
  const redacted: string[] = [];
  for (const field of allSecretFields) {
    if (Object.hasOwn(data, field)) {
      data[field] = redactedMarker;
      redacted.push(`${prefix}data.${field}`);
    }
  }
  return redacted;
}

/** Text redaction for what does not parse: every `"<secret field>": value` loses its value. */
function fromText(text: string, prefix: string): RedactedBody {
  const redacted: string[] = [];
  const out = text.replace(secretValue, (_, field: string, colon: string) => {
    redacted.push(`${prefix}${field} (text)`);
    return `"${field}"${colon}"${redactedMarker}"`;
  });
  return { body: encoder.encode(out), redacted };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}
