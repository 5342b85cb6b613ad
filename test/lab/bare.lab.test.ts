/**
 * The bare server: plain Debian 12 that boots through its own GRUB from its own disk, as a rented server
 * does before xen-estate installs Xen on it. Skipped like the dom0 suite when the lab tools are missing.
 */
import { spawnSync } from "node:child_process";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Lab } from "./lab";
import { labMachine } from "./shared";

function missingTools(): string | undefined {
  if (process.env.XEN_ESTATE_LAB === "0") return "XEN_ESTATE_LAB=0";
  for (const tool of ["qemu-system-x86_64", "qemu-img", "debootstrap", "grub-mkimage", "sfdisk", "ssh"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0)
      return `${tool} is not installed (test/lab/install-deps.sh)`;
  }
  return undefined;
}

const machine = labMachine("bare");

describe("the bare server lab machine", { skip: missingTools(), timeout: 15 * 60_000 }, () => {
  let lab: Lab;
  before(async () => {
    lab = await machine.acquire();
  });
  after(async () => {
    await machine.release();
  });

  test("booted through GRUB from its own partitioned disk, without Xen", async () => {
    const cmdline = await lab.ssh("cat /proc/cmdline");
    assert.match(
      cmdline,
      /^BOOT_IMAGE=\/boot\/vmlinuz-6\.1\.\S+ root=LABEL=bare-root/,
      "GRUB's linux command sets BOOT_IMAGE",
    );
    assert.match(await lab.ssh("lsblk -rno NAME,LABEL /dev/vda"), /^vda1 bare-root$/m);
    assert.equal((await lab.exec("test -e /proc/xen/capabilities")).exitCode, 1, "not a Xen domain");
    assert.equal((await lab.ssh("hostname")).trim(), "bare");
  });

  test("has a blank second disk for the estate's LVM", async () => {
    assert.match(await lab.ssh("lsblk -rno NAME,SIZE /dev/vdb"), /^vdb 8G$/m);
  });
});
