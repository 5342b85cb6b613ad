/**
 * Host-key pins. A pin is what an operator can copy from a trusted place: the `SHA256:…` fingerprint that
 * `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints, a public-key line (`ssh-ed25519 AAAA… comment`) or a
 * known_hosts line (`host ssh-ed25519 AAAA…`). The server's key is compared before authentication, so a
 * mismatch leaks no credential and runs no command.
 */
import { createHash } from "node:crypto";

export type HostKeyPin =
  | { kind: "fingerprint"; sha256: string } // base64 without padding, as ssh-keygen prints it
  | { kind: "key"; keyType: string; blob: Buffer };

/** The public-key types OpenSSH accepts for logins (authorized keys): DSA is gone since OpenSSH 9.8. */
export const KEY_TYPES: ReadonlySet<string> = new Set([
  "ssh-ed25519",
  "ssh-rsa",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
]);

/** The key types a host-key pin may name: an old server may still present a DSA host key. */
const PIN_KEY_TYPES: ReadonlySet<string> = new Set([...KEY_TYPES, "ssh-dss"]);

/** Parses a pin; returns an explanation instead when the text is not one. Pure. */
export function parseHostKeyPin(text: string): HostKeyPin | { error: string } {
  const t = text.trim();
  const fp = /^SHA256:([A-Za-z0-9+/]{43})=?$/.exec(t);
  if (fp) return { kind: "fingerprint", sha256: fp[1]! };
  if (/^(SHA256|MD5):/i.test(t))
    return { error: "a SHA256 fingerprint has 43 base64 characters after `SHA256:`" };
  if (/[\r\n]/.test(t)) return { error: "a pin is a single line" };
  const fields = t.split(/\s+/);
  // known_hosts: [marker] hosts keytype key [comment]; public key: keytype key [comment]
  for (let i = 0; i < Math.min(fields.length - 1, 3); i++) {
    const keyType = fields[i]!;
    if (!PIN_KEY_TYPES.has(keyType)) continue;
    if (fields[0]!.startsWith("@"))
      return { error: "known_hosts markers (@cert-authority, @revoked) are not pins" };
    const b64 = fields[i + 1]!;
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return { error: "the key after the key type must be base64" };
    const blob = Buffer.from(b64, "base64");
    // The blob starts with the key type as an SSH string: a cheap integrity check of the paste.
    const len = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
    if (len <= 0 || blob.subarray(4, 4 + len).toString("latin1") !== keyType)
      return { error: `the base64 key does not hold a ${keyType} key` };
    return { kind: "key", keyType, blob };
  }
  return {
    error:
      "expected `SHA256:<43 base64 chars>`, a public key line (`ssh-ed25519 AAAA…`) or a known_hosts line",
  };
}

/** The `SHA256:` fingerprint of a raw host key blob, exactly as `ssh-keygen -l` prints it. */
export function fingerprintOf(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/** Whether the server's raw key matches the pin. */
export function pinMatches(pin: HostKeyPin, blob: Buffer): boolean {
  if (pin.kind === "fingerprint") return fingerprintOf(blob) === `SHA256:${pin.sha256}`;
  return pin.blob.equals(blob);
}
