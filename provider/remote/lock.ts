/**
 * Host-wide locks. Resources that edit files shared on a host (NAT rules, the guest configs another guest's
 * check reads, backups) take the host lock around just those edits; long work (an install) takes a lock of its
 * own (per disk), so it never holds up the rest of the host.
 */
import { createHash } from "node:crypto";
import { shellQuote } from "../core/shell";

/** The per-host lock taken around edits of shared files. */
export const HOST_LOCK = "/run/lock/xen-estate.lock";
/**
 * The lock every `xl create` on a host takes. libxl gives each hotplug script (block, vif) a fixed deadline; ten
 * guests starting at once queue ten block scripts behind one another on a busy dom0 and the last ones run out of
 * time, so starts take turns while the rest of the guests' work (installs, configs) still runs side by side.
 */
export const XL_CREATE_LOCK = "/run/lock/xen-estate-xl-create.lock";
/** Exit code of a lock wait that ran out (sysexits' EX_TEMPFAIL). */
export const LOCK_TIMEOUT_EXIT = 75;

/** Wraps a script so it runs holding `lockFile` (waits up to `waitSeconds`) on file descriptor `fd`. */
export function withHostLock(body: string, waitSeconds = 300, lockFile = HOST_LOCK, fd = 9): string {
  return [
    `exec ${fd}>>${shellQuote(lockFile)}`,
    `flock -w ${waitSeconds} ${fd} || { xe_say ${shellQuote(`xen-estate: waited ${waitSeconds} s for ${lockFile}; another run holds it`)}; exit ${LOCK_TIMEOUT_EXIT}; }`,
    body,
    `exec ${fd}>&-`,
  ].join("\n");
}

/** The longest name a directory entry may have (Linux's NAME_MAX, in bytes). */
export const NAME_MAX = 255;

/**
 * A part of a file name made from `value` (a device path…): its characters outside `[A-Za-z0-9_.-]` replaced by `_`,
 * as it is when that fits in `max` characters; else its start and a hash of the whole `value`, `max` characters in
 * all. A path `check` accepts may be up to 4096 characters long, more than one directory entry can hold.
 */
export function fileNamePart(value: string, max: number): string {
  const safe = value.replace(/[^A-Za-z0-9_.-]/g, "_");
  if (safe.length <= max) return safe;
  const hash = createHash("sha256").update(value).digest("hex").slice(0, 16);
  return `${safe.slice(0, max - hash.length - 1)}-${hash}`;
}

const DISK_LOCK_PREFIX = "xen-estate-disk.";
const DISK_LOCK_SUFFIX = ".lock";

/** The lock file of one block device (long work on a disk, such as an install, takes it). */
export function deviceLock(devicePath: string): string {
  const part = fileNamePart(devicePath, NAME_MAX - DISK_LOCK_PREFIX.length - DISK_LOCK_SUFFIX.length);
  return `/run/lock/${DISK_LOCK_PREFIX}${part}${DISK_LOCK_SUFFIX}`;
}
