/**
 * The Dom0Host concerns' pure planning: every bad input named in check, the lockout analysis, the rule set, the
 * rendered files for Debian and Ubuntu, and which changes need a reboot.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import {
  checkInputs,
  onLinkGateway,
  peerProblem,
  parseNetwork,
  planDiff,
  rebootReasons,
  relatimeFstab,
  ruleModel,
  verifyProblems,
  VERSION,
  xenCommandLine,
  UNKNOWN,
  type Network,
} from "../../provider";
import { parseProbe } from "../../provider/resources/dom0-reboot/plan";
import { fixtureKeys } from "../support/fixture-keys";
import { repoPath } from "../support/repo";

const connection = { host: "203.0.113.5", hostKey: fixtureKeys.hostFingerprint };
const credentials = { privateKey: fixtureKeys.clientPrivateKey };
const clientPub = fs.readFileSync(repoPath("test", "fixtures", "keys", "client_ed25519.pub"), "utf8").trim();
const common = { connection, credentials, xenEstateVersion: VERSION };

function failures(kind: string, inputs: Record<string, unknown>): string[] {
  return checkInputs(kind, { ...common, ...inputs }).failures.map((f) => `${f.property}: ${f.message}`);
}

function checked(kind: string, inputs: Record<string, unknown>): Record<string, unknown> {
  const r = checkInputs(kind, { ...common, ...inputs });
  assert.deepEqual(
    r.failures.map((f) => f.message),
    [],
  );
  return r.inputs!;
}

describe("bad input is refused in check, naming the property", () => {
  test("an admin user named root", () => {
    const f = failures("Dom0Access", { adminUser: "root", authorizedKeys: [clientPub] });
    assert.ok(
      f.some((m) => m.startsWith("adminUser: `adminUser` must not be root")),
      f.join("\n"),
    );
  });
  test("a key with options", () => {
    const f = failures("Dom0Access", {
      adminUser: "ops",
      authorizedKeys: [`command="/bin/true" ${clientPub}`],
    });
    assert.ok(
      f.some((m) => m.startsWith("authorizedKeys[0]:") && /options/.test(m)),
      f.join("\n"),
    );
  });
  test("admin keys that leave out the key the provider logs in with (root may not log in afterwards)", () => {
    const f = failures("Dom0Access", { adminUser: "ops", authorizedKeys: [fixtureKeys.hostPublicKey] });
    assert.ok(
      f.some((m) => m.startsWith("authorizedKeys:") && /public key of the connection's privateKey/.test(m)),
      f.join("\n"),
    );
  });
  test("an unparseable trusted source", () => {
    const f = failures("Dom0Firewall", { sshPort: 2222, trustedSources: ["198.51.100.0/24", "office"] });
    assert.deepEqual(
      f.map((m) => m.split(":")[0]),
      ["trustedSources[1]"],
    );
  });
  test("an empty trusted list, which nobody could log in from", () => {
    const f = failures("Dom0Firewall", { sshPort: 2222, trustedSources: [] });
    assert.ok(f[0]?.startsWith("trustedSources:"), f.join("\n"));
  });
  test("a port clash: sshd's port opened to everyone while SSH is limited", () => {
    const f = failures("Dom0Firewall", { sshPort: 443, trustedSources: ["198.51.100.7"] });
    assert.ok(
      f.some((m) => m.startsWith("openTcp:") && /sshd's port 443/.test(m)),
      f.join("\n"),
    );
  });
  test("a mirror that is not a URL", () => {
    const f = failures("Dom0Packages", {
      mirror: "deb.debian.org/debian; curl evil",
      packages: ["xen-system-amd64"],
    });
    assert.ok(
      f.some((m) => m.startsWith("mirror:")),
      f.join("\n"),
    );
  });
  test("a package name a shell would read", () => {
    const f = failures("Dom0Packages", { packages: ["xen-system-amd64", "vim && reboot"] });
    assert.deepEqual(
      f.map((m) => m.split(":")[0]),
      ["packages[1]"],
    );
  });
  test("a dom0 memory below what dom0 needs, and Xen arguments that set it behind dom0MemMiB's back", () => {
    const f = failures("Dom0XenBoot", { dom0MemMiB: 128, xenArgs: "dom0_mem=8G" });
    assert.deepEqual(f.map((m) => m.split(":")[0]).sort(), ["dom0MemMiB", "xenArgs"]);
  });
  test("a MAC that is not the NIC's kind of address, and an uplink name a shell would read", () => {
    const f = failures("Dom0Network", { uplink: "eth0;reboot", mac: "01:00:5e:00:00:01" });
    assert.deepEqual(f.map((m) => m.split(":")[0]).sort(), ["mac", "uplink"]);
  });
  test("an address with more after its prefix (a second `/`, a new line) is refused, IPv4 and IPv6 alike", () => {
    const bad = [
      ["203.0.113.5/32/$(touch /tmp/x)", "2001:db8:1::2/64/$(touch /tmp/x)"],
      ["203.0.113.5/32/\nup reboot", "2001:db8:1::2/64/\n\tup reboot"],
      ["203.0.113.5//32", "2001:db8:1::2/64/"],
    ];
    for (const [v4, v6] of bad) {
      const f = failures("Dom0Network", {
        uplink: "eth0",
        mac: "52:54:00:12:34:56",
        address: { address: v4, gateway: "203.0.113.1" },
        ipv6: { address: v6, gateway: "fe80::1" },
      });
      assert.deepEqual(
        f.map((m) => m.split(":")[0]).sort(),
        ["address.address", "ipv6.address"],
        f.join("\n"),
      );
    }
  });
  test("an unsupported release", () => {
    const f = failures("Dom0Network", {
      distribution: "ubuntu",
      release: "jammy",
      uplink: "eth0",
      mac: "52:54:00:12:34:56",
    });
    assert.ok(
      f.some((m) => m.startsWith("release:")),
      f.join("\n"),
    );
  });
  test("paths with `..` parts are refused like everywhere else: a SMART disk and the reboot's network file", () => {
    const m = failures("Dom0Monitoring", {
      mailTo: "ops@example.org",
      relay: { host: "mail.example.org" },
      smartDisks: ["/dev/../etc/shadow"],
    });
    assert.deepEqual(
      m.map((x) => x.split(":")[0]),
      ["smartDisks[0].device"],
    );
    assert.match(m[0]!, /without `\.` or `\.\.` parts/);
    const r = failures("Dom0Reboot", {
      triggers: {},
      uplink: "eth0",
      networkFile: "/etc/../root/.ssh/authorized_keys",
    });
    assert.deepEqual(
      r.map((x) => x.split(":")[0]),
      ["networkFile"],
    );
  });
  test("a mail address that is not one", () => {
    const f = failures("Dom0Monitoring", { mailTo: "ops", relay: { host: "mail.example.org" } });
    assert.deepEqual(
      f.map((m) => m.split(":")[0]),
      ["mailTo"],
    );
  });
});

describe("the firewall's rule set", () => {
  const nets = (...s: string[]): Network[] => s.map((x) => parseNetwork(x) as Network);
  test("SSH from anywhere needs both 0.0.0.0/0 and ::/0", () => {
    assert.equal(
      ruleModel({ sshPort: 22, trustedSources: nets("0.0.0.0/0", "::/0"), openTcp: [80, 443], openUdp: [] })
        .sshFromAnywhere,
      true,
    );
    assert.equal(
      ruleModel({ sshPort: 22, trustedSources: nets("0.0.0.0/0"), openTcp: [], openUdp: [] }).sshFromAnywhere,
      false,
    );
  });
  test("refuses rules that leave out the address the provider connects from, and accepts ones that hold it", () => {
    const p = {
      sshPort: 2222,
      trustedSources: nets("198.51.100.0/24", "2001:db8::/32"),
      openTcp: [80, 443],
      openUdp: [],
    };
    assert.match(peerProblem(p, "203.0.113.9") ?? "", /203\.0\.113\.9.*cut xen-estate's SSH path/);
    assert.equal(peerProblem(p, "198.51.100.77"), undefined);
    assert.equal(peerProblem(p, "2001:db8:5::1"), undefined);
  });
  test("the rendered rules are the same whatever order the sources were given in", () => {
    const a = checked("Dom0Firewall", { sshPort: 2222, trustedSources: ["198.51.100.0/24", "203.0.113.7"] });
    const b = checked("Dom0Firewall", {
      sshPort: 2222,
      trustedSources: ["203.0.113.7/32", "198.51.100.0/24"],
    });
    assert.deepEqual(a.files, b.files);
    assert.equal(a.loaded, b.loaded);
  });
});

describe("rendering per system", () => {
  test("Debian gets ifupdown and a sources.list; Ubuntu gets netplan and deb822 sources", () => {
    const deb = checked("Dom0Network", { uplink: "eth0", mac: "52:54:00:12:34:56" });
    assert.deepEqual(Object.keys(deb.files as object).sort(), [
      "/etc/modules-load.d/xen-estate.conf",
      "/etc/network/interfaces",
      "/etc/sysctl.d/90-xen-estate.conf",
    ]);
    const ubu = checked("Dom0Network", {
      distribution: "ubuntu",
      uplink: "enp0s31f6",
      mac: "90:1b:0e:12:34:56",
      address: { address: "203.0.113.5/32", gateway: "203.0.113.1" },
    });
    const netplan = (ubu.files as Record<string, string>)["/etc/netplan/01-netcfg.yaml"] ?? "";
    assert.match(netplan, /macaddress: "90:1b:0e:12:34:56"[\s\S]*on-link: true/);
    const pk = checked("Dom0Packages", { distribution: "ubuntu", packages: ["xen-system-amd64"] });
    assert.deepEqual(Object.keys(pk.files as object).sort(), [
      "/etc/apt/apt.conf.d/90xen-estate",
      "/etc/apt/sources.list.d/ubuntu.sources",
    ]);
  });
  test("Ubuntu's socket-activated sshd is restarted through ssh.socket after daemon-reload", () => {
    const { sshdActivateScript } = require("../../provider") as typeof import("../../provider");
    assert.match(
      sshdActivateScript({ sshPort: 2222, socketActivated: true }),
      /daemon-reload\n\s*systemctl restart ssh\.socket/,
    );
    assert.doesNotMatch(sshdActivateScript({ sshPort: 2222, socketActivated: false }), /ssh\.socket/);
  });
  test("a /32 reaches its gateway on the link; a /24 holding the gateway uses a plain gateway line", () => {
    assert.equal(onLinkGateway("203.0.113.5/32", "203.0.113.1"), true);
    assert.equal(onLinkGateway("10.0.2.15/24", "10.0.2.2"), false);
    assert.equal(onLinkGateway("10.0.2.15/24", "10.0.3.1"), true);
  });
  test("Xen's command line fixes dom0's memory with max: and names its vCPUs", () => {
    assert.equal(
      xenCommandLine({
        dom0MemMiB: 2048,
        dom0Vcpus: 2,
        xenArgs: "console=com1",
        dom0KernelArgs: null,
        bridge: "xenbr0",
        bootloaderRestrict: true,
        stopSeconds: 300,
      }),
      "dom0_mem=2048M,max:2048M dom0_max_vcpus=2 console=com1",
    );
  });
  test("an fstab asking for strictatime on / gets relatime; one without is left alone", () => {
    assert.equal(
      relatimeFstab("UUID=x / ext4 defaults,strictatime 0 1\n"),
      "UUID=x\t/\text4\tdefaults,relatime\t0\t1\n",
    );
    assert.equal(relatimeFstab("UUID=x / ext4 defaults 0 1\n"), null);
  });
});

describe("changes and reboots", () => {
  test("a changed dom0 memory is an update that preview says takes effect at the next boot, never a replacement", () => {
    const olds = { ...checked("Dom0XenBoot", { dom0MemMiB: 1024 }), bootDigest: "x", commandLine: "y" };
    const news = checked("Dom0XenBoot", { dom0MemMiB: 2048 });
    const plan = planDiff("Dom0XenBoot", olds, news);
    assert.deepEqual(plan.replaces, []);
    assert.deepEqual(plan.classes.reboot, ["dom0MemMiB"]);
  });
  const expect = {
    xenVersion: "4.17",
    dom0MemMiB: 1024,
    bridge: "xenbr0",
    uplink: "eth0",
    networkFile: "/etc/network/interfaces",
  };
  const ready = {
    bootId: "b",
    bootTime: 1000,
    underXen: true,
    xenVersion: "4.17.5",
    xenCommandLine: "placeholder dom0_mem=1024M,max:1024M dom0_max_vcpus=2",
    dom0MemMiB: 1024,
    kernelRunning: "6.1.0-28-amd64",
    kernelNewest: "6.1.0-28-amd64",
    xenMtime: 900,
    networkMtime: 950,
    bridgePorts: ["eth0", "vif1.0"],
  };
  test("a host that runs what is declared needs no reboot", () => {
    assert.deepEqual(rebootReasons(ready, expect), []);
    assert.deepEqual(verifyProblems(ready, expect), []);
  });
  test("each difference is a reason, in words", () => {
    const r = rebootReasons(
      {
        ...ready,
        underXen: false,
        xenVersion: null,
        xenCommandLine: null,
        kernelNewest: "6.1.0-29-amd64",
        bridgePorts: null,
        networkMtime: 2000,
      },
      expect,
    );
    assert.deepEqual(r, [
      "the host does not run under Xen",
      "kernel 6.1.0-29-amd64 is installed, 6.1.0-28-amd64 runs",
      "there is no bridge xenbr0",
      "the network configuration changed after this boot",
    ]);
    assert.deepEqual(rebootReasons({ ...ready, xenCommandLine: "dom0_mem=512M,max:512M" }, expect), [
      "Xen's command line lacks dom0_mem=1024M,max:1024M",
    ]);
  });
  test("a host without Xen but with Xen's image installed is read as not running Xen", () => {
    // The probe's lines on the bare server after Dom0Packages (seen in the lab: `xenmtime` was read as Xen's version).
    const p = parseProbe(
      [
        "bootid b",
        "boottime 1000",
        "kernel 6.1.0-28-amd64",
        "newestkernel 6.1.0-28-amd64",
        "xenmtime 1500",
        "netmtime 1600",
        "bridge -",
      ].join("\n"),
    );
    assert.equal(p.underXen, false);
    assert.equal(p.xenVersion, null);
    assert.deepEqual(rebootReasons(p, expect), [
      "the host does not run under Xen",
      "Xen was installed or updated after this boot",
      "there is no bridge xenbr0",
      "the network configuration changed after this boot",
    ]);
  });
  test("after a boot dom0's memory must be the declared one", () => {
    assert.deepEqual(verifyProblems({ ...ready, dom0MemMiB: 3900 }, expect), ["dom0 has 3900 MiB, not 1024"]);
  });
});

describe("inputs not known yet (preview)", () => {
  test("one trusted source or port not known yet leaves the rules unknown instead of dropping it", () => {
    const i = checked("Dom0Firewall", { sshPort: 2222, trustedSources: ["198.51.100.0/24", UNKNOWN] });
    assert.equal(i.trustedSources, UNKNOWN);
    assert.equal(i.loaded, UNKNOWN);
    const p = checked("Dom0Firewall", { openTcp: [80, UNKNOWN] });
    assert.equal(p.openTcp, UNKNOWN);
    assert.equal(p.loaded, UNKNOWN);
  });
  test("a mail user not known yet is kept, so the aliases are not shown without it", () => {
    const i = checked("Dom0Monitoring", {
      mailTo: "ops@example.org",
      relay: { host: "mail.example.org" },
      users: ["ops", UNKNOWN],
    });
    assert.deepEqual(i.users, ["root", "ops", UNKNOWN]);
  });
});

describe("one bad input, one failure", () => {
  test("a bad distribution is refused by name, without refusing the mirrors it would have defaulted", () => {
    assert.deepEqual(
      failures("Dom0Packages", { distribution: "arch", packages: ["xen-system-amd64"] }).map(
        (m) => m.split(":")[0],
      ),
      ["distribution"],
    );
  });
});
