/**
 * The source VPS used by migration tests: a real sshd in its own network namespace with a real ext4
 * disk image holding a bootable Debian 12 userland. Needs root, `ip netns` and debootstrap.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { SourceVps } from "./source";

function missing(): string | undefined {
  if (process.env.XEN_ESTATE_LAB === "0") return "XEN_ESTATE_LAB=0";
  if (process.getuid?.() !== 0) return "needs root (network namespaces)";
  for (const tool of ["debootstrap", "mkfs.ext4", "ssh", "/usr/sbin/sshd", "ip"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) return `${tool} is not installed`;
  }
  return undefined;
}

describe("the source VPS", { skip: missing(), timeout: 15 * 60_000 }, () => {
  let src: SourceVps;
  before(async () => {
    src = await SourceVps.start();
  });
  after(async () => {
    if (!src) return;
    await src.stop();
    assert.equal(
      spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout.includes(src.netns),
      false,
      "the namespace is gone",
    );
    assert.equal(fs.existsSync(src.stateDir), false);
  });

  test("answers SSH at its own address with the pinned host key", async () => {
    assert.match(src.address, /^10\.201\.\d+\.\d+$/);
    assert.match(src.hostKey, /^SHA256:/);
    const scanned = spawnSync("ssh-keygen", ["-lf", src.knownHostsFile], { encoding: "utf8" });
    assert.equal(scanned.stdout.split(" ")[1], src.hostKey);
    // The sshd lives in the namespace: the address it answers on exists only there.
    assert.match(await src.ssh("ip -br addr"), new RegExp(src.address.replace(/\./g, "\\.")));
  });

  test("holds a clean ext4 disk with a bootable Debian 12 userland", async () => {
    await src.ssh(`e2fsck -fn ${src.diskImage} >/dev/null 2>&1`);
    const cat = (p: string): Promise<string> => src.ssh(`debugfs -R 'cat ${p}' ${src.diskImage} 2>/dev/null`);
    assert.equal((await cat("/root/xen-estate-source-marker")).trim(), src.marker);
    assert.match(await cat("/usr/lib/os-release"), /VERSION_ID="12"/);
    assert.match(await cat("/etc/fstab"), /^\/dev\/sda \/ ext4/m);
    const boot = await src.ssh(`debugfs -R 'ls -l /boot' ${src.diskImage} 2>/dev/null`);
    assert.match(boot, /vmlinuz-6\.1\./);
    assert.match(boot, /initrd\.img-6\.1\./);
    assert.doesNotMatch(boot, /xen-4\.17/);
  });
});
