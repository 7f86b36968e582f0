import { assertEquals } from "../../tests/support/assert.ts";
import { bearerToken, secretsEqual } from "./auth.ts";
import { deliveryIdPattern, isDeliveryId } from "./ids.ts";

const headers = (authorization?: string) => new Headers(authorization === undefined ? {} : { authorization });

Deno.test("bearerToken takes one token after Bearer, in any case and spacing, and nothing else", () => {
  assertEquals(bearerToken(headers("Bearer abc.def-ghi_j")), "abc.def-ghi_j");
  assertEquals(bearerToken(headers("bearer  abc ")), "abc");
  assertEquals(bearerToken(headers("BEARER\tabc")), "abc");
  for (const refused of [undefined, "", "Bearer", "Bearer ", "Bearer a b", "Basic abc", "Bearerabc", "Token abc"]) {
    assertEquals(bearerToken(headers(refused)), null, String(refused));
  }
});

Deno.test("secretsEqual is true for the same secret only", async () => {
  assertEquals(await secretsEqual("s3cret-s3cret-s3cret", "s3cret-s3cret-s3cret"), true);
  assertEquals(await secretsEqual("s3cret-s3cret-s3creT", "s3cret-s3cret-s3cret"), false);
  assertEquals(await secretsEqual("s3cret-s3cret-s3cret-", "s3cret-s3cret-s3cret"), false);
  assertEquals(await secretsEqual("", "s3cret-s3cret-s3cret"), false);
});

Deno.test("a delivery id is 1 to 200 of A-Z a-z 0-9 . _ : -, the same shape the table checks", () => {
  for (const id of ["a", "signup-42", "tenant:7.reset_2", "x".repeat(200)]) assertEquals(isDeliveryId(id), true, id);
  for (const id of ["", "x".repeat(201), "a b", "a/b", "a\nb", "é"]) assertEquals(isDeliveryId(id), false, id);
  const migrations = new URL("../../supabase/migrations/", import.meta.url);
  const sql = [...Deno.readDirSync(migrations)].map((f) => Deno.readTextFileSync(new URL(f.name, migrations))).join();
  assertEquals(sql.includes(`delivery_id ~ '${deliveryIdPattern.source}'`), true, "the SQL check has the same pattern");
});
