/**
 * Host-wide locks. Resources that edit files shared on a host (NAT rules, the guest configs another guest's
 * check reads, backups) take the host lock around just those edits; long work (an install) takes a lock of its
 * own (per disk), so it never holds up the rest of the host.
 */
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

/** The lock file of one block device (long work on a disk, such as an install, takes it). */
export function deviceLock(devicePath: string): string {
  return `/run/lock/xen-estate-disk.${devicePath.replace(/[^A-Za-z0-9_.-]/g, "_")}.lock`;
}
