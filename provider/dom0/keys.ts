/**
 * Authorized keys for the admin user: one plain public key per line, no options (`from=`, `command=`…: an option
 * silently narrows or widens what the key may do, and a pasted option is the usual way a key stops working). Pure.
 */
import { KEY_TYPES } from "../ssh/hostkey";

export interface AuthorizedKey {
  type: string;
  /** The base64 blob. */
  key: string;
  comment: string;
}

/** Parses an authorized_keys line without options; returns why not otherwise. */
export function parseAuthorizedKey(text: string): AuthorizedKey | { error: string } {
  const t = text.trim();
  if (/[\r\n\0]/.test(t)) return { error: "must be a single line" };
  const fields = t.split(/\s+/);
  const type = fields[0] ?? "";
  if (!KEY_TYPES.has(type)) {
    if (fields.slice(1, 3).some((f) => KEY_TYPES.has(f)) || /^[a-z-]+(=|,)/.test(type))
      return { error: "must not carry options (from=, command=, no-pty…): give the plain key" };
    return { error: "must start with a key type such as ssh-ed25519 or ssh-rsa" };
  }
  const key = fields[1] ?? "";
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(key)) return { error: "must have the base64 key after the key type" };
  const blob = Buffer.from(key, "base64");
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
  if (len <= 0 || blob.subarray(4, 4 + len).toString("latin1") !== type)
    return { error: `does not hold a ${type} key (the base64 is damaged or belongs to another type)` };
  const comment = fields.slice(2).join(" ");
  if (/[^\x20-\x7e]/.test(comment)) return { error: "must have a printable comment" };
  return { type, key, comment };
}

/**
 * The public key (`type base64`) of a private key, or undefined when it cannot be parsed (check reports that
 * through the connection's own checks).
 */
export function publicKeyOf(privateKey: string, passphrase?: string): string | undefined {
  const { utils } = require("ssh2") as typeof import("ssh2");
  try {
    const parsed = utils.parseKey(privateKey, passphrase);
    if (parsed instanceof Error) return undefined;
    const k = Array.isArray(parsed) ? parsed[0] : parsed;
    if (!k) return undefined;
    return `${k.type} ${k.getPublicSSH().toString("base64")}`;
  } catch {
    return undefined;
  }
}
