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
  formatSize,
  parseProbe,
  parseSize,
  planDiff,
  probeScript,
  updateScript,
  VERSION,
  type LvmVolumeOutputs,
} from "../../provider";
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
  const { inputs, failures } = checkInputs("LvmVolume", { ...base, ...over });
  assert.deepEqual(
    failures.map((f) => f.message),
    [],
  );
  return inputs!;
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
    });
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
