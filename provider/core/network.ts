/**
 * Pure address helpers: IPv4 networks, MAC addresses.
 */
import { createHash } from "node:crypto";
import { isIPv4 } from "./validate";

export interface Ipv4Network {
  /** Network address, e.g. `10.0.0.0`. */
  address: string;
  prefix: number;
}

export function ipToInt(ip: string): number {
  return ip.split(".").reduce((n, o) => n * 256 + Number(o), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");
}

/** Parses `10.0.0.0/24`; returns an explanation when it is not a network address with a prefix. */
export function parseCidr(text: string): Ipv4Network | { error: string } {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(text);
  if (!m || !isIPv4(m[1]!)) return { error: 'must be an IPv4 network such as "10.0.0.0/24"' };
  const prefix = Number(m[2]);
  if (prefix < 8 || prefix > 30) return { error: "must have a prefix from /8 to /30" };
  const size = 2 ** (32 - prefix);
  const n = ipToInt(m[1]!);
  if (n % size !== 0)
    return { error: `host bits are set: the network address is ${intToIp(n - (n % size))}/${prefix}` };
  return { address: m[1]!, prefix };
}

/** The network an address lies in, for a prefix length. */
export function networkOf(ip: string, prefix: number): Ipv4Network {
  const size = 2 ** (32 - prefix);
  const n = ipToInt(ip);
  return { address: intToIp(n - (n % size)), prefix };
}

export function contains(net: Ipv4Network, ip: string): boolean {
  const size = 2 ** (32 - net.prefix);
  const base = ipToInt(net.address);
  const n = ipToInt(ip);
  return n >= base && n < base + size;
}

/** The first usable address: the dom0's gateway address on every NAT guest's vif. */
export function firstHost(net: Ipv4Network): string {
  return intToIp(ipToInt(net.address) + 1);
}

export function broadcast(net: Ipv4Network): string {
  return intToIp(ipToInt(net.address) + 2 ** (32 - net.prefix) - 1);
}

/** `aa:bb:cc:dd:ee:ff`, lower case, unicast (I/G bit clear), not all zeros. */
export function macProblem(mac: string): string | undefined {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac))
    return "must be six hex pairs separated by colons, e.g. 00:50:56:00:12:34";
  const first = parseInt(mac.slice(0, 2), 16);
  if (first & 1) return "must be a unicast address (the lowest bit of the first octet must be 0)";
  if (/^(00:){5}00$/.test(mac)) return "must not be all zeros";
  return undefined;
}

/** A stable locally-administered MAC in Xen's 00:16:3e range, derived from a seed (host and guest name). */
export function derivedMac(seed: string): string {
  const h = createHash("sha256").update(seed).digest();
  return ["00", "16", "3e", h[0]! & 0x7f, h[1]!, h[2]!]
    .map((b) => (typeof b === "string" ? b : b.toString(16).padStart(2, "0")))
    .join(":");
}
