/**
 * RemoteFile's planning and the decisions its lifecycle takes (against a simulated host; the ssh suite proves the
 * scripts on a real one).
 */
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { planDiff, remoteFileKind, RefusedError, secretMarker, VERSION } from "../../provider";
import type { RemoteFileOutputs } from "../../provider";
import { checked } from "../support/checked";
import { fakeHost } from "../support/fake-host";
import { fixtureKeys } from "../support/fixture-keys";

const base = {
  connection: { host: "dom0", hostKey: fixtureKeys.hostFingerprint },
  xenEstateVersion: VERSION,
  path: "/etc/motd",
  content: "hello\n",
};

describe("modes", () => {
  test("a mode is stored as stat prints it, so a setuid mode written with a leading zero never shows as drift", () => {
    for (const [given, stored] of [
      ["04755", "4755"],
      ["0644", "644"],
      ["644", "644"],
      ["0600", "600"],
      ["2775", "2775"],
      ["00755", "755"],
    ])
      assert.equal(checked<RemoteFileOutputs>("RemoteFile", { ...base, mode: given }).mode, stored, given);
    const olds = { ...checked("RemoteFile", { ...base, mode: "4755" }), sha256: "x", previousBackup: null };
    assert.equal(
      planDiff("RemoteFile", olds, checked("RemoteFile", { ...base, mode: "04755" })).changes,
      false,
    );
  });
});

describe("destroy", () => {
  const outs = (over: Partial<RemoteFileOutputs>): RemoteFileOutputs => ({
    ...checked<RemoteFileOutputs>("RemoteFile", base),
    sha256: "x",
    previousBackup: null,
    ...over,
  });

  test("a file that had an original puts it back, and refuses when the original is gone", async () => {
    const restored = fakeHost([{ match: /remove \/etc\/motd/, answer: "restored\n" }]);
    await remoteFileKind.delete(
      restored.ctx,
      "id",
      outs({ previousBackup: "/var/backups/xen-estate/etc/motd.original" }),
    );
    assert.match(restored.scripts[0]!, /cannot put back the original of \/etc\/motd/);
    const gone = fakeHost([{ match: /remove \/etc\/motd/, answer: 97 }]);
    await assert.rejects(
      remoteFileKind.delete(
        gone.ctx,
        "id",
        outs({ previousBackup: "/var/backups/xen-estate/etc/motd.original" }),
      ),
      RefusedError,
    );
  });

  test("state of 0.1, whose original was a dated backup, restores from it or refuses without removing", async () => {
    const h = fakeHost([{ match: /restore \/etc\/motd/, answer: "" }]);
    await remoteFileKind.delete(
      h.ctx,
      "id",
      outs({ previousBackup: "/var/backups/xen-estate/etc/motd.20260101T000000Z" }),
    );
    assert.match(h.scripts[0]!, /xe_refuse .*its backup .* is gone; refusing to remove the file/);
    assert.doesNotMatch(h.scripts[0]!, /rm -f/);
  });

  test("a secret file's backups go with it unless asked to keep them", async () => {
    const secret = fakeHost([{ match: /remove \/etc\/motd/, answer: "removed\n" }]);
    await remoteFileKind.delete(secret.ctx, "id", outs({ sensitive: true, keepBackups: false }));
    assert.match(secret.scripts[0]!, /-name 'motd\.2\*' -delete/);
    const kept = fakeHost([{ match: /remove \/etc\/motd/, answer: "removed\n" }]);
    await remoteFileKind.delete(kept.ctx, "id", outs({ sensitive: true, keepBackups: true }));
    assert.doesNotMatch(kept.scripts[0]!, /-delete/);
    assert.equal(checked<RemoteFileOutputs>("RemoteFile", { ...base, sensitive: true }).keepBackups, false);
    assert.equal(checked<RemoteFileOutputs>("RemoteFile", base).keepBackups, true);
  });
});

describe("secret content in the outputs", () => {
  const secret = { ...base, content: "password = hunter2\n", sensitive: true };
  const sha = createHash("sha256").update(secret.content).digest("hex");
  const recorded = (over: Partial<RemoteFileOutputs> = {}): Record<string, unknown> => ({
    ...checked("RemoteFile", secret),
    content: secretMarker(sha),
    sha256: sha,
    previousBackup: null,
    ...over,
  });

  test("create records a secret content's digest, never the content", async () => {
    const host = fakeHost([{ match: /^write \/etc\/motd$/, answer: "changed\n" }]);
    const outs = await remoteFileKind.create(host.ctx, checked("RemoteFile", secret), () => {});
    assert.equal(outs.content, `[secret sha256:${sha}]`);
    assert.ok(!JSON.stringify(outs).includes("hunter2"));
  });

  test("diff finds the same content unchanged against its recorded digest, and other content changed", () => {
    assert.equal(planDiff("RemoteFile", recorded(), checked("RemoteFile", secret)).changes, false);
    const other = checked("RemoteFile", { ...secret, content: "password = swordfish\n" });
    assert.deepEqual(planDiff("RemoteFile", recorded(), other).changed, ["content"]);
  });

  test("state from before the digest (the content itself recorded) shows no change either", () => {
    const old = recorded({ content: secret.content });
    assert.equal(planDiff("RemoteFile", old, checked("RemoteFile", secret)).changes, false);
  });

  test("a content that is not secret is recorded as it is", async () => {
    const host = fakeHost([{ match: /^write \/etc\/motd$/, answer: "changed\n" }]);
    const outs = await remoteFileKind.create(host.ctx, checked("RemoteFile", base), () => {});
    assert.equal(outs.content, base.content);
  });
});
