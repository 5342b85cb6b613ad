/**
 * Hostile input through `pulumi up` for a Dom0Host on the lab's bare server: the free text of the concerns that can
 * only run on a server becoming a dom0 (Dom0Access makes the admin and moves sshd, Dom0Firewall loads the rules,
 * Dom0Network builds the bridge and Dom0Reboot boots into Xen with the new command line), each value carrying every
 * corpus piece (test/support/hostile.ts) that the concern's own `check` accepts there, packed into one value:
 *
 * - `admin.name`: the account Dom0Access makes (useradd, sudoers, sshd's AllowUsers), then logged in as;
 * - `ssh.trustedSources[0]`: the address sshd is open to (nftables), the one every lab connection comes from;
 * - `network.bridge`: the bridge Dom0Network makes with the uplink in it, which Dom0XenBoot makes xl's default and
 *   Dom0Reboot checks after the reboot;
 * - `xen.xenArgs` and `xen.dom0KernelArgs`: GRUB's defaults (sourced as shell by grub-mkconfig), grub.cfg, and the
 *   command lines Xen and dom0 boot with;
 * - `monitoring.mailTo` and `mailName`: dma's configuration and the aliases.
 *
 * Afterwards the server is a dom0 running Xen from that boot, each value arrived whole where it was meant to, a
 * second `up` changes nothing, and no canary file exists on the server or here. Left out, their accepted values
 * being ones no real server can satisfy (so `up` could only fail; test/framework/hostile-input.ssh.test.ts runs each
 * through the real scripts on a real sshd): the uplink's name and MAC (a NIC of that name), the package mirrors and
 * names (apt fetches them), and HetznerInstallimage's inputs (Hetzner's rescue system).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createStack, kindOps, repoRoot, resourceChanges, type PulumiStack } from "../engine/harness";
import { startBareServer, type BareServer } from "../lab/bare-server";
import { canaries as canariesOn, packedInKind } from "../lab/hostile";
import { LAB_NET, LAB_SMTP } from "../lab/lab";
import { hostTscKhz } from "../lab/walkthrough";
import { slowTier } from "../support/tier";

slowTier(
  "test/framework/hostile-input.ssh.test.ts runs every corpus piece each Dom0Host concern's check accepts through the concern's real scripts on a real sshd on every run, and the walkthrough sends the admin's key with hostile pieces in its comment through Dom0Host; this file sends the concerns' other free text through pulumi up to a bare server that becomes a dom0",
);

/** The port sshd moves to. */
const SSH_PORT = 2222;

describe(
  "a Dom0Host with hostile free text, through pulumi up on the lab's bare server",
  { timeout: 60 * 60_000 },
  () => {
    let bare: BareServer;
    let stack: PulumiStack;
    const log = (l: string): void => console.log(`# ${l}`);

    // Each value with every piece its concern's check accepts (the concern that receives it from Dom0Host).
    const v = {
      admin: packedInKind("Dom0Access", ["adminUser"], "ops"),
      trusted: packedInKind("Dom0Firewall", ["trustedSources", 0], "10.0.2.2/32"),
      bridge: packedInKind("Dom0Network", ["bridge"], "xenbr0"),
      xenArgs: packedInKind("Dom0XenBoot", ["xenArgs"], "console=com1 com1=115200,8n1 xeh"),
      // tsc_early_khz as the walkthrough boots it (test/lab/walkthrough.ts: the emulated TSC's rate).
      dom0KernelArgs: packedInKind(
        "Dom0XenBoot",
        ["dom0KernelArgs"],
        `console=hvc0 net.ifnames=0${hostTscKhz() ? ` tsc_early_khz=${hostTscKhz()}` : ""} xeh`,
      ),
      mailTo: packedInKind("Dom0Monitoring", ["mailTo"], "ops@example.org"),
      mailName: packedInKind("Dom0Monitoring", ["mailName"], "bare.lab.test"),
    };
    /** The canary files on the server (through the admin's sudo once it exists) and here. */
    const canaries = (): Promise<string[]> => canariesOn((command) => bare.asAdmin(command));

    before(async () => {
      for (const [input, { value, ids }] of Object.entries(v))
        log(`${input}: ${ids.length} pieces: ${JSON.stringify(value)}`);
      bare = await startBareServer({ sshPort: SSH_PORT, admin: v.admin.value, log });
      const lab = bare.lab;
      stack = await createStack({
        programDir: `${repoRoot()}/test/engine/fixtures/dom0-host`,
        linkPackage: true,
        config: {
          host: { value: lab.host },
          port: { value: String(lab.port) },
          hostKey: { value: lab.hostKey },
          privateKey: { value: lab.privateKey, secret: true },
          adminKey: { value: bare.adminKey },
          adminName: { value: v.admin.value },
          sshPort: { value: String(SSH_PORT) },
          sshConnectPort: { value: String(lab.forwarded[String(SSH_PORT)]) },
          // Every connection QEMU forwards comes from 10.0.2.2: the provider's and this file's own.
          // JSON with every character beyond ASCII escaped: the value travels through the stack's YAML config as is.
          trustedSources: { value: asciiJson([v.trusted.value]) },
          aptProxy: { value: LAB_NET.aptProxy },
          smtpHost: { value: LAB_SMTP.address },
          bridge: { value: v.bridge.value },
          xenArgs: { value: v.xenArgs.value },
          dom0KernelArgs: { value: v.dom0KernelArgs.value },
          mailTo: { value: v.mailTo.value },
          mailName: { value: v.mailName.value },
        },
      });
    });

    after(async () => {
      await stack?.remove();
      await bare?.stop();
    });

    test("every value carries corpus pieces", () => {
      for (const [input, { ids }] of Object.entries(v))
        assert.ok(ids.length >= 2, `${input}: ${ids.join(" ")}`);
    });

    test("up makes the bare server a dom0 running Xen, and no piece runs", async () => {
      const up = await stack.up();
      assert.deepEqual(kindOps(up), [
        "Dom0Access create",
        "Dom0Firewall create",
        "Dom0Monitoring create",
        "Dom0Network create",
        "Dom0Packages create",
        "Dom0Reboot create",
        "Dom0XenBoot create",
      ]);
      assert.deepEqual(await canaries(), []);
    });

    test("the admin of the hostile name logs in on the new port, from the trusted source, and has sudo", async () => {
      assert.equal((await bare.asAdmin("id -un")).trim(), "root", "sudo");
      const who = await bare.sshVia(bare.lab.forwarded[String(SSH_PORT)]!, v.admin.value, "id -un");
      assert.equal(who.exitCode, 0, who.stderr);
      assert.equal(who.stdout.trim(), v.admin.value);
      const rules = await bare.asAdmin("nft list ruleset");
      assert.match(rules, /10\.0\.2\.2/, "the trusted source, trimmed, in the firewall's rules");
    });

    test("Xen and dom0 booted with the hostile arguments, on a bridge of the hostile name holding the uplink", async () => {
      const xen = (await bare.asAdmin("xl info")).split("\n").find((l) => l.startsWith("xen_commandline"));
      assert.ok(xen?.includes(v.xenArgs.value), `Xen's command line carries xenArgs: ${xen}`);
      const cmdline = await bare.asAdmin("cat /proc/cmdline");
      assert.ok(
        cmdline.includes(v.dom0KernelArgs.value),
        `dom0's command line carries dom0KernelArgs: ${cmdline}`,
      );
      const ports = await bare.asAdmin(`ls /sys/class/net/${v.bridge.value}/brif`);
      assert.deepEqual(ports.trim().split("\n"), ["eth0"]);
      const xl = (await bare.asAdmin("cat /etc/xen/xl.conf")).split("\n");
      assert.ok(xl.includes(`vif.default.bridge="${v.bridge.value}"`), "xl's default bridge");
      const out = await stack.outputs();
      assert.equal(out.bridge, v.bridge.value);
    });

    test("the mail settings arrived as written", async () => {
      const dma = (await bare.asAdmin("cat /etc/dma/dma.conf")).split("\n");
      assert.ok(dma.includes(`MAILNAME ${v.mailName.value}`), "dma's mail name");
      const aliases = (await bare.asAdmin("cat /etc/aliases")).split("\n");
      assert.ok(aliases.includes(`${v.admin.value}: ${v.mailTo.value}`), "the admin's mail goes to mailTo");
    });

    test("a second up changes nothing, and no piece runs", async () => {
      const second = await stack.up();
      assert.deepEqual(resourceChanges(second), []);
      assert.deepEqual(await canaries(), []);
    });
  },
);

/** `v` as JSON whose every character beyond ASCII is a `\u` escape (JSON.parse gives `v` back). */
function asciiJson(v: unknown): string {
  return JSON.stringify(v).replace(
    /[\u0080-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
