/**
 * Preview with values not known yet, through the real engine: inputs of every kind that are other resources'
 * outputs (a whole connection, a size, a boot object, a disk list, an install, the sites) pass check and plan
 * creates, with no failure and no connection opened; and an existing resource whose connection becomes unknown
 * plans an update, never a replacement.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createStack, diagnostics, resourceChanges, type PulumiStack } from "../engine/harness";
import { generateKey, startSshd, type KeyPair, type Sshd } from "../support/sshd";

let sshd: Sshd;
let key: KeyPair;
let dir: string;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-engine-unknowns-"));
  key = await generateKey(dir, "client");
  sshd = await startSshd({ authorizedKeys: [key.publicKey] });
});

after(async () => {
  await sshd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("preview with values not known yet", { timeout: 20 * 60 * 1000 }, () => {
  let stack: PulumiStack;
  const connections = (): number => (sshd.log().match(/Connection from/g) ?? []).length;

  before(async () => {
    stack = await createStack({
      programDir: "test/engine/fixtures/unknowns",
      linkPackage: true,
      config: {
        host: { value: sshd.host },
        port: { value: String(sshd.port) },
        hostKey: { value: sshd.hostKey.fingerprint },
        privateKey: { value: key.privateKey, secret: true },
        path: { value: path.join(dir, "seed") },
        content: { value: "one\n" },
        chained: { value: "true" },
      },
    });
  });

  after(async () => {
    await stack?.remove();
  });

  test("every kind passes check with its connection, sizes and objects unknown, and preview opens no connection", async () => {
    const before = connections();
    const preview = await stack.preview();
    assert.equal(preview.code, 0, preview.stderr);
    assert.deepEqual(diagnostics(preview, "error"), []);
    const creates = resourceChanges(preview)
      .filter((s) => s.op === "create")
      .map((s) => s.type.split(":").pop())
      .sort();
    assert.deepEqual(creates, ["LvmVolume", "NatDomU", "RemoteFile", "RemoteFile", "VarnishFrontend"]);
    assert.equal(connections(), before);
  });

  test("an existing resource whose connection becomes unknown plans an update, not a replacement", async () => {
    await stack.setConfig("chained", "false");
    const up = await stack.up();
    assert.equal(up.code, 0, up.stderr);
    // The seed's content changes, so its outputs (which the others' inputs hang on) are unknown in this preview.
    await stack.setConfig("content", "two\n");
    await stack.setConfig("chained", "true");
    const preview = await stack.preview();
    assert.equal(preview.code, 0, preview.stderr);
    const ops = resourceChanges(preview).map((s) => [s.urn.split("::").pop(), s.op]);
    assert.deepEqual(
      ops.filter(([name]) => name === "seed" || name === "follower").sort(),
      [
        ["follower", "update"],
        ["seed", "update"],
      ],
      "the follower's connection is unknown now: an update that may change it, not a replacement",
    );
    assert.ok(!ops.some(([, op]) => /replace|delete/.test(String(op))), JSON.stringify(ops));
  });
});
