/**
 * MigratedGuest: the walkthrough's migration in one declaration: a volume of the given size in a volume group, the
 * VPS's disk migrated into it, and the migrated system booted as a bridged guest with its own public IP and the
 * provider's MAC, through its own kernel (pvgrub2).
 *
 * Children are named after the component: `<name>-root` (LvmVolume, filesystem "none": its content is the guest's),
 * `<name>-migration` (LinodeMigration), optionally `<name>-preboot` (an LvmVolume snapshot of the migrated disk) and
 * `<name>` (BridgedDomU). The guest's disk is the migration's `targetDevice`, so the guest is created only once the
 * migration (and the snapshot) is done. A live seed copy (`live: true`) makes no
 * guest: the disk is not consistent until the final copy from rescue mode.
 */
import * as pulumi from "@pulumi/pulumi";
import type { LifecycleAction } from "../provider/guest/args";
import { BridgedDomU } from "../provider/resources/bridged-domu";
import {
  LinodeMigration,
  type LinodeSourceArgs,
  type LinodeTransferArgs,
} from "../provider/resources/linode-migration";
import { LvmVolume } from "../provider/resources/lvm-volume";
import type { ConnectionArgs } from "../provider/ssh/connection";

export interface MigratedGuestArgs {
  /** How to reach the dom0. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** The VPS to migrate, in rescue mode (see LinodeMigration's `source`; its `live` is the component's own). */
  readonly source: Omit<LinodeSourceArgs, "live">;
  /**
   * A seed copy while the VPS still runs: no guest is made yet. Set false (after booting the VPS into rescue mode)
   * to send only what changed and boot the guest. @default false
   */
  readonly live?: boolean;
  /** Volume group for the root volume. @default "vg0" */
  readonly volumeGroup?: pulumi.Input<string>;
  /** Size of the root volume: at least the source's filesystem; the filesystem grows to fill it. */
  readonly size: pulumi.Input<string | number>;
  /** Domain name, also the migrated system's host name. @default the component's name */
  readonly domainName?: pulumi.Input<string>;
  /** The guest's public IPv4 address. */
  readonly ip: pulumi.Input<string>;
  /** The MAC the provider assigned to `ip` (Hetzner Robot: "Request separate MAC"). */
  readonly mac: pulumi.Input<string>;
  /** Prefix length of the guest's address. @default 32 */
  readonly prefix?: pulumi.Input<number>;
  /** The guest's gateway. */
  readonly gateway: pulumi.Input<string>;
  /** Bridge in dom0 the vif joins. @default "xenbr0" */
  readonly bridge?: pulumi.Input<string>;
  /** Resolvers for the guest. @default the dom0's own */
  readonly nameservers?: pulumi.Input<pulumi.Input<string>[]>;
  /** Memory in MiB (Debian's stock initramfs needs about 768). */
  readonly memoryMiB: pulumi.Input<number>;
  /** @default 1 */
  readonly vcpus?: pulumi.Input<number>;
  readonly transfer?: pulumi.Input<LinodeTransferArgs>;
  /** Wait until the guest answers ping from the dom0 (and this TCP port, when given). @default no wait */
  readonly waitForNetwork?: pulumi.Input<{ port?: number; timeoutSeconds?: number }>;
  /** @default "restart" */
  readonly onReboot?: pulumi.Input<LifecycleAction>;
  /** Let the migration overwrite a volume that holds data, or be replaced (see LinodeMigration). @default false */
  readonly allowReplace?: pulumi.Input<boolean>;
  /**
   * Copy-on-write space of an LVM snapshot `<domainName>-root-preboot` of the migrated disk, taken after the
   * migration and before the guest's first boot (what the 2013 walkthrough recommended): roll back with `lvconvert
   * --merge`, or drop it (unset this) once the guest runs well; every write to the disk costs a copy while it
   * exists. @default no snapshot
   */
  readonly snapshotBeforeBoot?: pulumi.Input<string | number>;
}

export class MigratedGuest extends pulumi.ComponentResource {
  readonly root: LvmVolume;
  readonly migration: LinodeMigration;
  /** The snapshot of the migrated disk before its first boot, when `snapshotBeforeBoot` was given. */
  readonly preBoot?: LvmVolume;
  /** The guest, once the migration is final (not for a live seed copy). */
  readonly guest?: BridgedDomU;
  /** The migrated disk on the dom0. */
  readonly rootPath: pulumi.Output<string>;
  readonly phase: pulumi.Output<string>;

  constructor(name: string, args: MigratedGuestArgs, opts?: pulumi.ComponentResourceOptions) {
    super("xen-estate:components:MigratedGuest", name, {}, opts);
    const child = { parent: this };
    const domainName = args.domainName ?? name;
    const prefix = args.prefix ?? 32;
    this.root = new LvmVolume(
      `${name}-root`,
      {
        connection: args.connection,
        name: pulumi.interpolate`${domainName}-root`,
        size: args.size,
        filesystem: "none",
        ...optional({ volumeGroup: args.volumeGroup, allowReplace: args.allowReplace }),
      },
      child,
    );
    this.migration = new LinodeMigration(
      `${name}-migration`,
      {
        connection: args.connection,
        source: { ...args.source, live: args.live ?? false },
        target: { device: this.root.path },
        fixups: {
          hostname: domainName,
          network: {
            address: pulumi.interpolate`${args.ip}/${prefix}`,
            gateway: args.gateway,
            ...optional({ nameservers: args.nameservers }),
          },
        },
        ...optional({ transfer: args.transfer, allowReplace: args.allowReplace }),
      },
      child,
    );
    // The guest's disk resolves once the migration is done and, with a snapshot, once the snapshot is made.
    let disk: pulumi.Output<string> = this.migration.targetDevice;
    if (args.snapshotBeforeBoot !== undefined && !args.live) {
      const migrated = this.migration.targetDevice;
      this.preBoot = new LvmVolume(
        `${name}-preboot`,
        {
          connection: args.connection,
          name: pulumi.interpolate`${domainName}-root-preboot`,
          // The origin's name, known only once the migration finished: the snapshot waits for it.
          snapshotOf: pulumi.all([this.root.name, migrated]).apply(([n]) => n),
          size: args.snapshotBeforeBoot,
          ...optional({ volumeGroup: args.volumeGroup, allowReplace: args.allowReplace }),
        },
        child,
      );
      disk = pulumi.all([migrated, this.preBoot.path]).apply(([d]) => d);
    }
    if (!args.live) {
      this.guest = new BridgedDomU(
        name,
        {
          connection: args.connection,
          name: domainName,
          ip: args.ip,
          mac: args.mac,
          prefix,
          gateway: args.gateway,
          memoryMiB: args.memoryMiB,
          type: "pv",
          boot: { bootloader: "pvgrub2" },
          disks: [{ path: disk, vdev: "xvda" }],
          ...optional({
            bridge: args.bridge,
            vcpus: args.vcpus,
            waitForNetwork: args.waitForNetwork,
            onReboot: args.onReboot,
          }),
        },
        child,
      );
    }
    this.rootPath = this.root.path;
    this.phase = this.migration.phase;
    this.registerOutputs({ rootPath: this.rootPath, phase: this.phase });
  }
}

/** Drops undefined fields so the resources' own defaults apply. */
function optional<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
