/**
 * Dom0Host through the real Pulumi engine on the lab's bare server: plain Debian 12 booting through its own GRUB,
 * with what installimage leaves (a RAID 1 of two disks holding the LVM volume group vg0, made here before `up`),
 * turned into a hardened Xen dom0 by one `pulumi up`, which reboots it into Xen inside QEMU.
 *
 * Two source addresses: the machine's eth0 is on one QEMU user network, where every forwarded connection comes
 * from 10.0.2.2 (the trusted source), its eth1 on a second one, where they come from 10.0.3.2 (untrusted). Mail
 * leaves through dma to the lab's SMTP sink (10.0.2.102:25 → test/lab/smtpsink.ts).
 *
 * One boot, one Xen install (through the lab's apt proxy), one reboot; then a second `up` (no change), a refresh
 * that finds hand edits, a provoked lockout that the host rolls back by itself, and a guest of the example estate.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { createStack, resourceChanges, type PulumiStack } from "../engine/harness";
import { startBareServer, timed as timedIn, type BareServer } from "../lab/bare-server";
import { freePort, LAB_SMTP, LAB_NET, type Lab } from "../lab/lab";
import { httpGet as get } from "../support/http";
import { repoRoot } from "../support/repo";
import { slowTier } from "../support/tier";

// Slow tier until a whole run of this file has passed in CI's budget (its first full run is still to come).
slowTier(
  "Dom0Host's concerns are proven on every run by test/components/dom0-host.engine.test.ts (preview through the engine), test/remote/rollback.ssh.test.ts (rollback against real sshd and nftables) and test/resources/dom0-access.ssh.test.ts (the drop-in validated by the real sshd)",
);

const T = "pulumi-nodejs:dynamic/xen-estate:";
const SSH_PORT = 2222;

function missingTools(): string | undefined {
  if (process.env.XEN_ESTATE_LAB === "0") return "XEN_ESTATE_LAB=0";
  for (const tool of ["qemu-system-x86_64", "qemu-img", "ssh"])
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) return `${tool} is not installed`;
  return undefined;
}

describe("Dom0Host on the lab's bare server", { skip: missingTools(), timeout: 40 * 60_000 }, () => {
  let bare: BareServer;
  let lab: Lab;
  let stack: PulumiStack;
  const timings: Record<string, number> = {};
  const log = (l: string): void => console.log(`# ${l}`);
  const timed = <T>(name: string, f: () => Promise<T>): Promise<T> => timedIn(timings, log, name, f);
  const sshVia: BareServer["sshVia"] = (...a) => bare.sshVia(...a);
  const asAdmin = (command: string): Promise<string> => bare.asAdmin(command);

  before(async () => {
    bare = await timed("boot", () =>
      startBareServer({ sshPort: SSH_PORT, secondNic: { forwardPorts: [22, SSH_PORT, 80] }, log }),
    );
    lab = bare.lab;
    stack = await createStack({
      programDir: path.join(repoRoot(), "test", "engine", "fixtures", "dom0-host"),
      linkPackage: true,
      timeoutMs: 40 * 60_000,
      config: {
        host: { value: lab.host },
        port: { value: String(lab.port) },
        hostKey: { value: lab.hostKey },
        privateKey: { value: lab.privateKey, secret: true },
        adminKey: { value: bare.adminKey },
        aptProxy: { value: LAB_NET.aptProxy },
        sshPort: { value: String(SSH_PORT) },
        sshConnectPort: { value: String(lab.forwarded[String(SSH_PORT)]) },
        // Every connection forwarded to eth0 comes from QEMU's 10.0.2.2: the provider's and the test's own.
        trustedSources: { value: JSON.stringify(["10.0.2.2/32"]) },
        smtpHost: { value: LAB_SMTP.address },
      },
    });
  });

  after(async () => {
    log(`timings (s): ${JSON.stringify(timings)}`);
    await stack?.remove();
    await bare?.stop();
  });

  test("before up, SSH works from the second network too (so a later refusal is the firewall's)", async () => {
    const r = await sshVia(lab.forwarded2["22"]!, "root", "true");
    assert.equal(r.exitCode, 0, r.stderr);
  });

  test("up installs Xen, hardens the host and reboots it into Xen with the declared dom0 memory", async () => {
    const up = await timed("first up", () => stack.up());
    const ops = resourceChanges(up)
      .filter((s) => s.type.startsWith(T))
      .map((s) => `${s.type.slice(T.length)} ${s.op}`)
      .sort();
    assert.deepEqual(ops, [
      "Dom0Access create",
      "Dom0Firewall create",
      "Dom0Monitoring create",
      "Dom0Network create",
      "Dom0Packages create",
      "Dom0Reboot create",
      "Dom0XenBoot create",
    ]);
    const out = await stack.outputs();
    const reboot = out.lastReboot as { reasons: string[]; seconds: number };
    assert.ok(reboot.reasons.includes("the host does not run under Xen"), JSON.stringify(reboot));
    timings["reboot (in up)"] = reboot.seconds;
    const info = await asAdmin("xl info");
    assert.match(info, /^xen_major\s+: 4$/m);
    assert.match(info, /^xen_minor\s+: 17$/m);
    assert.match(info, /^xen_commandline\s+: .*dom0_mem=1024M,max:1024M/m);
    assert.match(await asAdmin("xl list 0 | awk 'NR == 2 {print $3}'"), /^10[12]\d\n$/);
  });

  test("xenbr0 carries the uplink, with the NIC's MAC, and holds the address", async () => {
    assert.match(await asAdmin("ls /sys/class/net/xenbr0/brif"), /^eth0$/m);
    assert.equal((await asAdmin("cat /sys/class/net/xenbr0/address")).trim(), "52:54:00:12:34:56");
    assert.match(await asAdmin("ip -4 -o addr show dev xenbr0"), /inet 10\.0\.2\.15\//);
    assert.equal(
      (await asAdmin("sysctl -n net.bridge.bridge-nf-call-iptables net.ipv4.ip_forward")).trim(),
      "1\n1",
    );
  });

  test("sshd answers only on the new port; the admin logs in with its key and root is refused", async () => {
    assert.match(await asAdmin("ss -Htln | awk '{print $4}'"), /:2222$/m);
    assert.doesNotMatch(await asAdmin("ss -Htln | awk '{print $4}'"), /:22$/m);
    assert.notEqual(
      (await lab.exec("true", { timeoutMs: 30_000 })).exitCode,
      0,
      "nothing answers on port 22",
    );
    const root = await sshVia(lab.forwarded[String(SSH_PORT)]!, "root", "true");
    assert.equal(root.exitCode, 255);
    assert.match(root.stderr, /Permission denied/);
    assert.equal((await sshVia(lab.forwarded[String(SSH_PORT)]!, "ops", "id -un")).stdout.trim(), "ops");
  });

  test("HTTP is open to everyone; SSH from the untrusted source is dropped while the trusted one gets in", async () => {
    await asAdmin(
      `mkdir -p /tmp/www && echo dom0-http-ok > /tmp/www/index.html && (busybox httpd -p 80 -h /tmp/www)`,
    );
    assert.equal(await get(lab.httpPort), "200 dom0-http-ok");
    assert.equal(await get(lab.forwarded2["80"]!), "200 dom0-http-ok");
    const untrusted = await sshVia(lab.forwarded2[String(SSH_PORT)]!, "ops", "true", 40_000);
    assert.notEqual(untrusted.exitCode, 0, "no login from 10.0.3.2");
    assert.doesNotMatch(untrusted.stdout, /./);
    assert.equal((await sshVia(lab.forwarded[String(SSH_PORT)]!, "ops", "true")).exitCode, 0);
    assert.match(
      await asAdmin("nft list table inet xen_estate"),
      /ip saddr 10\.0\.2\.2 tcp dport 2222 accept/,
    );
  });

  test("mdadm's test mail for the RAID reaches the sink, addressed to the operator", async () => {
    await asAdmin("mdadm --monitor --scan --oneshot --test");
    let mail = "";
    for (let i = 0; i < 60 && !/TestMessage/.test(mail); i++) {
      await new Promise((r) => setTimeout(r, 2000));
      mail = fs.readFileSync(bare.sinkFile, "utf8");
    }
    const messages = mail
      .trim()
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { to: string[]; message: string });
    const test = messages.find((m) => /TestMessage/.test(m.message));
    assert.ok(test, `no TestMessage in the sink: ${mail.slice(0, 500)}`);
    assert.deepEqual(test.to, ["ops@example.org"]);
    assert.match(test.message, /\/dev\/md/);
  });

  test("a second up changes nothing", async () => {
    const up = await timed("second up", () => stack.up());
    assert.deepEqual(resourceChanges(up), []);
  });

  test("refresh finds an edited sshd drop-in and a flushed firewall; up puts both back", async () => {
    await asAdmin(
      "echo 'PasswordAuthentication yes' >> /etc/ssh/sshd_config.d/00-xen-estate.conf && nft delete table inet xen_estate",
    );
    const refresh = await timed("refresh", () => stack.refresh());
    assert.equal(refresh.changeSummary?.update, 2, JSON.stringify(refresh.changeSummary));
    const up = await timed("repair up", () => stack.up());
    assert.deepEqual(
      resourceChanges(up)
        .map((s) => `${s.type.slice(T.length)} ${s.op}`)
        .sort(),
      ["Dom0Access update", "Dom0Firewall update"],
    );
    assert.doesNotMatch(
      await asAdmin("cat /etc/ssh/sshd_config.d/00-xen-estate.conf"),
      /PasswordAuthentication yes/,
    );
    assert.match(await asAdmin("nft list table inet xen_estate"), /tcp dport 2222/);
  });

  test("a port the provider cannot reach is a lockout the host rolls back by itself", async () => {
    const unreachable = await freePort();
    await stack.setConfig("sshPort", "2200");
    await stack.setConfig("sshConnectPort", String(unreachable));
    await stack.setConfig("confirmSeconds", "30");
    const up = await timed("lockout up", () => stack.up({ expectFailure: true }));
    assert.notEqual(up.code, 0);
    assert.match(up.stdout + up.stderr, /cut the SSH path.*restored the previous ones by itself after 30 s/);
    assert.match(await asAdmin("cat /etc/ssh/sshd_config.d/00-xen-estate.conf"), /^Port 2222$/m);
    assert.match(await asAdmin("ss -Htln | awk '{print $4}'"), /:2222$/m);
    await stack.setConfig("sshPort", String(SSH_PORT));
    await stack.setConfig("sshConnectPort", String(lab.forwarded[String(SSH_PORT)]));
    await stack.setConfig("confirmSeconds", "60");
  });

  test("a guest of the example estate runs on this host, taking the dom0's outputs", async () => {
    await stack.setConfig("guest", "true");
    const up = await timed("guest up", () => stack.up());
    const made = resourceChanges(up)
      .filter((s) => s.type.startsWith(T))
      .map((s) => `${s.type.slice(T.length)} ${s.op}`)
      .sort();
    assert.deepEqual(made, ["BridgedDomU create", "LvmVolume create"]);
    assert.match(await asAdmin("xl list"), /^web1\s/m);
    assert.match(await asAdmin("curl -fsS --max-time 10 http://10.0.2.50/"), /xen-estate-kit ok name=web1/);
    // installimage's RAID: the guest's volume lies on the md array (md0, or md127 when the initramfs named it).
    assert.match(await asAdmin("lvs --noheadings -o lv_name,devices vg0"), /web1-root\s+\/dev\/md\d+/);
  });
});
