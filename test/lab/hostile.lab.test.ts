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
import { shellQuote } from "../../provider";
import { createStack, repoRoot, resourceChanges, type PulumiStack } from "../engine/harness";
import { slowTier } from "../support/tier";
import { asWritten, canaries as canariesOn, declare, FILES, type Declared } from "./hostile";
import { type Lab } from "./lab";
import { labMachine } from "./shared";

slowTier(
  "test/framework/hostile-input.ssh.test.ts runs every corpus piece check accepts, for every string input of every kind, through the real scripts on a real sshd on every run, finding no canary and no value split into words; this file sends them through pulumi up to a lab dom0",
);

const machine = labMachine("dom0");
/** At most this many resources per input (canary pieces first), to bound the lab time. */
const PER_INPUT = 6;

describe("hostile input through pulumi up on a lab dom0", { timeout: 60 * 60_000 }, () => {
  let lab: Lab;
  let stack: PulumiStack;
  let specDir: string;
  let declared: Declared[];

  /** The canary files on the dom0 and on this machine. */
  const canaries = (): Promise<string[]> => canariesOn((command) => lab.ssh(command));

  before(async () => {
    lab = await machine.acquire();
    declared = declare(lab, { perInput: PER_INPUT, guest: true });
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
