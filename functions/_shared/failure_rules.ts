/**
 * What email.failure_rule decides, for the one case the database cannot: a failed send whose outcome
 * could not be recorded (tracking off or unreachable), where push.ts still has to choose between
 * acking and a redelivery. It applies the generated copy of email.failure_rules (failure_rules.gen.ts)
 * with the same matching; tests/statuses_test.ts checks the copy against the table, and
 * tests/failure_rules_test.ts this function against email.failure_rule on the same facts.
 */
import { failureRules } from "./failure_rules.gen.ts";
import type { SmtpFailure } from "./mailer.ts";

/** The verdict of the matching rule, and the error code the database would record. */
export type FailureVerdict = { transient: boolean; hardBounce: boolean; errorCode: string };

type Rule = {
  replyCodeFrom: number | null;
  replyCodeTo: number | null;
  enhancedPattern: string | null;
  transportCode: string | null;
  class: string;
  hardBounce: boolean;
  codeWithEnhanced: boolean;
};
const rules: readonly Rule[] = failureRules;

/** SQL LIKE (no escape character) as a regular expression. */
function like(pattern: string): RegExp {
  const body = pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/%/g, ".*").replace(/_/g, ".");
  return new RegExp(`^${body}$`, "s");
}

/** The lowest-priority rule of failure_rules.gen.ts matching the facts, as email.failure_rule picks it. */
export function classifyUnrecorded(f: Omit<SmtpFailure, "message">): FailureVerdict {
  const reply = f.replyCode ?? null;
  const enhanced = f.enhancedCode?.slice(0, 16);
  const transport = f.transportCode?.slice(0, 64);
  const rule = rules.find((r) =>
    (r.replyCodeFrom === null ||
      (reply !== null && reply >= r.replyCodeFrom && reply <= (r.replyCodeTo ?? 0))) &&
    (r.enhancedPattern === null || like(r.enhancedPattern).test(enhanced ?? "")) &&
    (r.transportCode === null || transport === r.transportCode)
  );
  if (!rule) throw new Error("failure_rules.gen.ts has no catch-all rule");
  const errorCode = rule.replyCodeFrom !== null
    ? `smtp_${reply}${rule.codeWithEnhanced && enhanced ? `_${enhanced}` : ""}`
    : rule.transportCode ?? "unknown";
  return { transient: rule.class === "transient", hardBounce: rule.hardBounce, errorCode };
}
