/**
 * A dom0 stand-in for running real scripts with hostile values in them, changing nothing on this machine.
 *
 * A real sshd runs in its own network namespace (reached over a veth pair; every address is local inside it, so a
 * script that connects to a guest's address reaches that sshd and nothing leaves the namespace) and in a private
 * mount namespace, chrooted into a copy-on-write view of this machine's root: an overlay whose upper layer is a
 * directory under /dev/shm. Whatever the scripts write (/etc, /var, /tmp, /dev) lands in that layer, where the test
 * can look at it, and goes away with it. /dev is a tmpfs with the character devices a shell needs; /run is private.
 *
 * SIMULATOR: the commands the scripts drive that this machine cannot run or must not run (LVM, Xen's xl and
 * xenstore, blkid, mkfs, mount, debootstrap, Varnish, systemctl, systemd-run, iptables, sysctl, modprobe, ifupdown,
 * netplan, update-grub, installimage, apt-get, ping, reboot…) are stubs in /xe-stubs, first on the sessions' PATH;
 * the sandbox says it is a systemd host (/run/systemd/system), so scripts take their systemd paths to those stubs.
 * Where this machine has the real tool and it changes nothing here, it runs: sshd -t/-T and visudo read files, and
 * the nft stub hands every rule file to the real nft in check mode only. Each stub writes its argv to a file of its own (NUL-separated, see
 * {@link parseStubLog}) and answers plausibly: a volume that exists with a size, a domain list, a running Varnish. The
 * answers prove nothing about those tools; the stubs exist so the scripts run end to end with bash, coreutils and
 * the rest real, and so the test can see every argument a tool would have been given. What the tools really do is
 * proven by the lab suite.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { Checker, resolveConnection, RemoteHost, shellQuote, SshPool } from "../../provider";
import { CANARY_DIR, CANARY_PREFIX } from "./hostile";
import { generateKey, startSshd, type Sshd } from "./sshd";
import { makeVethNamespace } from "./netns";

const run = promisify(execFile);

/** One call of a stub: the command's name and its arguments, exactly as the stub received them. */
export interface StubCall {
  name: string;
  args: string[];
}

/** The largest device blockDevices makes. */
const MAX_DEVICE_BYTES = 256 * 2 ** 20;

/** Unused block major (not in /proc/devices): a device node the scripts can test with `-b` but never open. */
const NO_DRIVER_MAJOR = 240;

/**
 * The first line of a stub that hands a real block device of blockDevices (a loop device, major 7) to the real
 * tool: what it reads and writes there is a sparse file of the test's, in the sandbox's own mount namespace.
 */
function realOnLoop(name: string): string {
  return `for x in "$@"; do [ ! -b "$x" ] || [ "$(stat -L -c %t -- "$x")" != 7 ] || PATH=/usr/sbin:/usr/bin:/sbin:/bin exec ${name} "$@"; done`;
}

/** update-grub / grub-mkconfig (see {@link ANSWERS}): `-o FILE`, else /boot/grub/grub.cfg. */
const GRUB_MKCONFIG = [
  `out=/boot/grub/grub.cfg; prev=; for x in "$@"; do [ "$prev" != -o ] || out=$x; prev=$x; done`,
  `[ ! -f /etc/default/grub ] || . /etc/default/grub`,
  `for f in /etc/default/grub.d/*.cfg; do [ ! -e "$f" ] || . "$f"; done`,
  `entry="Debian GNU/Linux, with Xen hypervisor"`,
  `mkdir -p -- "$(dirname -- "$out")"`,
  `{`,
  // 00_header: the preloaded modules first, at the top level.
  `  for m in \${GRUB_PRELOAD_MODULES:-}; do printf 'insmod %s\\n' "$m"; done`,
  `  [ "\${XEN_OVERRIDE_GRUB_DEFAULT:-0}" != 1 ] || printf 'set default="%s"\\n' "$entry"`,
  `  printf "menuentry '%s' {\\n" "$entry"`,
  `  printf '\\tmultiboot2 /boot/xen.gz placeholder %s\\n' "\${GRUB_CMDLINE_XEN:-} \${GRUB_CMDLINE_XEN_DEFAULT:-}"`,
  `  printf '\\tmodule2 /boot/vmlinuz placeholder root=/dev/xe-simulated ro %s\\n}\\n' "\${GRUB_CMDLINE_LINUX_XEN_REPLACE:-\${GRUB_CMDLINE_LINUX:-} \${GRUB_CMDLINE_LINUX_DEFAULT:-}}"`,
  `} > "$out"`,
].join("\n");

/** What each stub answers; every stub logs first. `$a` holds the arguments joined, with spaces around. */
const ANSWERS: Record<string, string> = {
  vgs: `case "$a" in *" vg_name "*) sed 's/^/  /' /xe-world/vgs ;; esac`,
  // Volumes are what lvcreate made and lvremove has not removed (a tab-separated "VG\tLV" per line).
  lvcreate: [
    `n=; prev=; for x in "$@"; do [ "$prev" != --name ] || n=$x; prev=$x; done`,
    `printf '%s\\t%s\\n' "\${!#}" "$n" >> /xe-log/volumes`,
  ].join("\n"),
  lvremove: [
    `vl=\${!#}; { grep -vxF -- "\${vl%%/*}$(printf '\\t')\${vl#*/}" /xe-log/volumes || true; } > /xe-log/volumes.new`,
    `mv -f /xe-log/volumes.new /xe-log/volumes`,
  ].join("\n"),
  lvs: [
    `case "$a" in`,
    `  *" lv_name "*) awk -F '\\t' -v vg="\${!#}" '$1 == vg {print "  " $2}' /xe-log/volumes 2>/dev/null || true ;;`,
    `  *" lv_size,vg_extent_size "*) echo "  10737418240 4194304" ;;`,
    `  *" lv_size "*) echo "  10737418240" ;;`,
    `  *" vg_extent_size "*) echo "  4194304" ;;`,
    `  *" lv_dm_path "*) echo "  /dev/mapper/xe--sim" ;;`,
    `esac`,
  ].join("\n"),
  // A device holds ext4 when the world says so or a stub mkfs formatted it; blkid exits 2 for "no signature".
  blkid: [
    realOnLoop("blkid"),
    `dev=\${!#}`,
    `if grep -qxF -- "$dev" /xe-world/ext4 /xe-log/formatted 2>/dev/null; then fs=ext4; else fs=; fi`,
    `case "$a" in`,
    `  *" -s TYPE "*) [ -n "$fs" ] && echo "$fs" || exit 2 ;;`,
    `  *" -s UUID "*) echo 00000000-0000-4000-8000-000000000000 ;;`,
    `  *" -o export "*) [ -n "$fs" ] && printf 'TYPE=%s\\nUUID=00000000-0000-4000-8000-000000000000\\n' "$fs" || exit 2 ;;`,
    `  *) exit 2 ;;`,
    `esac`,
  ].join("\n"),
  // The guest's root disk is "mounted" as a tmpfs of the sandbox's own (its mount namespace is private), so an
  // install has a real directory tree to write and the unmount and cleanup behave as on a host.
  umount: `exec /usr/bin/umount "\${!#}"`,
  "mkfs.ext4": `printf '%s\\n' "\${!#}" >> /xe-log/formatted`,
  mkswap: `printf '%s\\n' "\${!#}" >> /xe-log/formatted`,
  // Rules are what -A added and -D has not deleted, so -C answers as a real table would (a -D loop ends).
  iptables: [
    `op=; key=; for x in "$@"; do case "$x" in -A|-C|-D) op=$x; key+="@ " ;; *) key+="$x " ;; esac; done`,
    `touch /xe-log/iptables`,
    `case "$op" in`,
    `  -A) printf '%s\\n' "$key" >> /xe-log/iptables ;;`,
    `  -C) grep -qxF -- "$key" /xe-log/iptables || exit 1 ;;`,
    `  -D) grep -vxF -- "$key" /xe-log/iptables > /xe-log/iptables.new || true; mv -f /xe-log/iptables.new /xe-log/iptables ;;`,
    `esac`,
  ].join("\n"),
  blockdev: [realOnLoop("blockdev"), `echo 10737418240`].join("\n"),
  xl: [
    `case "$1" in`,
    `  list) printf 'Name ID Mem VCPUs State Time(s)\\nDomain-0 0 1024 2 r----- 1.0\\n' ;;`,
    `  domid) exit 1 ;;`,
    `  domname) echo simulated ;;`,
    `esac`,
  ].join("\n"),
  varnishadm: [
    `case "$a" in`,
    `  *" status "*) echo "Child in state running" ;;`,
    `  *" vcl.list "*) echo "active      auto    warm         0    boot" ;;`,
    `  *" vcl.show "*) echo "vcl 4.1;" ;;`,
    // Every backend a VCL of ours can name (site0…) is healthy: the serving check runs to its end.
    `  *" backend.list"*) for i in $(seq 0 63); do echo "boot.site$i probe 5/5 healthy"; done ;;`,
    `esac`,
  ].join("\n"),
  // The real nft, in check mode only (`-c`: parses the rules and asks the sandbox's own network namespace whether
  // they would load, loads nothing). A file that checks counts as loaded: `list table` shows it, `delete` forgets it.
  nft: [
    `file=; prev=; for x in "$@"; do [ "$prev" != -f ] || file=$x; prev=$x; done`,
    `case "$a" in`,
    `  *" -c "*) exec /usr/sbin/nft "$@" ;;`,
    `  *" -f "*) /usr/sbin/nft -c -f "$file" || exit; cp -- "$file" /xe-log/nft-loaded ;;`,
    `  *" list table "*) cat /xe-log/nft-loaded 2>/dev/null || { echo "Error: No such file or directory" >&2; exit 1; } ;;`,
    `  *" delete table "*) rm -f /xe-log/nft-loaded ;;`,
    `esac`,
  ].join("\n"),
  // ifupdown's parser, as far as the validation asks it: the interfaces a file brings up (a missing file fails).
  ifquery: [
    `f=/etc/network/interfaces; for x in "$@"; do case "$x" in --interfaces=*) f=\${x#--interfaces=} ;; esac; done`,
    `awk '$1 == "auto" || $1 ~ /^allow-/ { for (i = 2; i <= NF; i++) print $i }' "$f"`,
  ].join("\n"),
  // update-grub as Debian's grub-mkconfig does it, cut down to the Xen entry: it sources /etc/default/grub and the
  // grub.d/*.cfg drop-ins (ours among them) as shell, then writes the entry 20_linux_xen would, with the command
  // lines those files set, made the default when XEN_OVERRIDE_GRUB_DEFAULT=1 (what the xen package's own xen.cfg
  // does with it).
  "update-grub": GRUB_MKCONFIG,
  "grub-mkconfig": GRUB_MKCONFIG,
  "grub-probe": `echo ext2`,
  // Hetzner's installer, as far as the install asks it: it reads the config, refuses an unreadable one, and runs
  // the post-install hook as the installed system would, here with /etc/ssh a scratch tmpfs of its own (the hook
  // replaces the host keys; the sandbox's sshd keeps its own).
  installimage: [
    `c=; x=; prev=; for y in "$@"; do case "$prev" in -c) c=$y ;; -x) x=$y ;; esac; prev=$y; done`,
    `[ -r "$c" ] || { echo "installimage: cannot read the config $c" >&2; exit 1; }`,
    `grep -q '^DRIVE1 ' "$c" || { echo "installimage: $c names no DRIVE1" >&2; exit 1; }`,
    `grep -q '^IMAGE ' "$c" || { echo "installimage: $c names no IMAGE" >&2; exit 1; }`,
    `[ -z "$x" ] || unshare --mount bash -c '/usr/bin/mount -t tmpfs xe-installed-etc-ssh /etc/ssh && exec "$1"' xe-hook "$x" || exit`,
  ].join("\n"),
  e2fsck: realOnLoop("e2fsck"),
  resize2fs: realOnLoop("resize2fs"),
  // The dom0's own ssh to a migration's source, whose device is in this sandbox too (see blockDevices): the remote
  // command runs here on the same stdin, once the identity and the pinned known_hosts the copy made are in place.
  ssh: [
    `key=; kh=; prev=; for x in "$@"; do case "$prev" in -i) key=$x ;; -o) case "$x" in UserKnownHostsFile=*) kh=\${x#*=} ;; esac ;; esac; prev=$x; done`,
    `[ -r "$key" ] && [ -s "$kh" ] || { echo "ssh (sandbox): no identity or no pinned host key" >&2; exit 255; }`,
    `case "\${!#}" in "bash -s" | "sudo -n bash -s") exec bash -s ;; *) echo "ssh (sandbox): not a command a copy runs" >&2; exit 255 ;; esac`,
  ].join("\n"),
  // A migration's key pair is made for real (files only); a guest's host keys (-A) are left to the install.
  "ssh-keygen": `case "$a" in *" -t ed25519 "*" -f "*) exec /usr/bin/ssh-keygen "$@" ;; esac`,
  // The mount stub would put a tmpfs over `/`: a remount changes nothing here.
  mount: [
    `case "$a" in *" remount"*) exit 0 ;; esac`,
    realOnLoop("mount"),
    `exec /usr/bin/mount -t tmpfs -o size=256m xe-simulated-disk "\${!#}"`,
  ].join("\n"),
};

/** Every stub: the commands above and those that only need to succeed. */
export const STUBS = [
  ...Object.keys(ANSWERS),
  "lvchange",
  "lvextend",
  "blkdiscard",
  "udevadm",
  "e2label",
  "swaplabel",
  "swapon",
  "findmnt",
  "xenstore-ls",
  "debootstrap",
  "depmod",
  "varnishd",
  "systemctl",
  "sysctl",
  "apt-get",
  "ping",
  "modprobe",
  "ifup",
  "ifdown",
  "netplan",
  "systemd-run",
  // Never the real ones, whatever a script asks.
  "reboot",
  "shutdown",
  "poweroff",
  "halt",
];

function stubScript(name: string): string {
  return [
    "#!/bin/bash",
    `# SIMULATOR (test/support/sandbox.ts): stands in for ${name}. Logs its argv, answers plausibly, changes nothing.`,
    // One file per call: stubs run at once must not interleave their records.
    `{ printf '%s\\0%d\\0' ${JSON.stringify(name)} "$#"; for x in "$@"; do printf '%s\\0' "$x"; done; } > "$(mktemp /xe-log/calls/XXXXXXXXXX)"`,
    `a=" $* "`,
    ANSWERS[name] ?? ":",
    "exit 0",
    "",
  ].join("\n");
}

export interface SandboxHost {
  /** A RemoteHost logged in to the sandbox as root. */
  host: RemoteHost;
  pool: SshPool;
  /** The overlay's upper layer on this machine: everything the scripts wrote. */
  upper: string;
  /** The stub calls logged since the last time (in no particular order); the log is emptied. */
  takeCalls(): StubCall[];
  /** Canary files the scripts left (in the sandbox and, should one ever escape, on this machine); removed. */
  takeCanaries(): Promise<string[]>;
  /** Writes the stubs' world files (`vgs`: the volume groups, `ext4`: devices that hold ext4; a name a line). */
  setWorld(files: Record<string, string[]>): void;
  /**
   * Real block devices at `paths` inside the sandbox: loop devices over sparse files of `bytes` in the work
   * directory (an ext4 of `ext4.blocks` 4 KiB blocks with `ext4.uuid` made in the file first, when given). Each
   * path gets a device of its own once (a path given again keeps the first); a node there is replaced. Detached by
   * stop().
   */
  blockDevices(devices: readonly BlockDevice[]): Promise<void>;
  stop(): Promise<void>;
}

export interface BlockDevice {
  path: string;
  bytes: number;
  ext4?: { uuid: string; blocks: number };
}

/** Parses the stub log: `name\0count\0arg…\0` per call. */
export function parseStubLog(buf: Buffer): StubCall[] {
  const parts = buf.toString("utf8").split("\0");
  const calls: StubCall[] = [];
  let i = 0;
  while (i + 1 < parts.length) {
    const name = parts[i]!;
    const n = Number(parts[i + 1]);
    if (!name || !Number.isInteger(n))
      throw new Error(
        `unreadable stub log at part ${i}: ${JSON.stringify(parts.slice(Math.max(0, i - 12), i + 3))}`,
      );
    calls.push({ name, args: parts.slice(i + 2, i + 2 + n) });
    i += 2 + n;
  }
  return calls;
}

/** Starts the sandbox; `id` (a small number) keeps the names of its namespace, veth and addresses apart. */
export async function startSandboxHost(workDir: string, id = process.pid % 250): Promise<SandboxHost> {
  const ns = `xe-hostile-${id}`;
  const vethHost = `xehst${id}`;
  const hostAddress = `10.217.${id}.1`;
  const sandboxAddress = `10.217.${id}.2`;
  const base = fs.mkdtempSync("/dev/shm/xe-hostile-");
  const [upper, work, merged, stubs, log, world] = ["upper", "work", "merged", "stubs", "log", "world"].map(
    (d) => path.join(base, d),
  ) as [string, string, string, string, string, string];
  for (const d of [upper, work, merged, stubs, log, world]) fs.mkdirSync(d);
  for (const name of STUBS) fs.writeFileSync(path.join(stubs, name), stubScript(name), { mode: 0o755 });
  fs.mkdirSync(path.join(log, "calls"));
  let sshd: Sshd | undefined;
  let pool: SshPool | undefined;
  let web: ChildProcess | undefined;
  const loops: string[] = [];
  const made = new Set<string>();
  const down = async (): Promise<void> => {
    for (const l of loops.splice(0)) await run("losetup", ["-d", l]).catch(() => undefined);
    await run("bash", ["-c", `ip link del ${vethHost} 2>/dev/null; ip netns del ${ns} 2>/dev/null; true`]);
  };
  try {
    await down();
    await run("bash", [
      "-c",
      [
        ...makeVethNamespace({
          ns,
          hostIf: vethHost,
          hostAddresses: [`${hostAddress}/30`],
          inside: `${sandboxAddress}/30`,
          peer: "xeh0",
        }),
        // Every address is this namespace's own: a connection to a guest's address reaches the sandbox's sshd.
        `ip -n ${ns} route add local 0.0.0.0/0 dev lo`,
      ].join(" && "),
    ]);
    // A web server answering 200 on the ports a Varnish of ours listens on, so the serving check gets its answer.
    web = spawn(
      "ip",
      [
        "netns",
        "exec",
        ns,
        process.execPath,
        "-e",
        "const h=require('http');for(const p of [80,8080])h.createServer((q,r)=>r.end('ok')).listen(p,'0.0.0.0')",
      ],
      { stdio: "ignore" },
    );
    const m = merged;
    const setup = [
      "set -e",
      `mount -t overlay overlay -o lowerdir=/,upperdir=${upper},workdir=${work} ${m}`,
      `mount -t tmpfs -o mode=755 tmpfs ${m}/dev`,
      `for d in null zero full random urandom tty; do touch ${m}/dev/$d; mount --bind /dev/$d ${m}/dev/$d; done`,
      `ln -s /proc/self/fd ${m}/dev/fd`,
      `for i in 0 1 2; do ln -s /proc/self/fd/$i ${m}/dev/$(echo stdin stdout stderr | cut -d' ' -f$((i + 1))); done`,
      `mount -t proc -o ro proc ${m}/proc`,
      `mount -t tmpfs tmpfs ${m}/sys`,
      `mount -t tmpfs -o mode=755 tmpfs ${m}/run`,
      // A systemd host, as a dom0 is (systemctl and systemd-run are stubs): scripts take their systemd paths.
      `mkdir -p ${m}/run/lock ${m}/run/sshd ${m}/run/systemd/system ${m}/xe-stubs ${m}/xe-log ${m}/xe-world`,
      `mount --bind ${stubs} ${m}/xe-stubs`,
      `mount --bind ${log} ${m}/xe-log`,
      `mount --bind -o ro ${world} ${m}/xe-world`,
      // Root's shell start-up files would put this machine's tool directories before the stubs.
      `: > ${m}/root/.bashrc; : > ${m}/root/.profile`,
      `exec chroot ${m} "$@"`,
    ].join("\n");
    const key = await generateKey(workDir, "sandbox-client");
    sshd = await startSshd({
      authorizedKeys: [key.publicKey],
      netns: ns,
      listen: "0.0.0.0",
      port: 22,
      wrap: ["unshare", "--mount", "--propagation", "private", "bash", "-c", setup, "xe-sandbox"],
      extraConfig: ["SetEnv PATH=/xe-stubs:/usr/sbin:/usr/bin:/sbin:/bin", "MaxSessions 32"],
    });
    const conn = resolveConnection(
      new Checker(),
      { host: sandboxAddress, port: 22, hostKey: sshd.hostKey.fingerprint, commandTimeout: 120 },
      { privateKey: key.privateKey },
    );
    if (!conn) throw new Error("the sandbox's connection did not check");
    pool = new SshPool();
    const host = pool.host(conn);
    const p = pool;
    const s = sshd;
    return {
      host,
      pool: p,
      upper,
      takeCalls: () => {
        const calls: StubCall[] = [];
        const d = path.join(log, "calls");
        for (const f of fs.readdirSync(d)) {
          calls.push(...parseStubLog(fs.readFileSync(path.join(d, f))));
          fs.rmSync(path.join(d, f));
        }
        return calls;
      },
      takeCanaries: async () => {
        const found: string[] = [];
        for (const dir of [path.join(upper, CANARY_DIR), CANARY_DIR]) {
          if (!fs.existsSync(dir)) continue;
          for (const f of fs.readdirSync(dir, { withFileTypes: true }))
            // A removed file leaves a whiteout (a character device) in the upper layer: not a canary.
            if (f.name.startsWith(CANARY_PREFIX) && !f.isCharacterDevice())
              found.push(path.join(dir, f.name));
        }
        if (found.length > 0) {
          await host.script(`rm -f -- ${CANARY_DIR}/${CANARY_PREFIX}*`, { summary: "remove canaries" });
          for (const f of found) if (f.startsWith(`${CANARY_DIR}/`)) fs.rmSync(f, { force: true });
        }
        return found.map((f) => path.basename(f));
      },
      setWorld: (files) => {
        for (const [name, lines] of Object.entries(files))
          fs.writeFileSync(path.join(world, name), lines.map((l) => `${l}\n`).join(""));
      },
      blockDevices: async (devices) => {
        const nodes: string[] = [];
        for (const d of devices) {
          // The files are on this machine's shared disk, and a zeroed range of a loop device is allocated in them.
          if (d.bytes > MAX_DEVICE_BYTES) throw new Error(`a sandbox device of ${d.bytes} bytes is too big`);
          if (made.has(d.path)) continue;
          made.add(d.path);
          // On disk, not in /dev/shm: zeroing a range of a loop device over tmpfs would fill memory.
          const file = path.join(workDir, `xe-hostile-disk-${loops.length}`);
          fs.rmSync(file, { force: true });
          await run("truncate", ["-s", String(d.bytes), file]);
          if (d.ext4)
            await run("mkfs.ext4", [
              "-q",
              "-F",
              "-b",
              "4096",
              "-U",
              d.ext4.uuid,
              file,
              String(d.ext4.blocks),
            ]);
          const loop = (await run("losetup", ["-f", "--show", file])).stdout.trim();
          loops.push(loop);
          const [major, minor] = (await run("stat", ["-c", "%t %T", loop])).stdout
            .trim()
            .split(" ")
            .map((h) => parseInt(h, 16));
          const q = shellQuote(d.path);
          nodes.push(
            `mkdir -p -- "$(dirname -- ${q})" && rm -f -- ${q} && mknod -- ${q} b ${major} ${minor}`,
          );
        }
        if (nodes.length > 0) await host.script(nodes.join("\n"), { summary: "sandbox block devices" });
      },
      stop: async () => {
        await p.close();
        await s.stop();
        web?.kill();
        await down();
        fs.rmSync(base, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await pool?.close();
    await sshd?.stop();
    web?.kill();
    await down();
    fs.rmSync(base, { recursive: true, force: true });
    throw err;
  }
}

/** Block device nodes (that no driver backs) for `paths` inside the sandbox, so `[ -b … ]` holds. */
export function deviceNodesScript(paths: readonly string[]): string {
  const q = shellQuote;
  return paths
    .map(
      (p, i) =>
        `mkdir -p -- "$(dirname -- ${q(p)})" && { [ -e ${q(p)} ] || mknod -- ${q(p)} b ${NO_DRIVER_MAJOR} ${i % 256}; }`,
    )
    .join("\n");
}
