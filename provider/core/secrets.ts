/**
 * Secret values in a resource's outputs. The engine sends every resource's outputs back to the program, and
 * Pulumi's Node SDK logs that answer at debug level with secrets in plain text (`RegisterResource RPC finished …
 * resp:`, which `pulumi up --json` and `--event-log` carry). So a secret input a kind must remember is recorded in
 * its outputs as its SHA-256 only ({@link recordedSecret}); the value stays in the inputs, which state holds
 * encrypted when the program marked it secret, and `diff` compares digests (the kind's `diffView`).
 */
import { createHash } from "node:crypto";

const MARKER = /^\[secret sha256:([0-9a-f]{64})\]$/;

/** What outputs record for a secret whose SHA-256 is `sha`. */
export function secretMarker(sha: string): string {
  return `[secret sha256:${sha}]`;
}

/** The SHA-256 of `value`, or the one a marker records. */
export function secretSha(value: string): string {
  return MARKER.exec(value)?.[1] ?? createHash("sha256").update(value).digest("hex");
}

/** `value` as outputs record it: its marker (a marker stays as it is). */
export function recordedSecret(value: string): string {
  return secretMarker(secretSha(value));
}
