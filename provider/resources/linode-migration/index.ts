/**
 * LinodeMigration: a VPS disk moved into a block device on a dom0 (an LvmVolume) at close to wire speed, verified,
 * resumable, and made bootable under Xen. See ./kind.ts for what it promises about data.
 */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { ConnectionArgs } from "../../ssh/connection";
import { linodeMigrationKind } from "./kind";
import type { Phase, TransferStats } from "./plan";

export { linodeMigrationKind };
export type {
  LinodeMigrationInputs,
  LinodeMigrationOutputs,
  Phase,
  TransferStats,
  FixupInputs,
} from "./plan";
export {
  checkMigration,
  ProgressMeter,
  parseProgress,
  copyIdentity,
  resolveMethod,
  migrationReplaces,
  MIGRATION_DEFAULTS,
} from "./plan";
export {
  chunkEngine,
  sourceProbeScript,
  targetProbeScript,
  grantScript,
  authorizeScript,
  revokeScript,
  senderScript,
  prepareScript,
  directCopyScript,
  relayReceiveCommand,
  relayReceiveScript,
  verifyScript,
  finishScript,
  fixupsScript,
  renderFixupFiles,
  forgetScript,
  sshCommand,
  stateDir,
  keyDir,
  keyTag,
  STATE_ROOT,
  FIXUP_BACKUPS,
  HOST_ALIAS,
} from "./scripts";
export type { CopyPlan, FinishPlan, FixupPlan, Dial } from "./scripts";

/** The VPS being migrated, in rescue mode. */
export interface LinodeSourceArgs {
  /**
   * How the provider reaches the source (the VPS booted into rescue mode, sshd started): host key pinned, a
   * password or a key. Its credentials are stored as a secret like the resource's own. The dom0 dials the same
   * address unless `dom0Host` says otherwise, with a key pair made for each copy and authorised through this
   * connection.
   */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** The disk to copy: `/dev/sda` on today's Linode (KVM), `/dev/xvda` on old Xen-era ones. @default "/dev/sda" */
  readonly device?: pulumi.Input<string>;
  /** The address the dom0 dials to reach the source, when not `connection.host` (a private network). @default connection.host */
  readonly dom0Host?: pulumi.Input<string>;
  /** The port the dom0 dials, when not `connection.port`. @default connection.port */
  readonly dom0Port?: pulumi.Input<number>;
  /**
   * The source is running from `device` (not in rescue mode): a seed copy, made while the VPS still serves. Its
   * filesystem is not consistent and is not checked or fixed up; set `live: false` after booting into rescue mode
   * and run `up` again, which sends only the chunks that changed. @default false
   */
  readonly live?: pulumi.Input<boolean>;
  /**
   * The authorized_keys file the source's sshd reads for `connection.user`, where the dom0's key for a copy is
   * added and then removed. @default "~user/.ssh/authorized_keys"
   */
  readonly authorizedKeysFile?: pulumi.Input<string>;
}

/** How the data travels. */
export interface LinodeTransferArgs {
  /**
   * `auto`: used blocks only (the ext2/3/4 block bitmap; free blocks arrive as zeros) for ext2/3/4, a raw copy
   * that sends zero chunks without data for anything else. `ext` or `raw` force one. @default "auto"
   */
  readonly method?: pulumi.Input<"auto" | "ext" | "raw">;
  /** zstd level (1–19), compressed on every core of the source. @default 1 */
  readonly compressionLevel?: pulumi.Input<number>;
  /**
   * Size of a chunk: the unit of hashing, of resume after an interruption and of a delta. A power of two from
   * 1MiB to 256MiB. @default "4MiB"
   */
  readonly chunkSize?: pulumi.Input<string | number>;
  /** Seconds one copy (and each of verify and finish) may take before it is stopped. @default 86400 */
  readonly deadlineSeconds?: pulumi.Input<number>;
  /**
   * `direct`: the dom0 pulls from the source over its own SSH connection (the data never crosses the operator's
   * uplink). `relay`: the provider carries the stream between its two connections, for a source the dom0 cannot
   * reach; as fast as the provider's links. @default "direct"
   */
  readonly route?: pulumi.Input<"direct" | "relay">;
}

/** The new network of the migrated guest. */
export interface LinodeNetworkFixupArgs {
  /** The guest's address with its prefix, e.g. `"203.0.113.10/32"` (a single additional IP). */
  readonly address: pulumi.Input<string>;
  /** The guest's gateway (the dom0's gateway for a bridged guest). */
  readonly gateway: pulumi.Input<string>;
  /** Resolvers for the guest (one to three). @default the dom0's own resolvers */
  readonly nameservers?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * How the interface stays `eth0` under Xen: `kernel` (`net.ifnames=0` on the kernel command line) or `link` (a
   * systemd `.link` file matching Xen's driver, as well). @default "kernel"
   */
  readonly interfaceNaming?: pulumi.Input<"kernel" | "link">;
}

/** Changes inside the copied filesystem so it boots under Xen; each keeps the original (revert.sh puts them back). */
export interface LinodeFixupArgs {
  /** New host name (/etc/hostname, the 127.0.1.1 line of /etc/hosts). @default unchanged */
  readonly hostname?: pulumi.Input<string>;
  /** New network settings (Linode's Network Helper files are replaced). @default unchanged */
  readonly network?: pulumi.Input<LinodeNetworkFixupArgs>;
  /** The root in fstab: `device` (`/dev/xvda`) or `uuid` (`UUID=…`). Other `/dev/sdX` become `/dev/xvdX`. @default "device" */
  readonly fstab?: pulumi.Input<"device" | "uuid">;
  /** The guest's swap disk as it sees it (e.g. `/dev/xvdb`); without one, swap lines are commented out. @default none */
  readonly swapDevice?: pulumi.Input<string>;
}

export interface LinodeMigrationArgs {
  /** How to reach the dom0 (the target's host). */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** The VPS to copy from. */
  readonly source: LinodeSourceArgs;
  /**
   * Where the disk goes: `device`, a block device on the dom0 at least as large as the source's filesystem and
   * holding nothing (an LvmVolume's `path`, with `filesystem: "none"`). Changing it replaces the migration (needs
   * `allowReplace`). A volume group and size make the volume too through the MigratedGuest component.
   */
  readonly target: pulumi.Input<{ device: pulumi.Input<string> }>;
  readonly transfer?: pulumi.Input<LinodeTransferArgs>;
  /**
   * After each copy, read the target back from the device and compare every chunk's SHA-256 with the source's;
   * after the final copy, `e2fsck -fn` too. A mismatch fails the resource, naming the chunk. @default true
   */
  readonly verify?: pulumi.Input<boolean>;
  /** Grow the filesystem to fill the target after the final copy (the space beyond is zeroed first). @default true */
  readonly grow?: pulumi.Input<boolean>;
  /** Convert an ext3 source to ext4 after the final copy (`tune2fs -O extents,uninit_bg,dir_index`). @default false */
  readonly convertToExt4?: pulumi.Input<boolean>;
  /** Guest fixups after the final copy, or `false` for none. @default console, GRUB, fstab and initramfs only */
  readonly fixups?: pulumi.Input<LinodeFixupArgs | false>;
  /**
   * Let this migration overwrite a target that holds data it did not copy, and let a change of the target, or
   * after the migration finished of the source, replace it (copying again over the migrated disk). @default false
   */
  readonly allowReplace?: pulumi.Input<boolean>;
}

/** A Linode (or any VPS) disk copied into a dom0's volume, verified, resumable, ready to boot under Xen. */
export class LinodeMigration extends defineResource<LinodeMigrationArgs>({
  name: linodeMigrationKind.name,
  outputOnly: linodeMigrationKind.outputOnly ?? [],
  nestedConnections: linodeMigrationKind.nestedConnections ?? [],
}) {
  /** `copying`, `seeded` (a live seed copy is done) or `migrated`. */
  declare readonly phase: pulumi.Output<Phase>;
  /** The method used: `ext` (used blocks only) or `raw`. */
  declare readonly method: pulumi.Output<"ext" | "raw">;
  declare readonly sourceFilesystem: pulumi.Output<string | null>;
  /** Bytes copied (the source filesystem's size for `ext`). */
  declare readonly sourceBytes: pulumi.Output<number>;
  declare readonly sourceUsedBytes: pulumi.Output<number | null>;
  declare readonly sourceUuid: pulumi.Output<string | null>;
  declare readonly chunks: pulumi.Output<number>;
  /** SHA-256 over every chunk's SHA-256, as the source computed them. */
  declare readonly sourceHash: pulumi.Output<string>;
  /** The migrated disk's device path on the dom0: give it to the guest's `disks`, so the guest waits for it. */
  declare readonly targetDevice: pulumi.Output<string>;
  declare readonly targetBytes: pulumi.Output<number>;
  /** Filesystem UUID on the target after the migration. */
  declare readonly filesystemUuid: pulumi.Output<string | null>;
  /** What the last copy sent: data, zeros, chunks already there, bytes on the wire, seconds. */
  declare readonly lastTransfer: pulumi.Output<TransferStats | null>;
  /** Files the fixups changed or created inside the migrated filesystem. */
  declare readonly fixedFiles: pulumi.Output<string[]>;
}
