/**
 * LinodeMigration under cut connections (issue 15), on each of its three paths:
 * - the provider's SSH path to the dom0 (every step of a create (copy, verify, grow) and of a delete);
 * - the provider's own SSH path to the source (every step the kind runs there: the source's probe and machine id,
 *   authorising the copy's key, taking it back, and the delete's revocation);
 * - the dom0's own SSH path to the source, which the direct copy dials itself (`source.dom0Host`/`dom0Port`): it is
 *   refused, dropped right after the ssh handshake, dropped after half the stream's bytes and dropped after the last
 *   data but before the session's closing messages.
 * After each cut, the next run (as the engine makes it: a create that recorded a partial migration continues as an
 * update; one that returned is done) must converge: the target holds the source's filesystem, clean and grown, the
 * source is as it was (its disk unchanged, no key of the copy left in its authorized_keys), no key pair of the copy
 * is left on the dom0 and no copy of it still runs there; after delete, no journal is left, the source is as it was
 * and the migrated disk is untouched (it is the guest's). A copy resumed after the cut in the middle must send less
 * data than a whole copy.
 *
 * Real: both sshds (the source in its own network namespace with its own machine id, the dom0 this machine), bash,
 * python3's chunk engine, e2image, zstd, the dom0's own ssh to the source, e2fsck and resize2fs on loop devices, and
 * three cut TCP paths, one relay each, in front of the dom0's sshd and (twice) of the source's. Simulated: the
 * outage itself (a relay drops its connections and refuses new ones), and where the dom0's copy is cut: the relay
 * counts the bytes it forwards and follows the source's SSH packets (the source's sshd offers only AES-GCM, whose
 * packet lengths travel in the clear), so the cut lands after the handshake's last byte, at half the stream, or
 * between the session's last data packet and its closing messages, whatever the run's packet sizes. The walkthrough's
 * lab test also cuts the dom0's copy in the middle on a real network and resumes it
 * (test/examples/walkthrough.lab.test.ts).
 */
import { after, before } from "node:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  hostContext,
  keyDir,
  keyTag,
  linodeMigrationKind,
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
import {
  CutRelay,
  describeCutMatrix,
  TIERED_STEPS,
  TIERED_WAYS,
  type CutPoint,
  type CutScenario,
  type LastRun,
} from "../support/cut-matrix";
import { Disks, sh } from "../support/disks";
import { ShapedLink } from "../support/link";
import { SshPacketFraming } from "../support/ssh-framing";
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
/** The provider's path to the dom0. */
let relay: CutRelay;
/** The provider's own path to the source (`ctx.hosts.source`). */
let sourceRelay: CutRelay;
/** The dom0's own path to the source: the direct copy dials it (`source.dom0Host`/`dom0Port`). */
let copyRelay: CutRelay;
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
    // Ciphers whose packet lengths travel in the clear, so the copy's relay can cut between two packets.
    extraConfig: ["Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com"],
  });
  dom0 = await startSshd({ authorizedKeys: [key.publicKey] });
  relay = new CutRelay(dom0.host, dom0.port);
  await relay.start();
  sourceRelay = new CutRelay(source.host, source.port);
  await sourceRelay.start();
  copyRelay = new CutRelay(source.host, source.port);
  await copyRelay.start();
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
  await sourceRelay?.stop();
  await copyRelay?.stop();
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
 * A context over fresh pools (a new `pulumi up` process): the dom0 and the source each through their relay. The
 * new process's shared pool is new too, so it reads both machines' ids again, as every `up` does.
 */
function freshContext(): Context {
  const shared = new SshPool();
  pools.push(shared);
  setSharedPool(shared);
  return {
    ...hostContext(relay.freshHost(dom0.hostKey.fingerprint, key.privateKey)),
    hosts: { source: sourceRelay.freshHost(source.hostKey.fingerprint, key.privateKey) },
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
      // The dom0 dials the source through its own relay.
      dom0Host: "127.0.0.1",
      dom0Port: copyRelay.port,
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

/** The three paths, as the table names them. */
const DOM0_PATH = "provider→dom0";
const SOURCE_PATH = "provider→source";
const COPY_PATH = "dom0→source";

/** A create (copy, verify, grow), and what its last run returned. */
function createScenario(via: string): {
  scenario: CutScenario<LinodeMigrationOutputs>;
  outputs: () => LinodeMigrationOutputs | undefined;
} {
  let outs: LinodeMigrationOutputs | undefined;
  const scenario: CutScenario<LinodeMigrationOutputs> = {
    operation: `create (copy, verify, grow), ${via}`,
    reset: () => {
      pristine();
      outs = undefined;
      return Promise.resolve();
    },
    run: async (ctx: Context, last: LastRun<LinodeMigrationOutputs>) => {
      // A create that returned is done: the engine's next `up`, with the same inputs, does nothing to it.
      if (outs) return outs;
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
  return { scenario, outputs: () => outs };
}

function deleteScenario(via: string): CutScenario<LinodeMigrationOutputs> {
  let finished: LinodeMigrationOutputs | undefined;
  let migrated = "";
  let deleted = false;
  return {
    operation: `delete, ${via}`,
    reset: async () => {
      pristine();
      const ctx = freshContext();
      finished = await linodeMigrationKind.create(ctx, inputs(), () => undefined);
      migrated = sh(`sha256sum < ${tgtDev}`);
      deleted = false;
    },
    run: async (ctx: Context) => {
      // A delete that returned is done: the engine forgets the resource and never deletes it again.
      if (deleted) return;
      await linodeMigrationKind.delete(ctx, "id", finished!);
      deleted = true;
    },
    converged: () => {
      const wrong = whatIsWrong(finished, true);
      if (wrong) return Promise.resolve(wrong);
      return Promise.resolve(
        sh(`sha256sum < ${tgtDev}`) === migrated ? undefined : "the migrated disk changed",
      );
    },
  };
}

/** Lines in this migration's journal on the dom0 (the chunks it says landed); 0 when there is none. */
function journalLines(): number {
  const file = path.join(stateDir(migrationKey()), "journal");
  if (!fs.existsSync(file)) return 0;
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.includes(" ")).length;
}

/**
 * What the dom0 has sent the source when its handshake is surely over: its own handshake is a few KiB, and then the
 * sender script with the chunk engine (over 20 KiB) follows on the session's stdin, before the source sends any data.
 */
const HANDSHAKE_MARK = 8192;

/** The create with the dom0's own path to the source cut at chosen points of the copy. */
function copyPathScenario(): CutScenario<LinodeMigrationOutputs> {
  const { scenario, outputs } = createScenario(COPY_PATH);
  /** What the uncut run measured. */
  let uncut: { handshake: number; total: number; dataBytes: number; journal: number } | undefined;
  /** The journal's lines and the relay's cuts right after the cut run. */
  let left = { journal: 0, cuts: 0 };
  const measure = async (ctx: Context, last: LastRun<LinodeMigrationOutputs>): Promise<unknown> => {
    copyRelay.resetCounts();
    const handshake = copyRelay.countsAt(HANDSHAKE_MARK, "toTarget");
    const outs = (await scenario.run(ctx, last)) as LinodeMigrationOutputs;
    if (copyRelay.counts.toTarget < HANDSHAKE_MARK)
      throw new Error(`the dom0 sent the source ${copyRelay.counts.toTarget} bytes: did it dial its relay?`);
    uncut = {
      handshake: (await handshake).fromTarget,
      total: copyRelay.counts.fromTarget,
      dataBytes: outs.lastTransfer!.dataBytes,
      journal: journalLines(),
    };
    if (uncut.handshake > 16384 || uncut.total < 1024 * 1024 || uncut.dataBytes <= 0)
      throw new Error(`the uncut copy's stream is not what the cut points assume: ${JSON.stringify(uncut)}`);
    return outs;
  };
  /** A point; `check` judges the cut run (its error, undefined if it returned) and the next. */
  const point = (
    summary: string,
    arm: () => void,
    check: (cutError: Error | undefined) => string | undefined,
  ): CutPoint => ({
    summary,
    arm: () => {
      copyRelay.resetCounts();
      copyRelay.onData = undefined;
      arm();
    },
    disarm: () => {
      left = { journal: journalLines(), cuts: copyRelay.countedCuts };
      copyRelay.resetCounts();
      copyRelay.onData = undefined;
      copyRelay.up();
    },
    check: (cutError) => Promise.resolve(check(cutError)),
  });
  const lastLine = (err: Error): string => err.message.trim().split("\n").slice(-1)[0]!.trim();
  /** Why the cut run did not fail because the dom0's ssh to the source died, or undefined. */
  const sshDied = (err: Error | undefined, how = /ssh to the source exited 255/): string | undefined =>
    !err
      ? "the cut run did not fail"
      : how.test(err.message)
        ? undefined
        : `the cut run did not fail for the dom0's ssh: ${lastLine(err)}`;
  const counted = (want: string): string | undefined =>
    left.cuts === 1 ? undefined : `the relay made ${left.cuts} cuts, not the one ${want}`;
  const landed = (want: number, why: string): string | undefined =>
    left.journal === want
      ? undefined
      : `the cut run's journal held ${left.journal} chunks, not ${want}: ${why}`;
  /** What the source had said when the relay dropped the path at the end. */
  let closing: ReturnType<SshPacketFraming["closing"]>;
  return {
    ...scenario,
    relay: () => copyRelay,
    run: (ctx, last) => (uncut ? scenario.run(ctx, last) : measure(ctx, last)),
    points: [
      point(
        "the copy's ssh to the source refused (the path is down when the dom0 dials)",
        () => copyRelay.down(),
        (err) => sshDied(err) ?? landed(0, "nothing was sent"),
      ),
      point(
        "dropped after the ssh handshake, before the first data",
        () => copyRelay.dropAfter(uncut!.handshake),
        (err) => counted("after the handshake") ?? sshDied(err) ?? landed(0, "no data was sent"),
      ),
      point(
        "dropped in the middle of the data (half the stream's bytes)",
        // The copy of a few MiB is over well within the second between the journal's own syncs: what it keeps of
        // the chunks that landed before the cut is what the receiver records as the stream breaks off.
        () => copyRelay.dropAfter(uncut!.handshake + Math.round((uncut!.total - uncut!.handshake) / 2)),
        (err) => {
          const resumed = outputs()?.lastTransfer?.dataBytes;
          return (
            counted("at half the stream") ??
            sshDied(err) ??
            (left.journal > 0
              ? undefined
              : "the cut run's journal held no chunk: what had landed was not recorded") ??
            (resumed !== undefined && resumed < uncut!.dataBytes
              ? undefined
              : `the resumed copy sent ${resumed} bytes of data, a whole copy ${uncut!.dataBytes} (the cut run's journal held ${left.journal} of ${uncut!.journal} chunks)`)
          );
        },
      ),
      point(
        "dropped after the last data, before the session's closing messages",
        () => {
          const framing = new SshPacketFraming();
          closing = undefined;
          copyRelay.onData = (direction, chunk) => {
            if (direction === "fromTarget") framing.feed(chunk);
          };
          // Held from well before the end (the stream's size varies by a few hundred bytes with its packets).
          copyRelay.dropBeforeEnd({
            fromTarget: uncut!.total - 256 * 1024,
            release: (held) => {
              closing = framing.closing();
              return closing && closing.at - (framing.seen - held.length);
            },
          });
        },
        (err) =>
          counted("before the closing messages") ??
          landed(uncut!.journal, "every chunk had arrived") ??
          (closing?.exitStatus
            ? // Every byte of data arrived (zstd and the receiver ended well); the dom0's ssh never learnt how the
              // sender ended.
              sshDied(err, /ssh to the source exited 255, zstd 0, the receiver 0\)/)
            : // The source's sshd sent the exit status before the last data: the dom0's ssh had it, so it ends as
              // the sender did, and the copy is whole.
              err &&
              `the cut run failed, though the dom0's ssh had every byte and the exit status: ${lastLine(err)}`),
      ),
    ],
  };
}

/** The matrix's scenarios: each path's, a row each in the one table. */
function scenarios(): CutScenario<LinodeMigrationOutputs>[] {
  const onSource = { which: "source", relay: () => sourceRelay };
  return [
    createScenario(DOM0_PATH).scenario,
    { ...createScenario(SOURCE_PATH).scenario, ...onSource },
    copyPathScenario(),
    deleteScenario(DOM0_PATH),
    { ...deleteScenario(SOURCE_PATH), ...onSource },
  ];
}

describeCutMatrix("LinodeMigration", scenarios(), {
  relay: () => relay,
  freshContext,
  ways: TIERED_WAYS,
  steps: TIERED_STEPS,
  timeoutMs: 30 * 60 * 1000,
});
