/**
 * Remote file primitives: probe first, write only on a difference, and never lose the previous version.
 *
 * Writes are atomic (a temp file in the same directory, an optional validation command run on it, then
 * `rename`), keep a dated backup of the previous content under /var/backups/xen-estate (never beside the file:
 * directories such as /etc/xen/auto or /etc/network/interfaces.d act on every file they hold), and run under a
 * per-host `flock` so parallel resources editing shared files take turns.
 *
 * A file that existed before xen-estate first wrote it is its *original*: copied once to `<backup>.original`,
 * outside the rotation of dated backups, so it can always be restored. Only regular files are managed: a path
 * that names a directory, a device or a symlink is refused, never replaced or moved.
 *
 * Every probe that decides something says "absent" only when it looked and found nothing: a probe that fails
 * (permission, I/O) fails the command.
 */
import { createHash } from "node:crypto";
import { shellQuote } from "../core/shell";
import type { RemoteHost } from "../ssh/remote-host";
import { withHostLock } from "./lock";

/** Where previous versions of managed files are kept, mirrored by path. */
export const BACKUP_ROOT = "/var/backups/xen-estate";
/** How many dated backups of one file are kept (the original is kept apart, always). */
export const BACKUPS_KEPT = 10;
/** Suffix of the copy of a file as it was before xen-estate first wrote it. */
export const ORIGINAL_SUFFIX = ".original";
/** Exit code of a validation command that refused the new content (sysexits' EX_DATAERR). */
export const VALIDATION_FAILED_EXIT = 65;

export interface FileState {
  sha256: string;
  owner: string;
  group: string;
  /** Octal permission bits, e.g. "644" or "4755". */
  mode: string;
}

export interface WriteOptions {
  /** @default "root" */
  owner?: string;
  /** @default "root" */
  group?: string;
  /** Octal permission bits. @default "644" */
  mode?: string;
  /**
   * Command line that must succeed on the new content before it replaces the old, run by `bash -c`; `%s` stands for
   * the temp file's path as one word, so leave it unquoted (e.g. `sshd -t -f %s`, `varnishd -C -f %s`).
   */
  validate?: string;
  /** Take the per-host lock around the write. @default true */
  lock?: boolean;
  /** Create missing parent directories (mode 755). @default false */
  mkdirs?: boolean;
  /**
   * The content is secret: backups are mode 600 and validation output is not shown (it may quote the content).
   * @default false
   */
  sensitive?: boolean;
}

export interface WriteResult {
  changed: boolean;
  /** Where the previous content was saved, when there was any. */
  backup?: string;
  /** Where the file as it was before xen-estate first wrote it is kept, when there was one. */
  original?: string;
}

export function sha256(content: string | Buffer): string {
  return createHash("sha256").update(content).digest("hex");
}

/** Octal permission bits as `stat -c %a` prints them: `"0644"` → `"644"`, `"04755"` → `"4755"`. */
export function normalMode(mode: string): string {
  return mode.replace(/^0+/, "").padStart(3, "0");
}

/** Refuses (in a script) when `q`, a quoted path, exists and is not a regular file. */
function regularOrAbsent(q: string, path: string): string {
  return [
    `if [ -L ${q} ]; then xe_refuse ${shellQuote(`${path} is a symlink: refusing to replace it (name the real file instead)`)}; fi`,
    `if [ -e ${q} ] && [ ! -f ${q} ]; then xe_refuse ${shellQuote(`${path} exists and is not a regular file (a directory or a device): refusing to touch it`)}; fi`,
  ].join("\n");
}

/** The content of a remote file, or null when it does not exist. */
export async function readRemoteFile(host: RemoteHost, path: string): Promise<string | null> {
  const q = shellQuote(path);
  const r = await host.refusable(
    [regularOrAbsent(q, path), `if [ -e ${q} ]; then echo present; cat -- ${q}; else echo absent; fi`].join(
      "\n",
    ),
    { summary: `read ${path}` },
  );
  const nl = r.indexOf("\n");
  const head = nl < 0 ? r : r.slice(0, nl);
  if (head === "absent") return null;
  if (head !== "present")
    throw new Error(`reading ${path} gave no answer (got ${JSON.stringify(head.slice(0, 40))})`);
  return r.slice(nl + 1);
}

/** Hash, owner and mode of remote files (null for each one that is absent), in one round trip. */
export async function statRemoteFiles(
  host: RemoteHost,
  paths: readonly string[],
): Promise<(FileState | null)[]> {
  if (paths.length === 0) return [];
  const script = paths
    .map((p) => {
      const q = shellQuote(p);
      // sha256sum and stat fail loudly (set -e) on a file that is there but cannot be read.
      return `if [ -e ${q} ] || [ -L ${q} ]; then if [ ! -f ${q} ] || [ -L ${q} ]; then echo "notfile"; else h=$(sha256sum < ${q} | cut -d' ' -f1); s=$(stat -c '%U %G %a' -- ${q}); echo "file $h $s"; fi; else echo absent; fi`;
    })
    .join("\n");
  const r = await host.script(script, { summary: `stat ${paths.length} file(s)` });
  const lines = r.stdout.trimEnd().split("\n");
  if (lines.length !== paths.length)
    throw new Error(`stat of ${paths.length} file(s) on ${host.name} answered ${lines.length} line(s)`);
  return paths.map((p, i) => {
    const f = lines[i]!.split(" ");
    if (f[0] === "absent") return null;
    if (f[0] === "notfile")
      throw new Error(`${p} on ${host.name} is not a regular file (a directory, device or symlink)`);
    if (f[0] !== "file" || f.length < 5)
      throw new Error(`stat ${p} on ${host.name}: unexpected answer ${JSON.stringify(lines[i])}`);
    return { sha256: f[1]!, owner: f[2]!, group: f[3]!, mode: normalMode(f[4]!) };
  });
}

/**
 * What a resource's own files hold now, for `read`: the expected content where the hash matches (nothing is
 * transferred), the actual content where it differs (so drift shows as a diff), "" where the file is gone.
 * `states` are the files' {@link statRemoteFiles} results, in the order of `expected`'s keys.
 */
export async function observeOwnedFiles(
  host: RemoteHost,
  expected: Record<string, string>,
  states: readonly (FileState | null)[],
): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const [i, [path, want]] of Object.entries(expected).entries()) {
    const st = states[i];
    if (!st) files[path] = "";
    else if (st.sha256 === sha256(want)) files[path] = want;
    else files[path] = (await readRemoteFile(host, path)) ?? "";
  }
  return files;
}

/** A file's directory, its name, and where its backups go (mirrored under BACKUP_ROOT). */
export function backupLocation(path: string): {
  dir: string;
  base: string;
  backupDir: string;
  original: string;
} {
  const dir = path.replace(/\/[^/]*$/, "") || "/";
  const base = path.slice(dir === "/" ? 1 : dir.length + 1);
  const backupDir = `${BACKUP_ROOT}${dir === "/" ? "" : dir}`;
  return { dir, base, backupDir, original: `${backupDir}/${base}${ORIGINAL_SUFFIX}` };
}

/** The script that writes `content` to `path` atomically; prints `unchanged` or `changed <backup> <original>`. */
export function writeFileScript(path: string, content: string | Buffer, opts: WriteOptions = {}): string {
  const owner = opts.owner ?? "root";
  const group = opts.group ?? "root";
  const mode = normalMode(opts.mode ?? "644");
  const q = shellQuote(path);
  const { dir, base, backupDir, original } = backupLocation(path);
  const delimiter = `XEN_ESTATE_${sha256(content).slice(0, 16)}`;
  // The validation command is a command line by contract, but it is never spliced into this script: its own bash
  // runs it, quoted as one word, with the temp file's path as `$1`, so no value in it can reach this script's syntax.
  const validate = opts.validate
    ? `bash -o pipefail -c ${shellQuote(opts.validate.split("%s").join('"$1"'))} xe-validate "$tmp"`
    : undefined;
  const backupMode = opts.sensitive ? "600" : "";
  const body = [
    regularOrAbsent(q, path),
    `want=${shellQuote(sha256(content))}`,
    `if [ -f ${q} ] && [ "$(sha256sum < ${q} | cut -d' ' -f1)" = "$want" ] && [ "$(stat -c '%U:%G %a' -- ${q})" = ${shellQuote(`${owner}:${group} ${mode}`)} ]; then`,
    `  echo unchanged; exit 0`,
    `fi`,
    opts.mkdirs
      ? `mkdir -p -- ${shellQuote(dir)}`
      : `[ -d ${shellQuote(dir)} ] || { xe_say ${shellQuote(`directory ${dir} does not exist`)}; exit 2; }`,
    `tmp=$(mktemp ${shellQuote(`${dir}/.${base}.xen-estate.XXXXXX`)})`,
    `trap 'rm -f -- "$tmp"' EXIT`,
    `base64 -d > "$tmp" <<'${delimiter}'`,
    Buffer.from(content)
      .toString("base64")
      .replace(/(.{76})/g, "$1\n"),
    delimiter,
    `[ "$(sha256sum < "$tmp" | cut -d' ' -f1)" = "$want" ] || { xe_say ${shellQuote(`upload of ${path} was corrupted`)}; exit 1; }`,
    `chown ${shellQuote(`${owner}:${group}`)} "$tmp"`,
    `chmod ${shellQuote(mode)} "$tmp"`,
    ...(validate
      ? [
          opts.sensitive
            ? `if ! ( ${validate} ) >/dev/null 2>&1; then xe_say ${shellQuote(`validation of the new ${path} failed (its output is not shown: the content is secret)`)}; exit ${VALIDATION_FAILED_EXIT}; fi`
            : `if ! out=$(${validate} 2>&1); then xe_say ${shellQuote(`validation of the new ${path} failed: `)} "$out"; exit ${VALIDATION_FAILED_EXIT}; fi`,
        ]
      : []),
    `backup=; original=`,
    `if [ -f ${q} ]; then`,
    `  mkdir -p -m 700 ${shellQuote(backupDir)}`,
    `  backup=${shellQuote(`${backupDir}/${base}.`)}$(date -u +%Y%m%dT%H%M%S.%NZ)`,
    `  cp -p -- ${q} "$backup"`,
    ...(backupMode ? [`  chmod ${backupMode} "$backup"`] : []),
    // The first time xen-estate writes over a file, that file is the original: kept apart, never rotated away.
    `  if ! grep -qsxF -e ${shellQuote(base)} ${shellQuote(`${backupDir}/.xen-estate-managed`)}; then`,
    `    [ -e ${shellQuote(original)} ] || cp -p -- ${q} ${shellQuote(original)}`,
    ...(backupMode ? [`    chmod ${backupMode} ${shellQuote(original)}`] : []),
    `    original=${shellQuote(original)}`,
    `  fi`,
    `  ls -1t -- ${shellQuote(`${backupDir}/${base}.`)}2* 2>/dev/null | tail -n +${BACKUPS_KEPT + 1} | xargs -r -d '\\n' rm -f --`,
    `fi`,
    `mkdir -p -m 700 ${shellQuote(backupDir)}`,
    `grep -qsxF -e ${shellQuote(base)} ${shellQuote(`${backupDir}/.xen-estate-managed`)} || printf '%s\\n' ${shellQuote(base)} >> ${shellQuote(`${backupDir}/.xen-estate-managed`)}`,
    `sync -- "$tmp" 2>/dev/null || true`,
    `mv -f -- "$tmp" ${q}`,
    `trap - EXIT`,
    `echo "changed $backup $original"`,
  ].join("\n");
  return opts.lock === false ? body : withHostLock(body);
}

/** Writes a file atomically if its content, owner or mode differ. */
export async function writeRemoteFile(
  host: RemoteHost,
  path: string,
  content: string | Buffer,
  opts: WriteOptions = {},
): Promise<WriteResult> {
  const stdout = await host.refusable(writeFileScript(path, content, opts), {
    summary: `write ${path}`,
    // A validator may quote the content it refused; a secret file's lines must not reach an error.
    ...(opts.sensitive ? { secrets: secretLines(content) } : {}),
  });
  return parseWriteResult(stdout);
}

/** The lines of a secret content worth redacting (short lines such as `}` are not secrets and not redacted). */
export function secretLines(content: string | Buffer): string[] {
  const text = Buffer.isBuffer(content) ? content.toString("utf8") : content;
  return [text, ...text.split("\n").map((l) => l.trim())].filter((l) => l.length >= 8);
}

export function parseWriteResult(stdout: string): WriteResult {
  const last = stdout.trimEnd().split("\n").pop() ?? "";
  if (last === "unchanged") return { changed: false };
  const [, backup, original] = /^changed ?(\S*) ?(\S*)$/.exec(last) ?? [];
  const out: WriteResult = { changed: true };
  if (backup) out.backup = backup;
  if (original) out.original = original;
  return out;
}

export interface RemoveOptions {
  /** Take the per-host lock around the removal. @default true */
  lock?: boolean;
  /** Delete the file's backups too (a file that held a secret). @default false: kept, the file goes to them */
  dropBackups?: boolean;
  /**
   * The file had an original that must be put back: refuse (remove nothing) when it cannot be found.
   * @default false
   */
  expectOriginal?: boolean;
}

/**
 * Removes a file xen-estate wrote. When the file had an original (it was there before xen-estate first wrote it),
 * the original is put back instead; when that original cannot be found, nothing is removed and the call is
 * refused. A file already gone is fine. Returns what happened.
 */
export async function removeRemoteFile(
  host: RemoteHost,
  path: string,
  opts: RemoveOptions = {},
): Promise<"removed" | "restored" | "absent"> {
  const q = shellQuote(path);
  const { base, backupDir, original } = backupLocation(path);
  const managed = shellQuote(`${backupDir}/.xen-estate-managed`);
  const o = shellQuote(original);
  const restoredHash = shellQuote(`${original}.restored-sha256`);
  const body = [
    regularOrAbsent(q, path),
    `if [ -e ${o} ]; then`,
    // Put the original back atomically, then note its hash (not its content) as restored, so a retry whose
    // answer was lost recognises the job as done.
    `  tmp=$(mktemp ${shellQuote(`${path.replace(/\/[^/]*$/, "") || "/"}/.${base}.xen-estate.XXXXXX`)})`,
    `  cp -p -- ${o} "$tmp" && mv -f -- "$tmp" ${q}`,
    `  sha256sum < ${q} | cut -d' ' -f1 > ${restoredHash} && rm -f -- ${o}`,
    `  state=restored`,
    // A retry after the original went back (a delete whose answer was lost, or cut at a later file) finds the
    // original in place: it stays there, never moved to the backups as if xen-estate had made it.
    `elif [ -e ${q} ] && [ -f ${restoredHash} ] && [ "$(sha256sum < ${q} | cut -d' ' -f1)" = "$(cat -- ${restoredHash})" ]; then state=restored`,
    ...(opts.expectOriginal
      ? [
          `elif [ -e ${q} ]; then xe_refuse ${shellQuote(`cannot put back the original of ${path}: ${original} is gone; refusing to remove the file (move it away yourself if it should go)`)}`,
        ]
      : []),
    `elif [ ! -e ${q} ]; then state=absent`,
    `else`,
    `  mkdir -p -m 700 ${shellQuote(backupDir)}`,
    opts.dropBackups
      ? `  rm -f -- ${q}`
      : `  mv -f -- ${q} ${shellQuote(`${backupDir}/${base}.`)}$(date -u +%Y%m%dT%H%M%S.%NZ)`,
    `  state=removed`,
    `fi`,
    ...(opts.dropBackups
      ? [
          `find ${shellQuote(backupDir)} -maxdepth 1 -type f -name ${shellQuote(`${base}.2*`)} -delete 2>/dev/null || true`,
        ]
      : []),
    `if [ -f ${managed} ]; then grep -vx -F ${shellQuote(base)} ${managed} > ${managed}.new || true; mv -f -- ${managed}.new ${managed}; fi`,
    `echo "$state"`,
  ].join("\n");
  const r = await host.refusable(opts.lock === false ? body : withHostLock(body), {
    summary: `remove ${path}`,
  });
  const state = r.trim().split("\n").pop();
  if (state !== "removed" && state !== "restored" && state !== "absent")
    throw new Error(`removing ${path} on ${host.name} gave no answer`);
  return state;
}
