/**
 * LvmVolume's scripts against a real sshd, with LVM simulated by stub commands (this kernel has no device-mapper;
 * the lab suite runs them on real LVM): a probe that cannot look fails instead of answering "absent".
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { checkInputs, lvmVolumeKind, RemoteCommandError, VERSION } from "../../provider";
import type { Context, LvmVolumeOutputs, RemoteHost, SshPool } from "../../provider";
import { fixtureKeys } from "../support/fixture-keys";
import { startLocalHost, type Sshd } from "../support/sshd";
import { withStubs, writeStubs } from "../support/stub-commands";

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
  const d = fs.mkdtempSync(path.join(dir, "stubs-"));
  writeStubs(d, stubs);
  const h = withStubs(host, d);
  return { host: h, log: h.log, conn: h.conn };
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
      lvmVolumeKind.delete({ host: h, log: h.log, conn: h.conn }, "id", outs()),
      /cannot ask xenstore which guest holds/,
    );
    assert.equal(fs.existsSync(path.join(d, "lvremove.argv")), false, "lvremove never ran");
  });
});
