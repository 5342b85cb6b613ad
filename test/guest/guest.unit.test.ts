/**
 * BridgedDomU and NatDomU planning: validation, the rendered files, and what each change does.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  hostContext,
  checkInputs,
  claimAddresses,
  GuestInputs,
  planDiff,
  VERSION,
  derivedMac,
  UNKNOWN,
  installScript,
  DebootstrapProgress,
  renderGuestConfig,
  settingsScript,
  configPath,
  joinConnection,
  Logger,
  recordedInstall,
  secretMarker,
  secretSha,
  setLogSink,
  type RemoteHost,
} from "../../provider";
import { planNote } from "../../provider/framework/plan";
import { waitForNetwork } from "../../provider/guest/domain";
import { fixtureKeys } from "../support/fixture-keys";
import { innerScripts, shellSplices } from "../support/quoting";
import { RecordingHost } from "../support/recording-host";
import { fakeHost } from "../support/fake-host";
import { deleteGuest } from "../../provider/guest/lifecycle";

const hostKey = fixtureKeys.hostFingerprint;

const common = {
  connection: { host: "dom0", hostKey },
  xenEstateVersion: VERSION,
  name: "web1",
  memoryMiB: 256,
  boot: {
    kernel: "/var/lib/xen-estate/kits/vmlinuz",
    ramdisk: "/var/lib/xen-estate/kits/initrd.gz",
    cmdline: "console=hvc0",
  },
  disks: [{ path: "/dev/vg0/web1-root", vdev: "xvda" }],
};
const bridged = { ...common, ip: "203.0.113.10", mac: "00:50:56:00:12:34" };
const nat = { ...common, name: "app1", ip: "10.0.0.5" };

function ok(kind: string, raw: Record<string, unknown>): GuestInputs {
  const { inputs, failures } = checkInputs(kind, raw);
  assert.deepEqual(
    failures.map((f) => f.message),
    [],
  );
  return inputs as unknown as GuestInputs;
}

function failing(kind: string, raw: Record<string, unknown>): string[] {
  return checkInputs(kind, raw).failures.map((f) => f.property);
}

describe("guest checks", () => {
  test("fill defaults: pvh, 1 vcpu, maxmem = memory, autostart, running, restart on reboot and crash", () => {
    const g = ok("BridgedDomU", bridged);
    assert.deepEqual(
      [
        g.type,
        g.vcpus,
        g.maxVcpus,
        g.maxMemoryMiB,
        g.autostart,
        g.running,
        g.onPoweroff,
        g.onReboot,
        g.onCrash,
      ],
      ["pvh", 1, 1, 256, true, true, "destroy", "restart", "restart"],
    );
    assert.deepEqual(g.vifs, [
      { mac: "00:50:56:00:12:34", bridge: "xenbr0", ip: "203.0.113.10", script: null },
    ]);
  });

  const bad: [string, string, Record<string, unknown>, string[]][] = [
    ["a name with a space", "BridgedDomU", { ...bridged, name: "web 1" }, ["name"]],
    ["memory below the minimum", "BridgedDomU", { ...bridged, memoryMiB: 32 }, ["memoryMiB"]],
    ["maxmem below memory", "BridgedDomU", { ...bridged, maxMemoryMiB: 128 }, ["maxMemoryMiB"]],
    ["a multicast MAC", "BridgedDomU", { ...bridged, mac: "01:00:5e:00:00:01" }, ["mac"]],
    ["a malformed MAC", "BridgedDomU", { ...bridged, mac: "00:50:56:00:12" }, ["mac"]],
    ["a missing MAC on a bridged guest", "BridgedDomU", { ...bridged, mac: undefined }, ["mac"]],
    ["a malformed IP", "BridgedDomU", { ...bridged, ip: "203.0.113.300" }, ["ip"]],
    [
      "a bad vdev",
      "BridgedDomU",
      { ...bridged, disks: [{ path: "/dev/vg0/x", vdev: "sda" }] },
      ["disks[0].vdev"],
    ],
    [
      "the same vdev twice",
      "BridgedDomU",
      {
        ...bridged,
        disks: [
          { path: "/dev/vg0/x", vdev: "xvda" },
          { path: "/dev/vg0/y", vdev: "xvda" },
        ],
      },
      ["disks[1].vdev"],
    ],
    [
      "a disk outside /dev",
      "BridgedDomU",
      { ...bridged, disks: [{ path: "/tmp/disk.img", vdev: "xvda" }] },
      ["disks[0].path"],
    ],
    ["a NAT address outside its network", "NatDomU", { ...nat, ip: "10.0.1.5" }, ["ip"]],
    ["the NAT gateway as a guest address", "NatDomU", { ...nat, ip: "10.0.0.1" }, ["ip"]],
    ["the broadcast address", "NatDomU", { ...nat, ip: "10.0.0.255" }, ["ip"]],
    ["a network with host bits", "NatDomU", { ...nat, network: "10.0.0.1/24" }, ["network"]],
    [
      "install without a gateway on a bridged guest",
      "BridgedDomU",
      { ...bridged, install: { image: "/var/lib/x.tar" } },
      ["gateway"],
    ],
  ];
  for (const [what, kind, raw, props] of bad) {
    test(`reject ${what}`, () => assert.deepEqual(failing(kind, raw), props));
  }

  test("a NAT guest without a MAC gets a stable one in Xen's range", () => {
    const a = ok("NatDomU", nat).vifs[0]!.mac;
    assert.equal(a, ok("NatDomU", nat).vifs[0]!.mac);
    assert.equal(a, derivedMac("nat/app1"));
    assert.match(a, /^00:16:3e:[0-7][0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}$/);
  });

  test("the derived MAC does not depend on how the dom0 is reached, and an existing guest keeps the MAC it has", () => {
    const a = ok("NatDomU", nat).vifs[0]!.mac;
    const other = ok("NatDomU", { ...nat, connection: { ...nat.connection, host: "dom0.example.org" } });
    assert.equal(other.vifs[0]!.mac, a);
    const legacy = {
      ...ok("NatDomU", nat),
      vifs: [{ ...ok("NatDomU", nat).vifs[0]!, mac: derivedMac("dom0/app1") }],
    };
    const { inputs } = checkInputs("NatDomU", nat, legacy);
    assert.equal((inputs as unknown as GuestInputs).vifs[0]!.mac, derivedMac("dom0/app1"));
  });
});

describe("rendered files", () => {
  test("a bridged guest owns its xl config only, with the provider's MAC on the bridge", () => {
    const g = ok("BridgedDomU", bridged);
    assert.deepEqual(Object.keys(g.files), ["/etc/xen/web1.cfg"]);
    assert.match(
      g.files["/etc/xen/web1.cfg"]!,
      /^vif = \[\n {4}"mac=00:50:56:00:12:34,bridge=xenbr0,ip=203\.0\.113\.10"\n\]/m,
    );
    assert.match(
      g.files["/etc/xen/web1.cfg"]!,
      /^disk = \[\n {4}"format=raw, vdev=xvda, access=rw, target=\/dev\/vg0\/web1-root"\n\]/m,
    );
  });

  test("a NAT guest also owns the NAT script and settings, and its config names its network", () => {
    const g = ok("NatDomU", nat);
    assert.deepEqual(Object.keys(g.files).sort(), [
      "/etc/xen/app1.cfg",
      "/etc/xen/scripts/vif-xen-estate-nat",
      "/etc/xen/xen-estate-nat.conf",
    ]);
    assert.match(
      g.files["/etc/xen/xen-estate-nat.conf"]!,
      /^XE_NAT_NETWORK=10\.0\.0\.0\/24\nXE_NAT_GATEWAY=10\.0\.0\.1$/m,
    );
    assert.match(g.files["/etc/xen/app1.cfg"]!, /^# xen-estate-nat-network 10\.0\.0\.0\/24$/m);
    assert.match(g.files["/etc/xen/app1.cfg"]!, /script=vif-xen-estate-nat/);
    const code = g.files["/etc/xen/scripts/vif-xen-estate-nat"]!.split("\n").filter(
      (l) => !l.trimStart().startsWith("#"),
    );
    assert.doesNotMatch(code.join("\n"), /ifconfig|\+ ?127/);
  });

  test("a guest far above .128 gets the same gateway as every other guest", () => {
    const high = ok("NatDomU", { ...nat, ip: "10.0.0.200" });
    assert.equal(high.guestNetwork.gateway, "10.0.0.1");
  });
});

describe("changes", () => {
  const olds = { ...ok("BridgedDomU", bridged), domid: 3 };

  test("memory and vcpus apply live", () => {
    const news = ok("BridgedDomU", { ...bridged, memoryMiB: 384, maxMemoryMiB: 512 });
    const c = planDiff("BridgedDomU", { ...olds, maxMemoryMiB: 512 }, { ...news }).classes;
    assert.deepEqual(c, { live: ["memoryMiB"], restart: [], settings: [], config: [] });
    assert.deepEqual(planDiff("BridgedDomU", { ...olds, maxMemoryMiB: 512 }, { ...news }).replaces, []);
  });

  test("a new MAC restarts the guest; a new name replaces it, deleting the old one first", () => {
    assert.deepEqual(
      planDiff("BridgedDomU", { ...olds }, { ...ok("BridgedDomU", { ...bridged, mac: "00:50:56:00:12:35" }) })
        .classes.restart,
      ["vifs"],
    );
    const d = planDiff("BridgedDomU", { ...olds }, { ...ok("BridgedDomU", { ...bridged, name: "web2" }) });
    assert.deepEqual([d.replaces, d.deleteBeforeReplace], [["name"], true]);
  });

  test("autostart is config only, and the diff lists the changed file", () => {
    const news = ok("BridgedDomU", { ...bridged, onCrash: "preserve" });
    assert.deepEqual(planDiff("BridgedDomU", { ...olds }, { ...news }).classes.config, ["onCrash"]);
    assert.ok(planDiff("BridgedDomU", { ...olds }, { ...news }).changed.includes("files"));
  });
});

describe("addresses used twice in one program", () => {
  test("the second guest with a MAC already claimed on the same host is refused, naming the first", () => {
    claimAddresses("guest-a", "dom9", [{ kind: "MAC", value: "00:50:56:aa:bb:cc" }]);
    assert.throws(
      () => claimAddresses("guest-b", "dom9", [{ kind: "MAC", value: "00:50:56:AA:BB:CC" }]),
      /guest-b: MAC 00:50:56:AA:BB:CC on dom9 is already used by guest-a/,
    );
    assert.doesNotThrow(() =>
      claimAddresses("guest-c", "dom8", [{ kind: "MAC", value: "00:50:56:aa:bb:cc" }]),
    );
  });
});

describe("preview with values not known yet", () => {
  test("a disk path that is still unknown passes check and leaves the rendered files unknown", () => {
    const g = ok("BridgedDomU", { ...bridged, disks: [{ path: UNKNOWN, vdev: "xvda" }] });
    assert.equal(g.disks[0]!.path, UNKNOWN);
    assert.equal(g.files, UNKNOWN);
  });

  test("an unknown size passes the volume's check untouched, and a known bad value still fails", () => {
    assert.deepEqual(checkInputs("LvmVolume", { ...common, name: "v", size: UNKNOWN }).failures, []);
    assert.equal(
      checkInputs("LvmVolume", { ...common, name: "v", size: "huge" }).failures[0]?.property,
      "size",
    );
  });
});

describe("unattended install", () => {
  const key =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@example";
  const debootstrap = { debootstrap: { mirror: "http://deb.example.org/debian" } };

  const bad: [string, Record<string, unknown>, string[]][] = [
    ["both an image and debootstrap", { image: "/srv/r.tar", ...debootstrap }, ["install"]],
    ["neither an image nor debootstrap", { nameservers: ["192.0.2.1"] }, ["install"]],
    ["a relative image path", { image: "images/r.tar" }, ["install.image"]],
    [
      "a mirror that is not an http URL",
      { debootstrap: { mirror: "ftp://x/debian" } },
      ["install.debootstrap.mirror"],
    ],
    [
      "a mirror with a shell metacharacter",
      { debootstrap: { mirror: "http://x/debian;reboot" } },
      ["install.debootstrap.mirror"],
    ],
    [
      "a suite that is not a codename",
      { debootstrap: { suite: "Bookworm 12" } },
      ["install.debootstrap.suite"],
    ],
    [
      "a package name with a space",
      { debootstrap: { include: ["vim", "curl wget"] } },
      ["install.debootstrap.include[1]"],
    ],
    ["an unknown variant", { debootstrap: { variant: "tiny" } }, ["install.debootstrap.variant"]],
    ["a proxy that is not a URL", { debootstrap: { proxy: "10.0.0.1:3128" } }, ["install.debootstrap.proxy"]],
    [
      "a private key given as an authorized key",
      { image: "/srv/r.tar", authorizedKeys: ["-----BEGIN OPENSSH PRIVATE KEY-----"] },
      ["install.authorizedKeys[0]"],
    ],
    [
      "an authorized key with options in front",
      { image: "/srv/r.tar", authorizedKeys: [`command="sh" ${key}`] },
      ["install.authorizedKeys[0]"],
    ],
    [
      "a nameserver that is not IPv4",
      { image: "/srv/r.tar", nameservers: ["dns.example"] },
      ["install.nameservers[0]"],
    ],
  ];
  for (const [what, install, props] of bad) {
    test(`reject ${what}`, () => assert.deepEqual(failing("NatDomU", { ...nat, install }), props));
  }

  test("debootstrap defaults to Debian 12 minbase from deb.debian.org, without a proxy", () => {
    const g = ok("NatDomU", { ...nat, install: { debootstrap: {} } });
    assert.deepEqual(g.install?.debootstrap, {
      suite: "bookworm",
      mirror: "http://deb.debian.org/debian",
      mirrorUser: null,
      mirrorPassword: null,
      include: [],
      variant: "minbase",
      proxy: null,
      proxyUser: null,
      proxyPassword: null,
    });
    assert.equal(g.install?.image, null);
  });

  test("mirror credentials must decode to what wget's and apt's line-based files can hold, and are never shown", () => {
    for (const mirror of [
      "http://u:%E0%A4%A@deb.example.org/debian", // not a valid escape (decoding threw: the check failed unnamed)
      "http://u:p%0Ahttp_proxy%20=%20http://evil@deb.example.org/debian", // a newline: a second wgetrc line
      "http://u:p%20machine%20evil@deb.example.org/debian", // a blank: more words in apt's auth.conf
      "http://u%00:p@deb.example.org/debian",
    ]) {
      const { failures } = checkInputs("NatDomU", { ...nat, install: { debootstrap: { mirror } } });
      assert.deepEqual(
        failures.map((f) => f.property),
        ["install.debootstrap.mirror"],
        mirror,
      );
      assert.match(failures[0]!.message, /\/\/\[secret\]@deb\.example\.org/);
    }
    // A URL malformed before its userinfo (found by fast-check): the password still is not shown.
    const odd = checkInputs("NatDomU", {
      ...nat,
      install: { debootstrap: { mirror: "http:/$(x)/u:hunter2secret@deb.example.org/d" } },
    }).failures;
    assert.equal(odd[0]?.property, "install.debootstrap.mirror");
    assert.doesNotMatch(odd[0]?.message ?? "", /hunter2/);
    const long = `http://u:hunter2secret@deb.example.org/${"d".repeat(3000)}`;
    const { failures } = checkInputs("NatDomU", { ...nat, install: { debootstrap: { proxy: long } } });
    assert.deepEqual(
      failures.map((f) => f.property),
      ["install.debootstrap.proxy"],
    );
    assert.doesNotMatch(failures[0]!.message, /hunter2/, "an overlong URL's password is not echoed either");
  });

  test("waiting for the network hands the address to the probe's shell as an argument, never as its code", async () => {
    const g = ok("NatDomU", { ...nat, waitForNetwork: { port: 22 } });
    const ip = `10.0.0.5$(touch /tmp/xe-x)'`;
    const host = new RecordingHost(joinConnection(g.connection, undefined), new Logger(""), {
      fresh: false,
      running: true,
      current: {},
    });
    const ctx = { ...hostContext(host as unknown as RemoteHost), log: new Logger("") };
    setLogSink(() => {});
    await waitForNetwork(ctx, { ...g, vifs: [{ ...g.vifs[0]!, ip }] });
    setLogSink(undefined);
    const script = host.recorded[0]!.text;
    assert.deepEqual(shellSplices(script, ip), []);
    for (const inner of innerScripts(script)) assert.ok(!inner.includes("xe-x"), inner);
    assert.equal(spawnSync("bash", ["-n"], { input: script }).status, 0);
  });

  test("the guest's disk is unmounted before its lock is released, so the next install of it never finds it mounted", () => {
    for (const install of [{ debootstrap: {} }, { image: "/srv/images/rootfs.tar.gz" }]) {
      const script = installScript(ok("NatDomU", { ...nat, install }));
      const unmount = script.lastIndexOf(`umount -- "$mnt"`);
      const release = script.lastIndexOf("exec 7>&-");
      assert.ok(
        unmount > 0 && release > unmount,
        `umount at ${unmount}, the disk lock released at ${release}`,
      );
    }
  });

  test("an empty proxy is no proxy (as an empty value is absent everywhere), not a check that silently fails", () => {
    const g = ok("NatDomU", { ...nat, install: { debootstrap: { proxy: "" } } });
    assert.equal(g.install?.debootstrap?.proxy, null);
    assert.ok(installScript(g).includes("debootstrap --arch=amd64"));
  });

  test("the install script hands every value to the shell quoted, and parses", () => {
    const hostile = `${key.replace(" admin@example", "")} admin's key $(reboot)`;
    const g = ok("NatDomU", {
      ...nat,
      install: {
        debootstrap: { mirror: "http://deb.example.org/~me/debian", include: ["vim", "g++"] },
        authorizedKeys: [hostile],
      },
    });
    const script = installScript(g);
    assert.match(
      script,
      /--include=systemd-sysv,udev,kmod,ifupdown,iproute2,iputils-ping,openssh-server,vim,g\+\+ bookworm "\$mnt" 'http:\/\/deb\.example\.org\/~me\/debian' >&2/,
    );
    assert.ok(
      script.includes(`printf '%s' 'ssh-ed25519 AAAA`),
      "the key is written by printf from a quoted string",
    );
    assert.ok(script.includes(`admin'\\''s key $(reboot)\n' | xe_put 600 /root/.ssh/authorized_keys`));
    const parsed = spawnSync("bash", ["-n"], { input: script, encoding: "utf8" });
    assert.equal(parsed.status, 0, parsed.stderr);
  });

  test("a guest booting the dom0's kernel gets that kernel's Xen front-end modules; a bootloader guest its own kernel and GRUB menu", () => {
    const direct = installScript(
      ok("NatDomU", {
        ...nat,
        boot: { kernel: "/boot/vmlinuz-6.1.0-40-amd64", ramdisk: "/boot/initrd.img-6.1.0-40-amd64" },
        install: debootstrap,
      }),
    );
    assert.match(direct, /find \/lib\/modules\/6\.1\.0-40-amd64 -name 'xen-\*front\.ko\*'/);
    assert.doesNotMatch(direct, /linux-image-amd64|grub\.cfg/);
    const grub = installScript(
      ok("NatDomU", { ...nat, boot: { bootloader: "pvgrub2" }, install: debootstrap }),
    );
    assert.match(grub, /openssh-server,linux-image-amd64 /);
    assert.match(grub, /boot\/grub\/grub\.cfg/);
    assert.doesNotMatch(grub, /lib\/modules/);
  });

  test("pvgrub2 boots the GRUB image that matches the guest type", () => {
    const cfg = (type: string): string =>
      renderGuestConfig(ok("NatDomU", { ...nat, type, boot: { bootloader: "pvgrub2" } }));
    assert.match(cfg("pvh"), /kernel = "\/usr\/lib\/grub-xen\/grub-i386-xen_pvh\.bin"/);
    assert.match(cfg("pv"), /kernel = "\/usr\/lib\/grub-xen\/grub-x86_64-xen\.bin"/);
  });

  test("debootstrap's output becomes progress with counts, then percent once the package count is known", () => {
    const p = new DebootstrapProgress();
    assert.equal(p.line("I: Keyring file not available"), null);
    assert.match(p.line("I: Retrieving libc6 2.36-9")!, /^debootstrap: downloading 1 packages, \d+ s$/);
    p.line("I: Retrieving bash 5.2");
    p.line("I: Retrieving dpkg 1.21");
    p.line("I: Retrieving base-files 12.4");
    assert.match(p.line("I: Unpacking libc6...")!, /^debootstrap: unpacking 1\/4 \(25%\), \d+ s$/);
    assert.match(p.line("I: Configuring libc6...")!, /configuring 1\/4 \(25%\)/);
    assert.match(p.line("I: Configuring bash...")!, /configuring 2\/4 \(50%\)/);
    assert.match(p.line("I: Base system installed successfully.")!, /finished/);
  });
});

describe("preview with whole objects not known yet", () => {
  test("an unknown boot, disks list, install or connection passes check and plans an update, not a replacement", () => {
    const olds = { ...ok("NatDomU", nat), domid: 1, sshHostKey: null };
    for (const over of [
      { boot: UNKNOWN },
      { disks: UNKNOWN },
      { install: UNKNOWN },
      { connection: UNKNOWN },
      { connection: { host: UNKNOWN, hostKey } },
      { waitForNetwork: UNKNOWN },
    ]) {
      const { inputs, failures } = checkInputs("NatDomU", { ...nat, ...over });
      assert.deepEqual(failures, [], JSON.stringify(over));
      const d = planDiff("NatDomU", olds, inputs!);
      assert.deepEqual([d.changes, d.replaces], [true, []], JSON.stringify(over));
    }
  });
});

describe("values of the wrong type", () => {
  test("check never throws: an object, a list, NaN or null where a string or number belongs is a failure naming it", () => {
    const cases: [string, Record<string, unknown>, string][] = [
      ["NatDomU", { ...nat, name: { toString: null } }, "name"],
      ["NatDomU", { ...nat, name: Object.create(null) as object, mac: undefined }, "name"],
      ["BridgedDomU", { ...bridged, memoryMiB: Number.NaN }, "memoryMiB"],
      ["BridgedDomU", { ...bridged, ip: ["203.0.113.10"] }, "ip"],
      ["BridgedDomU", { ...bridged, disks: [{ path: 7, vdev: "xvda" }] }, "disks[0].path"],
      ["BridgedDomU", { ...bridged, boot: "pvgrub2" }, "boot"],
      ["NatDomU", { ...nat, vcpus: "2 cores" }, "vcpus"],
    ];
    for (const [kind, raw, property] of cases) {
      const props = failing(kind, raw);
      assert.ok(props.includes(property), `${kind} ${property}: ${JSON.stringify(props)}`);
    }
  });
});

describe("installed settings", () => {
  const installed = { ...nat, install: { image: "/srv/images/root.tar.gz", nameservers: ["185.12.64.1"] } };

  test("a new resolver or address after the install rewrites the guest's settings and restarts it", () => {
    const olds = { ...ok("NatDomU", installed), domid: 1, sshHostKey: null } as unknown as Record<
      string,
      unknown
    >;
    const resolver = planDiff("NatDomU", olds, {
      ...ok("NatDomU", { ...installed, install: { ...installed.install, nameservers: ["9.9.9.9"] } }),
    });
    assert.deepEqual(resolver.classes.settings, ["guestSettings"]);
    assert.deepEqual(resolver.replaces, []);
    const address = planDiff("NatDomU", olds, { ...ok("NatDomU", { ...installed, ip: "10.0.0.6" }) });
    assert.deepEqual(address.classes.settings, ["guestSettings"]);
    const none = { ...ok("NatDomU", nat), domid: 1, sshHostKey: null } as unknown as Record<string, unknown>;
    assert.equal(ok("NatDomU", nat).guestSettings, null, "a guest without an install owns its settings");
    assert.deepEqual(
      planDiff("NatDomU", none, { ...ok("NatDomU", { ...nat, ip: "10.0.0.6" }) }).classes.settings,
      [],
    );
  });

  test("the settings rewrite keeps each replaced file and never writes through a symlink out of the guest", () => {
    const script = settingsScript(ok("NatDomU", installed));
    assert.match(script, /xe_keep=1/);
    assert.match(script, /realpath -m -- "\$mnt\$1"/);
    assert.match(script, /xe_holder '?\/dev\/vg0\/web1-root'?/);
    const parsed = spawnSync("bash", ["-n"], { input: script, encoding: "utf8" });
    assert.equal(parsed.status, 0, parsed.stderr);
  });
});

describe("locks", () => {
  test("an install holds its disk's lock, not the host's, so a long debootstrap holds up no other resource", () => {
    const script = installScript(ok("NatDomU", { ...nat, install: { debootstrap: {} } }));
    assert.match(script, /^exec 7>>\/run\/lock\/xen-estate-disk\._dev_vg0_web1-root\.lock$/m);
    assert.doesNotMatch(script, /xen-estate\.lock/);
  });
});

describe("mirror credentials", () => {
  test("a password in the mirror URL reaches wget through a file, never the command line, and is never shown", () => {
    const g = ok("NatDomU", {
      ...nat,
      install: { debootstrap: { mirror: "http://mirror-user:s3cr3t-pw@deb.example.org/debian" } },
    });
    assert.equal(g.install?.debootstrap?.mirror, "http://deb.example.org/debian");
    const script = installScript(g);
    const debootstrapLine = script.split("\n").find((l) => l.startsWith("debootstrap "))!;
    assert.doesNotMatch(debootstrapLine, /s3cr3t|mirror-user/);
    assert.match(script, /export WGETRC="\$auth\/wgetrc"/);
    assert.match(script, /'http_password = s3cr3t-pw'/);
    assert.match(script, /xe_say 'debootstrap bookworm from http:\/\/deb\.example\.org\/debian'/);
    const bad = checkInputs("NatDomU", {
      ...nat,
      install: { debootstrap: { mirror: "ftp://mirror-user:s3cr3t-pw@deb.example.org/debian" } },
    }).failures;
    assert.equal(bad[0]?.property, "install.debootstrap.mirror");
    assert.doesNotMatch(bad[0].message, /s3cr3t/);
  });
});

describe("owners", () => {
  test("the owner tag of a guest is written into its config, and a hostile one is refused", () => {
    const g = ok("NatDomU", { ...nat, owner: "estate/lab/app1" });
    assert.match(g.files[configPath("app1")]!, /^# xen-estate-owner estate\/lab\/app1$/m);
    assert.deepEqual(failing("NatDomU", { ...nat, owner: "x\n# injected" }), ["owner"]);
  });
});

describe("what preview says about an update", () => {
  test("an update that restarts the guest says so, naming what changed; a live change says nothing", () => {
    const olds = { ...ok("BridgedDomU", bridged), domid: 1, sshHostKey: null } as unknown as Record<
      string,
      unknown
    >;
    const restart = planDiff("BridgedDomU", olds, { ...ok("BridgedDomU", { ...bridged, type: "pv" }) });
    assert.equal(planNote("BridgedDomU", restart), "restarts the guest (type changed)");
    const live = planDiff("BridgedDomU", olds, {
      ...ok("BridgedDomU", { ...bridged, memoryMiB: 200, maxMemoryMiB: 256 }),
    });
    assert.equal(planNote("BridgedDomU", live), null);
  });
});

describe("a config another resource took over", () => {
  test("deleting the old resource leaves the other resource's guest alone: no stop, no unlink, no removal", async () => {
    const outs = { ...ok("BridgedDomU", bridged), owner: "urn:old", domid: 3, sshHostKey: null };
    const host = fakeHost([{ match: /who owns/, answer: "config owner urn:new\n" }]);
    await deleteGuest(host.ctx, outs);
    assert.deepEqual(host.summaries, ["who owns /etc/xen/web1.cfg"]);
    assert.ok(
      host.logs.some((l) => /belongs to urn:new: leaving that guest alone/.test(l)),
      host.logs.join("\n"),
    );
  });

  test("a config xen-estate did not write is left alone by delete too", async () => {
    const outs = { ...ok("BridgedDomU", bridged), owner: null, domid: 3, sshHostKey: null };
    const host = fakeHost([{ match: /who owns/, answer: "config foreign\n" }]);
    await deleteGuest(host.ctx, outs);
    assert.deepEqual(host.summaries, ["who owns /etc/xen/web1.cfg"]);
  });
});

describe("an install's secrets in the outputs", () => {
  const withMirror = (password: string): Record<string, unknown> => ({
    ...nat,
    disks: [{ path: "/dev/vg0/app1-root", vdev: "xvda" }],
    install: {
      debootstrap: {
        mirror: `http://xe:${password}@deb.example.org/debian`,
        proxy: `http://xp:proxy-${password}@proxy.example.org:3142`,
      },
      nameservers: ["192.0.2.53"],
    },
  });
  const recorded = (g: GuestInputs): Record<string, unknown> => ({
    ...(g as unknown as Record<string, unknown>),
    install: recordedInstall(g),
  });

  test("the mirror's and the proxy's passwords are recorded as their digests, nothing else of the install changes", () => {
    const g = ok("NatDomU", withMirror("hunter22"));
    const r = recordedInstall(g)!;
    assert.equal(r.debootstrap!.mirrorPassword, secretMarker(secretSha("hunter22")));
    assert.equal(r.debootstrap!.proxyPassword, secretMarker(secretSha("proxy-hunter22")));
    assert.ok(!JSON.stringify(r).includes("hunter22"));
    assert.deepEqual(
      { ...r, debootstrap: { ...r.debootstrap!, mirrorPassword: null, proxyPassword: null } },
      {
        ...g.install!,
        debootstrap: { ...g.install!.debootstrap!, mirrorPassword: null, proxyPassword: null },
      },
    );
    assert.deepEqual(recordedInstall({ install: r }), r, "a recorded install stays as it is");
  });

  test("diff finds the same passwords unchanged against their digests, and another password changed", () => {
    const olds = recorded(ok("NatDomU", withMirror("hunter22")));
    assert.equal(planDiff("NatDomU", olds, ok("NatDomU", withMirror("hunter22")) as never).changes, false);
    assert.deepEqual(planDiff("NatDomU", olds, ok("NatDomU", withMirror("swordfish")) as never).changed, [
      "install",
    ]);
  });
});
