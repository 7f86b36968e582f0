/**
 * The webhook target guard: webhooks reach public addresses only. The networks refused (private,
 * loopback, link-local, the cloud metadata address and the other special-purpose ranges) are rows of
 * `email.webhook_refused_networks`; the database checks them when an endpoint is registered, and this
 * module checks them at send time on every address the endpoint's name resolves to, then connects to
 * the address it checked (a second lookup could answer differently: DNS rebinding).
 * `WEBHOOK_ALLOW_PRIVATE=true` turns the guard off for local development.
 */
import { lookup as dnsLookup } from "node:dns/promises";
import http from "node:http";
import https from "node:https";
import type { Sql } from "postgres";

/** Resolves a host name to every address it has. */
export type Lookup = (hostname: string) => Promise<string[]>;

/** A target the guard refuses; the message names the address, so only operators should see it. */
export class RefusedTarget extends Error {
  override name = "RefusedTarget";
}

/** The refused networks (CIDR text), from the table that lists them. */
export async function loadRefusedNetworks(sql: Sql): Promise<string[]> {
  const rows = await sql<{ network: string }[]>`select network::text as network from email.webhook_refused_networks`;
  return rows.map((r) => r.network);
}

function parseIPv4(text: string): number[] | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return null;
  const bytes = m.slice(1).map(Number);
  return bytes.every((b) => b <= 255) ? bytes : null;
}

function parseIPv6(text: string): number[] | null {
  let s = text.replace(/^\[|\]$/g, "").toLowerCase();
  if (s.includes("%")) s = s.slice(0, s.indexOf("%")); // a zone id says nothing about the address
  let tail: number[] = [];
  const v4 = /^(.*:)(\d{1,3}(?:\.\d{1,3}){3})$/.exec(s);
  if (v4) {
    const b = parseIPv4(v4[2]);
    if (!b) return null;
    tail = b;
    s = v4[1].endsWith("::") ? v4[1] : v4[1].slice(0, -1);
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (part: string) => part === "" ? [] : part.split(":");
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  const missing = 8 - tail.length / 2 - head.length - rest.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...rest];
  const bytes: number[] = [];
  for (const g of all) {
    if (!/^[0-9a-f]{1,4}$/.test(g)) return null;
    const n = parseInt(g, 16);
    bytes.push(n >> 8, n & 0xff);
  }
  return [...bytes, ...tail];
}

/** An IP address as its 4 or 16 bytes, or null when `text` is not one. */
export function parseAddress(text: string): number[] | null {
  return parseIPv4(text) ?? (text.includes(":") ? parseIPv6(text) : null);
}

function inNetwork(address: number[], cidr: string): boolean {
  const [base, bits] = cidr.split("/");
  const network = parseAddress(base);
  if (!network || network.length !== address.length) return false;
  let left = Number(bits ?? network.length * 8);
  for (let i = 0; i < address.length && left > 0; i++, left -= 8) {
    const mask = left >= 8 ? 0xff : (0xff << (8 - left)) & 0xff;
    if ((address[i] & mask) !== (network[i] & mask)) return false;
  }
  return true;
}

/** The refused network that holds `address`, or undefined; an address that does not parse is refused. */
export function refusingNetwork(address: string, networks: string[]): string | undefined {
  const bytes = parseAddress(address);
  if (!bytes) return "(not an IP address)";
  return networks.find((n) => inNetwork(bytes, n));
}

const systemLookup: Lookup = async (hostname) => (await dnsLookup(hostname, { all: true })).map((a) => a.address);

/**
 * The addresses a URL's host stands for (an IP literal, or every address its name resolves to),
 * all checked; throws RefusedTarget when any of them is in a refused network.
 */
export async function checkTarget(url: URL, options: { networks: string[]; lookup?: Lookup }): Promise<string[]> {
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const addresses = parseAddress(host) ? [host] : await (options.lookup ?? systemLookup)(host);
  if (addresses.length === 0) throw new RefusedTarget(`${host} has no address`);
  for (const address of addresses) {
    const network = refusingNetwork(address, options.networks);
    if (network) throw new RefusedTarget(`${host} is ${address}, in ${network}: not a public address`);
  }
  return addresses;
}

/**
 * A fetch that checks the target first (checkTarget) and then connects to the checked address:
 * node:http(s) with a lookup that answers that address, so the URL (Host header, TLS server name and
 * certificate check) stays the endpoint's. `networks` is read once, on first use. Redirects are not
 * followed; a string or byte body only. `ca` adds trusted certificates (PEM), for a private CA.
 */
export function guardedFetch(
  options: { allowPrivate: boolean; networks: () => Promise<string[]>; lookup?: Lookup; ca?: string[] },
): typeof fetch {
  let networks: Promise<string[]> | undefined;
  return async (input, init = {}) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (options.allowPrivate) return await fetch(url, { ...init, redirect: "manual" });
    networks ??= options.networks();
    const [address] = await checkTarget(url, { networks: await networks, lookup: options.lookup });
    return await requestAt(url, address, init, options.ca);
  };
}

type LookupCallback = (
  error: Error | null,
  address: string | { address: string; family: number }[],
  family?: number,
) => void;

function requestAt(url: URL, address: string, init: RequestInit, ca: string[] | undefined): Promise<Response> {
  const body = init.body ?? undefined;
  if (body !== undefined && typeof body !== "string" && !(body instanceof Uint8Array)) {
    return Promise.reject(new TypeError("guardedFetch sends a string or Uint8Array body only"));
  }
  const family = address.includes(":") ? 6 : 4;
  return new Promise<Response>((resolve, reject) => {
    const signal = init.signal;
    if (signal?.aborted) return reject(signal.reason);
    const request = (url.protocol === "https:" ? https : http).request(url, {
      method: init.method ?? "GET",
      headers: Object.fromEntries(new Headers(init.headers)),
      agent: false, // a fresh connection, to this address only
      ca,
      lookup: (_host: string, opts: unknown, callback: LookupCallback) =>
        (opts as { all?: boolean } | undefined)?.all
          ? callback(null, [{ address, family }])
          : callback(null, address, family),
    }, (res) => {
      const status = res.statusCode ?? 0;
      if (status < 200 || status > 599) {
        res.destroy();
        return reject(new Error(`unexpected HTTP status ${status}`));
      }
      const headers = new Headers();
      for (const [name, value] of Object.entries(res.headers)) {
        for (const v of Array.isArray(value) ? value : value === undefined ? [] : [String(value)]) {
          headers.append(name, v);
        }
      }
      const nullBody = [204, 205, 304].includes(status) || init.method === "HEAD";
      if (nullBody) res.resume();
      const stream = nullBody ? null : new ReadableStream<Uint8Array>({
        start(controller) {
          res.on("data", (chunk: Uint8Array) => controller.enqueue(new Uint8Array(chunk)));
          res.on("end", () => controller.close());
          res.on("error", (e) => controller.error(e));
        },
        cancel() {
          res.destroy();
        },
      });
      resolve(new Response(stream, { status, statusText: res.statusMessage ?? "", headers }));
    });
    signal?.addEventListener("abort", () => request.destroy(signal.reason), { once: true });
    request.on("error", reject);
    request.end(body);
  });
}
