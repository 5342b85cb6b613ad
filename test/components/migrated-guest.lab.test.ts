/**
 * The migration the walkthrough is about, on real Xen: the lab's source VPS (a real sshd in its own network namespace
 * holding a real Debian 12 ext4 disk) migrated through the engine into an LV on the lab dom0, which pulls the data
 * itself, and booted as a BridgedDomU through the migrated system's own kernel (pvgrub2). The copy is cut in the
 * middle and `up` again sends only the chunks that did not land; over SSH the guest shows the source's marker, its
 * root on /dev/xvda and its new address; destroy leaves the source's disk exactly as it was.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { createStack, repoRoot, resourceChanges, slowestSteps, type PulumiStack } from "../engine/harness";
import type { Lab } from "../lab/lab";
import { labMachine, SOURCE_GUEST_ADDRESS } from "../lab/shared";
import { assertCleanBoot, cutCopyCommand, type SourceVps } from "../lab/source";
import { sh } from "../support/disks";
import { slowTier } from "../support/tier";

// Slow tier: the walkthrough's lab file proves the same on every run (a copy cut at half its data and resumed with
// only the missing chunks, the migrated disk booting under Xen with the source's data, the source unchanged).
slowTier(
  "test/examples/walkthrough.lab.test.ts migrates the source VPS through the engine on every run: the copy cut at half its data and resumed with only the chunks that did not land, the guest booted under Xen through pvgrub2 with the source's data, root on /dev/xvda and its new address, the source's disk unchanged after destroy",
);

// The shared dom0, with a fresh source VPS of this file's own at 10.0.2.101:22 inside it.
const machine = labMachine("dom0", { source: true });

const MIGRATION = "pulumi-nodejs:dynamic/xen-estate:LinodeMigration";
const GUEST = "pulumi-nodejs:dynamic/xen-estate:BridgedDomU";
const CHUNK = 4 * 2 ** 20;
const STATE = "/var/lib/xen-estate/migrations/vg0_linode1-root";
const ZERO = createHash("sha256").update(Buffer.alloc(CHUNK)).digest("hex");

describe(
  "a Linode-style VPS migrated into the lab dom0 and booted under Xen",
  { timeout: 45 * 60 * 1000 },
  () => {
    let src: SourceVps;
    let loop: string;
    let lab: Lab;
    let stack: PulumiStack;
    let sourceHash: string;

    /** Chunks with data that landed so far (the journal's lines for chunks that are not zeros). */
    async function landedData(): Promise<number> {
      const out = await lab.ssh(`cat ${STATE}/journal 2>/dev/null || true`);
      return out.split("\n").filter((l) => l.includes(" ") && !l.endsWith(ZERO)).length;
    }

    /** Runs a command in the guest over SSH from the dom0, its host key pinned (the source's own). */
    function inGuest(command: string): Promise<string> {
      return lab.ssh(
        `ssh -F /dev/null -i /root/.ssh/source-key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/root/.ssh/guest-known-hosts -o ConnectTimeout=20 root@10.99.0.60 ${JSON.stringify(command)}`,
      );
    }

    before(async () => {
      lab = await machine.acquire();
      src = machine.source!;
      loop = sh(`losetup -f --show -r ${src.diskImage}`).trim();
      sourceHash = sh(`sha256sum < ${src.diskImage}`);
      stack = await createStack({
        programDir: `${repoRoot()}/test/lab/fixtures/linode-migration`,
        linkPackage: true,
        config: {
          ...lab.stackConfig(),
          sourceHost: { value: src.address },
          sourceHostKey: { value: src.hostKey },
          sourcePrivateKey: { value: src.privateKey, secret: true },
          sourceDevice: { value: loop },
          sourceAuthorizedKeys: { value: `${src.stateDir}/authorized_keys` },
          sourceDom0Host: { value: SOURCE_GUEST_ADDRESS },
        },
        timeoutMs: 40 * 60 * 1000,
      });
    });

    after(async () => {
      try {
        await stack?.remove();
        // What the tests put on the dom0 to log in to the guest; release() proves nothing else is left.
        if (lab?.isRunning()) await lab.ssh("rm -f /root/.ssh/source-key /root/.ssh/guest-known-hosts");
        if (loop) sh(`losetup -d ${loop} || true`);
      } finally {
        await machine.release();
      }
    });

    test("a copy cut in the middle resumes with only the chunks that did not land, and the guest boots", async () => {
      const used = Number(
        sh(
          `dumpe2fs -h ${loop} 2>/dev/null | awk -F: '/^Block count/{b=$2}/^Free blocks/{f=$2}/^Block size/{s=$2}END{print (b-f)*s}'`,
        ),
      );
      const half = Math.ceil(used / CHUNK / 2);
      const first = stack.up({ expectFailure: true });
      let cutAt = 0;
      for (let i = 0; i < 1800 && cutAt === 0; i++) {
        await new Promise((r) => setTimeout(r, 1000));
        const landed = await landedData();
        if (landed >= half) {
          // The dom0's ssh to the source dies, as when the link drops.
          if ((await lab.ssh(cutCopyCommand("vg0_linode1-root"))).trim() === "killed") cutAt = landed;
        }
      }
      const cut = await first;
      assert.ok(cutAt > 0, "the copy was cut");
      assert.notEqual(cut.code, 0, "the cut copy failed");
      assert.match(cut.stdout + cut.stderr, /the copy stopped .*what landed is kept/);
      assert.doesNotMatch(
        sh(`cat ${src.stateDir}/authorized_keys`),
        /xen-estate-migration/,
        "no key left on the source",
      );

      const up = await stack.up();
      console.log(`resuming up, longest steps: ${slowestSteps(up).join("; ")}`);
      assert.deepEqual(
        resourceChanges(up)
          .filter((s) => s.type !== "xen-estate:components:MigratedGuest")
          .map((s) => [s.type, s.op])
          .sort(),
        [
          [GUEST, "create"],
          [MIGRATION, "update"],
        ],
      );
      const out = await stack.outputs();
      assert.equal(out.phase, "migrated");
      const t = out.lastTransfer as {
        dataBytes: number;
        skippedBytes: number;
        wireBytes: number;
        seconds: number;
      };
      // Every chunk with data, as the source hashed them all: what a full copy sends.
      const all = (await lab.ssh(`cat ${STATE}/source-hashes`)).split("\n").filter((l) => l.includes(" "));
      const fullData = all.filter((l) => !l.endsWith(ZERO)).length * CHUNK;
      console.log(
        `resume: ${t.dataBytes} of ${fullData} bytes of data sent (${((100 * t.dataBytes) / fullData).toFixed(1)}%), ${t.skippedBytes} already there, ${t.wireBytes} on the wire, ${t.seconds.toFixed(1)} s; cut at ${cutAt} data chunks`,
      );
      assert.ok(t.dataBytes < 0.55 * fullData, `the resume sent ${t.dataBytes} of ${fullData} bytes of data`);
      assert.ok(t.skippedBytes >= cutAt * CHUNK * 0.9, `skipped ${t.skippedBytes}`);
      assert.match(await lab.ssh("xl list linode1"), /linode1\s+\d+\s+768/);
    });

    test("over SSH the guest shows the source's data, its root on /dev/xvda and its new address", async () => {
      await lab.ssh(
        "install -d -m 700 /root/.ssh && cat > /root/.ssh/source-key && chmod 600 /root/.ssh/source-key",
        {
          input: src.privateKey,
        },
      );
      await lab.ssh(`printf '%s\\n' '10.99.0.60 ${src.hostPublicKey}' > /root/.ssh/guest-known-hosts`);
      assert.equal((await inGuest("cat /root/xen-estate-source-marker")).trim(), src.marker);
      assert.equal((await inGuest("findmnt -n -o SOURCE /")).trim(), "/dev/xvda");
      assert.match(await inGuest("ip -4 -o addr show eth0"), /inet 10\.99\.0\.60\/24/);
      assert.equal((await inGuest("hostname")).trim(), "linode1");
      assert.match(await inGuest("cat /proc/cmdline"), /console=hvc0/);
    });

    test("the guest's first boot is clean: no unit failed, no job waited out a deadline", async () => {
      await assertCleanBoot(inGuest, (l) => console.log(l));
    });

    test("a second up changes nothing", async () => {
      const up = await stack.up();
      assert.deepEqual(resourceChanges(up), []);
    });

    test("destroy removes the guest, the volume and the journal, and leaves the source's disk as it was", async () => {
      const destroy = await stack.destroy();
      assert.equal(destroy.code, 0);
      assert.doesNotMatch(await lab.ssh("xl list"), /linode1/);
      assert.equal((await lab.ssh("lvs --noheadings -o lv_name vg0")).trim(), "");
      assert.equal((await lab.ssh(`ls ${STATE} 2>/dev/null || true`)).trim(), "");
      assert.equal(sh(`sha256sum < ${src.diskImage}`), sourceHash, "the source's disk is unchanged");
    });
  },
);
