/**
 * The provider pattern through the real Pulumi engine, on the smallest real resource: a RemoteFile on an sshd
 * this test starts. Proves: create, an idempotent second up without remote writes, offline preview with the
 * declared update/replace, refresh that finds drift (edit and deletion) and an up that repairs it, a library
 * upgrade shown as a diff that keeps the outputs, a half-made create recorded and finished, destroy, and no
 * plaintext credential in state or logs.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  createStack,
  diagnostics,
  repoRoot,
  resourceChanges,
  RunResult,
  type PulumiStack,
  externalProgram,
} from "../engine/harness";
import { BACKUP_ROOT } from "../../provider/remote/files";
import { generateKey, KeyPair, startSshd, Sshd } from "../support/sshd";

const TYPE = "pulumi-nodejs:dynamic/xen-estate:RemoteFile";
const FIXTURE = "test/engine/fixtures/remote-file";
/** The program, copied outside the repo and given a node_modules as a user's project has one. */
let programDir: string;

let sshd: Sshd;
let key: KeyPair;
let dir: string;
const logs: string[] = [];

function record(r: RunResult): RunResult {
  logs.push(r.stdout, r.stderr, JSON.stringify(r.events));
  return r;
}

function connectionsSoFar(): number {
  return (sshd.log().match(/Connection from/g) ?? []).length;
}

async function stackFor(file: string, extra: Record<string, string> = {}): Promise<PulumiStack> {
  const config: Record<string, { value: string; secret?: boolean }> = {
    host: { value: sshd.host },
    port: { value: String(sshd.port) },
    hostKey: { value: sshd.hostKey.fingerprint },
    privateKey: { value: key.privateKey, secret: true },
    path: { value: file },
    content: { value: "hello from pulumi\n" },
  };
  for (const [k, v] of Object.entries(extra)) config[k] = { value: v };
  return createStack({ programDir, config });
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-engine-file-"));
  key = await generateKey(dir, "client");
  sshd = await startSshd({ authorizedKeys: [key.publicKey] });
  programDir = externalProgram(FIXTURE);
});

after(async () => {
  await sshd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(programDir, { recursive: true, force: true });
});

describe("RemoteFile through the engine", { timeout: 30 * 60 * 1000 }, () => {
  let stack: PulumiStack;
  const file = (): string => path.join(dir, "managed.conf");

  before(async () => {
    stack = await stackFor(path.join(dir, "managed.conf"));
  });
  after(async () => {
    await stack?.remove();
  });

  test("up creates the file", async () => {
    const up = record(await stack.up());
    assert.deepEqual(
      resourceChanges(up).map((s) => [s.type, s.op]),
      [[TYPE, "create"]],
    );
    assert.equal(fs.readFileSync(file(), "utf8"), "hello from pulumi\n");
    // The provider reports what the create cost (benchmarks read this line): one login, a few round trips.
    const cost = diagnostics(up, "debug")
      .map((d) =>
        /\[RemoteFile [^\]]+\] create: (\d+) remote round trips, (\d+) SSH handshakes/.exec(d.message),
      )
      .find(Boolean);
    assert.ok(cost, "the create's cost line is in the engine's event log");
    assert.equal(Number(cost[2]), 1, "one SSH handshake");
    assert.ok(Number(cost[1]) >= 2 && Number(cost[1]) <= 6, `round trips: ${cost[1]}`);
    const out = await stack.outputs();
    assert.equal(out.path, file());
    assert.match(String(out.sha256), /^[0-9a-f]{64}$/);
  });

  test("a second up reports no changes and writes nothing on the host", async () => {
    const before = fs.statSync(file());
    const up = record(await stack.up());
    assert.deepEqual(resourceChanges(up), []);
    assert.deepEqual(up.changeSummary, { same: 2 });
    const after = fs.statSync(file());
    assert.deepEqual([after.ino, after.mtimeMs, after.ctimeMs], [before.ino, before.mtimeMs, before.ctimeMs]);
  });

  test("preview plans an update for new content and a replacement for a new path, without connecting", async () => {
    const connections = connectionsSoFar();
    await stack.setConfig("content", "changed content\n");
    const update = record(await stack.preview({ diff: true }));
    assert.deepEqual(
      resourceChanges(update).map((s) => s.op),
      ["update"],
    );
    assert.match(update.stdout, /content/);
    await stack.setConfig("path", path.join(dir, "moved.conf"));
    const replace = record(await stack.preview());
    assert.ok(
      resourceChanges(replace).some((s) => s.op === "replace" || s.op === "delete-replaced"),
      JSON.stringify(resourceChanges(replace)),
    );
    assert.equal(connectionsSoFar(), connections, "preview opened no SSH connection");
    await stack.setConfig("path", file());
  });

  test("up applies the new content and keeps the old one as a backup", async () => {
    const up = record(await stack.up());
    assert.deepEqual(
      resourceChanges(up).map((s) => s.op),
      ["update"],
    );
    assert.equal(fs.readFileSync(file(), "utf8"), "changed content\n");
    const backups = fs
      .readdirSync(path.join("/var/backups/xen-estate", dir))
      .filter((n) => n.startsWith("managed.conf."));
    assert.ok(
      backups.some(
        (b) =>
          fs.readFileSync(path.join("/var/backups/xen-estate", dir, b), "utf8") === "hello from pulumi\n",
      ),
    );
  });

  test("refresh reports a file edited out of band, and the next up puts it back", async () => {
    fs.writeFileSync(file(), "edited by hand\n");
    const refresh = record(await stack.refresh());
    assert.equal(refresh.changeSummary?.update, 1, JSON.stringify(refresh.changeSummary));
    const up = record(await stack.up());
    assert.deepEqual(
      resourceChanges(up).map((s) => s.op),
      ["update"],
    );
    assert.equal(fs.readFileSync(file(), "utf8"), "changed content\n");
  });

  test("refresh reports a file deleted out of band, and the next up recreates it", async () => {
    fs.rmSync(file());
    const refresh = record(await stack.refresh());
    assert.equal(refresh.changeSummary?.delete, 1, JSON.stringify(refresh.changeSummary));
    const up = record(await stack.up());
    assert.deepEqual(
      resourceChanges(up).map((s) => s.op),
      ["create"],
    );
    assert.equal(fs.readFileSync(file(), "utf8"), "changed content\n");
  });

  test("a new library version shows as an update and keeps every output", async () => {
    // Install a copy of the package with another version where the program and the provider find it.
    const link = path.join(programDir, "node_modules", "xen-estate");
    const copy = fs.mkdtempSync(path.join(os.tmpdir(), "xe-upgrade-"));
    const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot(), "package.json"), "utf8")) as Record<
      string,
      unknown
    >;
    fs.writeFileSync(path.join(copy, "package.json"), JSON.stringify({ ...pkg, version: "99.0.0-test" }));
    // A real copy of the compiled code: through a symlink, Node would resolve ../../package.json in the repo.
    // What the package ships (package.json `files`): the compiled provider and components.
    for (const dir of ["provider", "components"])
      fs.cpSync(path.join(repoRoot(), "dist", dir), path.join(copy, "dist", dir), { recursive: true });
    fs.symlinkSync(path.join(repoRoot(), "templates"), path.join(copy, "templates"));
    fs.symlinkSync(path.join(repoRoot(), "node_modules"), path.join(copy, "node_modules"));
    const before = await stack.outputs();
    const original = fs.readlinkSync(link);
    fs.rmSync(link);
    fs.symlinkSync(copy, link);
    try {
      const preview = record(await stack.preview({ diff: true }));
      assert.deepEqual(
        resourceChanges(preview).map((s) => s.op),
        ["update"],
      );
      assert.match(preview.stdout, /xenEstateVersion/);
      record(await stack.up());
      assert.deepEqual(await stack.outputs(), before);
      const state = await stack.exportState();
      const res = state.deployment.resources?.find((r) => r.type === TYPE);
      assert.equal(res?.outputs?.xenEstateVersion, "99.0.0-test");
      assert.equal(res?.outputs?.sha256, before.sha256);
    } finally {
      fs.rmSync(link);
      fs.symlinkSync(original, link);
      fs.rmSync(copy, { recursive: true, force: true });
    }
  });

  test("destroy removes the file", async () => {
    const destroy = record(await stack.destroy());
    assert.equal(destroy.changeSummary?.delete, 2);
    assert.equal(fs.existsSync(file()), false);
    const state = await stack.exportState();
    assert.equal(state.deployment.resources?.length ?? 0, 0);
  });
});

describe("a create that fails half way", { timeout: 20 * 60 * 1000 }, () => {
  let stack: PulumiStack;
  const flag = (): string => path.join(dir, "reload-may-succeed");
  const file = (): string => path.join(dir, "half.conf");

  before(async () => {
    stack = await stackFor(path.join(dir, "half.conf"), {
      reloadCommand: `test -e ${path.join(dir, "reload-may-succeed")}`,
    });
  });
  after(async () => {
    await stack?.destroy({ expectFailure: true }).catch(() => undefined);
    await stack?.remove();
  });

  test("is recorded in state with what it made, and the next up finishes it", async () => {
    const failed = record(await stack.up({ expectFailure: true }));
    assert.notEqual(failed.code, 0);
    assert.equal(
      fs.readFileSync(file(), "utf8"),
      "hello from pulumi\n",
      "the file was written before the reload failed",
    );
    const state = await stack.exportState();
    const res = state.deployment.resources?.find((r) => r.type === TYPE);
    assert.ok(res, "the half-made resource is in state");
    assert.equal(res.outputs?.sha256, null, "its reload is still owed");
    assert.ok(Array.isArray(res.initErrors) && res.initErrors.length > 0, JSON.stringify(res));

    fs.writeFileSync(flag(), "");
    const up = record(await stack.up());
    assert.equal(up.code, 0);
    const after = (await stack.exportState()).deployment.resources?.find((r) => r.type === TYPE);
    assert.match(String(after?.outputs?.sha256), /^[0-9a-f]{64}$/);
    assert.equal(after?.initErrors, undefined);
  });

  test("can be refreshed and destroyed before any next up, which removes what it made", async () => {
    // A user whose first up failed may decide against the resource: refresh and destroy load the provider from
    // the half-made resource's state as they do from a finished one's.
    const half = path.join(dir, "half-then-destroy.conf");
    const s = await stackFor(half, { reloadCommand: "false" });
    try {
      const failed = record(await s.up({ expectFailure: true }));
      assert.notEqual(failed.code, 0);
      assert.equal(
        fs.readFileSync(half, "utf8"),
        "hello from pulumi\n",
        "the file was written before the reload failed",
      );
      const refresh = record(await s.refresh());
      assert.equal(refresh.code, 0, refresh.stderr);
      const destroy = record(await s.destroy());
      assert.equal(destroy.code, 0, destroy.stderr);
      assert.equal(fs.existsSync(half), false, "destroy removed the file the half-made create wrote");
      assert.deepEqual((await s.exportState()).deployment.resources ?? [], []);
    } finally {
      await s.remove();
    }
  });
});

describe("secrets", () => {
  for (const how of ["marked with pulumi.secret", "declared sensitive"] as const)
    test(`a secret file's content (${how}) is in the file only: not in state, the engine's output, or a backup after destroy`, async () => {
      const token = (n: string): string => `xe-secret-${n}-${crypto.randomBytes(12).toString("hex")}`;
      const [first, second, drifted] = [token("first"), token("second"), token("drifted")];
      const name = how === "declared sensitive" ? "sensitive" : "marked";
      const file = path.join(dir, `secret-${name}.conf`);
      const source = path.join(dir, `secret-${name}.source`);
      fs.writeFileSync(source, `password = ${first}\n`);
      const stack = await stackFor(file, {
        contentFile: source,
        ...(how === "declared sensitive" ? { sensitive: "true" } : { contentSecret: "true" }),
      });
      const runs: RunResult[] = [];
      const states: string[] = [];
      try {
        runs.push(record(await stack.up()));
        assert.equal(fs.readFileSync(file, "utf8"), `password = ${first}\n`, "the file holds the content");
        states.push(JSON.stringify(await stack.exportState()));
        // The outputs record the content's digest only; a second up compares digests and changes nothing.
        const again = record(await stack.up());
        runs.push(again);
        assert.deepEqual(resourceChanges(again), []);
        // A change keeps the first content as a backup while the resource exists (mode 600, as for a secret).
        fs.writeFileSync(source, `password = ${second}\n`);
        runs.push(record(await stack.up()));
        assert.equal(fs.readFileSync(file, "utf8"), `password = ${second}\n`);
        states.push(JSON.stringify(await stack.exportState()));
        const backups = `${BACKUP_ROOT}${dir}`;
        const kept = fs.readdirSync(backups).filter((f) => f.startsWith(`secret-${name}.conf.`));
        assert.equal(kept.length, 1, `one backup of the first content: ${kept.join(" ")}`);
        assert.equal(fs.statSync(path.join(backups, kept[0]!)).mode & 0o777, 0o600);
        // Edited on the host: refresh sees the drift by its digest (never reading the file back), up repairs it.
        fs.writeFileSync(file, `password = ${drifted}\n`);
        const refresh = record(await stack.refresh());
        runs.push(refresh);
        assert.equal(refresh.changeSummary?.update, 1, JSON.stringify(refresh.changeSummary));
        states.push(JSON.stringify(await stack.exportState()));
        runs.push(record(await stack.up()));
        assert.equal(
          fs.readFileSync(file, "utf8"),
          `password = ${second}\n`,
          "up put the declared content back",
        );
        runs.push(record(await stack.destroy()));
        assert.equal(fs.existsSync(file), false);
        assert.deepEqual(
          fs.readdirSync(backups).filter((f) => f.startsWith(`secret-${name}.conf.`)),
          [],
          "the backups went with the resource",
        );
      } finally {
        await stack.remove();
      }
      const said: [string, string][] = [
        ...runs.map((r): [string, string] => [
          `pulumi ${r.args[0]}`,
          `${r.stdout}\n${r.stderr}\n${JSON.stringify(r.events)}`,
        ]),
        ...states.map((x, i): [string, string] => [`state export ${i + 1}`, x]),
      ];
      assert.match(
        states.join("\n"),
        /"content":\{"4dabf18193072939515e22adb298388d":"1b47061264138c4ac30d75fd1eb44270","ciphertext":/,
      );
      for (const t of [first, second, drifted])
        for (const [where, text] of said) {
          const at = text.indexOf(t);
          assert.equal(at, -1, `${where}: ${JSON.stringify(text.slice(Math.max(0, at - 3000), at + 60))}`);
        }
    });

  test("no plaintext private key in any state export or engine output", async () => {
    const body = key.privateKey
      .split("\n")
      .filter((l) => l.length > 20 && !l.startsWith("-----"))
      .map((l) => l.trim());
    assert.ok(body.length > 0);
    assert.ok(logs.length > 0, "the engine tests above ran");
    const everything = logs.join("\n");
    for (const line of body)
      assert.ok(!everything.includes(line), "a line of the private key appeared in engine output");
    const stack = await stackFor(path.join(dir, "secret-check.conf"));
    try {
      record(await stack.up());
      const exported = JSON.stringify(await stack.exportState());
      for (const line of body)
        assert.ok(!exported.includes(line), "a line of the private key appeared in the state");
      assert.match(
        exported,
        /"credentials":\{"4dabf18193072939515e22adb298388d":"1b47061264138c4ac30d75fd1eb44270","ciphertext":/,
      );
    } finally {
      await stack.destroy();
      await stack.remove();
    }
  });
});
