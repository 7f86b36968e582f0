import { escapeHtml } from "../functions/_shared/workflows/common.ts";
import type { RenderedEmail } from "../functions/_shared/workflows/common.ts";
import { checkWorkflow, renderEmail, workflows } from "../functions/_shared/workflows/registry.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import { test } from "./support/harness.ts";

/** Checks and renders, as the push and the sweep do. */
function checkAndRender(name: string, data: unknown): RenderedEmail {
  const c = checkWorkflow(name, data);
  if (!c.ok) throw new Error(c.reason);
  return renderEmail(c.email);
}

test("the registry holds the seed's three workflows", () => {
  assertEquals([...workflows.keys()].sort(), ["invite", "password-reset", "verification-code"]);
});

test("verification-code renders the code and its expiry in subject, text and HTML", () => {
  const r = checkAndRender("verification-code", { code: "493817", expiresInMinutes: 10 });
  assertEquals(r.subject, "Your verification code");
  assertMatch(r.text, /493817/);
  assertMatch(r.text, /10 minutes/);
  assertMatch(r.html, />493817</);
});

test("invite renders inviter, organization and the link, HTML-escaped", () => {
  const r = checkAndRender("invite", {
    inviterName: `Ada "<script>alert(1)</script>"`,
    organizationName: "Tom & Jerry's <b>Co</b>",
    inviteUrl: "https://app.test/invite?a=1&b=<x>",
  });
  assertEquals(r.subject, `Ada "<script>alert(1)</script>" invited you to Tom & Jerry's <b>Co</b>`);
  assert(!r.html.includes("<script>"), "unescaped script tag in HTML");
  assert(!r.html.includes("<b>Co"), "unescaped tag in HTML");
  assertMatch(r.html, /Ada &quot;&lt;script&gt;alert\(1\)&lt;\/script&gt;&quot;/);
  assertMatch(r.html, /Tom &amp; Jerry&#39;s &lt;b&gt;Co&lt;\/b&gt;/);
  assertMatch(r.html, /href="https:\/\/app\.test\/invite\?a=1&amp;b=&lt;x&gt;"/);
  assertMatch(r.text, /https:\/\/app\.test\/invite\?a=1&b=<x>/);
});

test("password-reset renders the link and its expiry", () => {
  const r = checkAndRender("password-reset", { resetUrl: "https://app.test/reset?t=abc", expiresInMinutes: 30 });
  assertEquals(r.subject, "Reset your password");
  assertMatch(r.html, /href="https:\/\/app\.test\/reset\?t=abc"/);
  assertMatch(r.text, /30 minutes/);
});

test("header injection through the subject (CR/LF in inviter or organization) is refused", () => {
  for (const inviterName of ["Ada\r\nBcc: eve@evil.test", "Ada\nX-Evil: 1", "Ada\rX", "Ada\u0000"]) {
    const c = checkWorkflow("invite", { inviterName, organizationName: "Acme", inviteUrl: "https://a.test" });
    assertEquals([c.ok, !c.ok && c.reasonCode], [false, "invalid_data"]);
  }
  const org = checkWorkflow("invite", { inviterName: "Ada", organizationName: "A\r\nB", inviteUrl: "https://a.test" });
  assertEquals(org.ok, false);
});

test("links must be http(s): javascript:, data:, mailto: and relative links are refused", () => {
  for (
    const url of ["javascript:alert(1)", "data:text/html,<b>x</b>", "mailto:a@b.c", "/relative", "https://a.test/\nx"]
  ) {
    assertEquals(checkWorkflow("password-reset", { resetUrl: url, expiresInMinutes: 5 }).ok, false, url);
    assertEquals(
      checkWorkflow("invite", { inviterName: "A", organizationName: "B", inviteUrl: url }).ok,
      false,
      url,
    );
  }
  assertEquals(checkWorkflow("password-reset", { resetUrl: "http://localhost:3000/r", expiresInMinutes: 5 }).ok, true);
});

test("verification codes must be short tokens, and expiries whole minutes", () => {
  for (
    const data of [
      { code: "<b>1</b>", expiresInMinutes: 5 },
      { code: "12", expiresInMinutes: 5 },
      {
        code: "123456",
        expiresInMinutes: 0,
      },
      { code: "123456", expiresInMinutes: 1.5 },
      { code: "123456" },
    ]
  ) {
    assertEquals(checkWorkflow("verification-code", data).ok, false, JSON.stringify(data));
  }
});

test("an unknown workflow is reported as unknown_workflow", () => {
  const c = checkWorkflow("newsletter", {});
  assertEquals([c.ok, !c.ok && c.reasonCode, !c.ok && c.reason], [
    false,
    "unknown_workflow",
    'unknown workflow "newsletter"',
  ]);
});

test("escapeHtml escapes the five HTML-significant characters", () => {
  assertEquals(escapeHtml(`<a href="x">'&'</a>`), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
});
