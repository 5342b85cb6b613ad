/**
 * The install path of a user without images: a Debian 12 guest installed unattended by debootstrap from a package
 * mirror, by the real install script over a real sshd onto a real ext4 filesystem on a loop device (the dom0
 * stand-in is this machine). The mirror is the lab's caching proxy of Debian's archive (test/lab/aptproxy.ts),
 * served here on a local port. This is the fast tier's proof of debootstrap's own path (mirror, packages, the
 * guest's kernel and GRUB menu for pvgrub2, settings); booting a guest through pvgrub2 under Xen is proven by the
 * walkthrough's migrated guest, and the whole of it under Xen by test/guest/install-debootstrap.lab.test.ts (slow).
 * `xl` and xenstore are not here (no Xen): the install asks xenstore which guest holds the disk only when it can.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import {
  DEBOOTSTRAP_BASE,
  fingerprintOf,
  guestGrubConfig,
  hostContext,
  INSTALL_MARKER,
  installGuest,
  setLogSink,
  SshPool,
  VERSION,
  type GuestInputs,
  type RemoteHost,
} from "../../provider";
import { handleConnection } from "../lab/aptproxy";
import { labCacheDir } from "../lab/lab";
import { checked } from "../support/checked";
import { mountedAt, sh } from "../support/disks";
import { startLocalHost, type Sshd } from "../support/sshd";

const guestKey =
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@example";

let dir: string;
let mnt: string;
let loop: string;
let mirror: net.Server;
let mirrorPort: number;
let sshd: Sshd;
let pool: SshPool;
let host: RemoteHost;
const progress: string[] = [];

function guest(): GuestInputs {
  return checked<GuestInputs>("NatDomU", {
    connection: { host: "dom0", hostKey: "SHA256:" + "A".repeat(43) },
    xenEstateVersion: VERSION,
    name: "deb9",
    memoryMiB: 512,
    ip: "10.0.0.9",
    boot: { bootloader: "pvgrub2" },
    disks: [{ path: loop, vdev: "xvda" }],
    install: {
      debootstrap: { suite: "bookworm", mirror: `http://127.0.0.1:${mirrorPort}/debian`, include: ["less"] },
      nameservers: ["192.0.2.53"],
      authorizedKeys: [guestKey],
    },
  });
}

/** Runs `body` with the guest's disk mounted at `mnt`. */
const onDisk = <T>(body: () => T): T => mountedAt(loop, mnt, body);

before(async () => {
  dir = fs.mkdtempSync(path.join("/var/tmp", "xe-debootstrap-"));
  mnt = path.join(dir, "mnt");
  fs.mkdirSync(mnt);
  sh(`truncate -s 2G ${dir}/disk.img`);
  loop = sh(`losetup -f --show ${dir}/disk.img`).trim();
  sh(`mkfs.ext4 -q -F ${loop}`);
  const cacheDir = path.join(labCacheDir(), "apt");
  fs.mkdirSync(cacheDir, { recursive: true });
  mirror = net.createServer(
    (s) => void handleConnection(s, { cacheDir, logFile: path.join(dir, "mirror.log") }),
  );
  await new Promise<void>((r) => mirror.listen(0, "127.0.0.1", r));
  mirrorPort = (mirror.address() as net.AddressInfo).port;
  ({ sshd, pool, host } = await startLocalHost(dir));
  setLogSink((_severity, message, { ephemeral }) => {
    if (ephemeral) progress.push(message);
  });
});

after(async () => {
  setLogSink(undefined);
  await pool?.close();
  await sshd?.stop();
  await new Promise((r) => mirror?.close(r));
  if (loop) sh(`umount ${loop} 2>/dev/null || true; losetup -d ${loop}`);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("installing a Debian guest by debootstrap from a mirror", { timeout: 30 * 60_000 }, () => {
  let reported: string | null;

  test("debootstrap fills the disk with Debian 12 and the guest's own settings, reporting its progress", async () => {
    reported = await installGuest(hostContext(host), guest());
    onDisk(() => {
      assert.match(fs.readFileSync(`${mnt}/etc/os-release`, "utf8"), /^VERSION_CODENAME=bookworm$/m);
      // Every package the install promises, installed (dpkg's own record, read inside the guest).
      const status = sh(
        `chroot ${mnt} dpkg-query -W -f='\${Package} \${db:Status-Status}\\n' ${[...DEBOOTSTRAP_BASE, "linux-image-amd64", "less"].join(" ")}`,
      );
      for (const p of [...DEBOOTSTRAP_BASE, "linux-image-amd64", "less"])
        assert.match(status, new RegExp(`^${p} installed$`, "m"), `${p} is installed`);
      assert.equal(fs.readFileSync(`${mnt}/etc/hostname`, "utf8"), "deb9\n");
      assert.match(
        fs.readFileSync(`${mnt}/etc/network/interfaces`, "utf8"),
        /address 10\.0\.0\.9\/24\n\s+gateway 10\.0\.0\.1/,
      );
      assert.equal(fs.readFileSync(`${mnt}/etc/resolv.conf`, "utf8"), "nameserver 192.0.2.53\n");
      assert.equal(fs.readFileSync(`${mnt}/root/.ssh/authorized_keys`, "utf8"), `${guestKey}\n`);
      assert.match(fs.readFileSync(`${mnt}/etc/fstab`, "utf8"), /^\/dev\/xvda\s+\/\s+ext4\s/m);
      assert.deepEqual(
        fs.readdirSync(`${mnt}/var/cache/apt/archives`).filter((f) => f.endsWith(".deb")),
        [],
        "the downloaded packages are not kept in the guest",
      );
      assert.ok(!fs.existsSync(`${mnt}/${INSTALL_MARKER}`), "the in-progress marker is gone");
    });
    assert.ok(
      progress.some((m) => /deb9: debootstrap: downloading \d+ packages/.test(m)) &&
        progress.some((m) => /deb9: debootstrap: finished/.test(m)),
      `progress lines: ${progress.slice(-5).join(" | ")}`,
    );
  });

  test("pvgrub2's menu inside the guest names a kernel and an initramfs the install put there", () => {
    onDisk(() => {
      assert.equal(fs.readFileSync(`${mnt}/boot/grub/grub.cfg`, "utf8"), guestGrubConfig(guest()));
      // The menu boots /vmlinuz and /initrd.img: Debian's kernel package points them at its files.
      const kernel = fs.realpathSync(`${mnt}/vmlinuz`);
      const initrd = fs.realpathSync(`${mnt}/initrd.img`);
      assert.match(path.relative(mnt, kernel), /^boot\/vmlinuz-\d+\.\d+\.\d+-\d+-amd64$/);
      assert.match(path.relative(mnt, initrd), /^boot\/initrd\.img-\d+\.\d+\.\d+-\d+-amd64$/);
      assert.ok(fs.statSync(initrd).size > 1_000_000, "the initramfs was generated");
      // The kernel finds its root disk: the Xen block front-end is in the initramfs.
      assert.match(sh(`chroot ${mnt} lsinitramfs /${path.relative(mnt, initrd)}`), /xen-blkfront\.ko/);
    });
  });

  test("the SSH host key reported is the one the guest's sshd will present", () => {
    const onDiskKey = onDisk(
      () => fs.readFileSync(`${mnt}/etc/ssh/ssh_host_ed25519_key.pub`, "utf8").split(" ")[1]!,
    );
    assert.equal(reported, fingerprintOf(Buffer.from(onDiskKey, "base64")));
  });

  test("a second install sees the installed system and changes nothing", async () => {
    const listing = (): string =>
      onDisk(() => sh(`find ${mnt} -xdev -printf '%p %i %s %T@\\n' | sort | sha256sum`));
    const before = listing();
    assert.equal(await installGuest(hostContext(host), guest()), reported);
    assert.equal(listing(), before);
  });
});
