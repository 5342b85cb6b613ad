/**
 * LvmVolume: a logical volume, optionally formatted (ext4 or swap).
 *
 * Data is never lost by surprise: an existing LV is only taken over with `adopt`, a disk that holds any
 * signature is never formatted, shrinking is refused in `diff` (so `pulumi preview` already fails), a change
 * that would replace the volume (and so destroy its data) needs `allowReplace`, and `delete` refuses while a
 * guest, a mount or swap uses the volume, naming the user.
 */
import * as pulumi from "@pulumi/pulumi";
import { ConnectionArgs } from "./connection";
import { CommonInputs, MODULE, providerFor, registerKind, resourceInputs } from "./dynamic";
import { InputError, showValue } from "./errors";
import { shellQuote } from "./shell";
import { formatSize, parseSize, roundUpToExtent } from "./units";
import { Checker } from "./validate";

export type Filesystem = "ext4" | "swap" | "none";

export interface LvmVolumeArgs {
  /** How to reach the dom0. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** Volume group to create the LV in. Changing it replaces the volume. @default "vg0" */
  readonly volumeGroup?: pulumi.Input<string>;
  /** Name of the logical volume (letters, digits, `+_.-`). Changing it replaces the volume. */
  readonly name: pulumi.Input<string>;
  /**
   * Size: `"10GiB"`, `"512MiB"`, `"1.5TiB"` (binary, like LVM's `G`), `"20GB"` (decimal) or a byte count.
   * Rounded up to whole extents. Growing is done in place (with the filesystem); shrinking is refused.
   */
  readonly size: pulumi.Input<string | number>;
  /** Filesystem to create on a blank volume. Changing it replaces the volume. @default "none" */
  readonly filesystem?: pulumi.Input<Filesystem>;
  /** Filesystem label (at most 16 characters). Changed in place. @default none */
  readonly label?: pulumi.Input<string>;
  /** Extra options for `mkfs.ext4`/`mkswap`, one per element (e.g. `["-m", "1"]`); used at creation only. */
  readonly mkfsOptions?: pulumi.Input<pulumi.Input<string>[]>;
  /** Take over an LV of this name that already exists (its size and filesystem are verified). @default false */
  readonly adopt?: pulumi.Input<boolean>;
  /**
   * Let a change of volume group, name, filesystem or host replace the volume, destroying its data.
   * Without it such a change fails in `preview`. @default false
   */
  readonly allowReplace?: pulumi.Input<boolean>;
}

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
}

const LV_NAME = /^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$/;
const MKFS_ARG = /^[A-Za-z0-9_=,.:/+-]+$/;
const MIN_BYTES = 4 * 2 ** 20;
const REPLACING = ["volumeGroup", "name", "filesystem"] as const;

export const lvmVolumeKind = registerKind<LvmVolumeInputs, LvmVolumeOutputs>({
  name: "LvmVolume",
  replaceOn: ["volumeGroup", "name", "filesystem", "connection.host"],
  deleteBeforeReplace: true,
  outputOnly: ["path", "allocatedBytes", "extentBytes", "uuid"],

  check(raw, c: Checker) {
    const rule =
      "must be an LVM name: letters, digits and `+_.-`, not starting with `-`, at most 127 characters";
    const volumeGroup = c.string(raw, "volumeGroup", { default: "vg0", pattern: LV_NAME, rule });
    const name = c.string(raw, "name", { required: true, pattern: LV_NAME, rule });
    if (
      name &&
      /^(snapshot|pvmove)|_(cdata|cmeta|corig|mlog|mimage|pmspare|rimage|rmeta|tdata|tmeta|vdo)/.test(name)
    )
      c.fail("name", name, "must not use a name LVM reserves (snapshot*, pvmove*, *_tdata, *_rimage…)");
    let sizeBytes: number | undefined;
    if (raw.size === undefined || raw.size === null || raw.size === "")
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
    opts.forEach((o, i) => {
      if (typeof o !== "string" || !MKFS_ARG.test(o))
        c.fail(`mkfsOptions[${i}]`, o, "must be one option word of letters, digits and `_=,.:/+-`");
    });
    const adopt = c.boolean(raw, "adopt", false);
    const allowReplace = c.boolean(raw, "allowReplace", false);
    if (!volumeGroup || !name || sizeBytes === undefined || !filesystem) return undefined;
    return {
      volumeGroup,
      name,
      size: raw.size as string | number,
      sizeBytes,
      filesystem,
      label,
      mkfsOptions: opts as string[],
      adopt,
      allowReplace,
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
    // Replacing a volume destroys its data: only with explicit consent.
    const replacing: { property: string; was: unknown; now: unknown }[] = REPLACING.filter(
      (k) => olds[k] !== news[k],
    ).map((k) => ({ property: k, was: olds[k], now: news[k] }));
    if (olds.connection && olds.connection.host !== news.connection.host)
      replacing.push({ property: "connection.host", was: olds.connection.host, now: news.connection.host });
    const first = replacing[0];
    if (first && !news.allowReplace) {
      throw new InputError(
        first.property,
        showValue(first.now),
        `cannot change on an existing volume (was ${showValue(first.was)}): it would replace the volume and destroy its data`,
        "Set `allowReplace: true` to accept that, or keep the old value",
      );
    }
  },

  id: (i) => `${i.connection.host}:/dev/${i.volumeGroup}/${i.name}`,

  async create(ctx, i, progress) {
    ctx.log.info(`creating ${i.volumeGroup}/${i.name} (${formatSize(i.sizeBytes)}, ${i.filesystem})`);
    const r = await ctx.host.refusable(createScript(i), { summary: `create ${i.volumeGroup}/${i.name}` });
    const state = parseProbe(r);
    if (!state) throw new Error(`${i.volumeGroup}/${i.name} vanished right after it was created`);
    progress(outsOf(i, state));
    if (i.adopt && state.allocatedBytes < roundUpToExtent(i.sizeBytes, state.extentBytes)) {
      // An adopted volume that is smaller than declared is grown like any other.
      return this.update(ctx, this.id(i), outsOf(i, state), i);
    }
    return outsOf(i, state);
  },

  async read(ctx, _id, outs) {
    const r = await ctx.host.script(probeScript(outs.volumeGroup, outs.name), {
      summary: `probe ${outs.volumeGroup}/${outs.name}`,
    });
    const state = parseProbe(r.stdout);
    if (!state) return null;
    const observed = outsOf(outs, state);
    // Reflect reality in the inputs so drift shows up as a diff: a volume shrunk out of band, another filesystem.
    if (state.allocatedBytes < roundUpToExtent(outs.sizeBytes, state.extentBytes)) {
      observed.sizeBytes = state.allocatedBytes;
      observed.size = state.allocatedBytes;
    }
    if (state.fsType !== expectedType(outs.filesystem))
      observed.filesystem = (state.fsType ?? "none") as Filesystem;
    if ((state.label ?? null) !== outs.label && outs.filesystem !== "none") observed.label = state.label;
    return observed;
  },

  async update(ctx, _id, olds, news) {
    const script = updateScript(olds, news);
    const r = await ctx.host.refusable(script, { summary: `update ${news.volumeGroup}/${news.name}` });
    for (const line of r.split("\n")) if (line.startsWith("WARN ")) ctx.log.warn(line.slice(5));
    const state = parseProbe(r);
    if (!state)
      throw new Error(`${news.volumeGroup}/${news.name} does not exist any more; run \`pulumi refresh\``);
    return outsOf(news, state);
  },

  async delete(ctx, _id, outs) {
    await ctx.host.refusable(deleteScript(outs), { summary: `remove ${outs.volumeGroup}/${outs.name}` });
  },
});

function expectedType(fs: Filesystem): string | null {
  return fs === "none" ? null : fs;
}

interface Probe {
  allocatedBytes: number;
  extentBytes: number;
  fsType: string | null;
  uuid: string | null;
  label: string | null;
}

function outsOf(i: LvmVolumeInputs, p: Probe): LvmVolumeOutputs {
  return {
    ...i,
    path: `/dev/${i.volumeGroup}/${i.name}`,
    allocatedBytes: p.allocatedBytes,
    extentBytes: p.extentBytes,
    uuid: p.uuid,
  };
}

// ---- Remote scripts (pure: strings from inputs; every value quoted) ----------------------------------------

/** Prints the LV's state between markers: size, extent size and the probed signature. */
export function probeScript(vg: string, lv: string): string {
  const q = shellQuote(`${vg}/${lv}`);
  return [
    `if ! lvs ${q} >/dev/null 2>&1; then echo XE-ABSENT; exit 0; fi`,
    `lvchange -ay ${q} >/dev/null 2>&1 || true`,
    `echo XE-LV $(lvs --noheadings --units b --nosuffix -o lv_size,vg_extent_size ${q})`,
    `udevadm settle 2>/dev/null || true`,
    `blkid -p -o export ${shellQuote(`/dev/${vg}/${lv}`)} 2>/dev/null | sed 's/^/XE-FS /' || true`,
  ].join("\n");
}

export function parseProbe(stdout: string): Probe | null {
  const lines = stdout.split("\n");
  if (lines.some((l) => l.trim() === "XE-ABSENT")) return null;
  const lv = lines.find((l) => l.startsWith("XE-LV "));
  if (!lv) return null;
  const [size, extent] = lv.slice(6).trim().split(/\s+/).map(Number);
  const fs: Record<string, string> = {};
  for (const l of lines.filter((x) => x.startsWith("XE-FS "))) {
    const [k, ...v] = l.slice(6).split("=");
    if (k) fs[k] = v.join("=");
  }
  return {
    allocatedBytes: size ?? 0,
    extentBytes: extent ?? 4 * 2 ** 20,
    fsType: fs.TYPE ?? (fs.PTTYPE ? `partition table (${fs.PTTYPE})` : null),
    uuid: fs.UUID ?? null,
    label: fs.LABEL ?? null,
  };
}

function mkfsCommand(i: LvmVolumeInputs, dev: string): string {
  const label = i.label ? ["-L", i.label] : [];
  const args = [...label, ...i.mkfsOptions].map(shellQuote).join(" ");
  if (i.filesystem === "ext4") return `mkfs.ext4 -q ${args} ${dev}`;
  return `mkswap ${args} ${dev}`;
}

export function createScript(i: LvmVolumeInputs): string {
  const vg = shellQuote(i.volumeGroup);
  const lvq = shellQuote(`${i.volumeGroup}/${i.name}`);
  const dev = shellQuote(`/dev/${i.volumeGroup}/${i.name}`);
  const want = expectedType(i.filesystem) ?? "";
  return [
    `if ! vgs ${vg} >/dev/null 2>&1; then echo "volume group ${i.volumeGroup} does not exist on $(hostname) (volume groups there: $(vgs --noheadings -o vg_name 2>/dev/null | xargs))" >&2; exit 3; fi`,
    `if lvs ${lvq} >/dev/null 2>&1; then`,
    i.adopt
      ? `  echo "adopting the existing ${i.volumeGroup}/${i.name}" >&2`
      : `  echo "logical volume ${i.volumeGroup}/${i.name} already exists: set adopt: true to manage it (its data is kept)" >&2; exit 3`,
    `else`,
    `  lvcreate --yes --wipesignatures y --zero y --name ${shellQuote(i.name)} --size ${i.sizeBytes}b ${vg} >&2`,
    `fi`,
    `lvchange -ay ${lvq} >&2`,
    `udevadm settle 2>/dev/null || true`,
    `have=$(blkid -p -o value -s TYPE ${dev} 2>/dev/null || true)`,
    `pt=$(blkid -p -o value -s PTTYPE ${dev} 2>/dev/null || true)`,
    `want=${shellQuote(want)}`,
    `if [ -n "$pt" ]; then echo "${i.volumeGroup}/${i.name} holds a partition table ($pt): refusing to touch a disk that holds data" >&2; exit 3; fi`,
    `if [ -n "$have" ] && [ "$have" != "$want" ]; then echo "${i.volumeGroup}/${i.name} holds a $have filesystem, not ${want || "nothing"}: refusing to format a disk that holds data" >&2; exit 3; fi`,
    ...(want ? [`if [ -z "$have" ]; then ${mkfsCommand(i, dev)} >&2; fi`] : []),
    probeScript(i.volumeGroup, i.name),
  ].join("\n");
}

/**
 * Sets `$guest` to the name of the domain whose block backend holds the device `$real` (empty when none): xenstore
 * lists every vbd's `params`, the path xl was given.
 */
function guestUsingDeviceScript(): string[] {
  return [
    `guest=""`,
    `if command -v xenstore-ls >/dev/null 2>&1; then`,
    `  for p in $(xenstore-ls -f /local/domain/0/backend/vbd 2>/dev/null | sed -n 's|^/local/domain/0/backend/vbd/\\([0-9]*\\)/[0-9]*/params = "\\(.*\\)"$|\\1:\\2|p'); do`,
    `    d=\${p%%:*}; path=\${p#*:}; if [ "$(readlink -f "$path" 2>/dev/null)" = "$real" ]; then guest=$(xl domname "$d" 2>/dev/null || echo "domid $d"); fi`,
    `  done`,
    `fi`,
  ];
}

/** Grows the LV (and the filesystem where that is safe from dom0) and applies a new label. */
export function updateScript(olds: LvmVolumeOutputs, news: LvmVolumeInputs): string {
  const lvq = shellQuote(`${news.volumeGroup}/${news.name}`);
  const dev = shellQuote(`/dev/${news.volumeGroup}/${news.name}`);
  const lines = [
    `lvs ${lvq} >/dev/null 2>&1 || { echo "${news.volumeGroup}/${news.name} does not exist" >&2; exit 3; }`,
    `cur=$(lvs --noheadings --units b --nosuffix -o lv_size ${lvq} | tr -d ' ')`,
    `want=${news.sizeBytes}`,
    `ext=$(lvs --noheadings --units b --nosuffix -o vg_extent_size ${lvq} | tr -d ' ')`,
    `want=$(( (want + ext - 1) / ext * ext ))`,
    `if [ "$want" -lt "$cur" ]; then echo "refusing to shrink ${news.volumeGroup}/${news.name} from $cur to $want bytes" >&2; exit 3; fi`,
    `grown=0`,
    `if [ "$want" -gt "$cur" ]; then lvextend --size "$want"b ${lvq} >&2; grown=1; fi`,
    `real=$(readlink -f ${dev})`,
    // Who has the device: a guest through blkback, a mount in dom0, active swap.
    ...guestUsingDeviceScript(),
    `mnt=$(findmnt -n -o TARGET -S "$real" 2>/dev/null | head -n1 || true)`,
    `fs=$(blkid -p -o value -s TYPE ${dev} 2>/dev/null || true)`,
    // A journalled ext4 carries needs_recovery while mounted (here or in a guest): then only the mounter may resize.
    `inuse=0`,
    `if [ "$fs" = ext4 ]; then dumpe2fs -h "$real" 2>/dev/null | grep -q '^Filesystem features:.*needs_recovery' && inuse=1; fi`,
    `if [ "$grown" = 1 ] && [ "$fs" = ext4 ]; then`,
    `  if [ -n "$mnt" ]; then resize2fs "$real" >&2`,
    `  elif [ "$inuse" = 1 ]; then echo "WARN ${news.volumeGroup}/${news.name} grew, but its filesystem is mounted\${guest:+ by guest $guest}: run resize2fs on that disk inside the guest (dom0 must not resize a filesystem mounted elsewhere)"`,
    `  else e2fsck -f -p "$real" >&2 || [ $? -le 1 ]; resize2fs "$real" >&2; fi`,
    `fi`,
    `if [ "$grown" = 1 ] && [ "$fs" = swap ]; then`,
    `  if [ -n "$guest" ] || swapon --show=NAME --noheadings 2>/dev/null | grep -qx "$real"; then echo "WARN ${news.volumeGroup}/${news.name} grew, but its swap is in use: the extra space is used after the next mkswap"`,
    `  else u=$(blkid -p -o value -s UUID "$real"); l=$(blkid -p -o value -s LABEL "$real" || true); mkswap -U "$u" \${l:+-L "$l"} "$real" >&2; fi`,
    `fi`,
  ];
  if (news.label !== olds.label && news.label !== null) {
    const label = shellQuote(news.label);
    lines.push(
      `if [ "$fs" = ext4 ]; then e2label "$real" ${label}; elif [ "$fs" = swap ]; then swaplabel -L ${label} "$real"; fi`,
    );
  }
  lines.push(probeScript(news.volumeGroup, news.name));
  return lines.join("\n");
}

/** Removes the LV unless something uses it; exit 3 names the user. */
export function deleteScript(o: LvmVolumeOutputs): string {
  const lvq = shellQuote(`${o.volumeGroup}/${o.name}`);
  const dev = shellQuote(`/dev/${o.volumeGroup}/${o.name}`);
  const name = `${o.volumeGroup}/${o.name}`;
  return [
    `lvs ${lvq} >/dev/null 2>&1 || { echo "${name} is already gone" >&2; exit 0; }`,
    `real=$(readlink -f ${dev})`,
    ...guestUsingDeviceScript(),
    `if [ -n "$guest" ]; then echo "refusing to remove ${name}: guest $guest uses it; shut the guest down or remove it first" >&2; exit 3; fi`,
    `dm=$(lvs --noheadings -o lv_dm_path ${lvq} | tr -d ' ')`,
    `for cfg in /etc/xen/*.cfg /etc/xen/auto/*; do`,
    `  [ -f "$cfg" ] || continue`,
    `  if grep -Fq -e ${dev} -e "$dm" "$cfg"; then echo "refusing to remove ${name}: guest config $cfg uses it; remove that guest first" >&2; exit 3; fi`,
    `done`,
    `if findmnt -n -S "$real" >/dev/null 2>&1; then echo "refusing to remove ${name}: it is mounted at $(findmnt -n -o TARGET -S "$real" | head -n1)" >&2; exit 3; fi`,
    `if swapon --show=NAME --noheadings 2>/dev/null | grep -qx "$real"; then echo "refusing to remove ${name}: it is active swap" >&2; exit 3; fi`,
    `lvremove --yes ${lvq} >&2`,
  ].join("\n");
}

/** A logical volume on a dom0, optionally formatted. */
export class LvmVolume extends pulumi.dynamic.Resource {
  declare readonly volumeGroup: pulumi.Output<string>;
  declare readonly name: pulumi.Output<string>;
  declare readonly filesystem: pulumi.Output<Filesystem>;
  declare readonly label: pulumi.Output<string | null>;
  /** Requested size in bytes. */
  declare readonly sizeBytes: pulumi.Output<number>;
  /** Device path, e.g. `/dev/vg0/web1-root`. */
  declare readonly path: pulumi.Output<string>;
  /** Size the LV really has (rounded up to whole extents). */
  declare readonly allocatedBytes: pulumi.Output<number>;
  declare readonly extentBytes: pulumi.Output<number>;
  /** Filesystem UUID (null for `none`). */
  declare readonly uuid: pulumi.Output<string | null>;

  constructor(name: string, args: LvmVolumeArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      providerFor("LvmVolume"),
      name,
      resourceInputs({ ...args }, lvmVolumeKind.outputOnly),
      opts,
      MODULE,
      "LvmVolume",
    );
  }
}
