/**
 * LvmVolume's pure planning: sizes, names, and the refusals that keep data safe.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  checkInputs,
  createScript,
  deleteScript,
  updateScript,
  formatSize,
  lvmVolumeKind,
  parseProbe,
  parseSize,
  planDiff,
  probeScript,
  REFUSED_EXIT,
  UNKNOWN,
  VERSION,
} from "../../provider";
import type { LvmVolumeInputs, LvmVolumeOutputs } from "../../provider";
import { fakeHost } from "../support/fake-host";
import { checked as check } from "../support/checked";
import { shellSplices } from "../support/quoting";
import { fixtureKeys } from "../support/fixture-keys";

const hostKey = fixtureKeys.hostFingerprint;
const MiB = 2 ** 20;
const GiB = 2 ** 30;

const base = {
  connection: { host: "dom0", hostKey },
  xenEstateVersion: VERSION,
  name: "web1-root",
  size: "10GiB",
  filesystem: "ext4",
};

function checked(over: Record<string, unknown> = {}): Record<string, unknown> {
  return check("LvmVolume", { ...base, ...over });
}

function created(over: Record<string, unknown> = {}, allocatedBytes = 10 * GiB): Record<string, unknown> {
  return { ...checked(over), path: "/dev/vg0/web1-root", allocatedBytes, extentBytes: 4 * MiB, uuid: "u" };
}

describe("sizes", () => {
  const cases: [unknown, number][] = [
    ["10GiB", 10 * GiB],
    ["10G", 10 * GiB],
    ["512MiB", 512 * MiB],
    ["1.5TiB", 1.5 * 2 ** 40],
    ["20GB", 20e9],
    [4194304, 4 * MiB],
    ["4194304", 4 * MiB],
  ];
  for (const [input, bytes] of cases)
    test(`${JSON.stringify(input)} is ${bytes} bytes`, () => assert.equal(parseSize(input), bytes));

  test("formats sizes the way people write them", () => {
    assert.equal(formatSize(10 * GiB), "10GiB");
    assert.equal(formatSize(1.5 * GiB), "1.5GiB");
  });

  test("rejects nonsense and too-small sizes, naming the property", () => {
    for (const size of ["ten gigs", "10 XB", -1, "0", "1MiB"]) {
      const { failures } = checkInputs("LvmVolume", { ...base, size });
      assert.equal(failures[0]?.property, "size", `size ${JSON.stringify(size)}`);
    }
  });
});

describe("check", () => {
  test("defaults to volume group vg0 and no filesystem", () => {
    const i = checked({ filesystem: undefined });
    assert.equal(i.volumeGroup, "vg0");
    assert.equal(i.filesystem, "none");
    assert.equal(i.sizeBytes, 10 * GiB);
  });

  test("rejects LVM-reserved and shell-hostile names, an unknown filesystem and bad mkfs options at once", () => {
    const { failures } = checkInputs("LvmVolume", {
      ...base,
      name: "snapshot1",
      volumeGroup: "-vg",
      filesystem: "ext3",
      mkfsOptions: ["-m", "1; rm -rf /"],
    });
    assert.deepEqual(
      failures.map((f) => f.property),
      ["volumeGroup", "name", "filesystem", "mkfsOptions[1]"],
    );
    assert.match(
      failures[2]!.message,
      /must be one of "ext4", "swap", "none", got "ext3". Did you mean "ext4"\?/,
    );
  });

  test("a label needs a filesystem", () => {
    assert.equal(
      checkInputs("LvmVolume", { ...base, filesystem: "none", label: "root" }).failures[0]?.property,
      "label",
    );
  });
});

describe("diff", () => {
  test("the same size, rounded to extents by LVM, gives no diff", () => {
    const olds = created({ size: "1001MiB" }, 1004 * MiB);
    assert.equal(planDiff("LvmVolume", olds, checked({ size: "1001MiB" })).changes, false);
  });

  test("growing is an in-place update", () => {
    const d = planDiff("LvmVolume", created(), checked({ size: "12GiB" }));
    assert.deepEqual([d.changes, d.replaces], [true, []]);
  });

  test("asking for less than the extent-rounded size already allocated is not a shrink", () => {
    const olds = created({ size: "1001MiB" }, 1004 * MiB);
    assert.doesNotThrow(() => planDiff("LvmVolume", olds, checked({ size: "1002MiB" })));
  });

  test("refuses to shrink a volume, already in preview", () => {
    assert.throws(
      () => planDiff("LvmVolume", created(), checked({ size: "8GiB" })),
      /`size` must not be smaller than the volume's current 10GiB: shrinking is refused, got "8GiB"/,
    );
  });

  test("refuses a filesystem change, which would destroy the data, unless allowReplace is set", () => {
    assert.throws(
      () => planDiff("LvmVolume", created(), checked({ filesystem: "swap" })),
      /`filesystem` cannot change on an existing LvmVolume \(was "ext4"\): it would replace it and destroy its data, got "swap". Set `allowReplace: true`/,
    );
    const d = planDiff("LvmVolume", created(), checked({ filesystem: "swap", allowReplace: true }));
    assert.deepEqual([d.replaces, d.deleteBeforeReplace], [["filesystem"], true]);
  });

  test("reaching the dom0 another way (a DNS name instead of its IP) is an update that destroys nothing", () => {
    const d = planDiff(
      "LvmVolume",
      created(),
      checked({ connection: { host: "dom0.example.org", hostKey } }),
    );
    assert.deepEqual([d.changes, d.replaces, d.changed], [true, [], ["connection"]]);
  });

  test("a new label is an in-place update", () => {
    const d = planDiff("LvmVolume", created({ label: "old" }), checked({ label: "new" }));
    assert.deepEqual([d.changes, d.replaces], [true, []]);
  });
});

describe("probe parsing", () => {
  test("reads size, extent size and the filesystem signature", () => {
    const p = parseProbe("XE-LV   10737418240 4194304\nXE-FS UUID=abc\nXE-FS TYPE=ext4\nXE-FS LABEL=root\n");
    assert.deepEqual(p, {
      allocatedBytes: 10 * GiB,
      extentBytes: 4 * MiB,
      fsType: "ext4",
      uuid: "abc",
      label: "root",
      origin: null,
    });
  });

  test("reads the origin of a snapshot, last on the size line", () => {
    assert.equal(parseProbe("XE-LV 8589934592 4194304 web1-root\nXE-FS TYPE=ext4\n")?.origin, "web1-root");
  });

  test("an absent volume reads as null", () => {
    assert.equal(parseProbe("XE-ABSENT\n"), null);
  });

  test("a partition table counts as data", () => {
    assert.equal(parseProbe("XE-LV 4194304 4194304\nXE-FS PTTYPE=dos\n")?.fsType, "partition table (dos)");
  });
});

describe("scripts", () => {
  test("every script quotes the volume's names, messages included, even names check would refuse", () => {
    const name = `web1$(touch /tmp/xe-x)"; x`;
    const outs = created({}) as unknown as LvmVolumeOutputs;
    const hostile = { ...outs, name, volumeGroup: `vg0'$HOME` };
    for (const script of [
      updateScript(hostile, { ...hostile, label: "new" }),
      createScript(hostile),
      deleteScript(hostile, "zero"),
      probeScript(hostile.volumeGroup, name),
    ]) {
      const r = spawnSync("bash", ["-n"], { input: script, encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(shellSplices(script, name), []);
      assert.deepEqual(shellSplices(script, hostile.volumeGroup), []);
    }
  });
});

describe("probes that cannot look", () => {
  test("a probe with no answer is an error, never an absent volume", () => {
    assert.throws(() => parseProbe(""), /the volume probe gave no answer/);
    assert.throws(() => parseProbe("XE-LV garbage\n"), /unreadable size/);
  });

  test("the probe scripts fail when LVM cannot list volumes, instead of printing the absent marker", () => {
    const script = probeScript("vg0", "web1-root");
    assert.match(script, /if ! vgs_out=\$\(vgs --noheadings -o vg_name 2>&1\); then .*exit 1; fi/);
    assert.match(script, /if ! lvs_out=\$\(lvs .*\); then .*exit 1; fi/);
    assert.doesNotMatch(script, /lvs .*>\/dev\/null 2>&1; then echo XE-ABSENT/);
  });

  test("refusals use exit 97, which no tool in the scripts returns (LVM's own codes are 1 to 5)", () => {
    assert.equal(REFUSED_EXIT, 97);
    assert.doesNotMatch(createScript(checked() as unknown as LvmVolumeInputs), /exit 3\b/);
  });
});

describe("a volume a guest holds", () => {
  test("a new label is refused while a guest holds the volume, and growth leaves its filesystem to the guest", () => {
    const script = updateScript(
      { ...created({ label: "old" }), adopted: false } as unknown as LvmVolumeOutputs,
      checked({ label: "new", size: "12GiB" }) as unknown as LvmVolumeInputs,
    );
    const relabel = script.indexOf("e2label");
    const refusal = script.indexOf("refusing to relabel vg0/web1-root while guest");
    assert.ok(refusal > 0 && refusal < relabel, "the refusal comes before any relabel");
    assert.match(
      script,
      /if \[ -n "\$holder" \]; then printf '%s\\n' 'WARN vg0\/web1-root grew, but its filesystem belongs to guest '"\$holder"/,
    );
  });
});

describe("destroy", () => {
  const outs = (over: Record<string, unknown>): LvmVolumeOutputs =>
    ({ ...created(), adopted: false, ...over }) as unknown as LvmVolumeOutputs;

  test("an adopted volume is left on the host with its data, unless onDelete says remove", async () => {
    const h = fakeHost([]);
    await lvmVolumeKind.delete(h.ctx, "id", outs({ adopted: true }));
    assert.deepEqual(h.scripts, [], "nothing runs on the host");
    assert.match(h.logs.join("\n"), /leaving vg0\/web1-root on the host with its data \(it was adopted\)/);
    const removing = fakeHost([{ match: /remove vg0\/web1-root/, answer: "" }]);
    await lvmVolumeKind.delete(removing.ctx, "id", outs({ adopted: true, onDelete: "remove" }));
    assert.equal(removing.scripts.length, 1);
    const kept = fakeHost([]);
    await lvmVolumeKind.delete(kept.ctx, "id", outs({ onDelete: "keep" }));
    assert.deepEqual(kept.scripts, []);
  });

  test("a removed volume is zeroed first by default; discard and none are chosen explicitly", () => {
    assert.equal(checked().wipeOnDelete, "zero");
    assert.match(
      deleteScript(outs({}), "zero"),
      /blkdiscard --zeroout -- "\$real"[\s\S]*dd if=\/dev\/zero[\s\S]*lvremove/,
    );
    assert.match(deleteScript(outs({}), "discard"), /blkdiscard -- "\$real"[\s\S]*lvremove/);
    assert.doesNotMatch(deleteScript(outs({}), "none"), /blkdiscard|dd if/);
  });
});

describe("drift", () => {
  test("what a volume without a filesystem holds belongs to its guest and is never drift", async () => {
    const probe = "XE-LV 10737418240 4194304\nXE-FS PTTYPE=dos\n";
    const h = fakeHost([{ match: /probe vg0\/web1-root/, answer: probe }]);
    const none = { ...created({ filesystem: "none" }), adopted: false } as unknown as LvmVolumeOutputs;
    const read = await lvmVolumeKind.read(h.ctx, "id", none);
    assert.equal(read?.filesystem, "none");
    assert.equal(
      planDiff("LvmVolume", none as unknown as Record<string, unknown>, checked({ filesystem: "none" }))
        .changes,
      false,
    );
  });

  test("an ext4 volume that now holds something else shows as a changed filesystem", async () => {
    const h = fakeHost([
      { match: /probe vg0\/web1-root/, answer: "XE-LV 10737418240 4194304\nXE-FS TYPE=xfs\n" },
    ]);
    const read = await lvmVolumeKind.read(h.ctx, "id", {
      ...created(),
      adopted: false,
    } as unknown as LvmVolumeOutputs);
    assert.equal(read?.filesystem, "xfs");
  });
});

describe("values not known yet (preview)", () => {
  test("an unknown size, name or connection field passes check and plans no replacement or refusal", () => {
    const inputs = checked({ size: UNKNOWN });
    assert.equal(inputs.sizeBytes, UNKNOWN);
    const olds = created();
    for (const over of [{ size: UNKNOWN }, { name: UNKNOWN }, { connection: { host: UNKNOWN, hostKey } }]) {
      const d = planDiff("LvmVolume", olds, checked(over));
      assert.deepEqual([d.changes, d.replaces], [true, []], JSON.stringify(over));
    }
    const whole = checkInputs("LvmVolume", { ...base, connection: UNKNOWN });
    assert.deepEqual(whole.failures, []);
  });
});

describe("snapshots", () => {
  const snap = (over: Record<string, unknown> = {}) =>
    checked({
      name: "web1-root-preboot",
      size: "8GiB",
      filesystem: undefined,
      snapshotOf: "web1-root",
      ...over,
    });
  const snapOuts = (over: Record<string, unknown> = {}): LvmVolumeOutputs =>
    ({
      ...snap(over),
      path: "/dev/vg0/web1-root-preboot",
      allocatedBytes: 8 * GiB,
      extentBytes: 4 * MiB,
      uuid: null,
      adopted: false,
    }) as unknown as LvmVolumeOutputs;

  test("a snapshot of another volume checks with no filesystem, its size the copy-on-write space, zeroed on removal", () => {
    const i = snap();
    assert.equal(i.snapshotOf, "web1-root");
    assert.equal(i.filesystem, "none");
    assert.equal(i.sizeBytes, 8 * GiB);
    assert.equal(i.wipeOnDelete, "zero");
    assert.equal(checked().snapshotOf, null, "a volume of its own has no origin");
  });

  test("refuses whatever would write to a snapshot or take one over, every problem at once", () => {
    const { failures } = checkInputs("LvmVolume", {
      ...base,
      name: "web1-root",
      snapshotOf: "web1-root",
      filesystem: "ext4",
      label: "root",
      mkfsOptions: ["-m", "1"],
      adopt: true,
      wipeOnDelete: "discard",
    });
    assert.deepEqual(
      failures.map((f) => f.property),
      ["snapshotOf", "filesystem", "label", "mkfsOptions", "adopt", "wipeOnDelete"],
    );
    assert.match(failures[1]!.message, /must be "none" for a snapshot: it holds its origin's content/);
    assert.match(failures[5]!.message, /a discard through it would reach its origin's blocks/);
    const bad = checkInputs("LvmVolume", { ...base, filesystem: "none", snapshotOf: "web1; rm -rf /" });
    assert.deepEqual(
      bad.failures.map((f) => f.property),
      ["snapshotOf"],
    );
  });

  test("pointing a snapshot at another origin replaces it, refused without allowReplace", () => {
    assert.throws(
      () =>
        planDiff(
          "LvmVolume",
          snapOuts() as unknown as Record<string, unknown>,
          snap({ snapshotOf: "web2-root" }),
        ),
      /`snapshotOf` cannot change on an existing LvmVolume/,
    );
    const d = planDiff(
      "LvmVolume",
      snapOuts({ allowReplace: true }) as unknown as Record<string, unknown>,
      snap({ snapshotOf: "web2-root", allowReplace: true }),
    );
    assert.deepEqual(d.replaces, ["snapshotOf"]);
  });

  test("create snapshots the origin in the same volume group and never wipes, formats or adopts", () => {
    const script = createScript(snap() as unknown as LvmVolumeInputs);
    assert.match(
      script,
      /lvcreate --yes --snapshot --addtag xen_estate_creating --name web1-root-preboot --size 8589934592b -- vg0\/web1-root >&2/,
    );
    assert.match(script, /cannot snapshot vg0\/web1-root: no such volume/);
    assert.match(script, /already exists: refusing to take it over as a snapshot of web1-root/);
    assert.doesNotMatch(script, /wipesignatures|mkfs|mkswap|adopting/);
  });

  test("growing a snapshot grows its copy-on-write space only, never the origin's filesystem through it", () => {
    const script = updateScript(snapOuts(), snap({ size: "12GiB" }) as unknown as LvmVolumeInputs);
    assert.match(script, /lvextend --size "\$want"b[^\n]*\ngrown=0\n/);
    assert.doesNotMatch(
      updateScript(
        created() as unknown as LvmVolumeOutputs,
        checked({ size: "12GiB" }) as unknown as LvmVolumeInputs,
      ),
      /\ngrown=0\n[^]*\ngrown=0\n/,
    );
  });

  test("removal splits the copy-on-write space off and zeroes it first; an origin with snapshots is never removed", () => {
    assert.match(
      deleteScript(snapOuts(), "zero"),
      /refusing to remove vg0\/web1-root-preboot: its snapshots[\s\S]*lvconvert --yes --splitsnapshot -- vg0\/web1-root-preboot[\s\S]*blkdiscard --zeroout[\s\S]*lvremove/,
    );
    assert.doesNotMatch(deleteScript(snapOuts(), "none"), /splitsnapshot|blkdiscard|dd if/);
    assert.match(
      deleteScript(created() as unknown as LvmVolumeOutputs, "zero"),
      /awk -v o=web1-root '\$2 == o \{ print \$1 \}'[\s\S]*refusing to remove vg0\/web1-root: its snapshots [\s\S]*blkdiscard --zeroout/,
    );
  });

  test("refresh shows a snapshot that lost its origin (merged, or made by hand) as drift", async () => {
    const h = fakeHost([
      { match: /probe vg0\/web1-root-preboot/, answer: "XE-LV 8589934592 4194304\nXE-FS TYPE=ext4\n" },
    ]);
    const read = await lvmVolumeKind.read(h.ctx, "id", snapOuts());
    assert.equal(read?.snapshotOf, null);
    const same = fakeHost([
      {
        match: /probe vg0\/web1-root-preboot/,
        answer: "XE-LV 8589934592 4194304 web1-root\nXE-FS TYPE=ext4\n",
      },
    ]);
    assert.equal((await lvmVolumeKind.read(same.ctx, "id", snapOuts()))?.snapshotOf, "web1-root");
  });
});
