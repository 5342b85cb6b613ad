/**
 * LinodeMigration's lifecycle: a VPS disk copied into a block device on the dom0 (an LV), verified, resumable, and
 * made bootable under Xen.
 *
 * The dom0 pulls the data from the source itself (the machine running `pulumi up` only orchestrates), used blocks
 * only, in chunks hashed on both ends: a re-run sends only the chunks the target lacks or holds differently, so an
 * interrupted copy resumes and a first copy made while the VPS runs (`source.live`) leaves only the delta for the
 * downtime. Nothing is lost: the source is only ever read; a target that holds data this migration did not copy is
 * refused; once migrated, a change of what is copied is a replacement that needs `allowReplace`.
 */
import { InputError, RefusedError, SshConnectError, showValue } from "../../core/errors";
import { formatSize } from "../../core/units";
import { Checker } from "../../core/validate";
import type { Context, Kind } from "../../framework/kind";
import { deepEqual } from "../../framework/plan";
import { pipeBetween } from "../../remote/pipe";
import type { RemoteHost } from "../../ssh/remote-host";
import {
  checkMigration,
  copyIdentity,
  MIGRATION_DEFAULTS,
  migrationReplaces,
  parseFields,
  ProgressMeter,
  resolveMethod,
  stateKey,
  type LinodeMigrationInputs,
  type LinodeMigrationOutputs,
  type TransferStats,
} from "./plan";
import {
  authorizeScript,
  directCopyScript,
  dropGrantScript,
  finishScript,
  fixupsScript,
  forgetScript,
  grantScript,
  prepareScript,
  relayReceiveCommand,
  renderFixupFiles,
  revokeScript,
  senderScript,
  sourceProbeScript,
  targetProbeScript,
  verifyScript,
  type CopyPlan,
} from "./scripts";

export type { LinodeMigrationInputs, LinodeMigrationOutputs };

/** How often the progress line is refreshed in Pulumi's output. */
const PROGRESS_MS = 2000;

/** Everything the hosts said before anything is copied. */
interface Preflight {
  method: "ext" | "raw";
  fsType: string | null;
  sourceBytes: number;
  sourceUsedBytes: number | null;
  sourceUuid: string | null;
  sourceHostId: string;
  targetBytes: number;
  aes: boolean;
  nameservers: string[];
  identity: string;
}

function sourceOf(ctx: Context): RemoteHost {
  const src = ctx.hosts.source;
  if (!src) throw new Error("LinodeMigration has no source connection (source.connection)");
  return src;
}

function fail(property: string, value: unknown, rule: string, hint?: string): never {
  throw new InputError(property, showValue(value), rule, hint);
}

/** Reads both ends and refuses, naming the property, whatever would make the copy wrong or lose data. */
async function preflight(ctx: Context, i: LinodeMigrationInputs, key: string): Promise<Preflight> {
  const src = sourceOf(ctx);
  const [s, t, sourceHostId, dom0Id] = await Promise.all([
    src.script(sourceProbeScript(i.source.device), { summary: `probe ${i.source.device} on the source` }),
    ctx.host.script(targetProbeScript(i.target.device, key), { summary: `probe ${i.target.device}` }),
    ctx.hostId(src),
    ctx.hostId(ctx.host),
  ]);
  if (sourceHostId === dom0Id)
    fail(
      "source.connection",
      i.source.connection.host,
      `reaches the dom0 itself (${dom0Id}): source and target must be different machines`,
      "Point source.connection at the VPS in rescue mode",
    );
  const sf = parseFields(s.stdout, "XE-SRC");
  const tf = parseFields(t.stdout, "XE-TGT");
  const missing = (out: string) =>
    out
      .split("\n")
      .filter((l) => l.startsWith("XE-MISSING "))
      .map((l) => l.slice(11));
  if (sf.exists !== "1") fail("source.device", i.source.device, "does not exist on the source");
  if (!sf.type?.startsWith("block"))
    fail("source.device", i.source.device, `must be a block device (it is a ${sf.type ?? "?"})`);
  if ((sf.mounted || sf.swap) && !i.source.live)
    throw new RefusedError(
      `\`source.device\` ${i.source.device} is in use on the source (${sf.mounted ? `mounted at ${sf.mounted}` : "active swap"}): a copy of a running filesystem is not consistent`,
      "Boot the VPS into rescue mode (Linode: Rescue, then `passwd; service ssh start` in Lish), or set `source.live: true` for a seed copy and copy again from rescue mode",
    );
  const fsType = sf.fs || null;
  const method = resolveMethod(i.transfer.method, fsType);
  if (typeof method !== "string") fail("transfer.method", i.transfer.method, method.error);
  const srcMissing = missing(s.stdout).filter((m) => method === "ext" || !m.startsWith("dumpe2fs"));
  if (srcMissing.length > 0)
    throw new RefusedError(
      `the source lacks ${srcMissing.join(", ")}, which the copy runs there`,
      "Install them in the rescue system (Finnix: `apt-get install python3 zstd`)",
    );
  const dom0Missing = missing(t.stdout);
  if (dom0Missing.length > 0)
    throw new RefusedError(
      `the dom0 ${ctx.conn.host} lacks ${dom0Missing.join(", ")}`,
      "Install them (apt-get install python3 zstd openssh-client e2fsprogs)",
    );
  const blocks = Number(sf.blocks);
  const blockSize = Number(sf.blocksize);
  const sourceBytes = method === "ext" ? blocks * blockSize : Number(sf.size);
  if (!Number.isSafeInteger(sourceBytes) || sourceBytes <= 0)
    throw new Error(`the source probe gave no size for ${i.source.device}: ${JSON.stringify(sf)}`);
  if (method === "ext" && !i.source.live && sf.state && !/^clean/.test(sf.state))
    throw new RefusedError(
      `the filesystem on \`source.device\` ${i.source.device} is "${sf.state}", not clean: it was not unmounted cleanly`,
      "Run `e2fsck -f` on it in the rescue system first (the source is only ever read here)",
    );
  if (tf.exists !== "1") fail("target.device", i.target.device, "does not exist on the dom0");
  if (!tf.type?.startsWith("block"))
    fail("target.device", i.target.device, `must be a block device (it is a ${tf.type ?? "?"})`);
  const targetBytes = Number(tf.size);
  if (targetBytes < sourceBytes)
    fail(
      "target.device",
      i.target.device,
      `must hold at least the source's ${method === "ext" ? "filesystem" : "device"} (${formatSize(sourceBytes)}); it has ${formatSize(targetBytes)}`,
      "Make the LvmVolume at least that large",
    );
  if (tf.holder)
    throw new RefusedError(
      `refusing to write \`target.device\` ${i.target.device}: guest ${tf.holder} holds it`,
    );
  if (tf.mounted)
    throw new RefusedError(
      `refusing to write \`target.device\` ${i.target.device}: it is mounted at ${tf.mounted}`,
    );
  const sourceUuid = sf.uuid || null;
  const identity = copyIdentity({
    sourceHost: i.source.connection.host,
    sourceDevice: i.source.device,
    sourceUuid,
    sourceBytes,
    chunkBytes: i.transfer.chunkBytes,
    targetDevice: i.target.device,
  });
  const ours = tf.identity === identity;
  const holds = tf.fs || tf.pttype;
  if (holds && !ours && !i.allowReplace)
    fail(
      "target.device",
      i.target.device,
      `holds ${tf.fs ? `a ${tf.fs} filesystem${tf.uuid ? ` (UUID ${tf.uuid})` : ""}` : `a partition table (${tf.pttype})`} that this migration did not copy: refusing to overwrite a disk that holds data`,
      'Use an empty volume (an LvmVolume with filesystem "none"), or set `allowReplace: true` to overwrite it',
    );
  const nameservers = t.stdout
    .split("\n")
    .filter((l) => l.startsWith("XE-TGT nameserver="))
    .map((l) => l.slice(18));
  const free = Number(sf.freeblocks);
  return {
    method,
    fsType,
    sourceBytes,
    sourceUsedBytes: method === "ext" && Number.isFinite(free) ? (blocks - free) * blockSize : null,
    sourceUuid,
    sourceHostId,
    targetBytes,
    aes: tf.aes === "1",
    nameservers,
    identity,
  };
}

/** Runs a long step with its reports turned into a steady progress line. */
async function withProgress<T>(ctx: Context, meter: ProgressMeter, run: () => Promise<T>): Promise<T> {
  const timer = setInterval(() => {
    const m = meter.message();
    if (m) ctx.log.progress(m);
  }, PROGRESS_MS);
  try {
    return await run();
  } finally {
    clearInterval(timer);
    const m = meter.message();
    if (m) ctx.log.progress(m);
  }
}

/** The known_hosts form (`type base64`) of the source's host key, as the provider's own handshake verified it. */
async function pinnedHostKeyLine(src: RemoteHost): Promise<string> {
  const { type, blob } = await src.hostKey();
  return `${type} ${blob.toString("base64")}`;
}

interface CopyResult {
  stats: TransferStats;
  sourceHash: string;
}

function parseResult(stdout: string, wireBytes: number, seconds: number): CopyResult {
  const line = stdout.split("\n").find((l) => l.startsWith("XE-RESULT "));
  if (!line) throw new Error(`the copy gave no result (output: ${JSON.stringify(stdout.slice(-300))})`);
  const r = JSON.parse(line.slice(10)) as { data: number; zero: number; skip: number; root: string };
  return {
    stats: { dataBytes: r.data, zeroBytes: r.zero, skippedBytes: r.skip, wireBytes, seconds },
    sourceHash: r.root,
  };
}

/**
 * One copy: the target's hashes, then the stream from the source, straight to the dom0 (or through the provider
 * for `route: "relay"`). The dom0's credential for the source exists only while the copy runs.
 */
/** What one copy moves, from the inputs and the preflight's answers. */
function copyPlan(i: LinodeMigrationInputs, key: string, pre: Preflight): CopyPlan {
  return {
    key,
    sourceDevice: i.source.device,
    method: pre.method,
    sourceBytes: pre.sourceBytes,
    chunkBytes: i.transfer.chunkBytes,
    compressionLevel: i.transfer.compressionLevel,
    targetDevice: i.target.device,
    identity: pre.identity,
    live: i.source.live,
    trustJournal: i.verify,
  };
}

async function copy(
  ctx: Context,
  i: LinodeMigrationInputs,
  key: string,
  pre: Preflight,
): Promise<CopyResult> {
  const src = sourceOf(ctx);
  const plan = copyPlan(i, key, pre);
  const label = `${i.source.connection.host}:${i.source.device} → ${i.target.device}`;
  const meter = new ProgressMeter(label);
  const onStderrLine = (l: string) => void meter.line(l);
  const timeoutMs = i.transfer.deadlineSeconds * 1000;
  const hashes = await withProgress(ctx, meter, () =>
    ctx.host.refusable(prepareScript(plan), {
      summary: `hash what ${i.target.device} already holds`,
      timeoutMs,
      onStderrLine,
    }),
  );
  const started = Date.now();
  ctx.log.info(
    `copying ${formatSize(pre.sourceBytes)} (${pre.sourceUsedBytes !== null ? `${formatSize(pre.sourceUsedBytes)} in use, ` : ""}${pre.method === "ext" ? "used blocks only" : "raw"}) from ${label}, ${i.transfer.route === "direct" ? "pulled by the dom0" : "relayed through the provider"}`,
  );
  if (i.transfer.route === "relay") {
    const out = await withProgress(ctx, meter, () =>
      relayCopy(ctx, src, plan, hashes, { timeoutMs, onStderrLine }),
    );
    return parseResult(out, meter.wireBytes, (Date.now() - started) / 1000);
  }
  await grant(ctx, src, i, key);
  let copied: CopyResult;
  try {
    const out = await withProgress(ctx, meter, () =>
      ctx.host.refusable(
        directCopyScript(plan, {
          host: i.source.dom0Host ?? i.source.connection.host,
          port: i.source.dom0Port ?? i.source.connection.port,
          user: i.source.connection.user,
          aes: pre.aes,
        }),
        { summary: `copy ${label}`, timeoutMs, onStderrLine },
      ),
    );
    copied = parseResult(out, meter.wireBytes, (Date.now() - started) / 1000);
  } catch (err) {
    await revoke(ctx, src, i, key);
    throw err;
  }
  const left = await revoke(ctx, src, i, key);
  // A copy whose credential could not be taken back must not pass for a finished one: nothing would take it back
  // (a finished migration is not copied again). Failing, the migration is resumed by the next run, which sends
  // nothing again and revokes the credential.
  if (left)
    throw new Error(
      `the copy is done, but its credential is left (${(left as Error).message.split("\n")[0]}): run up again to take it back`,
    );
  return copied;
}

/** Gives the dom0 a key for this copy, authorised on the source through the provider's connection. */
async function grant(ctx: Context, src: RemoteHost, i: LinodeMigrationInputs, key: string): Promise<void> {
  const line = await pinnedHostKeyLine(src);
  const g = await ctx.host.script(grantScript(key, line), {
    summary: "make the copy's key pair on the dom0",
  });
  const pub = /^XE-PUB (.+)$/m.exec(g.stdout)?.[1];
  if (!pub) throw new Error("the dom0 did not print the copy's public key");
  try {
    await src.refusable(authorizeScript(i.source.connection.user, i.source.authorizedKeysFile, pub, key), {
      summary: "authorise the dom0's key on the source for this copy",
    });
  } catch (err) {
    await ctx.host
      .script(dropGrantScript(key), { summary: "remove the copy's key pair" })
      .catch(() => undefined);
    throw err;
  }
}

/** Takes the copy's credential back from both ends; returns the first error (each is logged), if any. */
async function revoke(
  ctx: Context,
  src: RemoteHost,
  i: LinodeMigrationInputs,
  key: string,
): Promise<unknown> {
  const errors: unknown[] = [];
  await src
    .script(revokeScript(i.source.connection.user, i.source.authorizedKeysFile, key), {
      summary: "remove the dom0's key from the source",
    })
    .catch((e: unknown) => errors.push(e));
  await ctx.host
    .script(dropGrantScript(key), { summary: "remove the copy's key pair from the dom0" })
    .catch((e: unknown) => errors.push(e));
  for (const e of errors)
    ctx.log.warn(`cleaning up the copy's credential: ${(e as Error).message.split("\n")[0]}`);
  return errors[0];
}

/** The relay route: the provider carries the stream from the source's channel into the dom0's. */
async function relayCopy(
  ctx: Context,
  src: RemoteHost,
  plan: CopyPlan,
  hashes: string,
  opts: { timeoutMs: number; onStderrLine: (l: string) => void },
): Promise<string> {
  const r = await pipeBetween(
    { host: src, command: "bash -s", stdin: `${senderScript(plan)}\n${hashes}`, summary: "send the chunks" },
    { host: ctx.host, command: relayReceiveCommand(plan), summary: `receive into ${plan.targetDevice}` },
    { timeoutMs: opts.timeoutMs, onStderrLine: opts.onStderrLine },
  );
  return r.to.stdout;
}

/** Copies, verifies and (after a final copy) finishes the migration; returns the outputs. */
async function migrate(
  ctx: Context,
  i: LinodeMigrationInputs,
  progress: (p: Partial<LinodeMigrationOutputs>) => void,
): Promise<LinodeMigrationOutputs> {
  const key = stateKey(i.target.device);
  const pre = await preflight(ctx, i, key);
  const base: LinodeMigrationOutputs = {
    ...i,
    phase: "copying",
    method: pre.method,
    sourceFilesystem: pre.fsType,
    sourceBytes: pre.sourceBytes,
    sourceUsedBytes: pre.sourceUsedBytes,
    sourceUuid: pre.sourceUuid,
    sourceHostId: pre.sourceHostId,
    chunks: Math.ceil(pre.sourceBytes / i.transfer.chunkBytes),
    sourceHash: "",
    targetDevice: i.target.device,
    targetBytes: pre.targetBytes,
    filesystemUuid: null,
    lastTransfer: null,
    fixedFiles: [],
  };
  // From here on a failure is recorded: the next `up` resumes the copy instead of starting a new resource.
  progress(base);
  const result = await copy(ctx, i, key, pre);
  const s = result.stats;
  ctx.log.info(
    `copied in ${s.seconds.toFixed(1)} s: ${formatSize(s.dataBytes)} of data, ${formatSize(s.zeroBytes)} free (sent as zeros), ${formatSize(s.skippedBytes)} already on the target; ${formatSize(s.wireBytes)} on the wire`,
  );
  const plan = copyPlan(i, key, pre);
  const outs: LinodeMigrationOutputs = { ...base, sourceHash: result.sourceHash, lastTransfer: s };
  progress(outs);
  if (i.verify) {
    const meter = new ProgressMeter(i.target.device);
    await withProgress(ctx, meter, () =>
      ctx.host.refusable(verifyScript(plan), {
        summary: `verify ${i.target.device} against the source`,
        timeoutMs: i.transfer.deadlineSeconds * 1000,
        onStderrLine: (l) => void meter.line(l),
      }),
    );
    ctx.log.info(`${i.target.device} holds what the source sent, chunk for chunk`);
  }
  if (i.source.live) {
    ctx.log.info(
      "seed copy done: boot the VPS into rescue mode, set source.live: false and run up again to send only what changed",
    );
    return { ...outs, phase: "seeded" };
  }
  const meter = new ProgressMeter(i.target.device);
  const fin = await withProgress(ctx, meter, () =>
    ctx.host.refusable(
      finishScript({
        ...plan,
        fsck: i.verify && pre.method === "ext",
        convertToExt4: i.convertToExt4,
        grow: i.grow,
      }),
      {
        summary: `check and grow the copied filesystem on ${i.target.device}`,
        timeoutMs: i.transfer.deadlineSeconds * 1000,
        onStderrLine: (l) => void meter.line(l),
      },
    ),
  );
  const ff = parseFields(fin, "XE-FIN");
  let fixedFiles: string[] = [];
  const fsNow = ff.fs || null;
  if (i.fixups && fsNow && /^ext[234]$/.test(fsNow)) {
    const uuid = ff.uuid || pre.sourceUuid;
    const root = i.fixups.fstab === "uuid" && uuid ? `UUID=${uuid}` : "/dev/xvda";
    const nameservers = i.fixups.network?.nameservers ?? pre.nameservers;
    if (i.fixups.network && nameservers.length === 0)
      fail(
        "fixups.network.nameservers",
        undefined,
        "is required: the dom0 has no resolvers of its own to give the guest",
      );
    const out = await ctx.host.refusable(
      fixupsScript({
        targetDevice: i.target.device,
        key,
        fixups: i.fixups,
        root,
        rootType: fsNow,
        files: renderFixupFiles(i.fixups, { source: i.source.connection.host, root, nameservers }),
      }),
      { summary: `fix up the migrated system on ${i.target.device}`, timeoutMs: 1_800_000 },
    );
    fixedFiles = out
      .split("\n")
      .filter((l) => l.startsWith("XE-FIXED "))
      .map((l) => l.slice(9));
    for (const l of out.split("\n")) if (l.startsWith("XE-WARN ")) ctx.log.warn(l.slice(8));
    ctx.log.info(`fixed up ${fixedFiles.join(", ") || "nothing (already done)"}`);
  } else if (i.fixups) {
    ctx.log.warn(`no guest fixups: the copied filesystem is ${fsNow ?? "unknown"}, not ext2/3/4`);
  }
  return {
    ...outs,
    phase: "migrated",
    filesystemUuid: ff.uuid || null,
    targetBytes: Number(ff.grown) || pre.targetBytes,
    fixedFiles,
  };
}

export const linodeMigrationKind: Kind<LinodeMigrationInputs, LinodeMigrationOutputs> = {
  name: "LinodeMigration",
  nestedConnections: ["source"],
  replaceOn: ["target.device"],
  replaceConsent: "allowReplace",
  deleteBeforeReplace: true,
  outputOnly: [
    "phase",
    "method",
    "sourceFilesystem",
    "sourceBytes",
    "sourceUsedBytes",
    "sourceUuid",
    "sourceHostId",
    "chunks",
    "sourceHash",
    "targetDevice",
    "targetBytes",
    "filesystemUuid",
    "lastTransfer",
    "fixedFiles",
  ],

  check(raw, c: Checker) {
    return checkMigration(raw, c);
  },

  diffDetail(olds, news) {
    return { replaces: migrationReplaces(olds, news) };
  },

  id: (i) => `${i.connection.host}:${i.target.device}<-${i.source.connection.host}:${i.source.device}`,

  create(ctx, i, progress) {
    return migrate(ctx, i, progress);
  },

  async read(ctx, _id, outs) {
    const t = await ctx.host.script(targetProbeScript(outs.target.device, stateKey(outs.target.device)), {
      summary: `probe ${outs.target.device}`,
    });
    const tf = parseFields(t.stdout, "XE-TGT");
    const size = Number(tf.size);
    // The migrated disk is gone (no device, no block device, or one that holds no disk: a detached loop device is
    // 0 bytes): so is the migration. Refresh drops it; the next `up` migrates again.
    if (tf.exists !== "1" || !tf.type?.startsWith("block") || !(size > 0)) return null;
    if (size !== outs.targetBytes)
      ctx.log.warn(
        `${outs.target.device} is ${formatSize(size)} now, ${formatSize(outs.targetBytes)} when it was migrated${size < outs.sourceBytes ? `: smaller than the ${formatSize(outs.sourceBytes)} copied, so the migrated filesystem has lost its end` : ""}`,
      );
    return { ...outs, targetBytes: size, filesystemUuid: tf.uuid || null };
  },

  async update(ctx, _id, olds, news) {
    if (olds.phase === "migrated") {
      // The migrated disk belongs to its guest now: nothing is copied or edited again (a change of what is copied
      // is a replacement, planned with consent).
      const ignored = (["verify", "grow", "convertToExt4", "fixups", "transfer"] as const).filter(
        (k) => !deepEqual(olds[k], news[k]),
      );
      if (ignored.length > 0)
        ctx.log.warn(
          `${ignored.join(", ")} changed, but the migration is finished: the disk is the guest's now and is not copied or edited again`,
        );
      return { ...olds, ...news, phase: "migrated" };
    }
    return migrate(ctx, news, () => undefined);
  },

  async delete(ctx, _id, outs) {
    const key = stateKey(outs.target.device);
    await ctx.host.script(forgetScript(key), { summary: "remove the migration's journal from the dom0" });
    // A copy cut short by a crash may have left the dom0's key authorised on the source: take it back. Only our own
    // line goes; the source's disk is never touched. A source that is gone (the VPS deleted) has nothing to take.
    const src = ctx.hosts.source;
    if (!src) return;
    try {
      await src.script(
        revokeScript(outs.source.connection.user, outs.source.authorizedKeysFile ?? null, key),
        {
          summary: "remove the dom0's key from the source",
        },
      );
    } catch (err) {
      if (err instanceof SshConnectError)
        ctx.log.warn(
          `the source cannot be reached (${err.message}); no key of this migration is left there unless a copy was cut short`,
        );
      else throw err;
    }
  },
};

export { MIGRATION_DEFAULTS };
