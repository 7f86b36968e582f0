/**
 * The send-time target check against the refused networks as the database lists them: prefixes that
 * do not end on a byte boundary (/10, /12, /7, /15) are matched bit by bit, and an address that does
 * not parse is refused rather than let through.
 */
import postgres from "postgres";
import { assertEquals } from "./support/assert.ts";
import { checkTarget, loadRefusedNetworks, RefusedTarget, refusingNetwork } from "../functions/_shared/net_guard.ts";

const databaseUrl = Deno.env.get("DATABASE_URL");
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database");

async function networks(): Promise<string[]> {
  const sql = postgres(databaseUrl!, { max: 1, onnotice: () => {} });
  try {
    return await loadRefusedNetworks(sql);
  } finally {
    await sql.end({ timeout: 2 });
  }
}

Deno.test({
  name: "addresses inside a network whose prefix is not a whole number of bytes are refused, the next ones are not",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const refused = await networks();
  const cases: [string, string | undefined][] = [
    ["172.16.0.1", "172.16.0.0/12"],
    ["172.31.255.254", "172.16.0.0/12"],
    ["172.32.0.1", undefined],
    ["100.64.0.1", "100.64.0.0/10"],
    ["100.127.255.254", "100.64.0.0/10"],
    ["100.128.0.1", undefined],
    ["198.19.255.1", "198.18.0.0/15"],
    ["198.20.0.1", undefined],
    ["fd12:3456::1", "fc00::/7"],
    ["fe00::1", undefined],
    ["febf::1", "fe80::/10"],
  ];
  for (const [address, network] of cases) assertEquals(refusingNetwork(address, refused), network, address);
});

Deno.test({
  name: "a resolved address that does not parse is refused, not let through",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const refused = await networks();
  assertEquals(refusingNetwork("not-an-address", refused), "(not an IP address)");
  const error = await checkTarget(new URL("https://hooks.example.com/x"), {
    networks: refused,
    lookup: () => Promise.resolve(["203.0.114.9", "999.1.1.1"]),
  }).then(() => undefined, (e) => e);
  assertEquals(error instanceof RefusedTarget, true, String(error));
});
