/**
 * LinodeMigration's remote scripts: pure functions from inputs to bash, every value quoted.
 *
 * Three machines take part. The provider (a laptop, a CI runner) only orchestrates. The source VPS is read and
 * never written: its device is opened read-only by the chunk engine, a mounted device is refused unless the copy is
 * declared a live seed. The dom0 pulls the data itself over its own SSH connection to the source, with a key pair
 * made for this copy (authorised on the source through the provider's connection and removed afterwards) and a
 * known_hosts file holding the source's pinned host key: nothing is trusted on first use, nothing is left behind.
 */
import { VERSION } from "../../core/package";
import { shellQuote } from "../../core/shell";
import { render } from "../../core/templates";
import { DEVICE_HOLDER_FUNCTIONS } from "../../remote/devices";
import { deviceLock, withHostLock } from "../../remote/lock";
import type { FixupInputs } from "./plan";

/** Where a migration keeps its journal, identity and the source's hashes on the dom0. */
export const STATE_ROOT = "/var/lib/xen-estate/migrations";
/** Where the copy's own key pair and known_hosts live on the dom0 while it runs (tmpfs: gone at reboot too). */
export const KEY_ROOT = "/run/xen-estate";
/** The name the dom0's ssh looks the source's host key up by, whatever address it dials. */
export const HOST_ALIAS = "xen-estate-source";
/** Inside the migrated filesystem: the fixups' record, the originals and revert.sh. */
export const FIXUP_BACKUPS = "/var/backups/xen-estate/linode-migration";

export function stateDir(key: string): string {
  return `${STATE_ROOT}/${key}`;
}

export function keyDir(key: string): string {
  return `${KEY_ROOT}/migration-${key}`;
}

/** The comment that marks this migration's key lines in the source's authorized_keys. */
export function keyTag(key: string): string {
  return `xen-estate-migration-${key}`;
}

/** The chunk engine (templates/linode-migration/chunks.py.hbs), run by python3 on both ends. */
export function chunkEngine(): string {
  return render("linode-migration/chunks.py", { version: VERSION });
}

/** Lines that print what `missing` tools lack as `XE-MISSING name (package)`. */
function toolCheck(tools: readonly [string, string][]): string[] {
  return tools.map(
    ([cmd, pkg]) =>
      `command -v ${shellQuote(cmd)} >/dev/null 2>&1 || echo ${shellQuote(`XE-MISSING ${cmd} (${pkg})`)}`,
  );
}

/** ext2/3/4 superblock fields a probe prints as `<marker> key=value`. */
function extFields(marker: string, dev: string): string[] {
  return [
    // Read into a variable: nothing is written on the source, not even a temp file.
    `if sb=$(dumpe2fs -h -- ${dev} 2>/dev/null); then`,
    `  printf '%s\\n' "$sb" | sed -n -e 's/^Block count: *\\([0-9]*\\)$/blocks=\\1/p' -e 's/^Block size: *\\([0-9]*\\)$/blocksize=\\1/p' -e 's/^Free blocks: *\\([0-9]*\\)$/freeblocks=\\1/p' -e 's/^Filesystem UUID: *\\([0-9a-f-]*\\)$/uuid=\\1/p' -e 's/^Filesystem state: *\\(.*\\)$/state=\\1/p' -e 's/^Filesystem features: *\\(.*\\)$/features=\\1/p' | sed ${shellQuote(`s/^/${marker} /`)}`,
    `fi`,
  ];
}

/**
 * The source's facts, read through the provider's own connection: whether the device is a block device and who
 * uses it, its size and filesystem, and which tools are missing. Refusals are the kind's (they name properties).
 */
export function sourceProbeScript(device: string): string {
  const dev = shellQuote(device);
  return [
    `if [ ! -e ${dev} ]; then echo "XE-SRC exists=0"; exit 0; fi`,
    `real=$(readlink -f -- ${dev})`,
    `echo "XE-SRC exists=1"`,
    `echo "XE-SRC real=$real"`,
    `echo "XE-SRC type=$(stat -L -c %F -- "$real")"`,
    `if [ ! -b "$real" ]; then exit 0; fi`,
    // The device or any partition on it mounted here, or used as swap: it is in use.
    `echo "XE-SRC mounted=$(lsblk -nro MOUNTPOINT -- "$real" | grep -v '^$' | head -n1 || true)"`,
    `echo "XE-SRC swap=$(swapon --show=NAME --noheadings --raw | grep -xF -- "$real" || true)"`,
    `echo "XE-SRC size=$(blockdev --getsize64 "$real")"`,
    `rc=0; fs=$(blkid -p -o value -s TYPE -- "$real") || rc=$?`,
    `[ "$rc" = 0 ] || [ "$rc" = 2 ] || { xe_say ${shellQuote(`blkid cannot read ${device}`)}; exit 1; }`,
    `echo "XE-SRC fs=$fs"`,
    `case "$fs" in ext2|ext3|ext4) ;; *) exit 0 ;; esac`,
    ...extFields("XE-SRC", `"$real"`),
    ...toolCheck([
      ["python3", "python3"],
      ["zstd", "zstd"],
      ["dumpe2fs", "e2fsprogs"],
      ["bash", "bash"],
    ]),
  ].join("\n");
}

/** The lines that read the dom0's resolvers as `XE-TGT nameserver=…` (what systemd-resolved uses, not its stub). */
function resolverLines(marker: string): string[] {
  return [
    `rf=/etc/resolv.conf`,
    `if grep -qE '^nameserver 127\\.0\\.0\\.53' "$rf" 2>/dev/null && [ -f /run/systemd/resolve/resolv.conf ]; then rf=/run/systemd/resolve/resolv.conf; fi`,
    `sed -n 's/^nameserver[[:space:]]\\{1,\\}\\([0-9.]\\{7,15\\}\\)[[:space:]]*$/${marker} nameserver=\\1/p' "$rf" 2>/dev/null | grep -v '=127\\.' | head -n 3 || true`,
  ];
}

/** The target's facts on the dom0: block device, size, who holds it, what it holds, this migration's record. */
export function targetProbeScript(device: string, key: string): string {
  const dev = shellQuote(device);
  const state = shellQuote(stateDir(key));
  return [
    DEVICE_HOLDER_FUNCTIONS,
    `if [ ! -e ${dev} ]; then echo "XE-TGT exists=0"; exit 0; fi`,
    `real=$(readlink -f -- ${dev})`,
    `echo "XE-TGT exists=1"`,
    `echo "XE-TGT type=$(stat -L -c %F -- "$real")"`,
    `if [ ! -b "$real" ]; then exit 0; fi`,
    `echo "XE-TGT size=$(blockdev --getsize64 "$real")"`,
    `xe_holder "$real"; echo "XE-TGT holder=$holder"`,
    `xe_mounted "$real"; echo "XE-TGT mounted=$mounted"`,
    `rc=0; sig=$(blkid -p -o export -- "$real") || rc=$?`,
    `[ "$rc" = 0 ] || [ "$rc" = 2 ] || { xe_say ${shellQuote(`blkid cannot read ${device}`)}; exit 1; }`,
    `printf '%s\\n' "$sig" | sed -n -e 's/^TYPE=/XE-TGT fs=/p' -e 's/^PTTYPE=/XE-TGT pttype=/p' -e 's/^UUID=/XE-TGT uuid=/p'`,
    `if [ -f ${state}/identity ]; then echo "XE-TGT identity=$(head -n1 ${state}/identity)"; fi`,
    `if [ -f ${state}/journal ]; then echo "XE-TGT journaled=$(wc -l < ${state}/journal)"; fi`,
    `if grep -qw aes /proc/cpuinfo; then echo "XE-TGT aes=1"; fi`,
    ...resolverLines("XE-TGT"),
    ...toolCheck([
      ["python3", "python3"],
      ["zstd", "zstd"],
      ["ssh", "openssh-client"],
      ["ssh-keygen", "openssh-client"],
      ["e2fsck", "e2fsprogs"],
      ["resize2fs", "e2fsprogs"],
    ]),
  ].join("\n");
}

/**
 * Makes the copy's credential on the dom0: a fresh ed25519 key pair (the private key never leaves the dom0's
 * tmpfs) and a known_hosts file holding only the source's pinned host key, under an alias so the address the dom0
 * dials does not matter. Prints `XE-PUB <public key line>`.
 */
export function grantScript(key: string, hostKeyLine: string): string {
  const d = shellQuote(keyDir(key));
  return [
    `umask 077`,
    `mkdir -p -m 700 ${shellQuote(KEY_ROOT)}`,
    `rm -rf -- ${d}`,
    `mkdir -m 700 -- ${d}`,
    `ssh-keygen -q -t ed25519 -N '' -C ${shellQuote(keyTag(key))} -f ${d}/key >/dev/null`,
    `printf '%s\\n' ${shellQuote(`${HOST_ALIAS} ${hostKeyLine}`)} > ${d}/known_hosts`,
    `echo "XE-PUB $(cat ${d}/key.pub)"`,
  ].join("\n");
}

/** Removes the copy's credential from the dom0. */
export function dropGrantScript(key: string): string {
  // The shared parent goes with the last copy's credential (rmdir leaves it while another copy's is in it).
  return `rm -rf -- ${shellQuote(keyDir(key))}\nrmdir -- ${shellQuote(KEY_ROOT)} 2>/dev/null || true`;
}

/**
 * The authorized_keys file the source's sshd reads for `user`: `file` when given, else `~user/.ssh/authorized_keys`
 * (sets `$ak`; refuses when the user has no home).
 */
function authorizedKeysPath(user: string, file: string | null): string[] {
  if (file) return [`ak=${shellQuote(file)}`];
  return [
    `home=$(getent passwd ${shellQuote(user)} | cut -d: -f6)`,
    `[ -n "$home" ] || xe_refuse ${shellQuote(`the source has no user ${user} to authorise the dom0's key for`)}`,
    `ak="$home/.ssh/authorized_keys"`,
    `if [ ! -d "$home/.ssh" ]; then install -d -m 700 -o ${shellQuote(user)} -- "$home/.ssh"; fi`,
  ];
}

/**
 * Authorises the dom0's key on the source for one copy: a `restrict`ed line (no forwarding, no pty) marked with
 * the migration's tag; earlier lines with that tag go. The file is rewritten atomically, keeping owner and mode.
 */
export function authorizeScript(user: string, file: string | null, publicKey: string, key: string): string {
  const tag = keyTag(key);
  return [
    ...authorizedKeysPath(user, file),
    `dir=$(dirname -- "$ak")`,
    `tmp=$(mktemp -- "$dir/.authorized_keys.xen-estate.XXXXXX")`,
    `trap 'rm -f -- "$tmp"' EXIT`,
    `if [ -f "$ak" ]; then grep -vF -- ${shellQuote(tag)} "$ak" > "$tmp" || true; chown --reference="$ak" -- "$tmp"; chmod --reference="$ak" -- "$tmp"; else chown ${shellQuote(user)} -- "$tmp"; chmod 600 -- "$tmp"; fi`,
    `printf '%s\\n' ${shellQuote(`restrict ${publicKey.trim()}`)} >> "$tmp"`,
    `mv -f -- "$tmp" "$ak"`,
    `trap - EXIT`,
  ].join("\n");
}

/** Removes every key line of this migration from the source's authorized_keys (nothing else changes). */
export function revokeScript(user: string, file: string | null, key: string): string {
  const tag = keyTag(key);
  return [
    ...(file
      ? [`ak=${shellQuote(file)}`]
      : [
          `home=$(getent passwd ${shellQuote(user)} | cut -d: -f6 || true)`,
          `[ -n "$home" ] || exit 0`,
          `ak="$home/.ssh/authorized_keys"`,
        ]),
    `[ -f "$ak" ] || exit 0`,
    `grep -qF -- ${shellQuote(tag)} "$ak" || exit 0`,
    `tmp=$(mktemp -- "$(dirname -- "$ak")/.authorized_keys.xen-estate.XXXXXX")`,
    `trap 'rm -f -- "$tmp"' EXIT`,
    `grep -vF -- ${shellQuote(tag)} "$ak" > "$tmp" || true`,
    `chown --reference="$ak" -- "$tmp"; chmod --reference="$ak" -- "$tmp"`,
    `mv -f -- "$tmp" "$ak"`,
    `trap - EXIT`,
    `echo revoked`,
  ].join("\n");
}

/** What one copy needs to know. */
export interface CopyPlan {
  key: string;
  sourceDevice: string;
  method: "ext" | "raw";
  sourceBytes: number;
  chunkBytes: number;
  compressionLevel: number;
  targetDevice: string;
  /** The dom0's record of whose chunks the target holds (see copyIdentity). */
  identity: string;
  /** The source's device is in use (a live seed copy): not refused. */
  live: boolean;
  /**
   * Take the target's hashes from the journal instead of reading the target: only when a verification reads the
   * whole target back after the copy (and takes a chunk that differs out of the journal). @default false
   */
  trustJournal?: boolean;
}

/**
 * The script the source runs (fed by the dom0 on stdin, followed by the target's hashes): the chunk engine reads
 * the device read-only and streams what the target lacks through multi-threaded zstd to stdout. The last line
 * hands the rest of stdin (the hashes) to the engine as fd 3: bash reads a script from a pipe byte by byte, so
 * nothing after that line has been consumed.
 */
export function senderScript(p: CopyPlan): string {
  const dev = shellQuote(p.sourceDevice);
  return [
    `set -euo pipefail`,
    `xe_fail() { printf '%s\\n' "$*" >&2; exit 1; }`,
    `real=$(readlink -f -- ${dev})`,
    `[ -b "$real" ] || xe_fail ${shellQuote(`XE-SOURCE ${p.sourceDevice} is not a block device on the source`)}`,
    ...(p.live
      ? []
      : [
          `m=$(lsblk -nro MOUNTPOINT -- "$real" | grep -v '^$' | head -n1 || true)`,
          `[ -z "$m" ] || xe_fail ${shellQuote(`XE-MOUNTED ${p.sourceDevice} is mounted on the source at`)} "$m"`,
        ]),
    `code=${shellQuote(chunkEngine())}`,
    `xe_send() { python3 -c "$code" send "$real" ${p.method} ${p.sourceBytes} ${p.chunkBytes} 3<&0 </dev/null | zstd -T0 -${p.compressionLevel} -q -c; }`,
    `xe_send; exit $?`,
  ].join("\n");
}

/** The start every dom0 step of a copy shares: the target re-checked and locked, the engine in the state dir. */
function targetGuard(p: Pick<CopyPlan, "targetDevice" | "key">): string[] {
  const t = shellQuote(p.targetDevice);
  return [
    DEVICE_HOLDER_FUNCTIONS,
    `real=$(readlink -f -- ${t})`,
    `[ -b "$real" ] || xe_refuse ${shellQuote(`\`target.device\` ${p.targetDevice} is not a block device on `)} "$(hostname)"`,
    `xe_holder "$real"`,
    `if [ -n "$holder" ]; then xe_refuse ${shellQuote(`refusing to write ${p.targetDevice}: guest `)} "$holder" ${shellQuote(" holds it")}; fi`,
    `xe_mounted "$real"`,
    `if [ -n "$mounted" ]; then xe_refuse ${shellQuote(`refusing to write ${p.targetDevice}: it is mounted at `)} "$mounted"; fi`,
    `state=${shellQuote(stateDir(p.key))}`,
    `mkdir -p -m 700 -- "$state"`,
    `printf '%s' ${shellQuote(chunkEngine())} > "$state/chunks.py"`,
  ];
}

/**
 * Prepares a copy on the dom0: the record of whose chunks the target holds (a record of another copy is dropped,
 * so its chunks count as missing), then the hashes of what the target holds where the journal says chunks landed.
 * Leaves them in the state dir and prints them too (the relay route hands them to the source itself).
 */
export function prepareScript(p: CopyPlan): string {
  return withHostLock(
    [
      ...targetGuard(p),
      `identity=${shellQuote(p.identity)}`,
      `if [ ! -f "$state/identity" ] || [ "$(head -n1 "$state/identity")" != "$identity" ]; then`,
      `  rm -f -- "$state/journal" "$state/source-hashes"`,
      `  printf '%s\\n' "$identity" > "$state/identity"`,
      `fi`,
      `touch -- "$state/journal"`,
      `rm -f -- "$state/source-hashes"`,
      // After the finishing steps wrote into the target (an earlier run stopped there), the journal no longer says
      // what it holds: read it back.
      `how=${p.trustJournal ? "journal" : "read"}; if [ -e "$state/modified" ]; then how=read; fi`,
      `python3 "$state/chunks.py" hash "$real" ${p.sourceBytes} ${p.chunkBytes} "$state/journal" "$how" > "$state/target-hashes"`,
      `rm -f -- "$state/modified"`,
      `printf '%s\\n' ${shellQuote(relayReceiveScript(p))} > "$state/receive.sh"`,
      `cat -- "$state/target-hashes"`,
    ].join("\n"),
    60,
    deviceLock(p.targetDevice),
    8,
  );
}

/** The receiving end on the dom0: wire count, zstd, the engine writing into the target. Reads the stream on stdin. */
function receivePipeline(p: CopyPlan): string {
  return `python3 "$state/chunks.py" count | zstd -d -q | python3 "$state/chunks.py" receive "$real" ${p.sourceBytes} ${p.chunkBytes} "$state/journal" "$state/source-hashes"`;
}

/** How the dom0 dials the source for a direct copy. */
export interface Dial {
  host: string;
  port: number;
  user: string;
  /** The dom0's CPU has AES instructions: prefer AES-GCM (else ChaCha20 is the faster cipher). */
  aes: boolean;
}

/** The dom0's ssh command line to the source: only the copy's key, only the pinned host key, no config files. */
export function sshCommand(key: string, d: Dial): string {
  const k = keyDir(key);
  const ciphers = d.aes
    ? "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"
    : "chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes256-gcm@openssh.com";
  const opts = [
    "IdentitiesOnly=yes",
    "BatchMode=yes",
    "PasswordAuthentication=no",
    "KbdInteractiveAuthentication=no",
    "StrictHostKeyChecking=yes",
    `UserKnownHostsFile=${k}/known_hosts`,
    "GlobalKnownHostsFile=/dev/null",
    `HostKeyAlias=${HOST_ALIAS}`,
    "CheckHostIP=no",
    "UpdateHostKeys=no",
    "ConnectTimeout=30",
    "ServerAliveInterval=15",
    "ServerAliveCountMax=4",
    "Compression=no",
    `Ciphers=${ciphers}`,
    "IPQoS=throughput",
  ];
  return [
    "ssh -F /dev/null -T -x -a",
    `-i ${shellQuote(`${k}/key`)}`,
    ...opts.map((o) => `-o ${shellQuote(o)}`),
    `-p ${d.port}`,
    `-l ${shellQuote(d.user)}`,
    `-- ${shellQuote(d.host)}`,
    shellQuote(d.user === "root" ? "bash -s" : "sudo -n bash -s"),
  ].join(" ");
}

/**
 * The direct copy, run on the dom0: it dials the source itself, feeds it the sender script and the target's
 * hashes, and writes what comes back. Prints the engine's `XE-RESULT {…}`; its reports go to stderr.
 */
export function directCopyScript(p: CopyPlan, d: Dial): string {
  return withHostLock(
    [
      ...targetGuard(p),
      `[ -f "$state/target-hashes" ] || xe_refuse "the copy was not prepared (no target hashes): run it again"`,
      `{ printf '%s\\n' ${shellQuote(senderScript(p))}; cat -- "$state/target-hashes"; } > "$state/sender-input"`,
      `set +e`,
      `${sshCommand(p.key, d)} < "$state/sender-input" | ${receivePipeline(p)}`,
      `rcs=("\${PIPESTATUS[@]}")`,
      `set -e`,
      `rm -f -- "$state/sender-input"`,
      `if [ "\${rcs[0]}" != 0 ] || [ "\${rcs[1]}" != 0 ] || [ "\${rcs[2]}" != 0 ] || [ "\${rcs[3]}" != 0 ]; then`,
      `  xe_say "the copy stopped (ssh to the source exited \${rcs[0]}, zstd \${rcs[2]}, the receiver \${rcs[3]}); what landed is kept: run up again to send the rest"`,
      `  exit 1`,
      `fi`,
    ].join("\n"),
    60,
    deviceLock(p.targetDevice),
    8,
  );
}

/**
 * The dom0 side of a relayed copy, which {@link prepareScript} leaves in the state dir: the stream arrives on stdin
 * (the provider carries it from the source), so this cannot be a script fed on stdin itself.
 */
export function relayReceiveScript(p: CopyPlan): string {
  const state = shellQuote(stateDir(p.key));
  const t = shellQuote(p.targetDevice);
  return [
    `set -euo pipefail`,
    `state=${state}; real=$(readlink -f -- ${t})`,
    `exec 8>>${shellQuote(deviceLock(p.targetDevice))}; flock -w 60 8`,
    receivePipeline(p),
  ].join("\n");
}

/**
 * The command that runs it: a fixed line naming only the state dir, so no input (the target's path) reaches a
 * command line on the dom0, where it would be argv and a second shell's parse.
 */
export function relayReceiveCommand(p: Pick<CopyPlan, "key">): string {
  return `exec bash ${shellQuote(`${stateDir(p.key)}/receive.sh`)}`;
}

/** Reads the target back from the device and compares every chunk with the source's hashes. */
export function verifyScript(p: CopyPlan): string {
  return withHostLock(
    [
      ...targetGuard(p),
      `[ -f "$state/source-hashes" ] || xe_refuse "the source's hashes of the last copy are gone: copy again"`,
      `python3 "$state/chunks.py" verify "$real" ${p.sourceBytes} ${p.chunkBytes} "$state/source-hashes" "$state/journal"`,
    ].join("\n"),
    60,
    deviceLock(p.targetDevice),
    8,
  );
}

/** What happens to the copied filesystem once the final copy is verified. */
export interface FinishPlan extends CopyPlan {
  /** Run `e2fsck -fn` and fail on any problem. */
  fsck: boolean;
  convertToExt4: boolean;
  /** Grow the filesystem to fill the target (zeroing the target beyond the copy first). */
  grow: boolean;
}

/**
 * After a verified final copy: `e2fsck -fn` (any problem fails the migration), ext3 → ext4 when asked, then the
 * target beyond the copied bytes zeroed (stale blocks must not surface as free space of the grown filesystem) and
 * the filesystem grown to fill it. Prints `XE-FIN key=value` lines.
 */
export function finishScript(p: FinishPlan): string {
  return withHostLock(
    [
      ...targetGuard(p),
      `rc=0; fs=$(blkid -p -o value -s TYPE -- "$real") || rc=$?`,
      `[ "$rc" = 0 ] || [ "$rc" = 2 ] || { xe_say "blkid cannot read the target"; exit 1; }`,
      `case "$fs" in ext2|ext3|ext4) ext=1 ;; *) ext=0 ;; esac`,
      `touch -- "$state/modified"`,
      ...(p.fsck
        ? [
            `if [ "$ext" = 1 ]; then`,
            `  rc=0; out=$(e2fsck -fn -- "$real" 2>&1) || rc=$?`,
            `  if [ "$rc" != 0 ]; then xe_say "e2fsck -fn found problems in the copied filesystem (exit $rc):"; printf '%s\\n' "$out" | tail -n 15 >&2; exit 1; fi`,
            `  echo "XE-FIN fsck=clean"`,
            `fi`,
          ]
        : []),
      ...(p.convertToExt4
        ? [
            `if [ "$fs" = ext3 ]; then`,
            `  xe_say "converting the copied ext3 filesystem to ext4 (tune2fs -O extents,uninit_bg,dir_index)"`,
            `  tune2fs -O extents,uninit_bg,dir_index -- "$real" >&2`,
            // e2fsck must run after the conversion; exit 1 means it fixed what the new features needed.
            `  rc=0; e2fsck -fyD -- "$real" >&2 || rc=$?`,
            `  [ "$rc" -le 1 ] || { xe_say "e2fsck after the ext4 conversion exited $rc"; exit 1; }`,
            `  fs=ext4; echo "XE-FIN converted=ext4"`,
            `fi`,
          ]
        : []),
      ...(p.grow
        ? [
            `size=$(blockdev --getsize64 "$real")`,
            `if [ "$ext" = 1 ] && [ "$size" -gt ${p.sourceBytes} ]; then`,
            `  xe_say "zeroing the target beyond the copied ${p.sourceBytes} bytes, then growing the filesystem to fill it"`,
            `  python3 "$state/chunks.py" zero "$real" ${p.sourceBytes}`,
            `  rc=0; e2fsck -f -p -- "$real" >&2 || rc=$?`,
            `  [ "$rc" -le 1 ] || { xe_say "e2fsck before growing exited $rc"; exit 1; }`,
            `  resize2fs -- "$real" >&2`,
            `  echo "XE-FIN grown=$size"`,
            `fi`,
          ]
        : []),
      `echo "XE-FIN fs=$fs"`,
      `echo "XE-FIN uuid=$(blkid -p -o value -s UUID -- "$real" || true)"`,
    ].join("\n"),
    60,
    deviceLock(p.targetDevice),
    8,
  );
}

/** Everything the fixups write, rendered from templates/linode-migration/ (pure). */
export interface FixupFiles {
  grubCfg: string;
  network: string | null;
  interfaces: string | null;
  link: string | null;
  resolvConf: string | null;
  revert: string;
}

export function renderFixupFiles(
  f: FixupInputs,
  o: { source: string; root: string; nameservers: string[] },
): FixupFiles {
  const n = f.network;
  const net = n
    ? {
        version: VERSION,
        source: o.source,
        address: n.address,
        prefix: n.prefix,
        gateway: n.gateway,
        onLink: !sameNetwork(n.address, n.gateway, n.prefix),
        nameservers: o.nameservers,
      }
    : null;
  return {
    grubCfg: render("linode-migration/grub.cfg", { version: VERSION, source: o.source, root: o.root }),
    network: net ? render("linode-migration/eth0.network", net) : null,
    interfaces: net ? render("linode-migration/interfaces", net) : null,
    link:
      n && n.interfaceNaming === "link" ? render("linode-migration/eth0.link", { version: VERSION }) : null,
    resolvConf: net ? render("linode-migration/resolv.conf", net) : null,
    revert: render("linode-migration/revert.sh", { version: VERSION }),
  };
}

function sameNetwork(a: string, b: string, prefix: number): boolean {
  const toInt = (ip: string) => ip.split(".").reduce((n, o) => n * 256 + Number(o), 0);
  const size = 2 ** (32 - prefix);
  return Math.floor(toInt(a) / size) === Math.floor(toInt(b) / size);
}

/**
 * Inside the mounted copy (`$mnt`): `xe_fix MODE PATH` writes stdin to PATH unless it already holds exactly that,
 * keeping the original once under FIXUP_BACKUPS/files and recording `changed PATH` or `created PATH` in its
 * MANIFEST, newest last, for revert.sh. A path a symlink leads out of the guest's filesystem is refused.
 */
const FIX_FUNCTIONS = [
  `xe_inside() { case "$(realpath -m -- "$mnt$1")" in "$mnt"/*) return 0 ;; *) return 1 ;; esac; }`,
  `bk="$mnt"${shellQuote(FIXUP_BACKUPS)}`,
  `xe_fix() {`,
  `  local mode=$1 rel=$2 tmp dir`,
  `  xe_inside "$rel" || xe_refuse "refusing to write $rel in the migrated filesystem: a symlink leads out of it"`,
  `  dir=$(dirname -- "$mnt$rel"); mkdir -p -- "$dir"`,
  `  tmp=$(mktemp -- "$dir/.xen-estate.XXXXXX")`,
  `  cat > "$tmp"`,
  `  if [ -f "$mnt$rel" ] && [ ! -L "$mnt$rel" ] && cmp -s -- "$tmp" "$mnt$rel"; then rm -f -- "$tmp"; return 0; fi`,
  `  mkdir -p -m 700 -- "$bk/files"`,
  `  if ! grep -qxF -e "changed $rel" -e "created $rel" -- "$bk/MANIFEST" 2>/dev/null; then`,
  `    if [ -e "$mnt$rel" ] || [ -L "$mnt$rel" ]; then`,
  `      mkdir -p -- "$(dirname -- "$bk/files$rel")"; cp -a -- "$mnt$rel" "$bk/files$rel"; echo "changed $rel" >> "$bk/MANIFEST"`,
  `    else echo "created $rel" >> "$bk/MANIFEST"; fi`,
  `  fi`,
  `  chmod "$mode" -- "$tmp"; chown 0:0 -- "$tmp"`,
  `  rm -rf -- "$mnt$rel"; mv -f -- "$tmp" "$mnt$rel"`,
  `  echo "XE-FIXED $rel"`,
  `}`,
  // A symlink made inside the guest (relative, so it resolves there), recorded like a created file.
  `xe_link() {`,
  `  local target=$1 rel=$2`,
  `  [ -e "$mnt$rel" ] || [ -L "$mnt$rel" ] && return 0`,
  `  mkdir -p -m 700 -- "$bk"; echo "created $rel" >> "$bk/MANIFEST"`,
  `  ln -s -- "$target" "$mnt$rel"; echo "XE-FIXED $rel"`,
  `}`,
].join("\n");

/** What the fixups need beyond their inputs. */
export interface FixupPlan {
  targetDevice: string;
  key: string;
  files: FixupFiles;
  fixups: FixupInputs;
  /** `/dev/xvda` or `UUID=…`: the root in fstab. */
  root: string;
  /** The filesystem type the root line in fstab gets (ext4 after a conversion). */
  rootType: string;
}

/**
 * The guest fixups, inside the copied filesystem mounted on the dom0: fstab (Linode's /dev/sdX → /dev/xvdX or the
 * UUID, swap mapped or commented out), GRUB for pvgrub2 with Xen's console (hvc0) and `net.ifnames=0`, the
 * settings for `update-grub` to keep them, the Xen front-end modules in the initramfs (regenerated only when
 * missing), the network for the new address (systemd-networkd and/or ifupdown, whichever the guest uses), the
 * resolvers, the hostname. Every change keeps the original and is listed for revert.sh. Prints `XE-FIXED path`.
 */
export function fixupsScript(p: FixupPlan): string {
  const f = p.fixups;
  const t = shellQuote(p.targetDevice);
  const swap = f.swapDevice ?? "";
  const lines: string[] = [
    DEVICE_HOLDER_FUNCTIONS,
    `real=$(readlink -f -- ${t})`,
    `xe_holder "$real"`,
    `if [ -n "$holder" ]; then xe_refuse ${shellQuote(`refusing to edit ${p.targetDevice}: guest `)} "$holder" ${shellQuote(" holds it")}; fi`,
    `xe_mounted "$real"`,
    `if [ -n "$mounted" ]; then xe_refuse ${shellQuote(`refusing to edit ${p.targetDevice}: it is mounted at `)} "$mounted"; fi`,
    `state=${shellQuote(stateDir(p.key))}`,
    `if [ -d "$state" ]; then touch -- "$state/modified"; fi`,
    `mnt=$(mktemp -d /run/xen-estate-fixups.XXXXXX)`,
    `xe_cleanup() { for m in "$mnt/dev" "$mnt/proc" "$mnt/sys"; do umount "$m" 2>/dev/null || true; done; umount "$mnt" 2>/dev/null || true; rmdir "$mnt" 2>/dev/null || true; }`,
    `trap xe_cleanup EXIT`,
    `mount -- "$real" "$mnt"`,
    FIX_FUNCTIONS,
    // fstab: the root by its new device (or UUID), Linode's sdX disks as xvdX, swap mapped or commented out.
    `if [ -f "$mnt/etc/fstab" ]; then`,
    `  awk -v root=${shellQuote(p.root)} -v rtype=${shellQuote(p.rootType)} -v swap=${shellQuote(swap)} '`,
    `    /^[ \\t]*#/ || NF < 3 { print; next }`,
    `    $2 == "/" { $1 = root; if ($3 ~ /^ext[234]$/) $3 = rtype; print; next }`,
    `    $3 == "swap" { if (swap == "") { print "# " $0 "    # xen-estate: the migrated guest has no swap disk"; next } $1 = swap; print; next }`,
    `    $1 ~ /^\\/dev\\/sd[a-z]/ { sub(/^\\/dev\\/sd/, "/dev/xvd", $1) }`,
    `    { print }' "$mnt/etc/fstab" | xe_fix 644 /etc/fstab`,
    `fi`,
    // update-grub inside the guest later must keep Xen's console and leave the serial terminal out (pvgrub2 has none).
    `if [ -f "$mnt/etc/default/grub" ]; then`,
    `  sed -E -e '/^GRUB_CMDLINE_LINUX(_DEFAULT)?=/ { s/console=(ttyS[0-9]+|tty0)[^ "'"'"']*//g; s/  +/ /g; s/=" /="/; }' \\`,
    `    -e 's/^(GRUB_TERMINAL|GRUB_SERIAL_COMMAND)=/#&/' \\`,
    `    -e '/^GRUB_CMDLINE_LINUX=/ { /console=hvc0/! s/^GRUB_CMDLINE_LINUX="/&console=hvc0 /; /net\\.ifnames=0/! s/^GRUB_CMDLINE_LINUX="/&net.ifnames=0 /; }' \\`,
    `    "$mnt/etc/default/grub" | xe_fix 644 /etc/default/grub`,
    `fi`,
    // pvgrub2 reads /boot/grub/grub.cfg; the menu boots /vmlinuz, made to point at the newest kernel when absent.
    `k=""`,
    `if [ -e "$mnt/vmlinuz" ] || [ -L "$mnt/vmlinuz" ]; then k=vmlinuz`,
    `elif [ -d "$mnt/boot" ]; then k=$(cd "$mnt/boot" && ls -1 vmlinuz-* 2>/dev/null | sort -V | tail -n1 || true); fi`,
    `if [ -z "$k" ]; then`,
    `  echo "XE-WARN the migrated filesystem has no kernel (/vmlinuz or /boot/vmlinuz-*): pvgrub2 has nothing to boot; boot the guest with a kernel from the dom0"`,
    `else`,
    `  if [ "$k" != vmlinuz ]; then`,
    `    xe_link "boot/$k" /vmlinuz`,
    `    if [ -e "$mnt/boot/initrd.img-\${k#vmlinuz-}" ]; then xe_link "boot/initrd.img-\${k#vmlinuz-}" /initrd.img; fi`,
    `  fi`,
    `  printf '%s' ${shellQuote(p.files.grubCfg)} | xe_fix 644 /boot/grub/grub.cfg`,
    `fi`,
    // The initramfs must bring Xen's block front end (the root disk) and net front end: regenerate only when absent.
    `for img in "$mnt"/boot/initrd.img-*; do`,
    `  [ -f "$img" ] || continue`,
    `  ver=\${img##*/initrd.img-}`,
    `  missing=""; listed=""`,
    // Listed once per image: unpacking an initramfs is the slow part (seconds under emulation).
    // The dom0's lsinitramfs, else the guest's own (in a chroot); neither: the image is regenerated to be sure.
    `  if command -v lsinitramfs >/dev/null; then listed=$(lsinitramfs "$img" 2>/dev/null || true)`,
    `  elif [ -x "$mnt/usr/bin/lsinitramfs" ]; then listed=$(chroot "$mnt" lsinitramfs "\${img#"$mnt"}" 2>/dev/null || true); fi`,
    `  for mod in xen-blkfront xen-netfront; do`,
    `    if grep -qs "/$mod.ko" "$mnt/lib/modules/$ver/modules.builtin"; then continue; fi`,
    // A here-string, not a pipe: under pipefail, grep -q leaving early on a long listing kills printf with SIGPIPE.
    `    if grep -q -- "/$mod\\.ko" <<<"$listed"; then continue; fi`,
    `    missing="$missing $mod"`,
    `  done`,
    `  [ -n "$missing" ] || continue`,
    `  [ -x "$mnt/usr/sbin/update-initramfs" ] || xe_refuse "the initramfs $img lacks$missing and the guest has no update-initramfs to add them"`,
    `  xe_say "adding$missing to the guest's initramfs for $ver"`,
    `  { [ -f "$mnt/etc/initramfs-tools/modules" ] && cat -- "$mnt/etc/initramfs-tools/modules"; for mod in $missing; do grep -qsx "$mod" "$mnt/etc/initramfs-tools/modules" || echo "$mod"; done; } | xe_fix 644 /etc/initramfs-tools/modules`,
    `  rel=\${img#"$mnt"}`,
    `  if ! grep -qxF -e "changed $rel" -- "$bk/MANIFEST" 2>/dev/null; then mkdir -p -- "$(dirname -- "$bk/files$rel")"; cp -a -- "$img" "$bk/files$rel"; echo "changed $rel" >> "$bk/MANIFEST"; fi`,
    `  for m in dev proc sys; do mount --bind "/$m" "$mnt/$m"; done`,
    `  chroot "$mnt" update-initramfs -u -k "$ver" >&2`,
    `  for m in dev proc sys; do umount "$mnt/$m"; done`,
    `  echo "XE-FIXED $rel"`,
    `done`,
  ];
  if (f.hostname) {
    const h = shellQuote(f.hostname);
    lines.push(
      `printf '%s\\n' ${h} | xe_fix 644 /etc/hostname`,
      `if [ -f "$mnt/etc/hosts" ]; then`,
      `  awk -v h=${h} '$1 == "127.0.1.1" { if (!done) print "127.0.1.1\\t" h; done = 1; next } { print } END { if (!done) print "127.0.1.1\\t" h }' "$mnt/etc/hosts" | xe_fix 644 /etc/hosts`,
      `fi`,
    );
  }
  if (f.network) {
    lines.push(
      // systemd-networkd (Linode's Network Helper writes /etc/systemd/network/05-eth0.network) and/or ifupdown.
      `nd=0; ifd=0`,
      `if ls "$mnt"/etc/systemd/network/*.network >/dev/null 2>&1 || [ -e "$mnt/etc/systemd/system/multi-user.target.wants/systemd-networkd.service" ]; then nd=1; fi`,
      `if [ -f "$mnt/etc/network/interfaces" ] && grep -qE '^[[:space:]]*(auto|allow-hotplug|iface)[[:space:]]+eth0' "$mnt/etc/network/interfaces"; then ifd=1; fi`,
      `if [ "$nd" = 0 ] && [ "$ifd" = 0 ]; then`,
      `  if [ -x "$mnt/lib/systemd/systemd-networkd" ] || [ -x "$mnt/usr/lib/systemd/systemd-networkd" ]; then nd=1`,
      `  elif [ -x "$mnt/sbin/ifup" ] || [ -x "$mnt/usr/sbin/ifup" ]; then ifd=1`,
      `  else xe_refuse "the migrated system has neither systemd-networkd nor ifupdown: configure its network yourself (fixups.network: null)"; fi`,
      `fi`,
      `if [ "$nd" = 1 ]; then printf '%s' ${shellQuote(p.files.network ?? "")} | xe_fix 644 /etc/systemd/network/05-eth0.network; fi`,
      `if [ "$ifd" = 1 ]; then printf '%s' ${shellQuote(p.files.interfaces ?? "")} | xe_fix 644 /etc/network/interfaces; fi`,
      // A resolv.conf that is a symlink (systemd-resolved) takes the resolvers from networkd's DNS= lines.
      `if [ ! -L "$mnt/etc/resolv.conf" ]; then printf '%s' ${shellQuote(p.files.resolvConf ?? "")} | xe_fix 644 /etc/resolv.conf; fi`,
      ...(p.files.link
        ? [
            `printf '%s' ${shellQuote(p.files.link)} | xe_fix 644 /etc/systemd/network/10-xen-estate-eth0.link`,
          ]
        : []),
    );
  }
  lines.push(
    `if [ -f "$bk/MANIFEST" ]; then printf '%s' ${shellQuote(p.files.revert)} > "$bk/revert.sh"; chmod 700 -- "$bk/revert.sh"; fi`,
    `sync`,
  );
  return withHostLock(lines.join("\n"), 60, deviceLock(p.targetDevice), 8);
}

/** Removes what a migration keeps on the dom0 (its journal, hashes, engine) and the copy's credential. */
export function forgetScript(key: string): string {
  return [
    `rm -rf -- ${shellQuote(stateDir(key))}`,
    // Every migration's journal lives under STATE_ROOT: it goes with the last one.
    `rmdir -- ${shellQuote(STATE_ROOT)} 2>/dev/null || true`,
    dropGrantScript(key),
  ].join("\n");
}
