/**
 * A SIMULATOR of Hetzner's rescue system, for HetznerInstallimage's tests: the real rescue system (and a machine to
 * wipe) cannot be had here. What is real: an OpenSSH server in a network namespace of its own, reached over SSH
 * with a pinned host key, running the resource's scripts with bash. What is simulated, through scripts found first
 * on the sessions' PATH (sshd's SetEnv):
 * - `lsblk` reports the simulated drives (path, size, serial) and no mounts;
 * - `installimage -a -c FILE -x HOOK` checks the config the way xen-estate relies on (every DRIVE exists, RAID 1
 *   needs two drives, /boot, an LVM PV, root and swap LVs, the image exists), records it, prints progress, and
 *   runs the post-install hook as installimage does in the new system's chroot, here in a private mount namespace
 *   where the simulated system's /etc/ssh is bind-mounted over /etc/ssh;
 * - `reboot` asks the simulator to "boot the installed system": sshd restarts on the same address with the host
 *   key the hook installed, and without the rescue tools;
 * - an installimage run wipes what an earlier one installed (the simulated system's files) before it installs, and
 *   marks its install complete only once its post-install hook has run ({@link RescueSim.installComplete});
 * - the rescue system's RAM is this machine's {@link WORK_DIR} (where the resource writes its config and hook): a
 *   fresh rescue boot ({@link RescueSim.bootRescue}) and {@link RescueSim.stop} empty it; the simulated reboot does
 *   not, so a test can see what the resource left there.
 * It proves the resource's protocol (checks, config, hook, reboot, host-key switch), never installimage itself.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { WORK_DIR } from "../../provider/resources/hetzner-installimage/scripts";
import { generateKey, startSshd, type KeyPair, type Sshd } from "./sshd";
import { makeVethNamespace, removeVethNamespace } from "./netns";

const run = promisify(execFile);

export interface SimDisk {
  path: string;
  size: number;
  serial: string;
}

/** The image the tests' rescue system offers (where Hetzner's rescue system keeps its images). */
export const RESCUE_IMAGE = "/root/.oldroot/nfs/images/Debian-1210-bookworm-amd64-base.tar.gz";
/** The tests' server: two NVMe drives of the same size. */
export const RESCUE_DISKS: readonly SimDisk[] = [
  { path: "/dev/nvme0n1", size: 512110190592, serial: "S4EWNX0R100001" },
  { path: "/dev/nvme1n1", size: 512110190592, serial: "S4EWNX0R100002" },
];
/**
 * What the tests declare to install on it (HetznerInstallimage's inputs but the connection): RAID 1 on both drives,
 * the first named by serial and size, the second by its path only.
 */
export const RESCUE_INSTALL = {
  drives: [
    { device: "/dev/nvme0n1", serial: "S4EWNX0R100001", sizeBytes: 512110190592 },
    { device: "/dev/nvme1n1" },
  ],
  wipeDisks: true,
  hostname: "dom0.example.org",
  image: RESCUE_IMAGE,
  bootTimeoutSeconds: 60,
} as const;

export class RescueSim {
  state: "rescue" | "installed" = "rescue";
  sshd!: Sshd;
  private timer?: NodeJS.Timeout;

  private constructor(
    readonly dir: string,
    readonly ns: string,
    readonly address: string,
    private readonly hostIf: string,
    private readonly authorizedKeys: string[],
  ) {}

  /** The rescue system's own host key (the one Robot shows), the same after every {@link bootRescue}. */
  rescueHostKey!: KeyPair;

  /** Whether the last installimage run ran to its end (its post-install hook included). */
  installComplete(): boolean {
    return fs.existsSync(path.join(this.dir, "installed-complete"));
  }

  /** The config the simulated installimage was given, or null when it never ran. */
  installedConfig(): string | null {
    const f = path.join(this.dir, "installed.conf");
    return fs.existsSync(f) ? fs.readFileSync(f, "utf8") : null;
  }

  /** The simulated installed system's root (what the hook wrote under etc/ssh). */
  get root(): string {
    return path.join(this.dir, "root");
  }

  static async start(opts: {
    disks: SimDisk[];
    images: string[];
    authorizedKeys: string[];
  }): Promise<RescueSim> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xedh-rescue-"));
    fs.chmodSync(dir, 0o755);
    const id = process.pid % 200;
    const sim = new RescueSim(
      dir,
      `xedh-rescue-${process.pid}`,
      `10.232.${id}.2`,
      `xedr${process.pid % 100000}`,
      opts.authorizedKeys,
    );
    const bin = path.join(dir, "bin");
    fs.mkdirSync(bin);
    fs.mkdirSync(path.join(dir, "images"));
    for (const i of opts.images)
      fs.writeFileSync(path.join(dir, "images", path.basename(i)), "simulated image\n");
    fs.mkdirSync(path.join(dir, "root", "etc", "ssh"), { recursive: true });
    fs.writeFileSync(
      path.join(dir, "lsblk.json"),
      JSON.stringify({
        blockdevices: opts.disks.map((d) => ({ path: d.path, size: d.size, serial: d.serial })),
      }),
    );
    const script = (name: string, body: string): void =>
      fs.writeFileSync(
        path.join(bin, name),
        `#!/bin/bash\n# rescue-system SIMULATOR (test/support/rescue-sim.ts)\n${body}\n`,
        { mode: 0o755 },
      );
    script("lsblk", `case " $* " in *" -J "*) cat ${dir}/lsblk.json ;; *) : ;; esac`);
    script("reboot", `touch ${dir}/reboot-requested`);
    script(
      "installimage",
      [
        `set -euo pipefail`,
        `fail() { echo "installimage (simulated): $*" >&2; exit 1; }`,
        `auto=; conf=; post=`,
        `while getopts "ac:x:" o; do case $o in a) auto=1 ;; c) conf=$OPTARG ;; x) post=$OPTARG ;; *) fail "unknown option" ;; esac; done`,
        `[ "$auto" = 1 ] || fail "only the unattended mode (-a) is simulated"`,
        `[ -f "$conf" ] || fail "no config file $conf"`,
        `drives=$(awk '/^DRIVE[0-9]+ / {print $2}' "$conf")`,
        `[ -n "$drives" ] || fail "no DRIVE1"`,
        `for d in $drives; do grep -q "\\"$d\\"" ${dir}/lsblk.json || fail "drive $d does not exist"; done`,
        `raid=$(awk '$1 == "SWRAID" {print $2}' "$conf")`,
        `case "$raid" in 0) ;; 1) [ "$(echo "$drives" | wc -w)" -ge 2 ] || fail "SWRAID 1 needs two drives"; grep -q '^SWRAIDLEVEL 1$' "$conf" || fail "SWRAIDLEVEL missing" ;; *) fail "SWRAID must be 0 or 1" ;; esac`,
        `grep -q '^BOOTLOADER grub$' "$conf" || fail "BOOTLOADER grub missing"`,
        `grep -Eq '^HOSTNAME [A-Za-z0-9.-]+$' "$conf" || fail "HOSTNAME missing"`,
        `grep -Eq '^PART /boot ext[34] [0-9]+M$' "$conf" || fail "no /boot partition"`,
        `vg=$(awk '$1 == "PART" && $2 == "lvm" {print $3}' "$conf")`,
        `[ -n "$vg" ] || fail "no LVM physical volume"`,
        `grep -Eq "^LV $vg root / ext4 [0-9]+G$" "$conf" || fail "no root LV in $vg"`,
        `grep -Eq "^LV $vg swap swap swap [0-9]+G$" "$conf" || fail "no swap LV in $vg"`,
        `img=$(awk '$1 == "IMAGE" {print $2}' "$conf")`,
        `[ -f "${dir}/images/$(basename "$img")" ] || fail "image $img not found"`,
        // From here the drives are wiped: whatever an earlier run installed is gone.
        `rm -rf ${dir}/installed.conf ${dir}/installed-complete ${dir}/root && mkdir -p ${dir}/root/etc/ssh`,
        `for step in "Deleting partitions" "Creating partitions and /etc/fstab" "Creating software RAID level 1" "Creating LVM volumes" "Formatting partitions" "Extracting image" "Setting up network config" "Installing bootloader grub"; do echo "   $step : done" >&2; done`,
        `cp "$conf" ${dir}/installed.conf`,
        `if [ -n "$post" ]; then`,
        `  echo "   Executing post-install script : running" >&2`,
        // The hook writes /etc/ssh of the new system: only ever inside a private mount namespace whose /etc/ssh
        // is the simulated system's, checked before the hook runs.
        `  unshare --mount --propagation private bash -c 'mount --bind "$1/root/etc/ssh" /etc/ssh && mountpoint -q /etc/ssh && [ "$(stat -c %i /etc/ssh)" = "$(stat -c %i "$1/root/etc/ssh")" ] && exec bash "$2"' sim ${dir} "$post"`,
        `fi`,
        `touch ${dir}/installed-complete`,
        `echo "   INSTALLATION COMPLETE" >&2`,
      ].join("\n"),
    );
    await run("bash", [
      "-c",
      [
        removeVethNamespace({ ns: sim.ns, hostIf: sim.hostIf }),
        makeVethNamespace({
          ns: sim.ns,
          hostIf: sim.hostIf,
          hostAddresses: [`10.232.${id}.1/24`],
          inside: `${sim.address}/24`,
        }).join(" && "),
      ].join("\n"),
    ]);
    sim.rescueHostKey = await generateKey(dir, "rescue_host_ed25519_key");
    sim.sshd = await sim.startRescueSshd();
    sim.timer = setInterval(() => void sim.poll(), 300);
    return sim;
  }

  /** The rescue system's sshd: its own host key, the rescue tools first on the sessions' PATH. */
  private startRescueSshd(): Promise<Sshd> {
    return startSshd({
      authorizedKeys: this.authorizedKeys,
      netns: this.ns,
      listen: this.address,
      hostKeyFile: this.rescueHostKey.file,
      extraConfig: [
        `SetEnv PATH=${path.join(this.dir, "bin")}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
      ],
    });
  }

  /**
   * Boots the rescue system again, as activating it in Robot and resetting the machine does: the same rescue host
   * key, nothing installed on the drives, its RAM ({@link WORK_DIR}) empty, no reboot requested.
   */
  async bootRescue(): Promise<void> {
    while (this.booting) await new Promise((r) => setTimeout(r, 100));
    fs.rmSync(path.join(this.dir, "reboot-requested"), { force: true });
    await this.sshd.stop();
    for (const f of ["installed.conf", "installed-complete", "root"])
      fs.rmSync(path.join(this.dir, f), { recursive: true, force: true });
    fs.mkdirSync(path.join(this.root, "etc", "ssh"), { recursive: true });
    fs.rmSync(WORK_DIR, { recursive: true, force: true });
    this.sshd = await this.startRescueSshd();
    this.state = "rescue";
  }

  private booting = false;
  private async poll(): Promise<void> {
    const req = path.join(this.dir, "reboot-requested");
    if (this.booting || !fs.existsSync(req)) return;
    this.booting = true;
    fs.rmSync(req);
    await this.sshd.stop();
    await new Promise((r) => setTimeout(r, 1500));
    const key = path.join(this.root, "etc", "ssh", "ssh_host_ed25519_key");
    // The installed system: the host key its post-install hook left, no rescue tools on the PATH.
    this.sshd = await startSshd({
      authorizedKeys: this.authorizedKeys,
      netns: this.ns,
      listen: this.address,
      ...(fs.existsSync(key) ? { hostKeyFile: key } : {}),
    });
    this.state = "installed";
    this.booting = false;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.sshd?.stop();
    await run("bash", [
      "-c",
      `ip netns del ${this.ns} 2>/dev/null; ip link del ${this.hostIf} 2>/dev/null; true`,
    ]);
    fs.rmSync(this.dir, { recursive: true, force: true });
    fs.rmSync(WORK_DIR, { recursive: true, force: true });
  }
}
