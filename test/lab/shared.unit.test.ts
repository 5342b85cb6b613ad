/**
 * How a lab file's leftovers are found: the difference between the machine's state when the file took it and when
 * it gave it back, section by section (the states themselves come from STATE_SCRIPT on real lab machines).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { diffMachineState, needKey } from "./shared";

const state = (sections: Record<string, string[]>): string =>
  Object.entries(sections)
    .map(([name, lines]) => [`## ${name}`, ...lines].join("\n"))
    .join("\n");

describe("the difference between two machine states", () => {
  test("is empty when nothing changed, whatever the order of sections", () => {
    const s = { guests: ["Domain-0"], "logical volumes": [] };
    assert.equal(diffMachineState(state(s), state({ "logical volumes": [], guests: ["Domain-0"] })), "");
  });

  test("names what was added and what went missing, under its section", () => {
    const before = state({
      guests: ["Domain-0"],
      "logical volumes": [],
      "files in /etc": ["/etc/xen", "/etc/fstab"],
    });
    const after = state({
      guests: ["Domain-0", "web1"],
      "logical volumes": ["vg0 data1 33554432"],
      "files in /etc": ["/etc/xen"],
    });
    assert.equal(
      diffMachineState(before, after),
      [
        "guests:",
        "  + web1",
        "logical volumes:",
        "  + vg0 data1 33554432",
        "files in /etc:",
        "  - /etc/fstab",
      ].join("\n"),
    );
  });

  test("counts repeated lines: a rule added a second time is a leftover", () => {
    const rule = "-A FORWARD -s 10.0.0.0/24 -j ACCEPT";
    assert.equal(
      diffMachineState(state({ iptables: [rule] }), state({ iptables: [rule, rule] })),
      `iptables:\n  + ${rule}`,
    );
  });

  test("reports a section that one state lacks", () => {
    assert.match(diffMachineState(state({ guests: [] }), state({})), /guests:\n {2}\(section gone\)/);
  });
});

describe("which files share a machine", () => {
  test("files that need the same host with the same memory share; another size or a fresh machine does not", () => {
    const dom0 = { host: "dom0" as const, memoryMiB: 2048, source: false, fresh: false };
    assert.equal(
      needKey(dom0),
      needKey({ ...dom0, source: true }),
      "a source VPS forward costs the others nothing",
    );
    assert.notEqual(needKey(dom0), needKey({ ...dom0, memoryMiB: 3072 }));
    assert.notEqual(needKey(dom0), needKey({ ...dom0, fresh: true }));
    assert.notEqual(needKey(dom0), needKey({ ...dom0, host: "bare", memoryMiB: 2048 }));
  });
});
