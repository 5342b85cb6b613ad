/**
 * LinodeMigration under cut connections (issue 15): for a create (copy, verify, grow) and a delete, the provider's
 * SSH path to the dom0 is dropped at each remote step in turn; the next run (as the engine makes it: a create that
 * recorded a partial migration continues as an update) must converge: the target holds the source's filesystem,
 * clean and grown, the source is as it was (its disk unchanged, no key of the copy left in its authorized_keys), no
 * key pair of the copy is left on the dom0 and no copy of it still runs there; after delete, no journal is left, the
 * source is as it was and the migrated disk is untouched (it is the guest's).
 *
 * Real: both sshds (the source in its own network namespace with its own machine id, the dom0 this machine), bash,
 * python3's chunk engine, e2image, zstd, ssh between them, e2fsck and resize2fs on loop devices, and the cut TCP
 * path in front of the dom0. The source's own path is not cut here: the walkthrough's lab test cuts the dom0's copy
 * from the source in the middle and resumes it (test/examples/walkthrough.lab.test.ts).
 */
import { after, before } from "node:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  Checker,
  hostContext,
  keyDir,
  keyTag,
  linodeMigrationKind,
  resolveConnection,
  setLogSink,
  setSharedPool,
  SshPool,
  stateDir,
  VERSION,
  type Context,
  type LinodeMigrationInputs,
  type LinodeMigrationOutputs,
} from "../../provider";
import { checked } from "../support/checked";
import { CutRelay, describeCutMatrix, type CutScenario, type LastRun } from "../support/cut-matrix";
import { Disks, sh } from "../support/disks";
import { ShapedLink } from "../support/link";
import { generateKey, startSshd, type KeyPair, type Sshd } from "../support/sshd";

const MiB = 2 ** 20;
/** Small disks: each cut costs a copy (and each delete's reset another), so the matrix stays within minutes. */
const SOURCE_MIB = 32;
const TARGET_MIB = 40;

let dir: string;
let key: KeyPair;
let link: ShapedLink;
let source: Sshd;
let dom0: Sshd;
let relay: CutRelay;
let disks: Disks;
let srcDev: string;
let tgtDev: string;
/** The target as it was before any copy (old data), laid back onto the device before each create. */
let staleTarget: string;
let sourceDigest: string;
let authorizedKeys: string;
const pools: SshPool[] = [];

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xecut-linode-"));
  disks = new Disks(dir);
  key = await generateKey(dir, "client");
  const n = (process.pid % 200) + 20;
  link = new ShapedLink(`xelc${process.pid % 100000}`, `10.232.${n}`, "400mbit");
  await link.up();
  source = await startSshd({
    authorizedKeys: [key.publicKey],
    netns: link.netns,
    listen: link.nsAddress,
    machineId: `fedcba9876543210fedcba9876${String(process.pid).padStart(6, "0")}`,
  });
  dom0 = await startSshd({ authorizedKeys: [key.publicKey] });
  relay = new CutRelay(dom0.host, dom0.port);
  await relay.start();
  const shared = new SshPool();
  pools.push(shared);
  setSharedPool(shared);
  // The copies' progress and the cleanup warnings a cut provokes are the resource's to show, not this table's.
  setLogSink(() => undefined);
  srcDev = disks.loop(disks.source("xe-cut-src", SOURCE_MIB, 4), true);
  staleTarget = disks.target("xe-cut-tgt", TARGET_MIB);
  fs.copyFileSync(staleTarget, `${staleTarget}.orig`);
  tgtDev = disks.loop(staleTarget);
  sourceDigest = sh(`sha256sum < ${srcDev}`);
  authorizedKeys = fs.readFileSync(source.authorizedKeysFile, "utf8");
});

after(async () => {
  setLogSink(undefined);
  setSharedPool(undefined);
  for (const p of pools) await p.close();
  await relay?.stop();
  if (tgtDev) sh(`rm -rf -- ${stateDir(migrationKey())} ${keyDir(migrationKey())}`);
  disks?.cleanup();
  await source?.stop();
  await dom0?.stop();
  await link?.down();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const migrationKey = (): string => path.basename(tgtDev);
/** Matches the command lines of this copy's processes (its key path), but not the shell that looks for them. */
const copyPattern = (): string => `'[${keyDir(migrationKey())[0]}]${keyDir(migrationKey()).slice(1)}/'`;

/**
 * A context over fresh pools (a new `pulumi up` process): the dom0 through the relay, the source directly (the
 * provider's own connection to it, which this matrix does not cut).
 */
function freshContext(): Context {
  const pool = new SshPool();
  pools.push(pool);
  const src = pool.host(
    resolveConnection(
      new Checker(),
      { host: link.nsAddress, hostKey: source.hostKey.fingerprint, dialErrorLimit: 1, perDialTimeout: 5 },
      { privateKey: key.privateKey },
    )!,
  );
  return {
    ...hostContext(relay.freshHost(dom0.hostKey.fingerprint, key.privateKey)),
    hosts: { source: src },
  };
}

function inputs(): LinodeMigrationInputs {
  return checked<LinodeMigrationInputs>("LinodeMigration", {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: dom0.hostKey.fingerprint },
    credentials: { privateKey: key.privateKey },
    xenEstateVersion: VERSION,
    fixups: false,
    grow: true,
    source: {
      connection: { host: link.nsAddress, hostKey: source.hostKey.fingerprint },
      credentials: { privateKey: key.privateKey },
      authorizedKeysFile: source.authorizedKeysFile,
      device: srcDev,
    },
    target: { device: tgtDev },
    transfer: { chunkSize: "1MiB" },
  });
}

/** Puts back what a cut run may have changed outside the target: the dom0's files of this migration, the source's keys. */
function forgetMigration(): void {
  sh(`pkill -f -- ${copyPattern()} || true`);
  sh(`rm -rf -- ${stateDir(migrationKey())} ${keyDir(migrationKey())}`);
  fs.writeFileSync(source.authorizedKeysFile, authorizedKeys);
}

/** The target as the resource found it on its first day: old data, nothing of this migration on either end. */
function pristine(): void {
  forgetMigration();
  sh(`dd if=${staleTarget}.orig of=${tgtDev} bs=1M conv=fsync status=none`);
}

/** Why either end is not as a finished migration (or, with `deleted`, a destroyed one) leaves it, or undefined. */
function whatIsWrong(outs: LinodeMigrationOutputs | undefined, deleted = false): string | undefined {
  if (sh(`sha256sum < ${srcDev}`) !== sourceDigest) return "the source's disk changed";
  const keys = fs.readFileSync(source.authorizedKeysFile, "utf8");
  if (keys.includes(keyTag(migrationKey()))) return "the copy's key is still authorised on the source";
  if (keys !== authorizedKeys) return "the source's authorized_keys changed";
  if (fs.existsSync(keyDir(migrationKey())))
    return `${keyDir(migrationKey())} (the copy's key pair) is left on the dom0`;
  const running = sh(`pgrep -af -- ${copyPattern()} || true`).trim();
  if (running) return `a copy still runs on the dom0: ${running}`;
  if (deleted && fs.existsSync(stateDir(migrationKey())))
    return `${stateDir(migrationKey())} is left on the dom0`;
  if (!deleted) {
    if (!outs) return "the last run returned no outputs";
    if (outs.phase !== "migrated") return `the outputs say ${outs.phase}`;
  }
  const fsck = sh(`e2fsck -fn ${tgtDev} >/dev/null 2>&1 && echo clean || echo "exit $?"`).trim();
  if (fsck !== "clean") return `e2fsck -fn of the target: ${fsck}`;
  const blocks = sh(
    `dumpe2fs -h ${tgtDev} 2>/dev/null | awk -F: '/^Block count/{b=$2}/^Block size/{s=$2}END{print b*s}'`,
  ).trim();
  if (Number(blocks) !== TARGET_MIB * MiB) return `the target's filesystem holds ${blocks} bytes, not grown`;
  const data = (dev: string): string => sh(`debugfs -R 'cat /root/data.bin' ${dev} 2>/dev/null | sha256sum`);
  if (data(tgtDev) !== data(srcDev)) return "the target's /root/data.bin differs from the source's";
  return undefined;
}

function createScenario(): CutScenario<LinodeMigrationOutputs> {
  let outs: LinodeMigrationOutputs | undefined;
  return {
    operation: "create (copy, verify, grow)",
    reset: () => {
      pristine();
      outs = undefined;
      return Promise.resolve();
    },
    run: async (ctx: Context, last: LastRun<LinodeMigrationOutputs>) => {
      if (last.partial) {
        outs = await linodeMigrationKind.update(ctx, "id", last.partial, inputs(), {
          changed: [],
          replaces: [],
          classes: {},
        });
        return outs;
      }
      let partial: Partial<LinodeMigrationOutputs> | undefined;
      try {
        outs = await linodeMigrationKind.create(ctx, inputs(), (p) => (partial = p));
        return outs;
      } catch (err) {
        if (partial) last.partial = { ...inputs(), ...partial } as LinodeMigrationOutputs;
        throw err;
      }
    },
    converged: () => Promise.resolve(whatIsWrong(outs)),
  };
}

function deleteScenario(): CutScenario<LinodeMigrationOutputs> {
  let finished: LinodeMigrationOutputs | undefined;
  let migrated = "";
  return {
    operation: "delete",
    reset: async () => {
      pristine();
      const ctx = freshContext();
      finished = await linodeMigrationKind.create(ctx, inputs(), () => undefined);
      migrated = sh(`sha256sum < ${tgtDev}`);
    },
    run: (ctx: Context) => linodeMigrationKind.delete(ctx, "id", finished!),
    converged: () => {
      const wrong = whatIsWrong(finished, true);
      if (wrong) return Promise.resolve(wrong);
      return Promise.resolve(
        sh(`sha256sum < ${tgtDev}`) === migrated ? undefined : "the migrated disk changed",
      );
    },
  };
}

describeCutMatrix("LinodeMigration", [createScenario(), deleteScenario()], {
  relay: () => relay,
  freshContext,
  timeoutMs: 30 * 60 * 1000,
});
