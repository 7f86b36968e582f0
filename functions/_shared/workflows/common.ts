/**
 * What every workflow module shares: the Workflow shape, HTML escaping and the zod field types that
 * keep header injection and non-http(s) links out.
 */
import { z } from "zod";

/** A rendered email: subject (one line), plain text and HTML. */
export type RenderedEmail = { subject: string; text: string; html: string };

/**
 * One workflow: its name, the zod schema of its data, the fields of its data that are secrets (codes,
 * links with tokens: redacted wherever input is stored, functions/_shared/redaction.ts) and a renderer.
 */
export type Workflow<T = unknown> = {
  name: string;
  schema: z.ZodType<T>;
  secretFields: readonly string[];
  render(data: T): RenderedEmail;
};

/** Defines a workflow with its data type inferred from the schema. */
export function defineWorkflow<S extends z.ZodType>(
  workflow: {
    name: string;
    schema: S;
    secretFields: readonly (keyof z.infer<S> & string)[];
    render(data: z.infer<S>): RenderedEmail;
  },
): Workflow<z.infer<S>> {
  return workflow as Workflow<z.infer<S>>;
}

const htmlEntities: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Escapes a value for HTML text and attribute context. */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => htmlEntities[c]);
}

/** True when `v` holds a C0 control character (CR and LF among them) or DEL. */
export function hasControlCharacter(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** A single-line string (no CR, LF or other control characters), safe in a header. */
export function singleLine(max: number) {
  return z.string().trim().min(1).max(max).refine((v) => !hasControlCharacter(v), {
    message: "must be a single line without control characters",
  });
}

/** An absolute http(s) URL; javascript:, data: and every other scheme are refused. */
export function httpUrl() {
  return z.string().max(2048).refine((v) => {
    if (/\s/.test(v) || hasControlCharacter(v)) return false;
    try {
      const u = new URL(v);
      return u.protocol === "https:" || u.protocol === "http:";
    } catch {
      return false;
    }
  }, { message: "must be an http(s) URL" });
}

/** Minutes until something expires, as a whole number from 1 to 10080 (a week). */
export const minutes = z.number().int().min(1).max(10080);

/** Wraps body HTML in the shared minimal layout. */
export function layout(title: string, bodyHtml: string): string {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body style="font-family: sans-serif; line-height: 1.5; color: #222">
${bodyHtml}
</body></html>`;
}
