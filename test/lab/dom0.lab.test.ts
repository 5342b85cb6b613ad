/**
 * The real Xen lab: boots the dom0 image in QEMU and proves what the resources rely on.
 * Skipped when QEMU or debootstrap is missing (run test/lab/install-deps.sh) or XEN_ESTATE_LAB=0.
 */
import { spawnSync } from "node:child_process";
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { LAB_NET, Lab } from "./lab";
import { destroyKitGuest, kitAnswer, kitGuestConfig, waitForKitHttp } from "./kit";
import { labMachine } from "./shared";
import { SourceVps } from "./source";
import { slowTier } from "../support/tier";

slowTier(
  "the dom0 image boots only for slow-tier files now; what they rely on (Xen 4.17, vg0, a bridge, a PV guest on an LV answering HTTP, the source VPS reachable, packages only through the lab's proxy) is what test/examples/walkthrough.lab.test.ts proves on the bare server it turns into a dom0",
);

function missingTools(): string | undefined {
  if (process.env.XEN_ESTATE_LAB === "0") return "XEN_ESTATE_LAB=0";
  for (const tool of ["qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4", "ssh"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0)
      return `${tool} is not installed (test/lab/install-deps.sh)`;
  }
  return undefined;
}

const skip = missingTools();
const machine = labMachine("dom0", { source: true });

describe("the dom0 lab machine", { skip, timeout: 20 * 60_000 }, () => {
  let lab: Lab;
  let src: SourceVps;

  before(async () => {
    // The source VPS answers at 10.0.2.101:22 inside the dom0.
    lab = await machine.acquire();
    src = machine.source!;
  });

  after(async () => {
    // What the steps leave on the dom0; then release() proves nothing else is left, and when this file booted the
    // machine itself, that QEMU is gone after stop() and the overlays are removed.
    try {
      if (lab?.isRunning())
        await lab.ssh("rm -f /tmp/labkit.cfg /root/.ssh/source_key /root/.ssh/source_known_hosts");
    } finally {
      await machine.release();
    }
  });

  test("answers SSH only with the pinned host key", async () => {
    assert.match(lab.hostKey, /^SHA256:[A-Za-z0-9+/]{43}$/);
    assert.match(lab.privateKey, /BEGIN OPENSSH PRIVATE KEY/);
    const scanned = spawnSync("ssh-keygen", ["-lf", lab.knownHostsFile], { encoding: "utf8" });
    assert.equal(scanned.stdout.split(" ")[1], lab.hostKey);
    assert.equal((await lab.ssh("hostname")).trim(), "dom0");
  });

  test("runs Xen 4.17 with a 1 GiB dom0", async () => {
    const info = await lab.ssh("xl info");
    assert.match(info, /^xen_version\s*:\s*4\.17\./m);
    const list = await lab.ssh("xl list Domain-0");
    assert.match(list, /^Domain-0\s+0\s+1024\s/m);
  });

  test("has vg0 on the blank disk and the guest bridge", async () => {
    assert.match(await lab.ssh("vgs --noheadings -o vg_name"), /\bvg0\b/);
    assert.match(await lab.ssh(`ip -br addr show ${LAB_NET.bridge}`), /10\.99\.0\.1\/24/);
  });

  test("boots a PV guest on an LV with a vif on xenbr0, which answers HTTP, then removes it", async () => {
    const guest = { name: "labkit", ip: "10.99.0.10", lv: "labkit", mac: "00:16:3e:99:00:10" };
    await lab.ssh(
      `lvcreate -q -y -L 32M -n ${guest.lv} vg0 >/dev/null && printf lv-marker-4711 | dd of=/dev/vg0/${guest.lv} conv=notrunc status=none`,
    );
    await lab.ssh(`cat > /tmp/${guest.name}.cfg && xl create -q /tmp/${guest.name}.cfg`, {
      input: kitGuestConfig(guest),
      timeoutMs: 300_000,
    });
    try {
      assert.match(await lab.ssh("xl list"), new RegExp(`^${guest.name}\\s+\\d+\\s+192\\s`, "m"));
      assert.equal((await waitForKitHttp(lab, guest.ip, 240_000)).trim(), kitAnswer(guest.name));
      assert.equal((await lab.ssh(`curl -fsS http://${guest.ip}/disks`)).trim(), "xvda:65536");
      assert.equal((await lab.ssh(`curl -fsS http://${guest.ip}/xvda`)).trim(), "lv-marker-4711");
      await lab.ssh(`ping -c 1 -W 5 ${guest.ip}`);
    } finally {
      await destroyKitGuest(lab, guest.name, guest.lv);
    }
    assert.doesNotMatch(await lab.ssh("xl list"), new RegExp(`^${guest.name}\\s`, "m"));
    assert.doesNotMatch(await lab.ssh("lvs --noheadings -o lv_name vg0"), new RegExp(guest.lv));
  });

  test("reaches the source VPS over SSH and reads its disk intact", async () => {
    await lab.ssh("install -m 600 /dev/stdin /root/.ssh/source_key", { input: src.privateKey });
    await lab.ssh("cat > /root/.ssh/source_known_hosts", { input: `10.0.2.101 ${src.hostPublicKey}\n` });
    const toSource =
      "ssh -i /root/.ssh/source_key -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/root/.ssh/source_known_hosts -o BatchMode=yes root@10.0.2.101";
    const marker = await lab.ssh(
      `${toSource} "debugfs -R 'cat /root/xen-estate-source-marker' ${src.diskImage} 2>/dev/null"`,
    );
    assert.equal(marker.trim(), src.marker);
    // 8 MiB of the disk through SSH into an LV, checksummed on both ends.
    const local = spawnSync("sh", ["-c", `head -c 8M ${src.diskImage} | sha256sum`], {
      encoding: "utf8",
    }).stdout.split(" ")[0];
    await lab.ssh(
      `lvcreate -q -y -L 8M -n migrated vg0 >/dev/null && ${toSource} "head -c 8M ${src.diskImage}" | dd of=/dev/vg0/migrated bs=1M status=none`,
      {
        timeoutMs: 300_000,
      },
    );
    const remote = (await lab.ssh("sha256sum /dev/vg0/migrated && lvremove -q -y vg0/migrated")).split(
      " ",
    )[0];
    assert.equal(remote, local);
  });

  test("installs packages only through the host's package proxy", async () => {
    // The dom0 has no route to the internet (QEMU restrict=on); apt goes to 10.0.2.100:3142 (guestfwd).
    const out = await lab.ssh("apt-get -q update 2>&1", { timeoutMs: 600_000 });
    assert.match(out, /Reading package lists/);
    assert.doesNotMatch(out, /^(Err|W: Failed)/m);
    const policy = await lab.ssh("apt-cache policy varnish");
    assert.match(policy, /Candidate: 7\.1/);
  });
});
