/**
 * LvmVolume on a real dom0's LVM, through the provider runtime (the same entry points the engine calls): adoption,
 * refusals that keep data, blocks zeroed on delete, growth, drift, deletion refused while a guest uses the volume,
 * and a guest's MAC, owner and disk checked against the configs on the host. Declared once, run on two machines:
 * the lab dom0 image (test/resources/lvm-volume.lab.test.ts, as root) and the walkthrough's dom0 once Dom0Host made
 * it (test/examples/walkthrough.lab.test.ts, as its admin through sudo).
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { runtime, RefusedError, VERSION, setSharedPool, SshPool } from "../../provider";
import { LAB_NET } from "../lab/lab";

const MiB = 2 ** 20;

/** A dom0 the cases run on. */
export interface Dom0Target {
  /** The provider's connection to it (root, or a user with sudo) and its secret part. */
  connection: Record<string, unknown>;
  credentials: Record<string, unknown>;
  /** The host part of the resource ids (the connection's host). */
  host: string;
  /** A command as root on the dom0: its stdout; fails when the command fails. */
  root(command: string, opts?: { input?: string; timeoutMs?: number }): Promise<string>;
  /** A command as root on the dom0: its exit code. */
  rootExit(command: string): Promise<number>;
}

/** The names of every volume, guest and config the cases make, for a cleanup after a failed case. */
export const LVM_CASES_CLEANUP =
  "for g in busy newcomer owned second; do if xl domid $g >/dev/null 2>&1; then xl destroy $g; fi; done; " +
  "lvs --noheadings -o lv_name vg0 | awk '$1 ~ /^(data1|legacy|wipe1|xfsish|data2|busy|gone)$/ { print \"vg0/\" $1 }' | " +
  "xargs -r lvremove -q -y; rm -f /tmp/busy.cfg /etc/xen/{squatter,newcomer,owned,holder,second}.cfg";

/**
 * Declares the cases in the calling `describe`, on the dom0 `t()` names once its `before` ran. Removes what they
 * made in its `after` (also when a case failed half way).
 */
export function lvmVolumeLabCases(t: () => Dom0Target): void {
  let pool: SshPool;

  function inputs(over: Record<string, unknown>): Record<string, unknown> {
    return {
      connection: t().connection,
      credentials: t().credentials,
      xenEstateVersion: VERSION,
      volumeGroup: "vg0",
      size: "32MiB",
      filesystem: "ext4",
      ...over,
    };
  }

  async function checked(over: Record<string, unknown>): Promise<Record<string, unknown>> {
    const r = await runtime.check("LvmVolume", {}, inputs(over));
    assert.deepEqual(r.failures ?? [], []);
    return r.inputs as Record<string, unknown>;
  }

  /** A BridgedDomU's checked inputs: a small PV guest on the lab kit's kernel, with these fields over the defaults. */
  async function checkedGuest(over: Record<string, unknown>): Promise<Record<string, unknown>> {
    const r = await runtime.check(
      "BridgedDomU",
      {},
      {
        connection: t().connection,
        credentials: t().credentials,
        xenEstateVersion: VERSION,
        memoryMiB: 128,
        type: "pv",
        boot: { kernel: `${LAB_NET.kitDir}/vmlinuz` },
        disks: [{ path: "/dev/vg0/data1", vdev: "xvda" }],
        ...over,
      },
    );
    assert.deepEqual(r.failures ?? [], []);
    return r.inputs as Record<string, unknown>;
  }

  before(() => {
    pool = new SshPool();
    setSharedPool(pool);
  });

  after(async () => {
    await pool?.close();
    setSharedPool(undefined);
    await t().root(LVM_CASES_CLEANUP);
  });

  test("creates and formats a volume, reporting its real size and UUID", async () => {
    const i = await checked({ name: "data1", size: "30MiB", label: "data" });
    const r = await runtime.create("LvmVolume", i);
    assert.equal(r.id, `${t().host}:/dev/vg0/data1`);
    assert.equal(r.outs.allocatedBytes, 32 * MiB, "rounded up to whole 4 MiB extents");
    assert.match(String(r.outs.uuid), /^[0-9a-f-]{36}$/);
    assert.match(await t().root("blkid -o export /dev/vg0/data1"), /LABEL=data[\s\S]*TYPE=ext4/);
  });

  test("refuses an LV that already exists unless adopt is set, then keeps its data", async () => {
    await t().root("lvcreate -q -y -L 8M -n legacy vg0 && mkfs.ext4 -q -L old /dev/vg0/legacy");
    await assert.rejects(
      runtime.create("LvmVolume", await checked({ name: "legacy", size: "8MiB" })),
      (e: unknown) => {
        assert.ok(e instanceof RefusedError);
        assert.match(e.message, /already exists: set adopt: true/);
        return true;
      },
    );
    const uuid = (await t().root("blkid -o value -s UUID /dev/vg0/legacy")).trim();
    const r = await runtime.create(
      "LvmVolume",
      await checked({ name: "legacy", size: "16MiB", adopt: true }),
    );
    assert.equal(r.outs.uuid, uuid, "the adopted filesystem was not re-made");
    assert.equal(r.outs.allocatedBytes, 16 * MiB, "a smaller adopted volume is grown to the declared size");
  });

  test("deleting an adopted volume leaves it on the host with its data", async () => {
    const uuid = (await t().root("blkid -o value -s UUID /dev/vg0/legacy")).trim();
    const r = await runtime.create(
      "LvmVolume",
      await checked({ name: "legacy", size: "16MiB", adopt: true }),
    );
    await runtime.delete("LvmVolume", r.id, r.outs);
    assert.equal(
      (await t().root("blkid -o value -s UUID /dev/vg0/legacy")).trim(),
      uuid,
      "still there, data intact",
    );
    await t().root("lvremove -q -y vg0/legacy");
  });

  test("a removed volume's blocks are zeroed, so the next volume carved from them reads none of its data", async () => {
    const made = await runtime.create(
      "LvmVolume",
      await checked({ name: "wipe1", size: "8MiB", filesystem: "none" }),
    );
    await t().root(
      "yes xe-secret-data-1b7 | head -c 8388608 | dd of=/dev/vg0/wipe1 bs=1M oflag=direct status=none",
    );
    // Where the volume's blocks live on the physical volume: its first extent, by byte offset.
    const [pv, firstPe] = (await t().root("lvs --noheadings -o seg_pe_ranges vg0/wipe1"))
      .trim()
      .split(/[:-]/);
    const peStart = Number(
      (await t().root(`pvs --noheadings --units b --nosuffix -o pe_start ${pv}`)).trim(),
    );
    const extent = Number(
      (await t().root("vgs --noheadings --units b --nosuffix -o vg_extent_size vg0")).trim(),
    );
    const offset = peStart + Number(firstPe) * extent;
    // iflag=direct: the first probe filled the PV's page cache, which writes through the LV never touch.
    const probe = `dd if=${pv} bs=1M iflag=direct,skip_bytes,count_bytes skip=${offset} count=8388608 status=none | grep -c xe-secret-data || true`;
    assert.notEqual((await t().root(probe)).trim(), "0", "the pattern is on the PV before the delete");
    await runtime.delete("LvmVolume", made.id, made.outs);
    assert.equal((await t().root(probe)).trim(), "0", "no trace of it after the delete");
  });

  test("never formats a volume that holds another filesystem", async () => {
    await t().root("lvcreate -q -y -L 8M -n xfsish vg0 && mkswap -q /dev/vg0/xfsish >/dev/null");
    await assert.rejects(
      runtime.create("LvmVolume", await checked({ name: "xfsish", size: "8MiB", adopt: true })),
      /holds a swap filesystem, not ext4: refusing to format a disk that holds data/,
    );
    assert.match(await t().root("blkid -o value -s TYPE /dev/vg0/xfsish"), /swap/);
  });

  test("grows in place with the filesystem, and refresh reports a volume shrunk behind its back", async () => {
    const made = await runtime.create("LvmVolume", await checked({ name: "data2", size: "16MiB" }));
    const olds = (await runtime.read("LvmVolume", made.id, made.outs)).props!;
    const news = await checked({ name: "data2", size: "40MiB" });
    const diff = await runtime.diff("LvmVolume", "", olds, news);
    assert.deepEqual([diff.changes, diff.replaces], [true, []]);
    const up = await runtime.update("LvmVolume", "", olds, news);
    assert.equal(up.outs!.allocatedBytes, 40 * MiB);
    const sb = await t().root("dumpe2fs -h /dev/vg0/data2 2>/dev/null");
    assert.equal(
      Number(/Block count:\s+(\d+)/.exec(sb)?.[1]) * Number(/Block size:\s+(\d+)/.exec(sb)?.[1]),
      40 * MiB,
    );

    await t().root("lvreduce -q -f -y -L 36M vg0/data2");
    const refreshed = await runtime.read("LvmVolume", "", up.outs);
    assert.equal(refreshed.props!.sizeBytes, 36 * MiB, "drift shows up as a changed size");
    assert.equal((await runtime.diff("LvmVolume", "", refreshed.props, news)).changes, true);
  });

  test("refuses to delete a volume a running guest uses, naming the guest", async () => {
    const vol = await runtime.create(
      "LvmVolume",
      await checked({ name: "busy", size: "8MiB", filesystem: "none" }),
    );
    await t().root(`cat > /tmp/busy.cfg && xl create -q /tmp/busy.cfg`, {
      input: [
        `name = "busy"`,
        `type = "pv"`,
        `kernel = "${LAB_NET.kitDir}/vmlinuz"`,
        `ramdisk = "${LAB_NET.kitDir}/initrd.gz"`,
        `memory = 128`,
        `disk = [ "format=raw, vdev=xvda, access=rw, target=/dev/vg0/busy" ]`,
        "",
      ].join("\n"),
      timeoutMs: 300_000,
    });
    try {
      await assert.rejects(runtime.delete("LvmVolume", vol.id, vol.outs), (e: unknown) => {
        assert.ok(e instanceof RefusedError);
        assert.match(e.message, /refusing to remove vg0\/busy: guest busy uses it/);
        return true;
      });
      assert.match(await t().root("lvs --noheadings -o lv_name vg0/busy"), /busy/);
    } finally {
      await t().root("xl destroy busy");
    }
    await runtime.delete("LvmVolume", vol.id, vol.outs);
    assert.equal(await t().rootExit("lvs vg0/busy"), 5, "gone once the guest is");
  });

  test("a guest whose MAC a guest config on the host already uses is refused before anything is written", async () => {
    await t().root(
      `printf '%s\\n' 'name = "squatter"' 'vif = [ "mac=00:16:3e:77:00:01,bridge=xenbr0" ]' > /etc/xen/squatter.cfg`,
    );
    const guest = await checkedGuest({
      name: "newcomer",
      ip: "10.99.0.77",
      mac: "00:16:3e:77:00:01",
    });
    await assert.rejects(runtime.create("BridgedDomU", guest), (e: unknown) => {
      assert.ok(e instanceof RefusedError);
      assert.match(
        e.message,
        /MAC 00:16:3e:77:00:01 is already used by the guest config \/etc\/xen\/squatter\.cfg/,
      );
      return true;
    });
    assert.equal(await t().rootExit("test -e /etc/xen/newcomer.cfg"), 1, "no config was written");
    assert.equal((await t().rootExit("xl domid newcomer")) === 0, false, "no domain was made");
    await t().root("rm -f /etc/xen/squatter.cfg");
  });

  test("a guest config another resource owns is never taken over: create is refused, naming the owner", async () => {
    await t().root(
      `printf '%s\\n' '# Managed by xen-estate for guest "owned"' '# xen-estate-owner other-project/prod/owned' 'name = "owned"' > /etc/xen/owned.cfg`,
    );
    const guest = await checkedGuest({
      name: "owned",
      owner: "estate/test/owned",
      ip: "10.99.0.78",
      mac: "00:16:3e:77:00:02",
    });
    await assert.rejects(
      runtime.create("BridgedDomU", guest),
      (e: unknown) => e instanceof RefusedError && /belongs to other-project\/prod\/owned/.test(e.message),
    );
    assert.match(await t().root("cat /etc/xen/owned.cfg"), /other-project\/prod\/owned/, "left as it was");
    await t().root("rm -f /etc/xen/owned.cfg");
  });

  test("a disk another guest's config already lists is refused like a shared MAC", async () => {
    await t().root(
      `printf '%s\\n' 'name = "holder"' 'disk = [ "format=raw, vdev=xvda, access=rw, target=/dev/vg0/data1" ]' > /etc/xen/holder.cfg`,
    );
    const guest = await checkedGuest({
      name: "second",
      disks: [{ path: "/dev/mapper/vg0-data1", vdev: "xvda" }],
      ip: "10.99.0.79",
      mac: "00:16:3e:77:00:03",
    });
    await assert.rejects(
      runtime.create("BridgedDomU", guest),
      /disk \/dev\/mapper\/vg0-data1 is already used by the guest config \/etc\/xen\/holder\.cfg/,
    );
    assert.equal(await t().rootExit("test -e /etc/xen/second.cfg"), 1, "no config was written");
    await t().root("rm -f /etc/xen/holder.cfg");
  });

  test("deleting a volume that is already gone succeeds", async () => {
    const vol = await runtime.create(
      "LvmVolume",
      await checked({ name: "gone", size: "8MiB", filesystem: "none" }),
    );
    await t().root("lvremove -q -y vg0/gone");
    assert.equal((await runtime.read("LvmVolume", vol.id, vol.outs)).id, "", "refresh drops it from state");
    await runtime.delete("LvmVolume", vol.id, vol.outs);
  });
}
