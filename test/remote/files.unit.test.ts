/**
 * The write primitive's script, offline: whatever a caller passes, the script parses and holds the value as data.
 * (What the script does on a host is proven in files.ssh.test.ts.)
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileScript } from "../../provider";
import { shellSplices } from "../support/quoting";

function parses(script: string): string | null {
  const r = spawnSync("bash", ["-n"], { input: `f() {\n${script}\n}\n`, encoding: "utf8" });
  return r.status === 0 ? null : r.stderr;
}

describe("writeFileScript", () => {
  test("a validation command is one quoted word run by its own bash, whatever it holds", () => {
    for (const validate of ["grep -q good %s'", `test -s %s"; touch /tmp/xe-x; "`, "a %s) ; b $(c) `d`"]) {
      const script = writeFileScript("/etc/xe/app.conf", "x\n", { validate });
      assert.equal(parses(script), null, validate);
      for (const part of validate.split("%s").filter((p) => p.trim().length > 2))
        assert.deepEqual(shellSplices(script, part), [], `${validate}: ${part}`);
      assert.match(script, /bash -o pipefail -c '.*' xe-validate "\$tmp"/);
    }
  });
});
