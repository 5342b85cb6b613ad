/**
 * Hostile input through `pulumi up` on a lab dom0: the corpus of test/support/hostile.ts, spliced into the inputs
 * that take free text and reach the dom0's scripts and configs (a file's path and content, a secret file's
 * content, a volume's name and label, a guest's kernel command line and owner), every value that `check` accepts
 * (the same check the engine runs, called here first to choose them), declared by a real program, sent through the
 * real engine and provider to the real tools (coreutils, LVM, mkfs, xl) on the lab's Xen dom0. After `up`, `refresh`
 * and `destroy`, no canary file exists on the dom0 or on this machine: no piece ran as a command.
 *
 * Left out, with their proof elsewhere: inputs that are commands by contract (`validate`, `reloadCommand`), and
 * inputs whose accepted hostile values no real host can satisfy, so `up` could only fail (`owner`/`group`: no such
 * user; `mkfsOptions`: options mkfs refuses): test/framework/hostile-input.ssh.test.ts runs every one of them through
 * the real scripts on a real sshd, where the tools are stubs that log their argv.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { Value } from "google-protobuf/google/protobuf/struct_pb";
import { shellQuote, VERSION } from "../../provider";
import { createStack, repoRoot, resourceChanges, type PulumiStack } from "../engine/harness";
import { failuresOf } from "../support/checked";
import { CANARY_DIR, CANARY_PREFIX, spliced, type HostileValue } from "../support/hostile";
import { slowTier } from "../support/tier";
import { LAB_NET, type Lab } from "./lab";
import { labMachine } from "./shared";

slowTier(
  "test/framework/hostile-input.ssh.test.ts runs every corpus piece check accepts, for every string input of every kind, through the real scripts on a real sshd on every run, finding no canary and no value split into words; this file sends them through pulumi up to a lab dom0",
);

const machine = labMachine("dom0");
/** Where the files of this test live on the dom0 (removed after). */
const FILES = "/tmp/xe-hostile-lab";
/** At most this many resources per input (canary pieces first), to bound the lab time. */
const PER_INPUT = 6;

/** The lab machine's facts `check` needs (its connection). */
type LabConnection = Pick<Lab, "host" | "port" | "hostKey" | "privateKey">;

interface Declared {
  kind: string;
  name: string;
  args: Record<string, unknown>;
  dependsOn?: string[];
  /** What it carries: `RemoteFile path subst@append`. */
  carries: string;
}

/**
 * What a file written with `v` as its content reads back as: `v` as the engine carries it from the program to the
 * provider (its protobuf encoding, google-protobuf as @pulumi/pulumi uses it: a lone high surrogate is dropped, a lone
 * low one arrives as it was), then written as UTF-8 (a lone surrogate becomes U+FFFD). Both only touch strings that
 * are not well-formed UTF-16, which no UTF-8 file could hold as written; every other character arrives as written.
 */
function asWritten(v: string): string {
  const carried = Value.deserializeBinary(Value.fromJavaScript(v).serializeBinary()).toJavaScript() as string;
  return Buffer.from(carried, "utf8").toString("utf8");
}

/** Whether the engine's own check accepts `args` for `kind` on `lab`'s dom0. */
function accepted(lab: LabConnection, kind: string, args: Record<string, unknown>): boolean {
  const raw = {
    connection: { host: lab.host, port: lab.port, hostKey: lab.hostKey },
    credentials: { privateKey: lab.privateKey },
    xenEstateVersion: VERSION,
    ...args,
  };
  return failuresOf(kind, raw).length === 0;
}

/**
 * The hostile values for one input, `valid` with each piece appended (the form that keeps a path under its
 * directory and a label short): those check accepts with `at(value)` as the args, canary pieces first.
 */
function acceptedValues(
  lab: LabConnection,
  kind: string,
  valid: string,
  at: (v: string) => Record<string, unknown>,
): HostileValue[] {
  const ok = spliced(valid).filter((h) => h.how === "append" && accepted(lab, kind, at(h.value)));
  const canary = (h: HostileValue): number => (h.value.includes(CANARY_PREFIX) ? 0 : 1);
  return ok.sort((a, b) => canary(a) - canary(b));
}

/**
 * One value carrying as many of the input's accepted hostile values ({@link acceptedValues}) as check accepts at once
 * (their pieces joined after `valid`), and the ids of those it carries.
 */
function packed(
  lab: LabConnection,
  kind: string,
  valid: string,
  at: (v: string) => Record<string, unknown>,
): { value: string; ids: string[] } {
  let value = valid;
  const ids: string[] = [];
  for (const h of acceptedValues(lab, kind, valid, at)) {
    const next = value + h.value.slice(valid.length);
    if (accepted(lab, kind, at(next))) {
      value = next;
      ids.push(h.id);
    }
  }
  return { value, ids };
}

/** The resources of the program (exported for a look without a lab), each input's accepted hostile values spread over at most PER_INPUT of them. */
export function declare(lab: LabConnection): Declared[] {
  const out: Declared[] = [];
  const file = (p: string, content: string, sensitive = false): Record<string, unknown> => ({
    path: p,
    content,
    mode: "0600",
    createDirectories: true,
    sensitive,
  });

  // A file's content: every accepted piece in one file, plain and secret.
  for (const sensitive of [false, true]) {
    const p = `${FILES}/content-${sensitive ? "secret" : "plain"}.txt`;
    const { value, ids } = packed(lab, "RemoteFile", "key = value\n", (v) => file(p, v, sensitive));
    out.push({
      kind: "RemoteFile",
      name: `content-${sensitive ? "secret" : "plain"}`,
      args: file(p, value, sensitive),
      carries: `RemoteFile content (${sensitive ? "sensitive" : "plain"}) ${ids.length} pieces`,
    });
  }

  // A file's path: one file per value (a path names one file).
  const base = `${FILES}/paths/app.conf`;
  acceptedValues(lab, "RemoteFile", base, (v) => file(v, "x\n"))
    .slice(0, PER_INPUT)
    .forEach((h, i) =>
      out.push({
        kind: "RemoteFile",
        name: `path-${i}`,
        args: file(h.value, "x\n"),
        carries: `RemoteFile path ${h.id}`,
      }),
    );

  // A volume's name and label: one volume per value.
  const volume = (name: string, label: string): Record<string, unknown> => ({
    name,
    size: "8MiB",
    filesystem: "ext4",
    label,
  });
  acceptedValues(lab, "LvmVolume", "xeh-name", (v) => volume(v, "xeh"))
    .slice(0, PER_INPUT)
    .forEach((h, i) =>
      out.push({
        kind: "LvmVolume",
        name: `lv-name-${i}`,
        args: volume(h.value, "xeh"),
        carries: `LvmVolume name ${h.id}`,
      }),
    );
  acceptedValues(lab, "LvmVolume", "xeh", (v) => volume("xeh-label", v))
    .slice(0, PER_INPUT)
    .forEach((h, i) =>
      out.push({
        kind: "LvmVolume",
        name: `lv-label-${i}`,
        args: volume(`xeh-label-${i}`, h.value),
        carries: `LvmVolume label ${h.id}`,
      }),
    );

  // A guest's kernel command line and owner: every accepted piece in one guest (the busybox kit, which takes
  // its address from the command line's first words and ignores the rest).
  out.push({
    kind: "LvmVolume",
    name: "guest-disk",
    args: { name: "xehg-disk", size: "8MiB" },
    carries: "a disk",
  });
  const cmdline = `console=hvc0 xe.ip=10.0.0.41/24 xe.gw=10.0.0.1 xe.name=xehg`;
  const owner = "xe-project/xe-stack/xehg";
  const guest = (c: string, o: string): Record<string, unknown> => ({
    name: "xehg",
    owner: o,
    ip: "10.0.0.41",
    memoryMiB: 160,
    type: "pv",
    boot: { kernel: `${LAB_NET.kitDir}/vmlinuz`, ramdisk: `${LAB_NET.kitDir}/initrd.gz`, cmdline: c },
    disks: [{ path: "/dev/vg0/xehg-disk", vdev: "xvda" }],
    shutdownTimeoutSeconds: 10,
  });
  const c = packed(lab, "NatDomU", cmdline, (v) => guest(v, owner));
  const o = packed(lab, "NatDomU", owner, (v) => guest(c.value, v));
  out.push({
    kind: "NatDomU",
    name: "guest",
    args: guest(c.value, o.value),
    dependsOn: ["guest-disk"],
    carries: `NatDomU boot.cmdline ${c.ids.length} pieces, owner ${o.ids.length} pieces`,
  });
  return out;
}

describe("hostile input through pulumi up on a lab dom0", { timeout: 60 * 60_000 }, () => {
  let lab: Lab;
  let stack: PulumiStack;
  let specDir: string;
  let declared: Declared[];

  /** The canary files on the dom0 and on this machine. */
  async function canaries(): Promise<string[]> {
    const remote = await lab.ssh(`ls -A ${CANARY_DIR} | { grep '^${CANARY_PREFIX}' || true; }`);
    const local = fs.readdirSync(CANARY_DIR).filter((f) => f.startsWith(CANARY_PREFIX));
    return [
      ...remote
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((f) => `dom0:${f}`),
      ...local.map((f) => `here:${f}`),
    ];
  }

  before(async () => {
    lab = await machine.acquire();
    declared = declare(lab);
    for (const d of declared) console.log(`# hostile: ${d.name}: ${d.carries}`);
    specDir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-hostile-lab-"));
    const specFile = path.join(specDir, "spec.json");
    fs.writeFileSync(specFile, JSON.stringify({ resources: declared }));
    stack = await createStack({
      programDir: `${repoRoot()}/test/lab/fixtures/hostile`,
      linkPackage: true,
      config: { ...lab.stackConfig(), specFile: { value: specFile } },
    });
    assert.deepEqual(await canaries(), [], "no canary before the run");
  });

  after(async () => {
    try {
      if (stack) await stack.destroy().catch((e: Error) => console.log(`# ${e.message.split("\n")[0]}`));
      await stack?.remove();
      // What a failed run may have left: the guest, the volumes, the files.
      await lab?.ssh(
        [
          "xl destroy xehg 2>/dev/null || true",
          "for lv in $(lvs --noheadings -o lv_name vg0 | awk '$1 ~ /^xeh/'); do lvremove -f vg0/$lv >/dev/null; done",
          `rm -rf ${FILES}`,
        ].join("\n"),
      );
      fs.rmSync(specDir, { recursive: true, force: true });
    } finally {
      await machine.release();
    }
  });

  test("up creates every resource, each value as data, and no piece runs", async () => {
    assert.ok(declared.length > 10, `a program of ${declared.length} resources`);
    const up = await stack.up();
    const created = resourceChanges(up).filter((s) => s.op === "create").length;
    assert.equal(created, declared.length);
    assert.deepEqual(await canaries(), []);
    // Each file holds exactly its content, byte for byte, as the engine carried it (see asWritten).
    for (const d of declared.filter((x) => x.kind === "RemoteFile")) {
      const p = d.args.path as string;
      const got = await lab.ssh(`base64 -w0 < ${shellQuote(p)}`);
      assert.equal(
        Buffer.from(got.trim(), "base64").toString(),
        asWritten(d.args.content as string),
        d.carries,
      );
    }
  });

  test("refresh and a second up find nothing changed, and no piece runs", async () => {
    await stack.refresh();
    const second = await stack.up();
    assert.deepEqual(resourceChanges(second), []);
    assert.deepEqual(await canaries(), []);
  });

  test("destroy removes every resource, and no piece runs", async () => {
    const down = await stack.destroy();
    assert.equal(resourceChanges(down).filter((s) => s.op === "delete").length, declared.length);
    assert.deepEqual(await canaries(), []);
    assert.equal((await lab.ssh("lvs --noheadings -o lv_name vg0 | awk '$1 ~ /^xeh/' | wc -l")).trim(), "0");
    assert.equal((await lab.ssh("xl list | awk '$1 == \"xehg\"' | wc -l")).trim(), "0");
  });
});
