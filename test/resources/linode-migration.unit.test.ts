/**
 * LinodeMigration's pure planning: what check accepts and refuses (every failure named, the source's connection
 * checked like the resource's own), which changes replace a finished migration, the method chosen per filesystem,
 * the progress line, and the scripts' promises that can be read off their text (only the copy's key, only the
 * pinned host key, the source opened read-only).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  checkInputs,
  copyIdentity,
  directCopyScript,
  FIXUP_BACKUPS,
  fixupsScript,
  grantScript,
  planDiff,
  prepareScript,
  ProgressMeter,
  relayReceiveCommand,
  relayReceiveScript,
  renderFixupFiles,
  resolveMethod,
  senderScript,
  sshCommand,
  VERSION,
  type CopyPlan,
  type FixupInputs,
} from "../../provider";
import { fixtureKeys } from "../support/fixture-keys";

const hostKey = fixtureKeys.hostFingerprint;
const MiB = 2 ** 20;

const base = {
  connection: { host: "dom0.example.net", hostKey },
  credentials: { privateKey: fixtureKeys.clientPrivateKey },
  xenEstateVersion: VERSION,
  source: {
    connection: { host: "198.51.100.7", hostKey },
    credentials: { password: "rescue-Pw-1234" },
  },
  target: { device: "/dev/vg0/linode-root" },
};

function checked(over: Record<string, unknown> = {}): Record<string, unknown> {
  const { inputs, failures } = checkInputs("LinodeMigration", { ...base, ...over });
  assert.deepEqual(
    failures.map((f) => f.message),
    [],
  );
  return inputs!;
}

function failures(over: Record<string, unknown>): string[] {
  return checkInputs("LinodeMigration", { ...base, ...over }).failures.map((f) => f.property);
}

function migrated(over: Record<string, unknown> = {}, phase = "migrated"): Record<string, unknown> {
  return {
    ...checked(over),
    phase,
    method: "ext",
    sourceBytes: 4 * 2 ** 30,
    targetDevice: "/dev/vg0/linode-root",
  };
}

describe("check", () => {
  test("fills the defaults: /dev/sda, used blocks where possible, 4MiB chunks, zstd 1, direct, verified, grown", () => {
    const i = checked() as {
      source: { device: string; live: boolean; connection: { port: number; user: string } };
      transfer: Record<string, unknown>;
      verify: boolean;
      grow: boolean;
      fixups: FixupInputs;
    };
    assert.equal(i.source.device, "/dev/sda");
    assert.equal(i.source.live, false);
    assert.equal(i.source.connection.port, 22);
    assert.equal(i.source.connection.user, "root");
    assert.deepEqual(i.transfer, {
      method: "auto",
      compressionLevel: 1,
      chunkBytes: 4 * MiB,
      deadlineSeconds: 86_400,
      route: "direct",
    });
    assert.equal(i.verify, true);
    assert.equal(i.grow, true);
    assert.deepEqual(i.fixups, { hostname: null, network: null, fstab: "device", swapDevice: null });
  });

  test("keeps the source's credentials beside its connection, out of the readable part", () => {
    const i = checked() as {
      source: { connection: Record<string, unknown>; credentials: Record<string, unknown> };
    };
    assert.equal(i.source.credentials.password, "rescue-Pw-1234");
    assert.doesNotMatch(JSON.stringify(i.source.connection), /rescue-Pw/);
  });

  test("checks the source's connection like the resource's own, under source.connection", () => {
    const f = checkInputs("LinodeMigration", {
      ...base,
      source: { connection: { host: "bad host!", port: 70000 } },
    }).failures;
    assert.deepEqual(
      f.map((x) => x.property),
      ["source.connection.host", "source.connection.port", "source.connection.hostKey"],
    );
    assert.match(f[2]!.message, /is required to authenticate the server/);
  });

  test("reports every bad field at once, each with its property and rule", () => {
    const f = checkInputs("LinodeMigration", {
      ...base,
      source: { ...base.source, device: "sda; rm -rf /", dom0Port: 0 },
      target: {},
      transfer: { method: "dd", compressionLevel: 0, chunkSize: "3MiB", route: "carrier-pigeon" },
      fixups: {
        hostname: "-bad-",
        swapDevice: "/dev/sdb",
        network: { address: "10.0.0.5/33", gateway: "gw", nameservers: ["1.1.1.1", "x"] },
      },
    }).failures;
    assert.deepEqual(
      f.map((x) => x.property),
      [
        "source.device",
        "source.dom0Port",
        "target.device",
        "transfer.method",
        "transfer.compressionLevel",
        "transfer.chunkSize",
        "transfer.route",
        "fixups.hostname",
        "fixups.swapDevice",
        "fixups.network.address",
        "fixups.network.gateway",
        "fixups.network.nameservers[1]",
      ],
    );
    assert.match(f[0]!.message, /`source\.device` must be a block device path under \/dev/);
    assert.match(f[5]!.message, /must be a power of two from 1MiB to 256MiB/);
    assert.match(f[6]!.message, /must be one of "direct", "relay"/);
  });

  test("chunk sizes: every power of two from 1MiB to 256MiB, nothing else", () => {
    for (let p = 18; p <= 30; p++) {
      const ok = p >= 20 && p <= 28;
      assert.deepEqual(
        failures({ transfer: { chunkSize: 2 ** p } }),
        ok ? [] : ["transfer.chunkSize"],
        `2^${p}`,
      );
      assert.deepEqual(
        failures({ transfer: { chunkSize: 2 ** p + 4096 } }),
        ["transfer.chunkSize"],
        `2^${p}+4096`,
      );
    }
    assert.equal(
      (checked({ transfer: { chunkSize: "16MiB" } }).transfer as { chunkBytes: number }).chunkBytes,
      16 * MiB,
    );
  });

  test("a source reached through a jump host needs the address the dom0 dials, or the relay", () => {
    const viaJump = {
      ...base.source,
      connection: { ...base.source.connection, proxy: { host: "jump", hostKey } },
    };
    assert.deepEqual(failures({ source: viaJump }), ["source.dom0Host"]);
    assert.deepEqual(failures({ source: { ...viaJump, dom0Host: "10.0.0.7" } }), []);
    assert.deepEqual(failures({ source: viaJump, transfer: { route: "relay" } }), []);
  });

  test("fixups: false turns them off; a network gets a /32 by default", () => {
    assert.equal(checked({ fixups: false }).fixups, null);
    const n = (
      checked({ fixups: { network: { address: "203.0.113.10", gateway: "203.0.113.1" } } })
        .fixups as FixupInputs
    ).network!;
    assert.deepEqual(n, {
      address: "203.0.113.10",
      prefix: 32,
      gateway: "203.0.113.1",
      nameservers: null,
      interfaceNaming: "kernel",
    });
  });
});

describe("diff", () => {
  test("before the migration finished, a new source device is an update: the next copy sends what differs", () => {
    const plan = planDiff(
      "LinodeMigration",
      migrated({}, "copying"),
      checked({ source: { ...base.source, device: "/dev/sdb" } }),
    );
    assert.deepEqual(plan.replaces, []);
    assert.deepEqual(plan.changed, ["source"]);
  });

  test("after it finished, another source device or host would copy over the guest's disk: refused without allowReplace", () => {
    for (const source of [
      { ...base.source, device: "/dev/sdb" },
      { ...base.source, connection: { host: "198.51.100.8", hostKey } },
    ])
      assert.throws(
        () => planDiff("LinodeMigration", migrated(), checked({ source })),
        /`source\.(device|connection\.host)` cannot change on an existing LinodeMigration .*destroy its data.*allowReplace: true/,
      );
    const plan = planDiff(
      "LinodeMigration",
      migrated(),
      checked({ source: { ...base.source, device: "/dev/sdb" }, allowReplace: true }),
    );
    assert.deepEqual(plan.replaces, ["source"]);
    assert.equal(plan.deleteBeforeReplace, true);
  });

  test("a new host key for the source (its rescue system) or new credentials replace nothing", () => {
    const plan = planDiff(
      "LinodeMigration",
      migrated(),
      checked({
        source: {
          connection: { host: "198.51.100.7", hostKey: fixtureKeys.hostPublicKey },
          credentials: { password: "another-Pw-99" },
        },
      }),
    );
    assert.deepEqual(plan.replaces, []);
  });

  test("another target is always a replacement, with consent", () => {
    assert.throws(
      () =>
        planDiff(
          "LinodeMigration",
          migrated({}, "copying"),
          checked({ target: { device: "/dev/vg0/other" } }),
        ),
      /`target\.device` cannot change/,
    );
  });
});

describe("method", () => {
  test("used blocks only for ext2/3/4, raw for anything else, and ext forced on anything else is refused", () => {
    assert.equal(resolveMethod("auto", "ext4"), "ext");
    assert.equal(resolveMethod("auto", "ext3"), "ext");
    assert.equal(resolveMethod("auto", "xfs"), "raw");
    assert.equal(resolveMethod("auto", null), "raw");
    assert.equal(resolveMethod("raw", "ext4"), "raw");
    assert.deepEqual(resolveMethod("ext", "btrfs"), {
      error: "needs an ext2/3/4 filesystem; the source holds btrfs",
    });
  });

  test("the dom0's record of a copy changes with anything that makes the chunks another copy's", () => {
    const a = {
      sourceHost: "198.51.100.7",
      sourceDevice: "/dev/sda",
      sourceUuid: "u1",
      sourceBytes: 4096,
      chunkBytes: MiB,
      targetDevice: "/dev/vg0/x",
    };
    const id = copyIdentity(a);
    assert.equal(copyIdentity({ ...a }), id);
    for (const [k, v] of Object.entries({
      sourceHost: "h",
      sourceDevice: "/dev/sdb",
      sourceUuid: "u2",
      sourceBytes: 1,
      chunkBytes: 2,
      targetDevice: "/dev/y",
    }))
      assert.notEqual(copyIdentity({ ...a, [k]: v }), id, k);
  });
});

describe("progress", () => {
  test("shows bytes, percent, the rate over the last reports and an ETA", () => {
    let now = 0;
    const m = new ProgressMeter("vps:/dev/sda → /dev/vg0/x", () => now);
    assert.equal(m.message(), null);
    m.line(`XE-PROGRESS copy 0 ${4096 * MiB} 0 0 0`);
    now = 10_000;
    m.line("XE-WIRE 524288000");
    m.line(`XE-PROGRESS copy ${1024 * MiB} ${4096 * MiB} ${600 * MiB} ${424 * MiB} 0`);
    assert.equal(
      m.message(),
      "vps:/dev/sda → /dev/vg0/x: copying 1GiB of 4GiB (25%), 102.4MiB/s, ETA 30 s, 600MiB data, 424MiB free, 0B already there, 500MiB on the wire",
    );
    assert.equal(m.line("some other line"), false);
  });
});

const plan: CopyPlan = {
  key: "vg0_linode-root",
  sourceDevice: "/dev/sda",
  method: "ext",
  sourceBytes: 4 * 2 ** 30,
  chunkBytes: 4 * MiB,
  compressionLevel: 1,
  targetDevice: "/dev/vg0/linode-root",
  identity: "xen-estate-migration-1 source=198.51.100.7:/dev/sda",
  live: false,
};

describe("scripts", () => {
  test("the relay's receiver runs from the state dir: no input reaches the command line the dom0 is sent", () => {
    const odd = { ...plan, targetDevice: "/dev/vg0/linode-root$(id)" };
    const cmd = relayReceiveCommand(odd);
    assert.equal(cmd, "exec bash /var/lib/xen-estate/migrations/vg0_linode-root/receive.sh");
    assert.ok(!cmd.includes("/dev/"), cmd);
    // prepare leaves it there, quoted as data.
    assert.ok(prepareScript(odd).includes(`'${relayReceiveScript(odd).replace(/'/g, "'\\''")}'`));
    assert.match(relayReceiveScript(odd), /readlink -f -- '\/dev\/vg0\/linode-root\$\(id\)'/);
  });
  test("the dom0's ssh uses only the copy's key and only the pinned host key, no config, no agent, no forwarding", () => {
    const cmd = sshCommand("k", { host: "198.51.100.7", port: 22, user: "root", aes: true });
    for (const opt of [
      "-F /dev/null",
      "-a",
      "-x",
      "-i /run/xen-estate/migration-k/key",
      "IdentitiesOnly=yes",
      "BatchMode=yes",
      "StrictHostKeyChecking=yes",
      "UserKnownHostsFile=/run/xen-estate/migration-k/known_hosts",
      "GlobalKnownHostsFile=/dev/null",
      "HostKeyAlias=xen-estate-source",
      "Ciphers=aes128-gcm@openssh.com,",
    ])
      assert.ok(cmd.includes(opt), `${opt} in ${cmd}`);
    assert.match(
      sshCommand("k", { host: "h", port: 2222, user: "admin", aes: false }),
      /-p 2222 -l admin -- h 'sudo -n bash -s'$/,
    );
    assert.match(
      sshCommand("k", { host: "h", port: 22, user: "root", aes: false }),
      /Ciphers=chacha20-poly1305@openssh\.com,/,
    );
  });

  test("the grant writes a known_hosts line from the pinned key and never a private key into the script", () => {
    const s = grantScript("k", fixtureKeys.hostPublicKey.split(" ").slice(0, 2).join(" "));
    assert.ok(s.includes(`xen-estate-source ${fixtureKeys.hostPublicKey.split(" ").slice(0, 2).join(" ")}`));
    assert.doesNotMatch(s, /PRIVATE KEY/);
    assert.match(s, /ssh-keygen -q -t ed25519 -N '' -C xen-estate-migration-k/);
  });

  test("the sender refuses a mounted device (unless live), and hands the rest of its stdin to the engine on its last line", () => {
    const s = senderScript(plan);
    assert.match(s, /XE-MOUNTED/);
    assert.doesNotMatch(senderScript({ ...plan, live: true }), /XE-MOUNTED/);
    assert.match(s, /os\.open\(dev, os\.O_RDONLY\)/, "the engine opens the source read-only");
    assert.equal(s.split("\n").pop(), "xe_send; exit $?");
  });

  test("the copy keeps what landed when it stops, and reports which end stopped it", () => {
    const s = directCopyScript(plan, { host: "198.51.100.7", port: 22, user: "root", aes: true });
    assert.match(s, /what landed is kept: run up again to send the rest/);
    assert.match(s, /flock -w 60 8/);
  });

  test("fixups keep every original for revert.sh and never write through a symlink out of the guest", () => {
    const fixups: FixupInputs = {
      hostname: "web1",
      network: {
        address: "203.0.113.10",
        prefix: 32,
        gateway: "203.0.113.1",
        nameservers: ["185.12.64.1"],
        interfaceNaming: "link",
      },
      fstab: "uuid",
      swapDevice: "/dev/xvdb",
    };
    const files = renderFixupFiles(fixups, {
      source: "198.51.100.7",
      root: "UUID=abc",
      nameservers: ["185.12.64.1"],
    });
    assert.match(files.grubCfg, /root=UUID=abc ro console=hvc0 net\.ifnames=0/);
    assert.match(files.network!, /GatewayOnLink=yes/);
    assert.match(files.link!, /Driver=vif/);
    const s = fixupsScript({
      targetDevice: "/dev/vg0/x",
      key: "x",
      files,
      fixups,
      root: "UUID=abc",
      rootType: "ext4",
    });
    assert.ok(s.includes(FIXUP_BACKUPS));
    assert.match(s, /a symlink leads out of it/);
    assert.match(s, /xe_fix 644 \/etc\/systemd\/network\/10-xen-estate-eth0\.link/);
    assert.match(s, /-v swap=\/dev\/xvdb/);
  });
});
