import { assert, assertEquals } from "../../tests/support/assert.ts";
import { redactPushBody } from "./redaction.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const b64 = (s: string) => btoa(String.fromCharCode(...enc(s)));

Deno.test("a body without secret fields is kept byte for byte", () => {
  const body = enc('{ "message": {"data": "' + b64('{"workflow":"x","data":{"name":"Ada"}}') + '"} }');
  assertEquals(redactPushBody(body), { body, redacted: [] });
});

Deno.test("the no-wrapper form: each workflow's secret fields in data are replaced, the rest kept", () => {
  const { body, redacted } = redactPushBody(
    enc('{"workflow":"invite","data":{"inviterName":"Ada","inviteUrl":"https://x/t?k=SECRET1","code":123456}}'),
  );
  assertEquals(redacted, ["data.code", "data.inviteUrl"]);
  assertEquals(JSON.parse(dec(body)), {
    workflow: "invite",
    data: { inviterName: "Ada", inviteUrl: "[redacted]", code: "[redacted]" },
  });
});

Deno.test("an event that is not JSON (cut off) is redacted as text, string or number values alike", () => {
  const event = '{"data":{"code": 654321, "resetUrl" : "https://x/r?t=SECRET2\\"q", "x":1';
  const { body, redacted } = redactPushBody(enc(JSON.stringify({ message: { data: b64(event) } })));
  const inner = atob(JSON.parse(dec(body)).message.data);
  assert(!inner.includes("654321") && !inner.includes("SECRET2"), inner);
  assertEquals(inner, '{"data":{"code": "[redacted]", "resetUrl" : "[redacted]", "x":1');
  assertEquals(redacted, ["message.data:code (text)", "message.data:resetUrl (text)"]);
});

Deno.test("a body that is not JSON at all is redacted as text", () => {
  const { body, redacted } = redactPushBody(enc('garbage "code":"999888" more'));
  assertEquals(dec(body), 'garbage "code":"[redacted]" more');
  assertEquals(redacted, ["code (text)"]);
});

Deno.test("a deeply nested body does not throw", () => {
  const deep = "[".repeat(50_000) + "]".repeat(50_000);
  const event = `{"data":{"code":"111222","expiresInMinutes":10},"metadata":{"x":${deep}}}`;
  const { body, redacted } = redactPushBody(enc(JSON.stringify({ message: { data: b64(event) } })));
  assertEquals(redacted, ["message.data:data.code"]);
  assert(!atob(JSON.parse(dec(body)).message.data).includes("111222"));
});
