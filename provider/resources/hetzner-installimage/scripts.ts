/** HetznerInstallimage's remote scripts (pure strings). */
import { shellQuote } from "../../core/shell";

/** Where the config and the post-install hook go in the rescue system (RAM: gone with the reboot). */
export const WORK_DIR = "/tmp/xen-estate-installimage";

/**
 * Looks at the rescue system before anything is written: installimage must be there (this is Hetzner's rescue,
 * not an installed system), the root filesystem must not live on a target drive, no partition of a target may be
 * mounted. Prints the drives as `lsblk -J` sees them, for the comparison with the declared ones.
 */
export function probeScript(devices: readonly string[]): string {
  const list = devices.map(shellQuote).join(" ");
  return [
    `command -v installimage >/dev/null || xe_refuse 'this host has no installimage: it is not Hetzner'"'"'s rescue system (an installed system is never reinstalled)'`,
    `root=$(findmnt -no SOURCE / || true)`,
    `for d in ${list}; do`,
    `  case "$root" in "$d"*) xe_refuse "the running system's root ($root) is on $d: refusing to wipe the disk it runs from" ;; esac`,
    `  [ -b "$d" ] || continue`,
    `  m=$(lsblk -nro MOUNTPOINTS -- "$d" 2>/dev/null | grep -v '^$' || true)`,
    `  [ -z "$m" ] || xe_refuse "$d has mounted filesystems ($m): refusing to wipe it"`,
    `done`,
    `lsblk -J -b -d -o PATH,SIZE,SERIAL -- ${list} 2>/dev/null || echo '{"blockdevices": []}'`,
  ].join("\n");
}

/**
 * The post-install hook installimage runs inside the installed system (`-x`): it installs the host key the
 * resource generated, so the provider can pin it before the first login to the new system, and drops the other
 * host keys, so sshd offers only that one.
 */
export function postInstallScript(privateKey: string, publicKey: string): string {
  const b64 = (s: string): string =>
    Buffer.from(s)
      .toString("base64")
      .replace(/(.{76})/g, "$1\n");
  return [
    "#!/bin/bash",
    "# Written by xen-estate (HetznerInstallimage): the installed system's SSH host key.",
    "set -euo pipefail",
    "umask 077",
    "rm -f /etc/ssh/ssh_host_*",
    "base64 -d > /etc/ssh/ssh_host_ed25519_key <<'XE_KEY'",
    b64(privateKey),
    "XE_KEY",
    "base64 -d > /etc/ssh/ssh_host_ed25519_key.pub <<'XE_PUB'",
    b64(`${publicKey}\n`),
    "XE_PUB",
    "chmod 600 /etc/ssh/ssh_host_ed25519_key",
    "chmod 644 /etc/ssh/ssh_host_ed25519_key.pub",
    "mkdir -p /etc/ssh/sshd_config.d",
    "printf 'HostKey /etc/ssh/ssh_host_ed25519_key\\n' > /etc/ssh/sshd_config.d/00-xen-estate-hostkey.conf",
  ].join("\n");
}

/**
 * Writes the config and the hook (mode 600/700, in RAM), runs installimage unattended, removes the hook. Once
 * installimage has succeeded, {@link INSTALLED_FILE} records the public host key of the system it installed: what a
 * later run finishing the create checks before it reboots into that system.
 */
export function installScript(config: string, hook: string, publicKey: string): string {
  return [
    `umask 077`,
    `rm -rf ${WORK_DIR} && mkdir -m 700 ${WORK_DIR}`,
    `cat > ${WORK_DIR}/installimage.conf <<'XE_CONF'`,
    config.trimEnd(),
    `XE_CONF`,
    `base64 -d > ${WORK_DIR}/post-install.sh <<'XE_HOOK'`,
    Buffer.from(hook)
      .toString("base64")
      .replace(/(.{76})/g, "$1\n"),
    `XE_HOOK`,
    `chmod 700 ${WORK_DIR}/post-install.sh`,
    `trap 'rm -f ${WORK_DIR}/post-install.sh' EXIT`,
    `installimage -a -c ${WORK_DIR}/installimage.conf -x ${WORK_DIR}/post-install.sh >&2`,
    `printf '%s\\n' ${shellQuote(publicKey)} > ${INSTALLED_FILE}`,
    `echo installed`,
  ].join("\n");
}

/** In the rescue system's RAM: the public host key of the system installimage installed (see {@link installScript}). */
export const INSTALLED_FILE = `${WORK_DIR}/installed-host-key`;
/** In the rescue system's RAM: made when the reboot into the installed system is scheduled. */
export const REBOOT_FILE = `${WORK_DIR}/reboot-scheduled`;

/** Reboots after this command returns, noting the time in {@link REBOOT_FILE}; no hook is left behind. */
export const REBOOT_SCRIPT = [
  `rm -f ${WORK_DIR}/post-install.sh`,
  `touch ${REBOOT_FILE}`,
  `setsid nohup bash -c 'sleep 2; reboot' </dev/null >/dev/null 2>&1 &`,
  `echo scheduled`,
].join("\n");

/**
 * Looks at what a create left in the rescue system, for a run that finishes it: the host key of the system
 * installimage installed (`installed KEY` or `installed -`) and how many seconds ago the reboot was scheduled
 * (`reboot SECONDS` or `reboot -`).
 */
export const RESCUE_STATE_SCRIPT = [
  `if [ -f ${INSTALLED_FILE} ]; then echo "installed $(head -n1 ${INSTALLED_FILE})"; else echo "installed -"; fi`,
  `if [ -f ${REBOOT_FILE} ]; then echo "reboot $(( $(date +%s) - $(stat -c %Y ${REBOOT_FILE}) ))"; else echo "reboot -"; fi`,
].join("\n");
