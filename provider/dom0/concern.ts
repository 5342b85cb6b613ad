/**
 * What every Dom0Host concern shares: its checks of the common settings (system, what destroy does), writing the
 * files it owns (atomically, with dated backups and the original kept), seeing them drift, and destroy that by
 * default leaves the host as it is.
 */
import { RefusedError } from "../core/errors";
import { Checker, UNKNOWN } from "../core/validate";
import type { Context } from "../framework/kind";
import {
  observeOwnedFiles,
  removeRemoteFile,
  statRemoteFiles,
  writeRemoteFile,
  type WriteOptions,
} from "../remote/files";
import { DEFAULT_RELEASE, osFacts, SUPPORTED_OS, type Distribution, type OsFacts } from "./os";

/** What destroying a concern does: `keep` leaves the host as it is (and says so), `restore` puts the originals back. */
export type OnDelete = "keep" | "restore";

export function checkOs(
  c: Checker,
  raw: Record<string, unknown>,
): { distribution: Distribution; release: string; facts: OsFacts } | undefined {
  const distribution = c.oneOf<Distribution>(raw, "distribution", ["debian", "ubuntu"], "debian");
  if (!distribution || (distribution as string) === UNKNOWN) return undefined;
  const release = c.string(raw, "release", { default: DEFAULT_RELEASE[distribution] });
  if (!release || release === UNKNOWN) return undefined;
  const facts = osFacts(distribution, release);
  if (!facts) {
    c.fail("release", release, `must be a supported release of ${distribution} (${SUPPORTED_OS.join(", ")})`);
    return undefined;
  }
  return { distribution, release, facts };
}

export function checkOnDelete(c: Checker, raw: Record<string, unknown>): OnDelete {
  return c.oneOf<OnDelete>(raw, "onDelete", ["keep", "restore"], "keep") ?? "keep";
}

/** Per-file write options of a concern's files (mode, validation, owner). */
export type FileOptions = Record<string, Omit<WriteOptions, "lock">>;

/** Writes each owned file whose content, owner or mode differ; returns the paths that changed. */
export async function writeOwnedFiles(
  ctx: Context,
  files: Record<string, string>,
  options: FileOptions = {},
): Promise<string[]> {
  const changed: string[] = [];
  for (const [path, content] of Object.entries(files)) {
    const r = await writeRemoteFile(ctx.host, path, content, { mkdirs: true, ...options[path] });
    if (r.changed) changed.push(path);
  }
  if (changed.length > 0) ctx.log.info(`wrote ${changed.join(", ")}`);
  return changed;
}

/** The owned files as they are on the host (drift shows as changed content; "" for a file that is gone). */
export async function observeFiles(
  ctx: Context,
  files: Record<string, string>,
): Promise<Record<string, string>> {
  const states = await statRemoteFiles(ctx.host, Object.keys(files));
  return observeOwnedFiles(ctx.host, files, states);
}

/**
 * Destroy: by default nothing on the host changes (a dom0 half taken apart would be worse than one left alone);
 * with `restore`, each owned file goes back to what it was before xen-estate first wrote it, or is moved to the
 * backups when xen-estate made it.
 */
export async function deleteOwnedFiles(
  ctx: Context,
  what: string,
  files: readonly string[],
  onDelete: OnDelete | undefined,
): Promise<void> {
  if (onDelete !== "restore") {
    ctx.log.info(
      `leaving ${what} on ${ctx.conn.host} as it is (${files.join(", ")}); set onDelete: "restore" to put the originals back`,
    );
    return;
  }
  for (const f of files) {
    const r = await removeRemoteFile(ctx.host, f);
    ctx.log.info(
      `${f}: ${r === "restored" ? "original put back" : r === "removed" ? "moved to the backups" : "already gone"}`,
    );
  }
}

/** Refuses with the property named: for facts only the host knows (its memory, its disks). */
export function refuseInput(property: string, value: unknown, rule: string, hint?: string): never {
  throw new RefusedError(`\`${property}\` ${rule}, got ${JSON.stringify(value)}`, hint);
}

/** Package names as dpkg accepts them. */
export const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]{0,99}$/;

/** An http(s) URL without spaces, quotes or shell characters, no trailing slash needed. */
export const MIRROR_URL = /^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?(\/[A-Za-z0-9._~%+-]+)*\/?$/;

/** Checks a URL input (a mirror, a proxy). */
export function checkUrl(
  c: Checker,
  raw: Record<string, unknown>,
  key: string,
  opts: { default?: string; required?: boolean } = {},
): string | undefined {
  const v = c.string(raw, key, { ...opts, max: 512 });
  if (v === undefined || v === UNKNOWN) return v;
  if (!MIRROR_URL.test(v))
    return c.fail(
      key,
      v,
      "must be an http:// or https:// URL such as http://deb.debian.org/debian (no spaces, quotes or query)",
    );
  return v.replace(/\/$/, "");
}
