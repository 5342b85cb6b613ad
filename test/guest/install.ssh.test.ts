/**
 * A guest's unattended install from an image, run by the real install script over a real sshd onto a real ext4
 * filesystem on a loop device (the dom0 stand-in is this machine; the lab proves the same path under Xen).
 * What it must never do matters most here: touch a disk that holds files.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  fingerprintOf,
  GuestInputs,
  INSTALL_MARKER,
  installScript,
  RefusedError,
  settingsScript,
  RemoteHost,
  SshPool,
  VERSION,
  withHostLock,
} from "../../provider";
import { checked } from "../support/checked";
import { mountedAt, sh } from "../support/disks";
import { startLocalHost, Sshd } from "../support/sshd";
import { withStubs, writeStubs } from "../support/stub-commands";

let sshd: Sshd;
let pool: SshPool;
let host: RemoteHost;
let dir: string;
let loop: string;
let mnt: string;
let image: string;
let imageHostKey: string;
const guestKey =
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@example";

function guest(
  disk: string,
  boot: Record<string, unknown> = { kernel: "/boot/vmlinuz", cmdline: "root=/dev/xvda" },
): GuestInputs {
  return checked<GuestInputs>("NatDomU", {
    connection: { host: "dom0", hostKey: "SHA256:" + "A".repeat(43) },
    xenEstateVersion: VERSION,
    name: "app9",
    memoryMiB: 128,
    ip: "10.0.0.9",
    boot,
    disks: [{ path: disk, vdev: "xvda" }],
    install: { image, nameservers: ["192.0.2.53"], authorizedKeys: [guestKey] },
  });
}

/** Runs `body` with the loop device mounted at `mnt`. */
const onDisk = <T>(body: () => T): T => mountedAt(loop, mnt, body);

function freshFilesystem(type = "ext4"): void {
  sh(type === "swap" ? `mkswap -q ${loop}` : `wipefs -qa ${loop}; mkfs.ext4 -q -F ${loop}`);
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-install-"));
  mnt = path.join(dir, "mnt");
  fs.mkdirSync(mnt);
  sh(`truncate -s 64M ${dir}/disk.img`);
  loop = sh(`losetup -f --show ${dir}/disk.img`).trim();
  // An image as users build them: a userland with SSH host keys and a machine id, shared by every guest made from it.
  const root = path.join(dir, "rootfs");
  sh(
    `mkdir -p ${root}/etc/ssh ${root}/sbin && echo 'ID=imagetest' > ${root}/etc/os-release.in && echo 0123456789abcdef0123456789abcdef > ${root}/etc/machine-id && ssh-keygen -q -t ed25519 -N '' -f ${root}/etc/ssh/ssh_host_ed25519_key && printf '#!/bin/sh\\n' > ${root}/sbin/init && chmod +x ${root}/sbin/init && tar -C ${root} -czf ${dir}/image.tar.gz .`,
  );
  image = path.join(dir, "image.tar.gz");
  imageHostKey = fs.readFileSync(`${root}/etc/ssh/ssh_host_ed25519_key.pub`, "utf8").split(" ")[1]!;
  ({ sshd, pool, host } = await startLocalHost(dir));
});

after(async () => {
  await pool?.close();
  await sshd?.stop();
  if (loop) sh(`umount ${loop} 2>/dev/null || true; losetup -d ${loop}`);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("installing a guest from an image", () => {
  test("unpacks the image and writes the guest's own hostname, network, resolvers and SSH key", async () => {
    freshFilesystem();
    const out = await host.refusable(installScript(guest(loop)));
    onDisk(() => {
      assert.equal(fs.readFileSync(`${mnt}/etc/hostname`, "utf8"), "app9\n");
      assert.match(
        fs.readFileSync(`${mnt}/etc/network/interfaces`, "utf8"),
        /address 10\.0\.0\.9\/24\n\s+gateway 10\.0\.0\.1/,
      );
      assert.equal(fs.readFileSync(`${mnt}/etc/resolv.conf`, "utf8"), "nameserver 192.0.2.53\n");
      assert.equal(fs.readFileSync(`${mnt}/root/.ssh/authorized_keys`, "utf8"), `${guestKey}\n`);
      assert.equal((fs.statSync(`${mnt}/root/.ssh/authorized_keys`).mode & 0o777).toString(8), "600");
      assert.ok(fs.existsSync(`${mnt}/sbin/init`), "the image's files are there");
      assert.ok(!fs.existsSync(`${mnt}/${INSTALL_MARKER}`), "the in-progress marker is gone");
    });
    assert.match(out, /^hostkey ssh-ed25519 [A-Za-z0-9+/=]+$/m);
  });

  test("gives each guest its own SSH host key and machine id instead of the image's", async () => {
    const out = await host.refusable(installScript(guest(loop)));
    const reported = /^hostkey ssh-ed25519 (\S+)$/m.exec(out)?.[1];
    onDisk(() => {
      const onDiskKey = fs.readFileSync(`${mnt}/etc/ssh/ssh_host_ed25519_key.pub`, "utf8").split(" ")[1];
      assert.equal(reported, onDiskKey, "the key reported is the key on the disk");
      assert.notEqual(onDiskKey, imageHostKey);
      assert.equal(
        fs.readFileSync(`${mnt}/etc/machine-id`, "utf8"),
        "",
        "systemd makes a new one at first boot",
      );
    });
    assert.match(fingerprintOf(Buffer.from(reported!, "base64")), /^SHA256:[A-Za-z0-9+/]{43}$/);
  });

  test("a second run sees the installed system and changes nothing", async () => {
    const before = onDisk(() => sh(`find ${mnt} -printf '%p %i %T@\\n' | sort`));
    const out = await host.refusable(installScript(guest(loop)));
    assert.match(out, /^hostkey /m);
    assert.equal(
      onDisk(() => sh(`find ${mnt} -printf '%p %i %T@\\n' | sort`)),
      before,
    );
  });

  test("refuses a disk that holds someone's files, and leaves them alone", async () => {
    freshFilesystem();
    onDisk(() => fs.writeFileSync(`${mnt}/precious.db`, "data"));
    await assert.rejects(host.refusable(installScript(guest(loop))), (err: unknown) => {
      assert.ok(err instanceof RefusedError);
      assert.match(err.message, new RegExp(`refusing to install onto ${loop}: it already holds files`));
      return true;
    });
    onDisk(() => assert.deepEqual(fs.readdirSync(mnt).sort(), ["lost+found", "precious.db"]));
  });

  test("refuses a root disk that is not ext4 (here: swap)", async () => {
    freshFilesystem("swap");
    await assert.rejects(
      host.refusable(installScript(guest(loop))),
      /the guest's root disk must hold ext4; .* holds swap/,
    );
    assert.equal(sh(`blkid -p -o value -s TYPE ${loop}`).trim(), "swap", "the swap signature is untouched");
  });

  test("wipes and redoes an install that was interrupted, proven by its marker", async () => {
    freshFilesystem();
    onDisk(() => {
      fs.writeFileSync(`${mnt}/${INSTALL_MARKER}`, "");
      fs.mkdirSync(`${mnt}/usr`);
      fs.writeFileSync(`${mnt}/usr/half-unpacked`, "x");
    });
    await host.refusable(installScript(guest(loop)));
    onDisk(() => {
      assert.ok(!fs.existsSync(`${mnt}/usr/half-unpacked`));
      assert.ok(!fs.existsSync(`${mnt}/${INSTALL_MARKER}`));
      assert.equal(fs.readFileSync(`${mnt}/etc/hostname`, "utf8"), "app9\n");
    });
  });

  test("an install holds its disk's lock, not the host's: an edit of shared files goes ahead while it unpacks", async () => {
    freshFilesystem();
    // tar takes 3 s longer than it needs: the install is still unpacking when the edit asks for the host lock.
    const slow = path.join(dir, "slow-tar");
    fs.mkdirSync(slow, { recursive: true });
    fs.writeFileSync(path.join(slow, "tar"), '#!/bin/sh\nsleep 3\nexec /usr/bin/tar "$@"\n', { mode: 0o755 });
    let installed = false;
    const install = withStubs(host, slow)
      .refusable(installScript(guest(loop)))
      .then((r) => {
        installed = true;
        return r;
      });
    await new Promise((r) => setTimeout(r, 1000));
    // What NAT rules, guest configs and backups are edited under, waiting 1 s at most for it.
    await host.script(withHostLock("true", 1), { summary: "an edit under the host lock" });
    assert.equal(installed, false, "the edit did not wait for the install");
    // A second install onto the same disk waits for the first (it then sees an installed system).
    const second = host.refusable(installScript(guest(loop)));
    await install;
    await second;
    onDisk(() => assert.equal(fs.readFileSync(`${mnt}/etc/hostname`, "utf8"), "app9\n"));
  });

  test("a guest booting through pvgrub2 gets a GRUB menu for its own kernel; one the image brings is kept", async () => {
    freshFilesystem();
    await host.refusable(installScript(guest(loop, { bootloader: "pvgrub2" })));
    onDisk(() =>
      assert.match(
        fs.readFileSync(`${mnt}/boot/grub/grub.cfg`, "utf8"),
        /linux \/vmlinuz root=\/dev\/xvda ro console=hvc0 net\.ifnames=0\n\s+initrd \/initrd\.img/,
      ),
    );
    freshFilesystem();
    const own = path.join(dir, "rootfs", "boot", "grub");
    fs.mkdirSync(own, { recursive: true });
    fs.writeFileSync(path.join(own, "grub.cfg"), "# the image's own menu\n");
    sh(`tar -C ${dir}/rootfs -czf ${image} .`);
    try {
      await host.refusable(installScript(guest(loop, { bootloader: "pvgrub2" })));
      onDisk(() =>
        assert.equal(fs.readFileSync(`${mnt}/boot/grub/grub.cfg`, "utf8"), "# the image's own menu\n"),
      );
    } finally {
      fs.rmSync(path.join(dir, "rootfs", "boot"), { recursive: true });
      sh(`tar -C ${dir}/rootfs -czf ${image} .`);
    }
  });
});

describe("a disk someone holds", () => {
  test("the install refuses a root disk a guest holds, naming the guest, and never mounts it", async () => {
    freshFilesystem();
    const stubs = path.join(dir, "stubs-held");
    writeStubs(stubs, {
      "xenstore-ls": { stdout: `/local/domain/0/backend/vbd/5/51712/params = "${loop}"\n` },
      xl: { stdout: "web7\n" },
    });
    await assert.rejects(
      withStubs(host, stubs).refusable(installScript(guest(loop))),
      (e: unknown) =>
        e instanceof RefusedError && /refusing to touch .*: guest web7 holds it/.test(e.message),
    );
    onDisk(() => assert.deepEqual(fs.readdirSync(mnt).sort(), ["lost+found"]));
  });

  test("the install refuses a root disk mounted in the host", async () => {
    freshFilesystem();
    sh(`mount ${loop} ${mnt}`);
    try {
      await assert.rejects(
        host.refusable(installScript(guest(loop))),
        /refusing to touch .*: it is mounted at/,
      );
    } finally {
      sh(`umount ${mnt}`);
    }
  });

  test("when xenstore cannot be asked, the install fails instead of assuming nobody holds the disk", async () => {
    freshFilesystem();
    const stubs = path.join(dir, "stubs-down");
    writeStubs(stubs, { "xenstore-ls": { stderr: "xs_open: Connection refused\n", exit: 1 } });
    await assert.rejects(withStubs(host, stubs).refusable(installScript(guest(loop))), /cannot ask xenstore/);
    onDisk(() => assert.deepEqual(fs.readdirSync(mnt).sort(), ["lost+found"]));
  });
});

describe("rewriting an installed guest's settings", () => {
  test("a new address and resolver land in the stopped guest's files, the old ones are kept inside it", async () => {
    freshFilesystem();
    const g = guest(loop);
    await host.refusable(installScript(g));
    const moved = {
      ...g,
      guestSettings: { ...g.guestSettings!, address: "10.0.0.19", nameservers: ["192.0.2.54"] },
    };
    await host.refusable(settingsScript(moved));
    onDisk(() => {
      assert.match(
        fs.readFileSync(path.join(mnt, "etc/network/interfaces"), "utf8"),
        /address 10\.0\.0\.19\/24/,
      );
      assert.equal(fs.readFileSync(path.join(mnt, "etc/resolv.conf"), "utf8"), "nameserver 192.0.2.54\n");
      const kept = fs.readdirSync(path.join(mnt, "var/backups/xen-estate/etc/network"));
      assert.ok(
        kept.some((n) => n.startsWith("interfaces.")),
        kept.join(),
      );
    });
  });

  test("a symlink in the guest that points out of its filesystem is never written through", async () => {
    freshFilesystem();
    const g = guest(loop);
    await host.refusable(installScript(g));
    const victim = path.join(dir, "host-file");
    fs.writeFileSync(victim, "the host's own file\n");
    onDisk(() => {
      fs.rmSync(path.join(mnt, "etc/resolv.conf"));
      fs.symlinkSync(victim, path.join(mnt, "etc/resolv.conf"));
      fs.rmSync(path.join(mnt, "etc/network"), { recursive: true });
      fs.symlinkSync(dir, path.join(mnt, "etc/network"));
    });
    await assert.rejects(host.refusable(settingsScript(g)), /a symlink leads out of its filesystem/);
    assert.equal(fs.readFileSync(victim, "utf8"), "the host's own file\n");
    assert.equal(fs.existsSync(path.join(dir, "interfaces")), false);
  });
});
