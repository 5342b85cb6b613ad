/**
 * Sizes with units. Binary units follow LVM's convention (`G` = `GiB` = 2^30); decimal ones are spelled out
 * (`GB` = 10^9). A bare number is bytes.
 */

const BINARY: Record<string, number> = { b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 };
const DECIMAL: Record<string, number> = { kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, pb: 1e15 };

/** The largest size accepted anywhere: more than any volume group on a rented server holds. */
export const MAX_SIZE_BYTES = 2 ** 50;
const SIZE_RULE = 'must be a size such as "10GiB", "512MiB" or a byte count';

/**
 * Parses `10GiB`, `512MiB`, `1.5T`, `2GB` or a byte count; returns bytes, or an explanation. Runs in time linear in
 * the input (at most 64 characters are looked at) and refuses sizes above {@link MAX_SIZE_BYTES} (1 PiB).
 */
export function parseSize(value: unknown): number | { error: string } {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value) || value <= 0)
      return { error: "a byte count must be a positive integer" };
    if (value > MAX_SIZE_BYTES) return { error: "must be at most 1PiB" };
    return value;
  }
  if (typeof value !== "string" || value.length > 64) return { error: SIZE_RULE };
  // One unambiguous pattern: digits, an optional fraction, at most one space, a unit of letters.
  const m = /^(\d{1,16}(?:\.\d{1,9})?) ?([A-Za-z]{0,3})$/.exec(value.trim());
  if (!m) return { error: SIZE_RULE };
  const n = Number(m[1]);
  const unit = m[2]!.toLowerCase();
  let factor: number | undefined;
  if (unit === "" || unit === "b") factor = 1;
  else if (/^[kmgtp]i?b?$/.test(unit) && !/^[kmgtp]b$/.test(unit)) factor = BINARY[unit[0]!];
  else factor = DECIMAL[unit];
  if (factor === undefined)
    return { error: `unknown unit "${m[2]}" (use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB)` };
  const bytes = Math.round(n * factor);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) return { error: "must be a positive size" };
  if (bytes > MAX_SIZE_BYTES) return { error: "must be at most 1PiB" };
  return bytes;
}

/**
 * Formats bytes the way people write sizes: `10GiB`, `1.5GiB`, `512MiB`, `4096B` (the one byte formatter, also
 * used in progress lines).
 */
export function formatSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const text = Number.isInteger(v) ? String(v) : v.toFixed(2).replace(/\.?0+$/, "");
  return `${text}${units[i]}`;
}

/** Rounds up to a whole number of extents. */
export function roundUpToExtent(bytes: number, extentBytes: number): number {
  return Math.ceil(bytes / extentBytes) * extentBytes;
}
