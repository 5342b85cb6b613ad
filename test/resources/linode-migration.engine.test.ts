/**
 * LinodeMigration through the real Pulumi engine, between two sshds this test starts (the source VPS in its own
 * network namespace with its own machine id, the dom0 on this machine) and loop devices: the copy, a second up
 * that copies nothing, the source's credentials encrypted in state, a change of source after the migration that
 * preview refuses without allowReplace, refresh finding a target that changed size or disappeared, and a destroy
 * that leaves the source as it was.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  createStack,
  diagnostics,
  resourceChanges,
  type PulumiStack,
  externalProgram,
} from "../engine/harness";
import { Disks, sh } from "../support/disks";
import { ShapedLink } from "../support/link";
import { generateKey, KeyPair, startSshd, Sshd } from "../support/sshd";

const TYPE = "pulumi-nodejs:dynamic/xen-estate:LinodeMigration";
const FIXTURE = "test/engine/fixtures/linode-migration";
const MiB = 2 ** 20;

let dir: string;
let programDir: string;
let disks: Disks;
let key: KeyPair;
let link: ShapedLink;
let source: Sshd;
let dom0: Sshd;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-linode-engine-"));
  disks = new Disks(dir);
  key = await generateKey(dir, "client");
  link = new ShapedLink(`xele${process.pid % 100000}`, `10.234.${(process.pid % 200) + 20}`, "1gbit");
  await link.up();
  source = await startSshd({
    authorizedKeys: [key.publicKey],
    netns: link.netns,
    listen: link.nsAddress,
    machineId: `fedcba9876543210fedcba9876${String(process.pid).padStart(6, "0")}`,
  });
  dom0 = await startSshd({ authorizedKeys: [key.publicKey] });
  programDir = externalProgram(FIXTURE);
});

after(async () => {
  disks?.cleanup();
  await source?.stop();
  await dom0?.stop();
  await link?.down();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  if (programDir) fs.rmSync(programDir, { recursive: true, force: true });
});

describe("LinodeMigration through the engine", { timeout: 20 * 60 * 1000 }, () => {
  let stack: PulumiStack;
  let srcImg: string;
  let srcDev: string;
  let tgtImg: string;
  let tgtDev: string;
  let sourceHashBefore: string;

  before(async () => {
    srcImg = disks.source("xe-esrc", 64, 16);
    srcDev = disks.loop(srcImg, true);
    tgtImg = disks.target("xe-etgt", 80);
    tgtDev = disks.loop(tgtImg);
    sourceHashBefore = sh(`sha256sum < ${srcImg}`);
    stack = await createStack({
      programDir,
      config: {
        dom0Host: { value: dom0.host },
        dom0Port: { value: String(dom0.port) },
        dom0HostKey: { value: dom0.hostKey.fingerprint },
        privateKey: { value: key.privateKey, secret: true },
        sourceHost: { value: link.nsAddress },
        sourceHostKey: { value: source.hostKey.fingerprint },
        sourceDevice: { value: srcDev },
        sourceAuthorizedKeys: { value: source.authorizedKeysFile },
        targetDevice: { value: tgtDev },
      },
    });
  });

  after(async () => {
    await stack?.remove();
  });

  test("up migrates the disk and reports the copy", async () => {
    const up = await stack.up();
    assert.deepEqual(
      resourceChanges(up).map((s) => [s.type, s.op]),
      [[TYPE, "create"]],
    );
    const out = await stack.outputs();
    assert.equal(out.phase, "migrated");
    assert.match(String(out.sourceHash), /^[0-9a-f]{64}$/);
    assert.ok((out.lastTransfer as { dataBytes: number }).dataBytes >= 16 * MiB);
    assert.match(sh(`e2fsck -fn ${tgtDev} 2>&1`), /xe-esrc: \d+\/\d+ files/);
    // Progress reached Pulumi's output as the copy ran.
    assert.match(up.stdout + up.stderr + JSON.stringify(up.events), /copying [\d.]+\w+ of 64MiB/);
  });

  test("the source's credentials are encrypted in state like the dom0's", async () => {
    const state = JSON.stringify(await stack.exportState());
    assert.doesNotMatch(state, /BEGIN OPENSSH PRIVATE KEY|b3BlbnNzaC1rZXktdjE/);
    const res = (await stack.exportState()).deployment.resources!.find((r) => r.type === TYPE)!;
    const creds = (res.outputs!.source as { credentials: Record<string, unknown> }).credentials;
    assert.ok("ciphertext" in creds, `source.credentials in state: ${JSON.stringify(creds).slice(0, 80)}`);
    assert.equal((res.outputs!.source as { connection: { host: string } }).connection.host, link.nsAddress);
  });

  test("a second up copies nothing", async () => {
    const before = sh(`sha256sum < ${tgtImg}`);
    const up = await stack.up();
    assert.deepEqual(resourceChanges(up), []);
    assert.equal(sh(`sha256sum < ${tgtImg}`), before);
  });

  test("another source after the migration is a replace over the migrated disk: preview refuses it without allowReplace", async () => {
    const other = disks.loop(disks.source("xe-esrc2", 64, 1), true);
    await stack.setConfig("sourceDevice", other);
    const preview = await stack.preview({ expectFailure: true });
    assert.notEqual(preview.code, 0);
    assert.match(
      preview.stdout + preview.stderr,
      /`source\.device` cannot change on an existing LinodeMigration .*allowReplace: true/,
    );
    await stack.setConfig("sourceDevice", srcDev);
    disks.detach(other);
  });

  test("refresh reports a target that changed size", async () => {
    sh(`truncate -s ${96 * MiB} ${tgtImg} && losetup -c ${tgtDev}`);
    const refresh = await stack.refresh();
    assert.ok(
      diagnostics(refresh, "warning").some((d) => /is 96MiB now, 80MiB when it was migrated/.test(d.message)),
      JSON.stringify(diagnostics(refresh)),
    );
    // Stack outputs are computed at `up`; the resource's state is what refresh rewrote.
    const res = (await stack.exportState()).deployment.resources!.find((r) => r.type === TYPE)!;
    assert.equal(res.outputs!.targetBytes, 96 * MiB);
  });

  test("refresh reports a target that was removed", async () => {
    disks.detach(tgtDev);
    const refresh = await stack.refresh();
    assert.equal(refresh.changeSummary?.delete, 1, JSON.stringify(refresh.changeSummary));
    tgtDev = disks.loop(tgtImg);
    await stack.setConfig("targetDevice", tgtDev);
  });

  test("a new up migrates again onto the recreated target, and destroy leaves the source as it was", async () => {
    // The target holds the earlier copy. Where the dom0's record of that copy still names this device, the new
    // migration resumes it (nothing differs); where it does not (another loop device number), overwriting the
    // disk needs consent: allowReplace covers both.
    await stack.setConfig("allowReplace", "true");
    const up = await stack.up();
    assert.deepEqual(
      resourceChanges(up).map((s) => [s.type, s.op]),
      [[TYPE, "create"]],
    );
    const destroy = await stack.destroy();
    assert.equal(destroy.code, 0);
    assert.equal(sh(`sha256sum < ${srcImg}`), sourceHashBefore, "the source is unchanged");
    assert.equal(fs.existsSync(`/var/lib/xen-estate/migrations/${path.basename(tgtDev)}`), false);
    assert.doesNotMatch(fs.readFileSync(source.authorizedKeysFile, "utf8"), /xen-estate-migration/);
  });
});
