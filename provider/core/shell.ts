/**
 * Shell quoting. Every value that reaches a remote shell goes through {@link shellQuote}, even when `check`
 * already restricted it: validation and quoting are two separate defences.
 */

/** Quotes one word for POSIX sh/bash: `it's` → `'it'\''s'`. */
export function shellQuote(value: string | number): string {
  const s = String(value);
  if (s === "") return "''";
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Quotes and joins an argument vector. */
export function shellJoin(argv: readonly (string | number)[]): string {
  return argv.map(shellQuote).join(" ");
}
