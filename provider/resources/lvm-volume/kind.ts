/**
 * LvmVolume's planning and lifecycle: a logical volume, optionally formatted (ext4 or swap).
 *
 * Data is never lost by surprise: an existing LV is only taken over with `adopt` (and left on the host when the
 * resource goes, unless `onDelete: "remove"`), a disk that holds any signature is never formatted, shrinking is
 * refused in `diff` (so `pulumi preview` already fails), a change that would replace the volume needs
 * `allowReplace`, and `delete` refuses while a guest, a mount or swap uses the volume, naming the user. A removed
 * volume's blocks are zeroed first, so the next volume carved from the same space cannot read them.
 */
import { InputError, showValue } from "../../core/errors";
import { formatSize, parseSize, roundUpToExtent } from "../../core/units";
import { Checker, UNKNOWN } from "../../core/validate";
import type { CommonInputs, Kind } from "../../framework/kind";
import {
  confirmCreatedScript,
  createScript,
  deleteScript,
  parseProbe,
  probeScript,
  updateScript,
  type Probe,
  type Wipe,
} from "./scripts";

export type Filesystem = "ext4" | "swap" | "none";
export type { Wipe };

export interface LvmVolumeInputs extends CommonInputs {
  volumeGroup: string;
  name: string;
  size: string | number;
  /** The requested size in bytes (from `size`). */
  sizeBytes: number;
  filesystem: Filesystem;
  label: string | null;
  mkfsOptions: string[];
  adopt: boolean;
  allowReplace: boolean;
  /** What delete does: `remove` the LV, or `keep` it on the host. null: remove what this resource made, keep an adopted one. */
  onDelete: "remove" | "keep" | null;
  /** How a removed volume's blocks are cleared. */
  wipeOnDelete: Wipe;
  /**
   * The LV (same volume group) this volume is a copy-on-write snapshot of, or null for a volume of its own. A
   * snapshot keeps the origin's content as it was when the snapshot was made; `size` is its copy-on-write space.
   */
  snapshotOf: string | null;
}

export interface LvmVolumeOutputs extends LvmVolumeInputs {
  /** Device path, e.g. `/dev/vg0/web1-root`. */
  path: string;
  /** Size the LV really has (whole extents). */
  allocatedBytes: number;
  /** Extent size of the volume group. */
  extentBytes: number;
  /** Filesystem UUID (null for `none`). */
  uuid: string | null;
  /** The LV existed before this resource and was taken over (`adopt`). */
  adopted: boolean;
}

const LV_NAME = /^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$/;
const MKFS_ARG = /^[A-Za-z0-9_=,.:/+-]+$/;
const MIN_BYTES = 4 * 2 ** 20;

export const lvmVolumeKind: Kind<LvmVolumeInputs, LvmVolumeOutputs> = {
  name: "LvmVolume",
  replaceOn: ["volumeGroup", "name", "filesystem", "snapshotOf"],
  replaceConsent: "allowReplace",
  deleteBeforeReplace: true,
  outputOnly: ["path", "allocatedBytes", "extentBytes", "uuid", "adopted"],
  schemaVersion: 2,
  // 0.1.0 did not record whether a volume was adopted: one declared with `adopt` may have been, so it is kept on
  // delete (data is never lost by guessing). Delete and wipe policies get the defaults the program gets.
  // 0.2.0 made no snapshots.
  migrate: (old) => ({
    onDelete: null,
    wipeOnDelete: "zero",
    adopted: old.adopt === true,
    snapshotOf: null,
    ...old,
  }),

  check(raw, c: Checker) {
    const rule =
      "must be an LVM name: letters, digits and `+_.-`, not starting with `-`, at most 127 characters";
    const volumeGroup = c.string(raw, "volumeGroup", { default: "vg0", pattern: LV_NAME, rule });
    const name = c.string(raw, "name", { required: true, pattern: LV_NAME, rule });
    if (
      name &&
      name !== UNKNOWN &&
      /^(snapshot|pvmove)|_(cdata|cmeta|corig|mlog|mimage|pmspare|rimage|rmeta|tdata|tmeta|vdo)/.test(name)
    )
      c.fail("name", name, "must not use a name LVM reserves (snapshot*, pvmove*, *_tdata, *_rimage…)");
    let sizeBytes: number | undefined;
    if (raw.size === UNKNOWN) sizeBytes = UNKNOWN as unknown as number;
    else if (raw.size === undefined || raw.size === null || raw.size === "")
      c.fail("size", raw.size, "is required");
    else {
      const parsed = parseSize(raw.size);
      if (typeof parsed !== "number") c.fail("size", raw.size, parsed.error);
      else if (parsed < MIN_BYTES) c.fail("size", raw.size, "must be at least 4MiB (one default extent)");
      else sizeBytes = parsed;
    }
    const filesystem = c.oneOf<Filesystem>(raw, "filesystem", ["ext4", "swap", "none"], "none");
    const label =
      c.string(raw, "label", {
        max: 16,
        pattern: /^[A-Za-z0-9_.-]+$/,
        rule: "must be letters, digits and `_.-`",
      }) ?? null;
    if (label !== null && filesystem === "none")
      c.fail("label", label, "needs a filesystem (ext4 or swap) to label");
    const opts = c.array(raw, "mkfsOptions") ?? [];
    if (opts !== UNKNOWN)
      opts.forEach((o, i) => {
        if (o !== UNKNOWN && (typeof o !== "string" || !MKFS_ARG.test(o) || o.length > 256))
          c.fail(`mkfsOptions[${i}]`, o, "must be one option word of letters, digits and `_=,.:/+-`");
      });
    const adopt = c.boolean(raw, "adopt", false);
    const allowReplace = c.boolean(raw, "allowReplace", false);
    const onDelete =
      raw.onDelete === undefined || raw.onDelete === null
        ? null
        : (c.oneOf<"remove" | "keep">(raw, "onDelete", ["remove", "keep"]) ?? null);
    const wipeOnDelete = c.oneOf<Wipe>(raw, "wipeOnDelete", ["zero", "discard", "none"], "zero");
    const snapshotOf = c.string(raw, "snapshotOf", { pattern: LV_NAME, rule }) ?? null;
    if (snapshotOf !== null && snapshotOf !== UNKNOWN) {
      // A snapshot's content is its origin's: nothing may format, label or take it over.
      if (snapshotOf === name) c.fail("snapshotOf", snapshotOf, "must name another volume than `name`");
      if (filesystem && (filesystem as string) !== UNKNOWN && filesystem !== "none")
        c.fail("filesystem", filesystem, 'must be "none" for a snapshot: it holds its origin\'s content');
      if (label !== null) c.fail("label", label, "cannot be set on a snapshot: it holds its origin's label");
      if (opts !== UNKNOWN && opts.length > 0)
        c.fail("mkfsOptions", opts, "cannot be set on a snapshot: it is never formatted");
      if (adopt === true)
        c.fail("adopt", adopt, "cannot be set with snapshotOf: a snapshot is made, not adopted");
      if (wipeOnDelete === "discard")
        c.fail(
          "wipeOnDelete",
          wipeOnDelete,
          'must be "zero" or "none" for a snapshot: a discard through it would reach its origin\'s blocks',
        );
    }
    if (!volumeGroup || !name || sizeBytes === undefined || !filesystem || !wipeOnDelete) return undefined;
    return {
      volumeGroup,
      name,
      size: raw.size as string | number,
      sizeBytes,
      filesystem,
      label,
      mkfsOptions: opts === UNKNOWN ? (UNKNOWN as unknown as string[]) : (opts as string[]),
      adopt,
      allowReplace,
      onDelete,
      wipeOnDelete,
      snapshotOf,
    };
  },

  diffDetail(olds, news) {
    // Shrinking loses data in the filesystem's tail: refuse it while planning, before anything runs.
    const extent = olds.extentBytes || 4 * 2 ** 20;
    if (olds.allocatedBytes && roundUpToExtent(news.sizeBytes, extent) < olds.allocatedBytes) {
      throw new InputError(
        "size",
        showValue(news.size),
        `must not be smaller than the volume's current ${formatSize(olds.allocatedBytes)}: shrinking is refused`,
        "Keep the current size, or make a new, smaller volume and copy the data yourself",
      );
    }
  },

  id: (i) => `${i.connection.host}:/dev/${i.volumeGroup}/${i.name}`,

  async create(ctx, i, progress) {
    ctx.log.info(
      i.snapshotOf
        ? `creating ${i.volumeGroup}/${i.name}, a snapshot of ${i.snapshotOf} (${formatSize(i.sizeBytes)} of copy-on-write space)`
        : `creating ${i.volumeGroup}/${i.name} (${formatSize(i.sizeBytes)}, ${i.filesystem})`,
    );
    const r = await ctx.host.refusable(createScript(i), { summary: `create ${i.volumeGroup}/${i.name}` });
    const adopted = /^XE-ADOPTED 1$/m.test(r);
    const state = parseProbe(r);
    if (!state) throw new Error(`${i.volumeGroup}/${i.name} vanished right after it was created`);
    const outs = outsOf(i, state, adopted);
    progress(outs);
    // Recorded: the volume no longer needs the tag that lets a retried create recognise it as its own.
    if (!adopted)
      await ctx.host.script(confirmCreatedScript(i.volumeGroup, i.name), {
        summary: `confirm ${i.volumeGroup}/${i.name} as created`,
      });
    if (adopted && state.allocatedBytes < roundUpToExtent(i.sizeBytes, state.extentBytes)) {
      // An adopted volume that is smaller than declared is grown like any other.
      return { ...(await growAndLabel(ctx, outs, i)), adopted };
    }
    return outs;
  },

  async read(ctx, _id, outs) {
    const r = await ctx.host.script(probeScript(outs.volumeGroup, outs.name), {
      summary: `probe ${outs.volumeGroup}/${outs.name}`,
    });
    const state = parseProbe(r.stdout);
    if (!state) return null;
    const observed = outsOf(outs, state, outs.adopted ?? false);
    // Reflect reality in the inputs so drift shows up as a diff: a volume shrunk out of band, another filesystem.
    if (state.allocatedBytes < roundUpToExtent(outs.sizeBytes, state.extentBytes)) {
      observed.sizeBytes = state.allocatedBytes;
      observed.size = state.allocatedBytes;
    }
    // A snapshot of another origin (or none any more: merged, or made by hand) is not the declared one.
    if ((state.origin ?? null) !== (outs.snapshotOf ?? null)) observed.snapshotOf = state.origin;
    // What a `none` volume holds belongs to its guest (a migrated disk, the guest's own partitions): never drift.
    if (outs.filesystem !== "none") {
      if (state.fsType !== outs.filesystem) observed.filesystem = (state.fsType ?? "none") as Filesystem;
      if ((state.label ?? null) !== outs.label) observed.label = state.label;
    }
    return observed;
  },

  async update(ctx, _id, olds, news) {
    return { ...(await growAndLabel(ctx, olds, news)), adopted: olds.adopted ?? false };
  },

  async delete(ctx, _id, outs) {
    const keep = outs.onDelete === "keep" || (outs.onDelete !== "remove" && outs.adopted === true);
    if (keep) {
      ctx.log.info(
        `leaving ${outs.volumeGroup}/${outs.name} on the host with its data (${outs.adopted ? "it was adopted" : "onDelete: keep"}); set onDelete: "remove" to remove it`,
      );
      return;
    }
    await ctx.host.refusable(deleteScript(outs, outs.wipeOnDelete ?? "zero"), {
      summary: `remove ${outs.volumeGroup}/${outs.name}`,
      // Zeroing writes the whole volume.
      timeoutMs: Math.max(600_000, Math.ceil((outs.allocatedBytes ?? 0) / (20 * 2 ** 20)) * 1000),
    });
  },
};

async function growAndLabel(
  ctx: Parameters<Kind<LvmVolumeInputs, LvmVolumeOutputs>["update"]>[0],
  olds: LvmVolumeOutputs,
  news: LvmVolumeInputs,
): Promise<LvmVolumeOutputs> {
  const r = await ctx.host.refusable(updateScript(olds, news), {
    summary: `update ${news.volumeGroup}/${news.name}`,
  });
  for (const line of r.split("\n")) if (line.startsWith("WARN ")) ctx.log.warn(line.slice(5));
  const state = parseProbe(r);
  if (!state)
    throw new Error(`${news.volumeGroup}/${news.name} does not exist any more; run \`pulumi refresh\``);
  return outsOf(news, state, olds.adopted ?? false);
}

function outsOf(i: LvmVolumeInputs, p: Probe, adopted: boolean): LvmVolumeOutputs {
  return {
    ...i,
    path: `/dev/${i.volumeGroup}/${i.name}`,
    allocatedBytes: p.allocatedBytes,
    extentBytes: p.extentBytes,
    uuid: p.uuid,
    adopted,
  };
}
