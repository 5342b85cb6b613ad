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
import { createScript, CREATING_TAG } from "../../provider/resources/lvm-volume/scripts";
import { fixtureKeys } from "../support/fixture-keys";
import { startLocalHost, type Sshd } from "../support/sshd";
import { lvmSimulator as simulateLvm } from "../support/lvm-sim";
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

/** The stateful LVM SIMULATOR of test/support/lvm-sim.ts, for this file's host. */
const lvmSimulator = (rows: string[]) => simulateLvm(host, dir, rows);

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
      [
        "--yes",
        "--snapshot",
        "--addtag",
        "xen_estate_creating",
        "--name",
        "web1-root-preboot",
        "--size",
        "8589934592b",
        "--",
        "vg0/web1-root",
      ],
    ]);
    assert.deepEqual(sim.rows(), ["web1-root", "web1-root-preboot web1-root"]);
    assert.deepEqual(
      sim.volumes().map((v) => v.tags),
      [[], []],
      "the tag of an unfinished create is taken off once the snapshot is recorded",
    );
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

describe("a create whose answer was lost, on simulated LVM", () => {
  const declared = () =>
    checkInputs("LvmVolume", {
      connection: { host: "dom0", hostKey: fixtureKeys.hostFingerprint },
      xenEstateVersion: VERSION,
      name: "web1-root",
      size: "64MiB",
      filesystem: "ext4",
    }).inputs! as unknown as LvmVolumeInputs;

  test("is finished by the next create: one volume, formatted once, its create tag taken off", async () => {
    // Found by the cut-connection matrix (lvm-volume.cuts.ssh.test.ts): the volume made, the answer lost.
    const sim = lvmSimulator([]);
    await sim.ctx.host.refusable(createScript(declared()));
    assert.deepEqual(sim.volumes(), [
      { name: "web1-root", origin: null, sizeBytes: 64 * 2 ** 20, tags: [CREATING_TAG] },
    ]);
    const outs = await lvmVolumeKind.create(sim.ctx, declared(), () => {});
    assert.equal(outs.adopted, false);
    assert.deepEqual(sim.volumes(), [{ name: "web1-root", origin: null, sizeBytes: 64 * 2 ** 20, tags: [] }]);
    assert.deepEqual(sim.formatted(), ["/dev/vg0/web1-root ext4"]);
  });

  test("a volume of that name without the tag is still someone else's: refused, untouched", async () => {
    const sim = lvmSimulator(["web1-root"]);
    await assert.rejects(
      lvmVolumeKind.create(sim.ctx, declared(), () => {}),
      /logical volume vg0\/web1-root already exists: set adopt: true/,
    );
    assert.deepEqual([sim.argv("lvcreate"), sim.formatted()], [[], []]);
  });
});
