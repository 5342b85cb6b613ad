/**
 * LvmVolume: a logical volume on a dom0, optionally formatted (ext4 or swap). See ./kind.ts for what it promises
 * about data.
 */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { ConnectionArgs } from "../../ssh/connection";
import { lvmVolumeKind, type Filesystem, type Wipe } from "./kind";

export { lvmVolumeKind };
export type { Filesystem, Wipe, LvmVolumeInputs, LvmVolumeOutputs } from "./kind";
export { parseProbe, probeScript, createScript, updateScript, deleteScript } from "./scripts";

export interface LvmVolumeArgs {
  /** How to reach the dom0. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** Volume group to create the LV in. Changing it replaces the volume (needs `allowReplace`). @default "vg0" */
  readonly volumeGroup?: pulumi.Input<string>;
  /** Name of the logical volume (letters, digits, `+_.-`). Changing it replaces the volume (needs `allowReplace`). */
  readonly name: pulumi.Input<string>;
  /**
   * Size: `"10GiB"`, `"512MiB"`, `"1.5TiB"` (binary, like LVM's `G`), `"20GB"` (decimal) or a byte count; at most
   * 1 PiB. Rounded up to whole extents. Growing is done in place (with the filesystem); shrinking is refused.
   */
  readonly size: pulumi.Input<string | number>;
  /** Filesystem to create on a blank volume. Changing it replaces the volume (needs `allowReplace`). @default "none" */
  readonly filesystem?: pulumi.Input<Filesystem>;
  /** Filesystem label (at most 16 characters). Changed in place, never while a guest holds the volume. @default none */
  readonly label?: pulumi.Input<string>;
  /** Extra options for `mkfs.ext4`/`mkswap`, one per element (e.g. `["-m", "1"]`); used at creation only. */
  readonly mkfsOptions?: pulumi.Input<pulumi.Input<string>[]>;
  /** Take over an LV of this name that already exists (its size and filesystem are verified). @default false */
  readonly adopt?: pulumi.Input<boolean>;
  /**
   * Let a change of volume group, name or filesystem replace the volume, destroying its data. Without it such a
   * change fails in `preview`. How the dom0 is reached (`connection`) never replaces anything. @default false
   */
  readonly allowReplace?: pulumi.Input<boolean>;
  /**
   * What destroying the resource does to the LV: `"remove"` it, or `"keep"` it (with its data) on the host.
   * @default "remove" for a volume this resource created, "keep" for an adopted one
   */
  readonly onDelete?: pulumi.Input<"remove" | "keep">;
  /**
   * How a removed volume's blocks are cleared before they go back to the volume group, where the next volume can
   * read them: `"zero"` (BLKZEROOUT, else written zeros: reads back as zeros, takes as long as writing the volume
   * on disks that cannot offload it), `"discard"` (fast; whether old data reads back depends on the device) or
   * `"none"`. @default "zero": a guest's data must not surface in the next guest's disk
   */
  readonly wipeOnDelete?: pulumi.Input<Wipe>;
  /**
   * Make this volume a copy-on-write snapshot of the named LV in the same volume group (`lvcreate --snapshot`): the
   * origin's content as it is when the snapshot is made, e.g. a migrated disk before its first boot. `size` is then
   * the copy-on-write space (the origin's blocks that change afterwards; the snapshot becomes invalid when they
   * outgrow it), grown in place like any size; `filesystem` must be `"none"` and `label`, `mkfsOptions`, `adopt` and
   * `wipeOnDelete: "discard"` are refused. Removal splits the copy-on-write space off (`lvconvert --splitsnapshot`)
   * and zeroes it first (`wipeOnDelete: "zero"`). An origin with snapshots is never removed. Changing it replaces
   * the volume (needs `allowReplace`). @default none: a volume of its own
   */
  readonly snapshotOf?: pulumi.Input<string>;
}

/** A logical volume on a dom0, optionally formatted. */
export class LvmVolume extends defineResource<LvmVolumeArgs>({
  name: lvmVolumeKind.name,
  outputOnly: lvmVolumeKind.outputOnly ?? [],
}) {
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
  /** Whether the LV existed before and was adopted. */
  declare readonly adopted: pulumi.Output<boolean>;
}
