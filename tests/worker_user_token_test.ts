/**
 * User tokens through the real worker as configured on hosted Supabase: the legacy HS256 secret set
 * as JWT_SECRET (`supabase secrets set` refuses SUPABASE_* names) and SUPABASE_URL fixing the issuer,
 * for both routes that take user tokens (the deliveries endpoint and the dashboard's JSON route).
 */
import { assertEquals } from "./support/assert.ts";
import { pushOwnedDelivery, test, withHarness } from "./support/harness.ts";
import { signUserToken } from "./support/user_tokens.ts";

const secret = "hosted-project-legacy-jwt-secret-0123456789";
const projectUrl = "https://abcdefghijklmnopqrst.supabase.co";
const issuer = `${projectUrl}/auth/v1`;

/** A user's access token issued by this project's Auth, with `claims`. */
function userToken(claims: Record<string, unknown>): Promise<string> {
  return signUserToken({ iss: issuer, ...claims }, secret);
}

test("with JWT_SECRET and SUPABASE_URL set, user tokens of the project open the status route and the dashboard; others get 401", async () => {
  await withHarness(async (h) => {
    const { worker } = h;
    const { owner, id } = await pushOwnedDelivery(h, "user-token");

    const get = async (path: string, bearer: string) => {
      const res = await fetch(`${worker.url}/email-worker/${path}`, { headers: { authorization: `Bearer ${bearer}` } });
      const body = await res.json();
      return { status: res.status, body };
    };
    const own = await get(`deliveries/${id}`, await userToken({ sub: owner }));
    assertEquals([own.status, own.body.status], [200, "sent"]);
    const support = await get(
      "dashboard/data",
      await userToken({ sub: crypto.randomUUID(), app_metadata: { role: "support" } }),
    );
    assertEquals(support.status, 200);

    const otherProject = await userToken({ sub: owner, iss: "https://zyxwvutsrqponmlkjihg.supabase.co/auth/v1" });
    const noSub = await userToken({ sub: "not-a-uuid", app_metadata: { role: "support" } });
    for (
      const [path, bearer] of [[`deliveries/${id}`, otherProject], ["dashboard/data", otherProject], [
        `deliveries/${id}`,
        noSub,
      ], ["dashboard/data", noSub]]
    ) {
      assertEquals((await get(path, bearer)).status, 401, path);
    }
  }, { env: { JWT_SECRET: secret, SUPABASE_URL: projectUrl } });
});
