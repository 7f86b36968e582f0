/** The registered workflows: adding one means writing its module and listing it here. */
import type { RenderedEmail, Workflow } from "./common.ts";
import { invite } from "./invite.ts";
import { passwordReset } from "./password_reset.ts";
import { verificationCode } from "./verification_code.ts";

const all: Workflow<never>[] = [verificationCode, invite, passwordReset] as Workflow<never>[];

/** Workflows by name. */
export const workflows: ReadonlyMap<string, Workflow<unknown>> = new Map(
  all.map((w) => [w.name, w as unknown as Workflow<unknown>]),
);

/**
 * Every data field any workflow declares secret. Redaction removes all of them from any event,
 * whatever workflow it names: a rejected event may name an unknown or the wrong workflow.
 */
export const allSecretFields: readonly string[] = [...new Set(all.flatMap((w) => w.secretFields))];

declare const checked: unique symbol;

/**
 * An email whose data passed its workflow's schema: only checkWorkflow makes one, so renderEmail never
 * sees unchecked data and never checks it again.
 */
export type CheckedEmail = { readonly workflow: Workflow<unknown>; readonly data: unknown; readonly [checked]: true };

/** The outcome of checking an event's workflow and data before it is accepted. */
export type WorkflowCheck =
  | { ok: true; email: CheckedEmail }
  | { ok: false; reasonCode: "unknown_workflow" | "invalid_data"; reason: string };

/** Finds the workflow and validates its data (zod), once per path; says why when it cannot. */
export function checkWorkflow(name: string, data: unknown): WorkflowCheck {
  const workflow = workflows.get(name);
  if (!workflow) return { ok: false, reasonCode: "unknown_workflow", reason: `unknown workflow "${name}"` };
  const parsed = workflow.schema.safeParse(data);
  if (!parsed.success) {
    const fields = parsed.error.issues.map((i) => `data.${i.path.join(".")}: ${i.message}`).join("; ");
    return { ok: false, reasonCode: "invalid_data", reason: `invalid data for ${name}: ${fields}` };
  }
  return { ok: true, email: { workflow, data: parsed.data } as CheckedEmail };
}

/** Renders a checked email; throws when the workflow rendered a subject with a line break. */
export function renderEmail(email: CheckedEmail): RenderedEmail {
  const rendered = email.workflow.render(email.data);
  if (/[\r\n]/.test(rendered.subject)) {
    throw new Error(`workflow ${email.workflow.name} rendered a subject with a line break`);
  }
  return rendered;
}
