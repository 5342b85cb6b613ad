/**
 * Phase 0's planning: the installimage config from the declaration, and the checks that keep it off the wrong disks.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Checker, checkInstallimage, driveMismatches, renderInstallimageConfig } from "../../provider";

const declared = {
  drives: [{ device: "/dev/nvme0n1", sizeBytes: 512110190592, serial: "S4EWNX0R123456" }, "/dev/nvme1n1"],
  wipeDisks: true,
  hostname: "dom0.example.org",
  image: "/root/.oldroot/nfs/images/Debian-1210-bookworm-amd64-base.tar.gz",
};

function check(raw: Record<string, unknown>): {
  plan: ReturnType<typeof checkInstallimage>;
  failures: string[];
} {
  const c = new Checker();
  const plan = checkInstallimage(c, raw);
  return { plan, failures: c.errors.map((e) => e.property) };
}

describe("the installimage config", () => {
  test("two drives give software RAID 1, /boot and an LVM volume group holding root and swap", () => {
    const { plan, failures } = check(declared);
    assert.deepEqual(failures, []);
    const conf = renderInstallimageConfig(plan!);
    assert.match(conf, /^DRIVE1 \/dev\/nvme0n1\nDRIVE2 \/dev\/nvme1n1\nSWRAID 1\nSWRAIDLEVEL 1$/m);
    assert.match(
      conf,
      /^PART \/boot ext3 1024M\nPART lvm vg0 all\nLV vg0 root \/ ext4 30G\nLV vg0 swap swap swap 4G$/m,
    );
  });
  test("nothing is wiped without wipeDisks: true", () => {
    assert.deepEqual(check({ ...declared, wipeDisks: undefined }).failures, ["wipeDisks"]);
  });
  test("a partition, a drive named twice, three drives and a bad image are refused, each by its property", () => {
    assert.deepEqual(check({ ...declared, drives: ["/dev/nvme0n1p1"] }).failures, ["drives[0].device"]);
    assert.deepEqual(check({ ...declared, drives: ["/dev/sda", "/dev/sda"] }).failures, ["drives[1].device"]);
    assert.deepEqual(check({ ...declared, drives: ["/dev/sda", "/dev/sdb", "/dev/sdc"] }).failures, [
      "drives",
    ]);
    assert.deepEqual(check({ ...declared, image: "Debian; reboot" }).failures, ["image"]);
    assert.deepEqual(check({ ...declared, image: "/root/../etc/shadow.tar.gz" }).failures, ["image"]);
  });
  test("the drives the rescue system sees must be the declared ones: size and serial where given", () => {
    const { plan } = check(declared);
    assert.deepEqual(
      driveMismatches(plan!, [
        { path: "/dev/nvme0n1", size: 512110190592, serial: "S4EWNX0R123456" },
        { path: "/dev/nvme1n1", size: 512110190592, serial: "X" },
      ]),
      [],
    );
    assert.deepEqual(driveMismatches(plan!, [{ path: "/dev/nvme0n1", size: 1, serial: "Y" }]), [
      "/dev/nvme0n1 has 1 bytes, not 512110190592",
      "/dev/nvme0n1 has serial Y, not S4EWNX0R123456",
      "/dev/nvme1n1 is not there",
    ]);
  });
});
