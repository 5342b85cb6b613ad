/**
 * Trusted sources (IPv4 and IPv6 networks) and whether an address lies in one. Pure.
 */
import { isIPv4, isIPv6 } from "../core/validate";

export interface Network {
  family: 4 | 6;
  /** The network address, normalised (`10.0.0.0`, `2001:db8::`). */
  address: string;
  prefix: number;
  /** `address/prefix` as nft writes it. */
  text: string;
}

/** The 16-byte (v6) or 4-byte (v4) form of an address. */
export function addressBytes(ip: string): number[] | undefined {
  if (isIPv4(ip)) return ip.split(".").map(Number);
  if (!isIPv6(ip)) return undefined;
  let tail: number[] = [];
  let text = ip;
  const lastColon = ip.lastIndexOf(":");
  if (ip.slice(lastColon + 1).includes(".")) {
    tail = ip
      .slice(lastColon + 1)
      .split(".")
      .map(Number);
    text = `${ip.slice(0, lastColon + 1)}0:0`;
  }
  const [head, rest] = text.includes("::") ? text.split("::") : [text, undefined];
  const h = head ? head.split(":") : [];
  const r = rest !== undefined && rest !== "" ? rest.split(":") : [];
  const groups = rest === undefined ? h : [...h, ...Array<string>(8 - h.length - r.length).fill("0"), ...r];
  if (groups.length !== 8) return undefined;
  const bytes = groups.flatMap((g) => {
    const n = parseInt(g, 16);
    return [n >> 8, n & 0xff];
  });
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes;
}

function bytesToText(bytes: number[], family: 4 | 6): string {
  if (family === 4) return bytes.join(".");
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  // The longest run of zero groups (two or more) becomes `::`.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

/**
 * Parses a trusted source: an address (`198.51.100.7`, `2001:db8::1`, taken as /32 or /128) or a network
 * (`198.51.100.0/24`, `2001:db8::/32`) whose host bits are clear. Returns an explanation when it is neither.
 */
export function parseNetwork(text: string): Network | { error: string } {
  const m = /^([^/\s]+)(?:\/(\d{1,3}))?$/.exec(text);
  const bytes = m ? addressBytes(m[1]!) : undefined;
  if (!m || !bytes)
    return {
      error:
        "must be an IPv4 or IPv6 address or network, such as 198.51.100.7, 198.51.100.0/24 or 2001:db8::/32",
    };
  const family: 4 | 6 = bytes.length === 4 ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  const prefix = m[2] === undefined ? max : Number(m[2]);
  if (prefix > max || (m[2] !== undefined && m[2].length > 1 && m[2].startsWith("0")))
    return { error: `must have a prefix from /0 to /${max}` };
  const masked = bytes.map((b, i) => {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    return b & ((0xff << (8 - bits)) & 0xff);
  });
  if (masked.some((b, i) => b !== bytes[i]))
    return { error: `has host bits set: the network is ${bytesToText(masked, family)}/${prefix}` };
  const address = bytesToText(masked, family);
  return { family, address, prefix, text: `${address}/${prefix}` };
}

/** Whether `ip` lies in `net`. An IPv4-mapped IPv6 address (`::ffff:198.51.100.7`) counts as its IPv4 address. */
export function networkContains(net: Network, ip: string): boolean {
  let bytes = addressBytes(ip);
  if (!bytes) return false;
  if (
    bytes.length === 16 &&
    bytes.slice(0, 10).every((b) => b === 0) &&
    bytes[10] === 0xff &&
    bytes[11] === 0xff
  )
    bytes = bytes.slice(12);
  const own = addressBytes(net.address)!;
  if (own.length !== bytes.length) return false;
  for (let bit = 0; bit < net.prefix; bit++) {
    const i = bit >> 3;
    const mask = 0x80 >> (bit & 7);
    if ((own[i]! & mask) !== (bytes[i]! & mask)) return false;
  }
  return true;
}

/** The first network of `nets` holding `ip`, or undefined. */
export function coveringNetwork(nets: readonly Network[], ip: string): Network | undefined {
  return nets.find((n) => networkContains(n, ip));
}
