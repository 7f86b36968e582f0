/**
 * One set of SMTP failure rules: email.failure_rules decides, through email.failure_rule, every
 * failure the database records; functions/_shared/failure_rules.ts applies the generated copy of the
 * same table only when a failure could not be recorded. On the same facts both must give the same
 * verdict and code, and each behaviour the project keeps (535, 5.3.x, 5.4.x, 5.7.0 retried; 4xx
 * transient; other 5xx permanent; ETLS transient; header_injection permanent; 5.1.x hard bounces)
 * is asserted on the database's answer.
 */
import postgres from "postgres";
import { assertEquals } from "./support/assert.ts";
import { classifyUnrecorded, type FailureVerdict } from "../functions/_shared/failure_rules.ts";

const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

type Facts = { replyCode?: number; enhancedCode?: string; transportCode?: string };
const v = (transient: boolean, errorCode: string, hardBounce = false): FailureVerdict => ({
  transient,
  hardBounce,
  errorCode,
});

const cases: [Facts, FailureVerdict][] = [
  [{ replyCode: 421, enhancedCode: "4.7.0", transportCode: "EENVELOPE" }, v(true, "smtp_421")],
  [{ replyCode: 451, enhancedCode: "4.3.0" }, v(true, "smtp_451")],
  [{ replyCode: 450, enhancedCode: "4.1.1" }, v(true, "smtp_450")],
  [{ replyCode: 550, enhancedCode: "5.1.1", transportCode: "EENVELOPE" }, v(false, "smtp_550_5.1.1", true)],
  [{ replyCode: 550 }, v(false, "smtp_550", true)],
  [{ replyCode: 551 }, v(false, "smtp_551", true)],
  [{ replyCode: 553 }, v(false, "smtp_553", true)],
  [{ replyCode: 553, enhancedCode: "5.1.3" }, v(false, "smtp_553_5.1.3", true)],
  [{ replyCode: 554, enhancedCode: "5.1.0" }, v(false, "smtp_554_5.1.0", true)],
  [{ replyCode: 550, enhancedCode: "5.7.1" }, v(false, "smtp_550_5.7.1")],
  [{ replyCode: 552, enhancedCode: "5.2.3" }, v(false, "smtp_552_5.2.3")],
  [{ replyCode: 552 }, v(false, "smtp_552")],
  [{ replyCode: 554 }, v(false, "smtp_554")],
  [{ replyCode: 500 }, v(false, "smtp_500")],
  [{ replyCode: 535, enhancedCode: "5.7.8" }, v(true, "smtp_535_5.7.8")],
  [{ replyCode: 535 }, v(true, "smtp_535")],
  [{ replyCode: 550, enhancedCode: "5.7.0" }, v(true, "smtp_550_5.7.0")],
  [{ replyCode: 554, enhancedCode: "5.3.0" }, v(true, "smtp_554_5.3.0")],
  [{ replyCode: 552, enhancedCode: "5.3.4" }, v(true, "smtp_552_5.3.4")],
  [{ replyCode: 554, enhancedCode: "5.4.4" }, v(true, "smtp_554_5.4.4")],
  [{ replyCode: 550, enhancedCode: "5.4.1" }, v(true, "smtp_550_5.4.1")],
  [{ replyCode: 530, enhancedCode: "5.7.0", transportCode: "ETLS" }, v(true, "ETLS")],
  [{ transportCode: "ETLS" }, v(true, "ETLS")],
  [{ transportCode: "ETIMEDOUT" }, v(true, "ETIMEDOUT")],
  [{ transportCode: "ECONNREFUSED" }, v(true, "ECONNREFUSED")],
  [{ transportCode: "EENVELOPE" }, v(false, "EENVELOPE")],
  [{ transportCode: "EMESSAGE" }, v(false, "EMESSAGE")],
  [{ transportCode: "EREQUIRETLS" }, v(false, "EREQUIRETLS")],
  [{ transportCode: "header_injection" }, v(false, "header_injection")],
  [{ transportCode: "lease_expired" }, v(true, "lease_expired")],
  [{ transportCode: "outcome_unknown" }, v(true, "outcome_unknown")],
  [{ transportCode: "ESOMETHINGNEW" }, v(true, "unknown")],
  [{ replyCode: 354, transportCode: "EENVELOPE" }, v(false, "EENVELOPE")],
  [{}, v(true, "unknown")],
];

Deno.test({
  name: "email.failure_rule and the worker's copy agree, and keep the project's classification",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    for (const [facts, expected] of cases) {
      const [r] = await sql<{ transient: boolean; hard_bounce: boolean; error_code: string }[]>`
        select (x.rule).class = 'transient' as transient, (x.rule).hard_bounce, x.error_code
        from email.failure_rule(${facts.replyCode ?? null}::integer, ${facts.enhancedCode ?? null},
          ${facts.transportCode ?? null}) x`;
      const label = JSON.stringify(facts);
      assertEquals({ transient: r.transient, hardBounce: r.hard_bounce, errorCode: r.error_code }, expected, label);
      assertEquals(classifyUnrecorded(facts), expected, `the worker's copy: ${label}`);
    }
  } finally {
    await sql.end();
  }
});
