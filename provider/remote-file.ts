/**
 * Remote file primitives: probe first, write only on a difference, and never lose the previous version.
 *
 * Writes are atomic (a temp file in the same directory, an optional validation command run on it, then
 * `rename`), keep a dated backup of the previous content under /var/backups/xen-estate (never beside the file:
 * directories such as /etc/xen/auto or /etc/network/interfaces.d act on every file they hold), and run under a
 * per-host `flock` so parallel resources editing shared files take turns.
 */
import { createHash } from "node:crypto";
import type { RemoteHost } from "./ssh/executor";
import { shellQuote } from "./shell";

/** Where previous versions of managed files are kept, mirrored by path. */
export const BACKUP_ROOT = "/var/backups/xen-estate";
/** How many backups of one file are kept. */
export const BACKUPS_KEPT = 10;
/** The per-host lock taken around edits of shared files. */
export const HOST_LOCK = "/run/lock/xen-estate.lock";

export interface FileState {
  sha256: string;
  owner: string;
  group: string;
  /** Octal permission bits, e.g. "644". */
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
   * Command that must succeed on the new content before it replaces the old; `%s` is the temp file's path
   * (e.g. `sshd -t -f %s`, `varnishd -C -f %s`).
   */
  validate?: string;
  /** Take the per-host lock around the write. @default true */
  lock?: boolean;
  /** Create missing parent directories (mode 755). @default false */
  mkdirs?: boolean;
}

export interface WriteResult {
  changed: boolean;
  /** Where the previous content was saved, when there was any. */
  backup?: string;
}

export function sha256(content: string | Buffer): string {
  return createHash("sha256").update(content).digest("hex");
}

/** Wraps a script so it runs holding the per-host lock (waits up to `waitSeconds`). */
export function withHostLock(body: string, waitSeconds = 300, lockFile = HOST_LOCK): string {
  return [
    `exec 9>>${shellQuote(lockFile)}`,
    `flock -w ${waitSeconds} 9 || { echo "xen-estate: waited ${waitSeconds} s for ${lockFile}" >&2; exit 75; }`,
    body,
  ].join("\n");
}

/** The content of a remote file, or null when it does not exist. */
export async function readRemoteFile(host: RemoteHost, path: string): Promise<string | null> {
  const q = shellQuote(path);
  const r = await host.script(`if [ -f ${q} ]; then echo present; cat -- ${q}; else echo absent; fi`, {
    summary: `read ${path}`,
  });
  const nl = r.stdout.indexOf("\n");
  return r.stdout.slice(0, nl) === "present" ? r.stdout.slice(nl + 1) : null;
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
      return `if [ -f ${q} ]; then printf '%s %s\\n' "$(sha256sum < ${q} | cut -d' ' -f1)" "$(stat -c '%U %G %a' -- ${q})"; else echo absent; fi`;
    })
    .join("\n");
  const r = await host.script(script, { summary: `stat ${paths.length} file(s)` });
  const lines = r.stdout.trimEnd().split("\n");
  return paths.map((_, i) => {
    const f = (lines[i] ?? "absent").split(" ");
    if (f[0] === "absent" || f.length < 4) return null;
    return { sha256: f[0]!, owner: f[1]!, group: f[2]!, mode: f[3]!.padStart(3, "0") };
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

/** A file's directory, its name, and the directory its dated backups go to (mirrored under BACKUP_ROOT). */
function locate(path: string): { dir: string; base: string; backupDir: string } {
  const dir = path.replace(/\/[^/]*$/, "") || "/";
  return { dir, base: path.slice(dir.length + 1), backupDir: `${BACKUP_ROOT}${dir === "/" ? "" : dir}` };
}

/** The script that writes `content` to `path` atomically; prints `unchanged` or `changed <backup>`. */
export function writeFileScript(path: string, content: string | Buffer, opts: WriteOptions = {}): string {
  const owner = opts.owner ?? "root";
  const group = opts.group ?? "root";
  const mode = (opts.mode ?? "644").replace(/^0+(?=\d{3})/, "");
  const q = shellQuote(path);
  const { dir, base, backupDir } = locate(path);
  const delimiter = `XEN_ESTATE_${sha256(content).slice(0, 16)}`;
  const validate = opts.validate ? opts.validate.split("%s").join('"$tmp"') : undefined;
  const body = [
    `want=${shellQuote(sha256(content))}`,
    `if [ -f ${q} ] && [ "$(sha256sum < ${q} | cut -d' ' -f1)" = "$want" ] && [ "$(stat -c '%U:%G %a' -- ${q})" = ${shellQuote(`${owner}:${group} ${mode}`)} ]; then`,
    `  echo unchanged; exit 0`,
    `fi`,
    opts.mkdirs
      ? `mkdir -p -- ${shellQuote(dir)}`
      : `[ -d ${shellQuote(dir)} ] || { echo "directory ${dir} does not exist" >&2; exit 2; }`,
    `tmp=$(mktemp ${shellQuote(`${dir}/.${base}.xen-estate.XXXXXX`)})`,
    `trap 'rm -f -- "$tmp"' EXIT`,
    `base64 -d > "$tmp" <<'${delimiter}'`,
    Buffer.from(content)
      .toString("base64")
      .replace(/(.{76})/g, "$1\n"),
    delimiter,
    `[ "$(sha256sum < "$tmp" | cut -d' ' -f1)" = "$want" ] || { echo "upload of ${path} was corrupted" >&2; exit 1; }`,
    `chown ${shellQuote(`${owner}:${group}`)} "$tmp"`,
    `chmod ${shellQuote(mode)} "$tmp"`,
    ...(validate
      ? [
          `if ! out=$(${validate} 2>&1); then echo "validation of the new ${path} failed: $out" >&2; exit 65; fi`,
        ]
      : []),
    `backup=`,
    `if [ -f ${q} ]; then`,
    `  mkdir -p -m 700 ${shellQuote(backupDir)}`,
    `  backup=${shellQuote(`${backupDir}/${base}.`)}$(date -u +%Y%m%dT%H%M%S.%NZ)`,
    `  cp -p -- ${q} "$backup"`,
    `  ls -1t -- ${shellQuote(`${backupDir}/${base}.`)}* 2>/dev/null | tail -n +${BACKUPS_KEPT + 1} | xargs -r -d '\\n' rm -f --`,
    `fi`,
    `sync -- "$tmp" 2>/dev/null || true`,
    `mv -f -- "$tmp" ${q}`,
    `trap - EXIT`,
    `echo "changed $backup"`,
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
  const r = await host.script(writeFileScript(path, content, opts), { summary: `write ${path}` });
  return parseWriteResult(r.stdout);
}

export function parseWriteResult(stdout: string): WriteResult {
  const last = stdout.trimEnd().split("\n").pop() ?? "";
  if (last === "unchanged") return { changed: false };
  const backup = last.replace(/^changed ?/, "");
  return backup ? { changed: true, backup } : { changed: true };
}

/** Removes a file, keeping a dated backup; a file already gone is fine. Returns whether it existed. */
export async function removeRemoteFile(
  host: RemoteHost,
  path: string,
  opts: { lock?: boolean } = {},
): Promise<boolean> {
  const q = shellQuote(path);
  const { base, backupDir } = locate(path);
  const body = [
    `if [ -L ${q} ]; then rm -f -- ${q}; echo removed; exit 0; fi`,
    `if [ ! -e ${q} ]; then echo absent; exit 0; fi`,
    `mkdir -p -m 700 ${shellQuote(backupDir)}`,
    `mv -f -- ${q} ${shellQuote(`${backupDir}/${base}.`)}$(date -u +%Y%m%dT%H%M%S.%NZ)`,
    `echo removed`,
  ].join("\n");
  const r = await host.script(opts.lock === false ? body : withHostLock(body), { summary: `remove ${path}` });
  return r.stdout.trim().endsWith("removed");
}
