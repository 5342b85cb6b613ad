/**
 * Pure validation helpers used by every resource's `check`. A {@link Checker} collects every failure (with the
 * full property path) instead of stopping at the first, so one `pulumi preview` shows all that is wrong.
 */
import { InputError, showValue } from "./errors";

/**
 * What the engine sends in place of a value that is not known yet (an output of a resource still to be made)
 * during `preview`. Validation lets it through; the value is checked when it is known, at `up`.
 */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

/** Whether a value, or anything inside it, is not known yet. */
export function containsUnknown(v: unknown): boolean {
  if (v === UNKNOWN) return true;
  if (v && typeof v === "object") return Object.values(v).some(containsUnknown);
  return false;
}

export class Checker {
  readonly errors: InputError[] = [];

  constructor(private readonly prefix = "") {}

  /** A checker for a nested object whose errors land in this one with a longer path. */
  at(property: string): Checker {
    const child = new Checker(this.path(property));
    // Share the list so nested failures are reported together.
    (child as { errors: InputError[] }).errors = this.errors;
    return child;
  }

  path(property: string): string {
    if (!this.prefix) return property;
    if (!property) return this.prefix;
    return property.startsWith("[") ? `${this.prefix}${property}` : `${this.prefix}.${property}`;
  }

  fail(property: string, value: unknown, rule: string, hint?: string, secret = false): undefined {
    // Not known yet (preview): checked again at `up`, when it is.
    if (containsUnknown(value)) return undefined;
    this.errors.push(new InputError(this.path(property), showValue(value, secret), rule, hint));
    return undefined;
  }

  get ok(): boolean {
    return this.errors.length === 0;
  }

  /** A required string that matches `pattern`; returns it or undefined after recording the failure. */
  string(
    obj: Record<string, unknown>,
    key: string,
    opts: {
      required?: boolean;
      pattern?: RegExp;
      rule?: string;
      hint?: string;
      default?: string;
      /** Longest accepted value, in characters. @default 4096 */
      max?: number;
      /** Never show the value in a failure (a field where a secret may have been pasted by mistake). */
      secret?: boolean;
    } = {},
  ): string | undefined {
    const v = obj[key];
    if (v === UNKNOWN) return v;
    if (v === undefined || v === null || v === "") {
      if (opts.default !== undefined) return opts.default;
      if (opts.required) return this.fail(key, v, "is required");
      return undefined;
    }
    const secret = opts.secret ?? false;
    if (typeof v !== "string") return this.fail(key, v, "must be a string", undefined, secret);
    const max = opts.max ?? 4096;
    // Checked before any pattern, so no pattern ever runs on an overlong value.
    if (v.length > max)
      return this.fail(
        key,
        `${v.slice(0, 40)}… (${v.length} characters)`,
        `must be at most ${max} characters long`,
        undefined,
        secret,
      );
    if (opts.pattern && !opts.pattern.test(v))
      return this.fail(key, v, opts.rule ?? `must match ${opts.pattern}`, opts.hint, secret);
    return v;
  }

  /** An integer within [min, max]. Accepts numeric strings (stack config arrives as strings). */
  integer(
    obj: Record<string, unknown>,
    key: string,
    opts: {
      required?: boolean;
      min?: number;
      max?: number;
      default?: number;
      unit?: string;
      hint?: string;
    } = {},
  ): number | undefined {
    let v = obj[key];
    if (v === UNKNOWN) return v as unknown as number;
    if (v === undefined || v === null || v === "") {
      if (opts.default !== undefined) return opts.default;
      if (opts.required) return this.fail(key, v, "is required");
      return undefined;
    }
    if (typeof v === "string" && /^-?\d+$/.test(v.trim())) v = Number(v.trim());
    const unit = opts.unit ? ` ${opts.unit}` : "";
    const range =
      opts.min !== undefined && opts.max !== undefined
        ? `an integer from ${opts.min} to ${opts.max}${unit}`
        : opts.min !== undefined
          ? `an integer >= ${opts.min}${unit}`
          : opts.max !== undefined
            ? `an integer <= ${opts.max}${unit}`
            : `an integer${unit}`;
    if (typeof v !== "number" || !Number.isInteger(v))
      return this.fail(key, obj[key], `must be ${range}`, opts.hint);
    if ((opts.min !== undefined && v < opts.min) || (opts.max !== undefined && v > opts.max))
      return this.fail(key, v, `must be ${range}`, opts.hint);
    return v;
  }

  boolean(obj: Record<string, unknown>, key: string, def: boolean): boolean {
    const v = obj[key];
    if (v === undefined || v === null) return def;
    if (v === UNKNOWN) return v as unknown as boolean;
    if (typeof v === "boolean") return v;
    if (v === "true" || v === "false") return v === "true";
    this.fail(key, v, "must be true or false");
    return def;
  }

  oneOf<T extends string>(
    obj: Record<string, unknown>,
    key: string,
    allowed: readonly T[],
    def?: T,
  ): T | undefined {
    const v = obj[key];
    if (v === UNKNOWN) return v as T;
    if (v === undefined || v === null || v === "") {
      if (def !== undefined) return def;
      return this.fail(key, v, "is required");
    }
    if (typeof v === "string" && (allowed as readonly string[]).includes(v)) return v as T;
    const hint = typeof v === "string" ? didYouMean(v, allowed) : undefined;
    return this.fail(key, v, `must be one of ${allowed.map((a) => `"${a}"`).join(", ")}`, hint);
  }

  /**
   * An object. Returns {@link UNKNOWN} when the whole object is not known yet (preview): the caller keeps it as
   * unknown instead of checking its fields.
   */
  object(
    obj: Record<string, unknown>,
    key: string,
    required = false,
  ): Record<string, unknown> | typeof UNKNOWN | undefined {
    const v = obj[key];
    if (v === UNKNOWN) return UNKNOWN;
    if (v === undefined || v === null) {
      if (required) return this.fail(key, v, "is required");
      return undefined;
    }
    if (typeof v !== "object" || Array.isArray(v)) return this.fail(key, v, "must be an object");
    return v as Record<string, unknown>;
  }

  /** A list. Returns {@link UNKNOWN} when the whole list is not known yet (preview), like {@link object}. */
  array(obj: Record<string, unknown>, key: string, required = false): unknown[] | typeof UNKNOWN | undefined {
    const v = obj[key];
    if (v === UNKNOWN) return UNKNOWN;
    if (v === undefined || v === null) {
      if (required) return this.fail(key, v, "is required");
      return undefined;
    }
    if (!Array.isArray(v)) return this.fail(key, v, "must be a list");
    return v;
  }
}

/** Suggests the closest allowed word for a likely typo. */
export function didYouMean(value: string, allowed: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const a of allowed) {
    const d = levenshtein(value.toLowerCase(), a.toLowerCase());
    if (d < bestDistance) {
      best = a;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 3))
    ? `Did you mean "${best}"?`
    : undefined;
}

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

// ---- Shared rules -----------------------------------------------------------------------------------------

/**
 * RFC 1123 host name (labels of letters, digits, hyphens) or an IPv4/IPv6 literal. A name whose last label is all
 * digits is refused: libc reads `010.0.0.1` as octal (8.0.0.1) and `0x7f.1` as 127.0.0.1, so numeric addresses
 * must be dotted-decimal IPv4 (no leading zeros) or IPv6.
 */
export function isHostName(v: string): boolean {
  if (isIPv4(v) || isIPv6(v)) return true;
  if (v.length > 253) return false;
  const labels = v.replace(/\.$/, "").split(".");
  if (/^(\d+|0x[0-9a-f]*)$/i.test(labels[labels.length - 1] ?? "")) return false;
  return labels.every((l) => /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l));
}

export function isIPv4(v: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(v);
  return !!m && m.slice(1).every((o) => Number(o) <= 255 && !(o.length > 1 && o.startsWith("0")));
}

export function isIPv6(v: string): boolean {
  if (!/^[0-9A-Fa-f:.]+$/.test(v) || !v.includes(":")) return false;
  const double = v.split("::");
  if (double.length > 2) return false;
  const groups = (s: string): string[] => (s === "" ? [] : s.split(":"));
  let parts = [...groups(double[0]!), ...(double.length === 2 ? groups(double[1]!) : [])];
  let expected = 8;
  const last = parts[parts.length - 1];
  if (last !== undefined && last.includes(".")) {
    if (!isIPv4(last)) return false;
    parts = parts.slice(0, -1);
    expected = 6;
  }
  if (!parts.every((p) => /^[0-9A-Fa-f]{1,4}$/.test(p))) return false;
  return double.length === 2 ? parts.length < expected : parts.length === expected;
}

/** Unix user names as useradd accepts them by default. */
export const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;

/** The characters a path may hold: letters, digits and `_.+@%=,:~-`, with `/` between its parts. */
const PATH_CHARS = /^\/[A-Za-z0-9_.+@%=,:~/-]*$/;

/** The rule every absolute path follows, as stated in failures. */
export const PATH_RULE =
  "must be an absolute path of letters, digits and `_.+@%=,:~-` (no spaces, quotes, `$`, backticks or other shell characters), without `.` or `..` parts, `//` or a trailing `/`";

/**
 * A conservative absolute path: only the characters {@link PATH_RULE} names, no `.`/`..` parts, no empty parts, no trailing slash
 * (except `/` itself), at most 4096 characters. Nothing in such a path means anything to a shell, but it is still
 * quoted everywhere it is used.
 */
export function isSafeAbsolutePath(v: string): boolean {
  if (v.length > 4096 || !PATH_CHARS.test(v)) return false;
  if (v === "/") return true;
  const parts = v.slice(1).split("/");
  return parts.every((p) => p !== "" && p !== "." && p !== "..");
}

/** A block device path under /dev that follows {@link isSafeAbsolutePath}. */
export function isDevicePath(v: string): boolean {
  return isSafeAbsolutePath(v) && v.startsWith("/dev/") && v.length > 5;
}

/** Records a failure unless `v` is a safe absolute path (see {@link PATH_RULE}); returns it or undefined. */
export function checkPath(
  c: Checker,
  obj: Record<string, unknown>,
  key: string,
  opts: { required?: boolean; default?: string; under?: string; what?: string } = {},
): string | undefined {
  const v = c.string(obj, key, { ...opts, max: 4096 });
  if (v === undefined || v === UNKNOWN) return v;
  if (!isSafeAbsolutePath(v)) return c.fail(key, v, PATH_RULE);
  if (opts.under && !v.startsWith(`${opts.under}/`))
    return c.fail(key, v, `must be ${opts.what ?? "a path"} under ${opts.under}/`);
  return v;
}
