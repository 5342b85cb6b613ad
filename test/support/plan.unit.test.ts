/**
 * test/support/plan.ts reads what a compiled test file declares (its lab machine, its tier) without running it:
 * a file whose tests and hooks would leave a mark shows its declarations and leaves none.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { repoPath } from "./repo";

describe("reading a test file's declarations", () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-ci-budget-plan-"));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test("shows the file's lab machine and tier and runs none of its tests or hooks", () => {
    const mark = path.join(dir, "ran");
    const file = path.join(dir, "example.lab.test.js");
    const dist = (...p: string[]): string => JSON.stringify(repoPath("dist", "test", ...p));
    fs.writeFileSync(
      file,
      [
        `const { describe, test, before } = require("node:test");`,
        `const fs = require("node:fs");`,
        `const { labMachine } = require(${dist("lab", "shared.js")});`,
        `const { slowTier } = require(${dist("support", "tier.js")});`,
        `slowTier("the fast example proves it");`,
        `describe("outer", () => {`,
        `  const machine = labMachine("dom0", { memoryMiB: 3072, source: true });`,
        `  before(() => fs.writeFileSync(${JSON.stringify(mark)}, "hook"));`,
        `  test("t", () => fs.writeFileSync(${JSON.stringify(mark)}, "test"));`,
        `});`,
        "",
      ].join("\n"),
    );
    const r = spawnSync(process.execPath, [repoPath("dist", "test", "support", "plan.js"), file], {
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {
      [file]: {
        lab: [{ host: "dom0", memoryMiB: 3072, source: true, fresh: false }],
        slow: ["the fast example proves it"],
      },
    });
    assert.equal(fs.existsSync(mark), false, "no test or hook ran");
  });
});
