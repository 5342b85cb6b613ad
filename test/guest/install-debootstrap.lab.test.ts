/**
 * The slow install path a user without images takes: a Debian 12 guest installed unattended by debootstrap from a
 * package mirror, through the real engine against the lab's Xen dom0. The mirror is the lab's package source
 * (reached by the dom0 on its uplink side); the guest boots the dom0's kernel directly (TCG cannot run PVH, and the
 * lab dom0 has no grub-xen-host), sits behind the dom0's NAT, and is reached by SSH with the key the stack gave it
 * and the host key fingerprint the stack reports.
 *
 * Slow: debootstrap inside the emulated dom0 takes 9 to 30 minutes, the guest's first boot a few more.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createStack, diagnostics, repoRoot, resourceChanges, type PulumiStack } from "../engine/harness";
import { shellQuote } from "../../provider";
import { Lab } from "../lab/lab";
import { labMachine } from "../lab/shared";
import { slowTier } from "../support/tier";

const NAT = "pulumi-nodejs:dynamic/xen-estate:NatDomU";
const LV = "pulumi-nodejs:dynamic/xen-estate:LvmVolume";
const IP = "10.0.0.7";
slowTier(
  "test/guest/install-debootstrap.ssh.test.ts runs the same debootstrap install from a mirror on every run (natively, onto a loop device), and test/examples/walkthrough.lab.test.ts boots guests through pvgrub2 under Xen",
);
// Three guests at once: the Debian guest needs 768 MiB to unpack the dom0's stock initrd.
const machine = labMachine("dom0", { memoryMiB: 3072 });

describe("a Debian guest installed by debootstrap on the lab dom0", { timeout: 100 * 60 * 1000 }, () => {
  let lab: Lab;
  let stack: PulumiStack;

  /** Runs a command inside the guest over SSH from the dom0, trusting only the host key the stack reported. */
  async function inGuest(command: string): Promise<string> {
    return lab.ssh(
      `ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/root/.ssh/known_hosts_deb1 -o ConnectTimeout=10 root@${IP} ${shellQuote(command)}`,
      { timeoutMs: 120_000 },
    );
  }

  before(async () => {
    lab = await machine.acquire();
    const release = (await lab.ssh("uname -r")).trim();
    await lab.ssh("[ -f /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519");
    const pub = (await lab.ssh("cut -d' ' -f1-2 /root/.ssh/id_ed25519.pub")).trim();
    stack = await createStack({
      programDir: `${repoRoot()}/test/lab/fixtures/debian-guest`,
      linkPackage: true,
      timeoutMs: 90 * 60 * 1000,
      config: {
        ...lab.stackConfig(),
        debianIp: { value: IP },
        debianKernelRelease: { value: release },
        debianMirror: { value: "http://10.0.2.100:3142/debian" },
        debianAuthorizedKey: { value: `${pub} dom0-root` },
        debianBootTimeout: { value: "1200" },
      },
    });
  });

  after(async () => {
    try {
      await stack?.remove();
      // The dom0's own client key for the guest (made in before) and the guest's pinned host key.
      if (lab?.isRunning())
        await lab.ssh("rm -f /root/.ssh/id_ed25519 /root/.ssh/id_ed25519.pub /root/.ssh/known_hosts_deb1");
    } finally {
      await machine.release();
    }
  });

  test("up installs Debian by debootstrap with progress, and the guest answers SSH with the host key the stack reports", async () => {
    const up = await stack.up();
    assert.ok(
      resourceChanges(up).some((s) => s.type === NAT && s.op === "create" && s.urn.endsWith("::deb1")),
      "deb1 was created",
    );
    const progress = diagnostics(up).filter((d) =>
      /deb1: debootstrap: (unpacking|configuring) \d+\/\d+ \(\d+%\)/.test(d.message),
    );
    assert.ok(progress.length > 0, "debootstrap's progress was shown with counts and percent");
    const outputs = await stack.outputs();
    const hostKey = String(outputs.debianHostKey);
    assert.match(hostKey, /^SHA256:[A-Za-z0-9+/]{43}$/);
    // Pin what the stack reported, then prove the guest presents exactly that key.
    const scanned = await lab.ssh(`ssh-keyscan -t ed25519 ${IP} 2>/dev/null`);
    assert.equal((await lab.ssh("ssh-keygen -lf - | cut -d' ' -f2", { input: scanned })).trim(), hostKey);
    await lab.ssh(`cat > /root/.ssh/known_hosts_deb1`, { input: scanned });
    assert.equal(
      await inGuest(
        ". /etc/os-release; echo $VERSION_CODENAME; hostname; readlink /proc/1/exe; findmnt -no SOURCE /; swapon --show=NAME --noheadings",
      ),
      "bookworm\ndeb1\n/usr/lib/systemd/systemd\n/dev/xvda\n/dev/xvdb\n",
    );
  });

  test("the installed guest runs apt from the mirror through the dom0's NAT", async () => {
    const out = await inGuest(
      "apt-get -q update 2>&1 | tail -n 3; apt-cache policy openssh-server | sed -n 2p",
    );
    assert.match(out, /Reading package lists/);
    assert.match(out, /Installed: 1:9\.2/);
  });

  test("a second up neither reinstalls nor restarts the guest", async () => {
    const before = await inGuest("cat /proc/sys/kernel/random/boot_id");
    const up = await stack.up();
    assert.deepEqual(resourceChanges(up), []);
    assert.equal(await inGuest("cat /proc/sys/kernel/random/boot_id"), before);
  });

  test("growing the root volume under the running guest: dom0 grows the LV, leaves the mounted filesystem to the guest and says so", async () => {
    const boot = await inGuest("cat /proc/sys/kernel/random/boot_id");
    const rootSize = async (): Promise<number> =>
      Number((await inGuest("df -B1 --output=size / | tail -n1")).trim());
    const before = await rootSize();
    await stack.setConfig("debianRootSize", "1280MiB");
    const up = await stack.up();
    assert.deepEqual(
      resourceChanges(up).map((s) => [s.type, s.op, s.urn.split("::").pop()]),
      [[LV, "update", "deb1-root"]],
    );
    assert.ok(
      diagnostics(up, "warning").some((d) =>
        /vg0\/deb1-root grew, but its filesystem belongs to guest deb1: run resize2fs/.test(d.message),
      ),
      JSON.stringify(diagnostics(up, "warning")),
    );
    // The guest sees the bigger disk at once (blkfront resizes online) and grows its own filesystem, mounted.
    assert.equal((await inGuest("cat /sys/block/xvda/size")).trim(), String((1280 * 2 ** 20) / 512));
    await inGuest("resize2fs /dev/xvda >/dev/null 2>&1");
    const grown = (await rootSize()) - before;
    assert.ok(grown > 200 * 2 ** 20, `the root filesystem grew by ${grown} bytes`);
    assert.equal(await inGuest("cat /proc/sys/kernel/random/boot_id"), boot, "the guest kept running");
  });

  test("destroy removes the guest and its volumes", async () => {
    const destroy = await stack.destroy();
    assert.equal(destroy.code, 0);
    assert.equal((await lab.ssh("xl list | tail -n +2 | awk '{print $1}'")).trim(), "Domain-0");
    assert.equal((await lab.ssh("lvs --noheadings -o lv_name vg0")).trim(), "");
  });
});
