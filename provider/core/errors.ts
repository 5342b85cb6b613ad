/**
 * The one error convention of xen-estate.
 *
 * Input problems name the argument, show the value (never a secret) and state the rule, with a hint where one
 * exists: "`port` must be an integer from 1 to 65535, got `70000`". Remote failures carry the host, the command,
 * the exit code and the tail of stderr so a failed `pulumi up` says what went wrong without a debug log.
 */

/** A value that must never be shown: rendered as `[secret]` in messages. */
export const SECRET_PLACEHOLDER = "[secret]";

/** Text that looks like key material (a private key block, an OpenSSH private key body): never shown. */
const KEY_MATERIAL = /PRIVATE KEY|BEGIN OPENSSH|b3BlbnNzaC1rZXktdjE|PuTTY-User-Key-File|ENCRYPTED/;

/** Whether a value holds something that looks like a private key, anywhere inside it. */
export function looksLikeKeyMaterial(value: unknown): boolean {
  if (typeof value === "string") return KEY_MATERIAL.test(value);
  if (value && typeof value === "object") {
    try {
      return KEY_MATERIAL.test(JSON.stringify(value) ?? "");
    } catch {
      return false;
    }
  }
  return false;
}

/**
 * Renders a value for an error message: short, single-line, secrets hidden. A value that looks like key material
 * is hidden in any field, so a private key pasted into the wrong field is never echoed.
 */
export function showValue(value: unknown, secret = false): string {
  if (secret) return describeHidden(value);
  if (looksLikeKeyMaterial(value)) return `${SECRET_PLACEHOLDER} (it looks like a private key)`;
  let text: string;
  if (typeof value === "string") text = JSON.stringify(value);
  else if (value === undefined) text = "undefined";
  else {
    try {
      text = JSON.stringify(value) ?? typeof value;
    } catch {
      text = `[unprintable ${typeof value}]`;
    }
  }
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}

/** A hidden value, described by its type and length only. */
function describeHidden(value: unknown): string {
  if (typeof value === "string") return `${SECRET_PLACEHOLDER} (${value.length} characters)`;
  if (value === undefined || value === null) return SECRET_PLACEHOLDER;
  return `${SECRET_PLACEHOLDER} (a ${Array.isArray(value) ? "list" : typeof value})`;
}

/** One invalid input: which property, what it held, which rule it broke and how to fix it. */
export class InputError extends Error {
  override readonly name = "InputError";
  constructor(
    /** Dotted path of the property, e.g. `connection.proxy.port`. */
    readonly property: string,
    /** The offending value (already safe to show: use {@link SECRET_PLACEHOLDER} for secrets). */
    readonly shown: string,
    /** The rule, phrased to follow the property name: "must be an integer from 1 to 65535". */
    readonly rule: string,
    /** What to do instead, when there is something useful to say. */
    readonly hint?: string,
  ) {
    super(`\`${property}\` ${rule}, got ${shown}${hint ? `. ${hint}` : ""}`);
  }

  /** The reason as Pulumi's CheckFailure wants it (the property is reported separately). */
  get reason(): string {
    return this.message;
  }
}

/** Thrown by provider entry points when `check` found problems; lists every one. */
export class InputErrors extends Error {
  override readonly name = "InputErrors";
  constructor(
    readonly resource: string,
    readonly errors: readonly InputError[],
  ) {
    super(
      `${resource}: ${errors.length} invalid input(s):\n${errors.map((e) => `  - ${e.message}`).join("\n")}`,
    );
  }
}

/** The ways a connection can fail before any command runs. */
export type ConnectFailureKind =
  | "dns" // the name does not resolve
  | "refused" // nothing listens on the port
  | "timeout" // no answer within perDialTimeout
  | "auth" // every authentication method was rejected
  | "host-key" // the server's key does not match the pin (or no pin was given)
  | "proxy" // the jump host failed
  | "network" // anything else on the way
  | "closed"; // the connection dropped

/** SSH could not be established (or was lost). No command has run when kind is not "closed". */
export class SshConnectError extends Error {
  override readonly name = "SshConnectError";
  constructor(
    readonly host: string,
    readonly port: number,
    readonly kind: ConnectFailureKind,
    readonly detail: string,
    readonly attempts: number,
    options?: { cause?: unknown },
  ) {
    super(
      `ssh ${host}:${port}: ${kind}: ${detail}${attempts > 1 ? ` (after ${attempts} attempts)` : ""}`,
      options,
    );
  }

  /**
   * Whether another dial may succeed: auth and host-key failures never get better by retrying, and a failed
   * jump host has already been retried on its own.
   */
  get retryable(): boolean {
    return this.kind !== "auth" && this.kind !== "host-key" && this.kind !== "proxy";
  }
}

/** The remote side asked for a sudo password: the user needs NOPASSWD for non-interactive use. */
export class SudoPasswordRequiredError extends Error {
  override readonly name = "SudoPasswordRequiredError";
  constructor(
    readonly host: string,
    readonly user: string,
  ) {
    super(
      `sudo on ${host} wants a password for ${user}: xen-estate runs commands with \`sudo -n\` and cannot type one. ` +
        `Grant NOPASSWD (e.g. \`${user} ALL=(ALL) NOPASSWD: ALL\` in /etc/sudoers.d/) or connect as root.`,
    );
  }
}

export interface RemoteCommandErrorFields {
  host: string;
  /** A one-line summary of the command or script (first line, truncated). */
  command: string;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  durationMs: number;
  /** The last lines of stderr (redacted). */
  stderrTail: string;
}

/** A remote command ran and failed: non-zero exit, a signal, or the deadline. */
export class RemoteCommandError extends Error implements RemoteCommandErrorFields {
  override readonly name = "RemoteCommandError";
  readonly host: string;
  readonly command: string;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  readonly durationMs: number;
  readonly stderrTail: string;

  constructor(fields: RemoteCommandErrorFields, options?: { cause?: unknown }) {
    const how = fields.timedOut
      ? `timed out after ${(fields.durationMs / 1000).toFixed(1)} s`
      : fields.signal
        ? `was killed by ${fields.signal}`
        : `exited with code ${fields.exitCode}`;
    const tail = fields.stderrTail.trim();
    super(`on ${fields.host}: \`${fields.command}\` ${how}${tail ? `:\n${indent(tail)}` : ""}`, options);
    this.host = fields.host;
    this.command = fields.command;
    this.exitCode = fields.exitCode;
    this.signal = fields.signal;
    this.timedOut = fields.timedOut;
    this.durationMs = fields.durationMs;
    this.stderrTail = fields.stderrTail;
  }

  /** The one-line form, for the CLI's summary. */
  get shortMessage(): string {
    return this.message.split("\n", 1)[0] ?? this.message;
  }
}

/** A remote state that makes the requested change unsafe (e.g. shrinking a volume, deleting a used disk). */
export class RefusedError extends Error {
  override readonly name = "RefusedError";
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(hint ? `${message}. ${hint}` : message);
  }
}

function indent(text: string): string {
  return text
    .split("\n")
    .map((l) => `    ${l}`)
    .join("\n");
}
