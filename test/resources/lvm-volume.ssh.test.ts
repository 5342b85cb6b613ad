/**
 * LvmVolume's scripts against a real sshd, with LVM simulated by stub commands (this kernel has no device-mapper;
 * the lab suite runs them on real LVM): a probe that cannot look fails instead of answering "absent".
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { checkInputs, hostContext, lvmVolumeKind, RemoteCommandError, VERSION } from "../../provider";
import type { Context, LvmVolumeInputs, LvmVolumeOutputs, RemoteHost, SshPool } from "../../provider";
import { fixtureKeys } from "../support/fixture-keys";
import { startLocalHost, type Sshd } from "../support/sshd";
import { stubbedContext, withStubs, writeStubs } from "../support/stub-commands";

let sshd: Sshd;
let pool: SshPool;
let host: RemoteHost;
let dir: string;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-lvm-ssh-"));
  ({ sshd, pool, host } = await startLocalHost(dir));
});

after(async () => {
  await pool.close();
  await sshd.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

const outs = (): LvmVolumeOutputs =>
  ({
    ...checkInputs("LvmVolume", {
      connection: { host: "dom0", hostKey: fixtureKeys.hostFingerprint },
      xenEstateVersion: VERSION,
      name: "web1-root",
      size: "64MiB",
      filesystem: "ext4",
    }).inputs,
    path: "/dev/vg0/web1-root",
    allocatedBytes: 64 * 2 ** 20,
    extentBytes: 4 * 2 ** 20,
    uuid: "u",
    adopted: false,
  }) as unknown as LvmVolumeOutputs;

function ctxWith(stubs: Parameters<typeof writeStubs>[1]): Context {
  return stubbedContext(host, dir, stubs);
}

describe("refresh of a volume when LVM cannot answer", () => {
  test("a volume-group lock timeout is an error, not a volume that is gone", async () => {
    const ctx = ctxWith({ vgs: { stderr: "  Volume group lock timed out after 60 s\n", exit: 5 } });
    await assert.rejects(
      lvmVolumeKind.read(ctx, "id", outs()),
      (e: unknown) => e instanceof RemoteCommandError && /cannot list volume groups/.test(e.message),
    );
  });

  test("a failing lvs (a missing PV) is an error too", async () => {
    const ctx = ctxWith({
      vgs: { stdout: "  vg0\n" },
      lvs: { stderr: "  WARNING: Couldn't find device with uuid x.\n", exit: 5 },
    });
    await assert.rejects(lvmVolumeKind.read(ctx, "id", outs()), /cannot list the volumes of vg0/);
  });

  test("only LVM answering without the volume makes it absent", async () => {
    const ctx = ctxWith({ vgs: { stdout: "  vg0\n" }, lvs: { stdout: "  other\n" } });
    assert.equal(await lvmVolumeKind.read(ctx, "id", outs()), null);
  });
});

describe("removing a volume a guest holds", () => {
  test("is refused naming the guest, when xenstore says its block backend holds the device", async () => {
    const ctx = ctxWith({
      vgs: { stdout: "  vg0\n" },
      lvs: { stdout: "  web1-root\n" },
      lvchange: {},
      readlink: { stdout: "/dev/dm-7\n" },
      "xenstore-ls": { stdout: '/local/domain/0/backend/vbd/3/51712/params = "/dev/vg0/web1-root"\n' },
      xl: { stdout: "web1\n" },
      lvremove: {},
    });
    await assert.rejects(
      lvmVolumeKind.delete(ctx, "id", outs()),
      /refusing to remove vg0\/web1-root: guest web1 uses it/,
    );
  });

  test("is an error when xenstore cannot be asked (xenstored down), never a removal", async () => {
    const d = fs.mkdtempSync(path.join(dir, "stubs-"));
    writeStubs(d, {
      vgs: { stdout: "  vg0\n" },
      lvs: { stdout: "  web1-root\n" },
      lvchange: {},
      readlink: { stdout: "/dev/dm-7\n" },
      "xenstore-ls": { stderr: "xs_open: Connection refused\n", exit: 1 },
      lvremove: {},
    });
    const h = withStubs(host, d);
    await assert.rejects(
      lvmVolumeKind.delete(hostContext(h), "id", outs()),
      /cannot ask xenstore which guest holds/,
    );
    assert.equal(fs.existsSync(path.join(d, "lvremove.argv")), false, "lvremove never ran");
  });
});

/**
 * A SIMULATOR of just enough LVM for snapshots (this machine has no device-mapper; the lab runs real LVM): one
 * volume group vg0 whose volumes are rows `name origin` in a file, which lvcreate and lvremove change and lvs
 * answers from. Every tool logs its argv next to it.
 */
function lvmSimulator(rows: string[]): { ctx: Context; dir: string; rows: () => string[] } {
  const d = fs.mkdtempSync(path.join(dir, "lvm-sim-"));
  const table = path.join(d, "rows");
  fs.writeFileSync(table, rows.map((r) => `${r}\n`).join(""));
  writeStubs(d, { udevadm: {}, lvchange: {}, readlink: { stdout: "/dev/dm-9\n" }, blkid: { exit: 2 } });
  const tool = (name: string, body: string) =>
    fs.writeFileSync(
      path.join(d, name),
      `#!/bin/bash\nprintf '%s\\0' "$@" >> ${JSON.stringify(path.join(d, `${name}.argv`))}; printf '\\n' >> ${JSON.stringify(path.join(d, `${name}.argv`))}\ntable=${JSON.stringify(table)}\n${body}\n`,
      { mode: 0o755 },
    );
  tool("vgs", `printf '  vg0\\n'`);
  tool(
    "lvs",
    [
      `args="$*"`,
      `case "$args" in`,
      `  *"-o lv_name,origin"*) awk '{ printf "  %s %s\\n", $1, $2 }' "$table" ;;`,
      `  *"-o lv_name "*) awk '{ printf "  %s\\n", $1 }' "$table" ;;`,
      `  *"lv_size,vg_extent_size,origin"*) lv="\${@: -1}"; lv="\${lv#vg0/}"; o=$(awk -v n="$lv" '$1 == n { print $2 }' "$table"); echo "  8589934592 4194304 $o" ;;`,
      `  *lv_dm_path*) echo "  /dev/mapper/vg0-x" ;;`,
      `  *) echo "lvs simulator: unexpected $args" >&2; exit 3 ;;`,
      `esac`,
    ].join("\n"),
  );
  tool(
    "lvcreate",
    [
      `name=""; while [ $# -gt 0 ]; do case "$1" in --name) name="$2"; shift 2 ;; --) origin="\${2#vg0/}"; shift 2 ;; *) shift ;; esac; done`,
      `echo "$name $origin" >> "$table"`,
    ].join("\n"),
  );
  tool(
    "lvremove",
    `lv="\${@: -1}"; lv="\${lv#vg0/}"; awk -v n="$lv" '$1 != n' "$table" > "$table.new"; mv "$table.new" "$table"`,
  );
  tool("lvconvert", `exit 0`);
  tool("blkdiscard", `exit 0`);
  return {
    ctx: hostContext(withStubs(host, d)),
    dir: d,
    rows: () => fs.readFileSync(table, "utf8").split("\n").filter(Boolean),
  };
}

const argvOf = (d: string, tool: string): string[][] =>
  fs.existsSync(path.join(d, `${tool}.argv`))
    ? fs
        .readFileSync(path.join(d, `${tool}.argv`), "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => l.split("\0").filter(Boolean))
    : [];

describe("snapshots, on simulated LVM", () => {
  const snapshot = () =>
    checkInputs("LvmVolume", {
      connection: { host: "dom0", hostKey: fixtureKeys.hostFingerprint },
      xenEstateVersion: VERSION,
      name: "web1-root-preboot",
      size: "8GiB",
      snapshotOf: "web1-root",
    }).inputs! as unknown as LvmVolumeInputs;

  test("create snapshots the origin and reports it; the volume's probe names its origin", async () => {
    const sim = lvmSimulator(["web1-root"]);
    const outs = await lvmVolumeKind.create(sim.ctx, snapshot(), () => {});
    assert.deepEqual(argvOf(sim.dir, "lvcreate"), [
      ["--yes", "--snapshot", "--name", "web1-root-preboot", "--size", "8589934592b", "--", "vg0/web1-root"],
    ]);
    assert.deepEqual(sim.rows(), ["web1-root", "web1-root-preboot web1-root"]);
    assert.equal(outs.path, "/dev/vg0/web1-root-preboot");
    assert.equal((await lvmVolumeKind.read(sim.ctx, "id", outs))?.snapshotOf, "web1-root");
  });

  test("create refuses when the origin does not exist, and never takes over a volume of the snapshot's name", async () => {
    const none = lvmSimulator(["web2-root"]);
    await assert.rejects(
      lvmVolumeKind.create(none.ctx, snapshot(), () => {}),
      /cannot snapshot vg0\/web1-root: no such volume/,
    );
    const taken = lvmSimulator(["web1-root", "web1-root-preboot"]);
    await assert.rejects(
      lvmVolumeKind.create(taken.ctx, snapshot(), () => {}),
      /logical volume vg0\/web1-root-preboot already exists: refusing to take it over/,
    );
    assert.deepEqual([argvOf(none.dir, "lvcreate"), argvOf(taken.dir, "lvcreate")], [[], []]);
  });

  test("the origin is never removed while it has a snapshot; the snapshot goes first, split off and zeroed", async () => {
    const sim = lvmSimulator(["web1-root", "web1-root-preboot web1-root"]);
    const origin = { ...outs(), filesystem: "none", label: null, snapshotOf: null } as LvmVolumeOutputs;
    await assert.rejects(
      lvmVolumeKind.delete(sim.ctx, "id", origin),
      /refusing to remove vg0\/web1-root: its snapshots web1-root-preboot would go with it/,
    );
    assert.deepEqual(argvOf(sim.dir, "lvremove"), []);
    const snap = {
      ...snapshot(),
      path: "/dev/vg0/web1-root-preboot",
      allocatedBytes: 8 * 2 ** 30,
      extentBytes: 4 * 2 ** 20,
      uuid: null,
      adopted: false,
    } as LvmVolumeOutputs;
    await lvmVolumeKind.delete(sim.ctx, "id", snap);
    assert.deepEqual(argvOf(sim.dir, "lvconvert"), [
      ["--yes", "--splitsnapshot", "--", "vg0/web1-root-preboot"],
    ]);
    assert.deepEqual(argvOf(sim.dir, "blkdiscard"), [["--zeroout", "--", "/dev/dm-9"]]);
    await lvmVolumeKind.delete(sim.ctx, "id", origin);
    assert.deepEqual(sim.rows(), []);
  });
});
