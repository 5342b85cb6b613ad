/**
 * Hostile input through `pulumi up` and `destroy` for LinodeMigration: the real Pulumi engine (the harness), two
 * real sshds this test starts (the source VPS in its own network namespace with its own machine id, the dom0 on this
 * machine in a mount namespace of its own), real loop devices and the real kind, as in
 * linode-migration.engine.test.ts, but every free-text string input that reaches the dom0's or the source's shell
 * carries the corpus of test/support/hostile.ts: each input's valid value with every corpus piece appended that the
 * engine's own `check` accepts there, packed into one value (canary pieces first, as test/lab/hostile.ts does):
 *
 * - `source.device` and `target.device`: device nodes made here (`mknod`, the loop devices' major and minor) at those
 *   paths under /dev, so the path itself, not a link's target, is what `readlink -f` gives and every tool is handed
 *   (lsblk, blkid, dumpe2fs, the chunk engine, e2fsck, resize2fs, mount); both sshds share this machine's /dev. The
 *   target's path, made a file name, is longer than a directory entry may be: the dom0's lock and journal named
 *   after it must still fit (`fileNamePart` in provider/remote/lock.ts);
 * - `source.authorizedKeysFile`: the file the source's sshd reads (its own keys file is a symlink to it);
 * - `source.dom0Host`: the name the dom0's ssh dials, in the /etc/hosts of the dom0 sshd's mount namespace;
 * - `fixups.hostname`: written into the migrated filesystem's /etc/hostname (the fixups run on the copy).
 *
 * Afterwards the copy is real (the target's filesystem clean and holding the source's files), each value arrived
 * whole (the outputs, the fixed hostname, the key file), `destroy` leaves the source as it was and no key of the copy
 * behind, no canary file exists, and no canary text appears in the engine's output beyond the values themselves.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, describe, test } from "node:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { VERSION } from "../../provider";
import {
  createStack,
  resourceChanges,
  type PulumiStack,
  type RunResult,
  externalProgram,
} from "../engine/harness";
import { failuresOf } from "../support/checked";
import { Disks, sh } from "../support/disks";
import { CANARY_DIR, CANARY_PREFIX, canariesIn, spliced } from "../support/hostile";
import { ShapedLink } from "../support/link";
import { generateKey, inMountNamespace, KeyPair, startSshd, Sshd } from "../support/sshd";

const TYPE = "pulumi-nodejs:dynamic/xen-estate:LinodeMigration";
const FIXTURE = "test/engine/fixtures/linode-migration";
const MiB = 2 ** 20;
/** Where the `opt-eq` piece would make a tool write, were it taken as an option. */
const OPT_OUTPUT = "/tmp/xe-hostile-out";

let dir: string;
let programDir: string;
let disks: Disks;
let key: KeyPair;
let link: ShapedLink;
let source: Sshd;
let dom0: Sshd;
/** The top-level entries this test made under /dev for its device nodes (removed after). */
const madeUnderDev: string[] = [];
/** The dom0 sshd's /etc/hosts (bind-mounted in its mount namespace; written in place, so the mount sees it). */
let hostsFile: string;

/** The valid values of the inputs that take free text, before any piece is appended. */
interface Texts {
  sourceDevice: string;
  targetDevice: string;
  authorizedKeysFile: string;
  dom0Host: string;
  hostname: string;
}

/** LinodeMigration's inputs as the program hands them to `check` (connections and credentials as the engine splits them). */
function rawInputs(t: Texts): Record<string, unknown> {
  return {
    connection: { host: dom0.host, port: dom0.port, hostKey: dom0.hostKey.fingerprint },
    credentials: { privateKey: key.privateKey },
    xenEstateVersion: VERSION,
    source: {
      connection: { host: link.nsAddress, hostKey: source.hostKey.fingerprint },
      credentials: { privateKey: key.privateKey },
      device: t.sourceDevice,
      authorizedKeysFile: t.authorizedKeysFile,
      dom0Host: t.dom0Host,
    },
    target: { device: t.targetDevice },
    transfer: { chunkSize: "1MiB" },
    fixups: { hostname: t.hostname },
    allowReplace: false,
  };
}

/**
 * One input's value: `valid` with every corpus piece appended that `check` accepts there (canary pieces first),
 * packed while check still accepts the whole; and the ids of the pieces it carries.
 */
function packed(valid: Texts, input: keyof Texts): { value: string; ids: string[] } {
  const accepted = (v: string): boolean =>
    failuresOf("LinodeMigration", rawInputs({ ...valid, [input]: v })).length === 0;
  const base = valid[input];
  const candidates = spliced(base)
    .filter((h) => h.how === "append" && accepted(h.value))
    .sort((a, b) => Number(!a.value.includes(CANARY_PREFIX)) - Number(!b.value.includes(CANARY_PREFIX)));
  let value = base;
  const ids: string[] = [];
  for (const h of candidates) {
    const next = value + h.value.slice(base.length);
    if (accepted(next)) {
      value = next;
      ids.push(h.id);
    }
  }
  return { value, ids };
}

/** A block device node at `at` (its directories made) for the loop device `loop`: its major and minor. */
function deviceNodeAt(at: string, loop: string): void {
  assert.ok(at.startsWith("/dev/xe-h"), `a device node of this test's own: ${at}`);
  madeUnderDev.push(`/dev/${at.slice(5).split("/")[0]!}`);
  const [major, minor] = execFileSync("lsblk", ["-dno", "MAJ:MIN", loop], { encoding: "utf8" })
    .trim()
    .split(":");
  fs.mkdirSync(path.dirname(at), { recursive: true });
  execFileSync("mknod", ["-m", "600", "--", at, "b", major!, minor!]);
  assert.ok(fs.statSync(at).isBlockDevice(), at);
}

/** The canary files on this machine, which runs both the dom0's and the source's sshd. */
function canaryFiles(): string[] {
  return fs.readdirSync(CANARY_DIR).filter((f) => f.startsWith(CANARY_PREFIX));
}

/** Everything a run printed and every event it logged, as one text. */
function said(r: RunResult): string {
  return `${r.stdout}\n${r.stderr}\n${JSON.stringify(r.events)}`;
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-linode-hostile-"));
  disks = new Disks(dir);
  key = await generateKey(dir, "client");
  link = new ShapedLink(`xelh${process.pid % 100000}`, `10.235.${(process.pid % 200) + 20}`, "1gbit");
  await link.up();
  source = await startSshd({
    authorizedKeys: [key.publicKey],
    netns: link.netns,
    listen: link.nsAddress,
    machineId: `abcdef9876543210fedcba9876${String(process.pid).padStart(6, "0")}`,
  });
  // The dom0's ssh finds the source by the hostile `source.dom0Host` in its own /etc/hosts (the line is added once
  // the name is known).
  hostsFile = path.join(dir, "hosts");
  fs.copyFileSync("/etc/hosts", hostsFile);
  dom0 = await startSshd({
    authorizedKeys: [key.publicKey],
    wrap: inMountNamespace([`mount --bind ${hostsFile} /etc/hosts`]),
  });
  programDir = externalProgram(FIXTURE);
});

after(async () => {
  disks?.cleanup();
  await source?.stop();
  await dom0?.stop();
  await link?.down();
  for (const d of madeUnderDev) fs.rmSync(d, { recursive: true, force: true });
  // The dom0's lock of the target (named after its path; the loop devices' locks are every engine test's).
  for (const f of fs.readdirSync("/run/lock"))
    if (f.includes(`xe-htgt-${process.pid}`)) fs.rmSync(path.join("/run/lock", f), { force: true });
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  if (programDir) fs.rmSync(programDir, { recursive: true, force: true });
});

describe("LinodeMigration with hostile inputs through the engine", { timeout: 10 * 60 * 1000 }, () => {
  let stack: PulumiStack;
  let srcImg: string;
  let tgtDev: string;
  let sourceHashBefore: string;
  let keysBefore: string;
  const runs: RunResult[] = [];
  let v: Record<keyof Texts, { value: string; ids: string[] }>;

  before(async () => {
    srcImg = disks.source("xe-hsrc", 64, 16);
    const srcDev = disks.loop(srcImg, true);
    tgtDev = disks.loop(disks.target("xe-htgt", 80));
    sourceHashBefore = sh(`sha256sum < ${srcImg}`);
    const valid: Texts = {
      // Paths as udev names a device-mapper volume by its name (in a directory of this test's own under /dev).
      sourceDevice: `/dev/xe-hsrc-${process.pid}/by-id/dm-name-xe-source-root`,
      targetDevice: `/dev/xe-htgt-${process.pid}/by-id/dm-name-xe-migrated-root`,
      authorizedKeysFile: `${dir}/authorized_keys`,
      dom0Host: "xe-source",
      hostname: "webxe",
    };
    v = {
      sourceDevice: packed(valid, "sourceDevice"),
      targetDevice: packed(valid, "targetDevice"),
      authorizedKeysFile: packed(valid, "authorizedKeysFile"),
      dom0Host: packed(valid, "dom0Host"),
      hostname: packed(valid, "hostname"),
    };
    for (const [input, { value, ids }] of Object.entries(v))
      console.log(`# ${input}: ${ids.length} pieces, ${value.length} characters: ${JSON.stringify(value)}`);

    fs.appendFileSync(hostsFile, `\n${link.nsAddress}\t${v.dom0Host.value}\n`);
    const all = {
      sourceDevice: v.sourceDevice.value,
      targetDevice: v.targetDevice.value,
      authorizedKeysFile: v.authorizedKeysFile.value,
      dom0Host: v.dom0Host.value,
      hostname: v.hostname.value,
    };
    assert.deepEqual(
      failuresOf("LinodeMigration", rawInputs(all)).map((f) => f.message),
      [],
      "check accepts every hostile value at once",
    );

    deviceNodeAt(v.sourceDevice.value, srcDev);
    deviceNodeAt(v.targetDevice.value, tgtDev);
    // The source's sshd reads its keys from the hostile path from now on.
    fs.mkdirSync(path.dirname(v.authorizedKeysFile.value), { recursive: true });
    fs.copyFileSync(source.authorizedKeysFile, v.authorizedKeysFile.value);
    fs.rmSync(source.authorizedKeysFile);
    fs.symlinkSync(v.authorizedKeysFile.value, source.authorizedKeysFile);
    keysBefore = fs.readFileSync(v.authorizedKeysFile.value, "utf8");

    stack = await createStack({
      programDir,
      config: {
        dom0Host: { value: dom0.host },
        dom0Port: { value: String(dom0.port) },
        dom0HostKey: { value: dom0.hostKey.fingerprint },
        privateKey: { value: key.privateKey, secret: true },
        sourceHost: { value: link.nsAddress },
        sourceHostKey: { value: source.hostKey.fingerprint },
        sourceDevice: { value: all.sourceDevice },
        sourceAuthorizedKeys: { value: all.authorizedKeysFile },
        sourceDom0Host: { value: all.dom0Host },
        targetDevice: { value: all.targetDevice },
        fixupsHostname: { value: all.hostname },
      },
    });
  });

  after(async () => {
    await stack?.remove();
  });

  test("every free-text input carries corpus pieces, a canary among the paths'", () => {
    for (const [input, { ids }] of Object.entries(v))
      assert.ok(ids.length >= 5, `${input}: ${ids.join(" ")}`);
    for (const input of ["sourceDevice", "targetDevice", "authorizedKeysFile"] as const)
      assert.notDeepEqual(canariesIn(v[input].value), [], `${input} carries a canary piece`);
  });

  test("up migrates the disk through the hostile paths and names, and fixes the copy up", async () => {
    const up = await stack.up();
    runs.push(up);
    assert.deepEqual(
      resourceChanges(up).map((s) => [s.type, s.op]),
      [[TYPE, "create"]],
    );
    const out = await stack.outputs();
    assert.equal(out.phase, "migrated");
    assert.equal(out.targetDevice, v.targetDevice.value, "the target's path arrives as written");
    assert.ok((out.lastTransfer as { dataBytes: number }).dataBytes >= 16 * MiB);
    assert.deepEqual([...(out.fixedFiles as string[])].sort(), ["/etc/fstab", "/etc/hostname"]);
    // The target is the source's filesystem, clean, with its files, fixed up with the hostname as written.
    assert.match(sh(`e2fsck -fn ${tgtDev} 2>&1`), /xe-hsrc: \d+\/\d+ files/);
    const file = (dev: string, f: string): string => sh(`debugfs -R 'cat ${f}' ${dev} 2>/dev/null`);
    const sum = (dev: string, f: string): string =>
      sh(`debugfs -R 'cat ${f}' ${dev} 2>/dev/null | sha256sum`);
    assert.equal(file(tgtDev, "/root/marker"), "source xe-hsrc\n");
    assert.equal(sum(tgtDev, "/root/data.bin"), sum(srcImg, "/root/data.bin"));
    assert.equal(file(tgtDev, "/etc/hostname"), `${v.hostname.value}\n`);
    assert.match(file(tgtDev, "/etc/fstab"), /^\/dev\/xvda \/ ext4 /m);
    // The dom0's key was authorised in the hostile file and taken back after the copy.
    assert.equal(fs.readFileSync(v.authorizedKeysFile.value, "utf8"), keysBefore);
    assert.equal(fs.readlinkSync(source.authorizedKeysFile), v.authorizedKeysFile.value);
  });

  test("the state holds every hostile value as written", async () => {
    const res = (await stack.exportState()).deployment.resources!.find((r) => r.type === TYPE)!;
    const o = res.outputs as {
      source: { device: string; authorizedKeysFile: string; dom0Host: string };
      target: { device: string };
      fixups: { hostname: string };
    };
    assert.equal(o.source.device, v.sourceDevice.value);
    assert.equal(o.source.authorizedKeysFile, v.authorizedKeysFile.value);
    assert.equal(o.source.dom0Host, v.dom0Host.value);
    assert.equal(o.target.device, v.targetDevice.value);
    assert.equal(o.fixups.hostname, v.hostname.value);
  });

  test("destroy leaves the source as it was, no key of the copy and no journal", async () => {
    const destroy = await stack.destroy();
    runs.push(destroy);
    assert.equal(destroy.code, 0);
    assert.equal(sh(`sha256sum < ${srcImg}`), sourceHashBefore, "the source is unchanged");
    const keys = fs.readFileSync(v.authorizedKeysFile.value, "utf8");
    assert.doesNotMatch(keys, /xen-estate-migration/);
    assert.equal(keys, keysBefore);
    const ours = (d: string): string[] =>
      fs.existsSync(d) ? fs.readdirSync(d).filter((f) => f.includes(`xe-htgt-${process.pid}`)) : [];
    assert.deepEqual(ours("/var/lib/xen-estate/migrations"), [], "the dom0's journal is gone");
    assert.deepEqual(ours("/run/xen-estate"), [], "the copy's key pair is gone from the dom0");
  });

  test("no canary ran, and no canary text appears in the engine's output beyond the values", () => {
    assert.deepEqual(canaryFiles(), [], "no canary file exists");
    assert.equal(fs.existsSync(OPT_OUTPUT), false, `${OPT_OUTPUT} (an option piece taken as one)`);
    const values = Object.values(v)
      .map((x) => x.value)
      .sort((a, b) => b.length - a.length);
    for (const r of runs) {
      let rest = said(r);
      for (const value of values) rest = rest.split(value).join("<value>");
      const at = rest.indexOf(CANARY_PREFIX);
      assert.equal(
        at,
        -1,
        `pulumi ${r.args[0]} said ${JSON.stringify(rest.slice(Math.max(0, at - 200), at + 100))}`,
      );
    }
  });
});
