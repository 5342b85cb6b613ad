/**
 * XenGuest: the walkthrough's unit in one declaration: a guest with its root (and optional swap) volume, bridged
 * with its own public IP or behind the dom0's NAT.
 *
 * Children are named after the component (`<name>-root`, `<name>-swap`, `<name>`) and parented to it; renaming the
 * component renames (so replaces) them. Every guest argument but `name` and `disks` passes through unchanged: the
 * component's arguments are derived from the guest's, so the two cannot drift apart.
 */
import * as pulumi from "@pulumi/pulumi";
import { InputError, InputErrors, showValue } from "../provider/core/errors";
import { didYouMean } from "../provider/core/validate";
import type { GuestArgsBase, GuestDiskArgs } from "../provider/guest/args";
import { BridgedDomU } from "../provider/resources/bridged-domu";
import { LvmVolume } from "../provider/resources/lvm-volume";
import { NatDomU } from "../provider/resources/nat-domu";

/** A guest with its own public IP and the provider-assigned MAC on the dom0's bridge. */
export interface BridgedNetworkArgs {
  readonly mode: "bridged";
  /** Public IPv4 address. */
  readonly ip: pulumi.Input<string>;
  /** The MAC the provider assigned to `ip` (Hetzner Robot: "Request separate MAC"). */
  readonly mac: pulumi.Input<string>;
  /** Bridge in dom0 the vif joins. @default "xenbr0" */
  readonly bridge?: pulumi.Input<string>;
  /** Prefix length of the guest's address. @default 32 */
  readonly prefix?: pulumi.Input<number>;
  /** The guest's gateway (required with `install`). */
  readonly gateway?: pulumi.Input<string>;
}

/** A guest on the dom0's host-local network behind NAT. */
export interface NatNetworkArgs {
  readonly mode: "nat";
  /** Address in `network`. */
  readonly ip: pulumi.Input<string>;
  /** The host-local network. @default "10.0.0.0/24" */
  readonly network?: pulumi.Input<string>;
  /** @default derived from the guest's name, in Xen's 00:16:3e range */
  readonly mac?: pulumi.Input<string>;
}

/** The guest's own arguments, as BridgedDomU and NatDomU take them, but for its name and disks (made here). */
type GuestPassThrough = Omit<GuestArgsBase, "name" | "disks">;

export interface XenGuestArgs extends GuestPassThrough {
  /** Domain name. @default the component's name */
  readonly domainName?: pulumi.Input<string>;
  /** `bridged` (own public IP and provider MAC) or `nat` (host-local address behind the dom0's NAT). */
  readonly network: BridgedNetworkArgs | NatNetworkArgs;
  /** Volume group for the volumes. @default "vg0" */
  readonly volumeGroup?: pulumi.Input<string>;
  /** Root volume size (`"10GiB"`…); grown in place when raised. */
  readonly rootSize: pulumi.Input<string | number>;
  /**
   * Root filesystem: `ext4` (labelled `root`, the only one an install can fill) or `none` (a disk the guest
   * partitions itself, or a migrated one). @default "ext4"
   */
  readonly rootFilesystem?: pulumi.Input<"ext4" | "none">;
  /** Swap volume size; no swap volume when unset. */
  readonly swapSize?: pulumi.Input<string | number>;
  /** Let a volume change that destroys data (filesystem, name) go ahead. @default false */
  readonly allowReplace?: pulumi.Input<boolean>;
}

const MODES = ["bridged", "nat"] as const;

export class XenGuest extends pulumi.ComponentResource {
  /** The root volume. */
  readonly root: LvmVolume;
  /** The swap volume, when `swapSize` was given. */
  readonly swap?: LvmVolume;
  /** The guest itself. */
  readonly guest: BridgedDomU | NatDomU;
  /** Device path of the root volume in dom0. */
  readonly rootPath: pulumi.Output<string>;
  /** Domain id while running, else null. */
  readonly domid: pulumi.Output<number | null>;
  /** The guest's address. */
  readonly ip: pulumi.Output<string>;
  /** Fingerprint (`SHA256:…`) of the SSH host key the install gave the guest, else null. */
  readonly sshHostKey: pulumi.Output<string | null>;

  constructor(name: string, args: XenGuestArgs, opts?: pulumi.ComponentResourceOptions) {
    const mode = (args.network as { mode?: unknown } | undefined)?.mode;
    if (!MODES.includes(mode as (typeof MODES)[number])) {
      const hint = typeof mode === "string" ? didYouMean(mode, MODES) : undefined;
      throw new InputErrors(`XenGuest ${name}`, [
        new InputError("network.mode", showValue(mode), 'must be one of "bridged", "nat"', hint),
      ]);
    }
    super("xen-estate:components:XenGuest", name, {}, opts);
    const {
      domainName: domainNameArg,
      network: net,
      volumeGroup,
      rootSize,
      rootFilesystem,
      swapSize,
      allowReplace,
      ...guestArgs
    } = args;
    const domainName = domainNameArg ?? name;
    const child = { parent: this };
    const volume = { connection: args.connection, ...optional({ volumeGroup, allowReplace }) };
    const rootFs = pulumi.output(rootFilesystem ?? "ext4");
    this.root = new LvmVolume(
      `${name}-root`,
      {
        ...volume,
        name: pulumi.interpolate`${domainName}-root`,
        size: rootSize,
        filesystem: rootFs,
        // Only a filesystem takes a label; a `none` disk belongs to the guest.
        label: rootFs.apply((fs) => (fs === "ext4" ? "root" : (undefined as unknown as string))),
      },
      child,
    );
    const disks: pulumi.Input<GuestDiskArgs>[] = [{ path: this.root.path, vdev: "xvda" }];
    if (swapSize !== undefined) {
      this.swap = new LvmVolume(
        `${name}-swap`,
        {
          ...volume,
          name: pulumi.interpolate`${domainName}-swap`,
          size: swapSize,
          filesystem: "swap",
          label: "swap",
        },
        child,
      );
      disks.push({ path: this.swap.path, vdev: "xvdb" });
    }
    const common = { ...(optional(guestArgs) as GuestPassThrough), name: domainName, disks };
    this.guest =
      net.mode === "bridged"
        ? new BridgedDomU(
            name,
            {
              ...common,
              ip: net.ip,
              mac: net.mac,
              ...optional({ bridge: net.bridge, prefix: net.prefix, gateway: net.gateway }),
            },
            child,
          )
        : new NatDomU(
            name,
            { ...common, ip: net.ip, ...optional({ network: net.network, mac: net.mac }) },
            child,
          );
    this.rootPath = this.root.path;
    this.domid = this.guest.domid;
    this.ip = pulumi.output(net.ip);
    this.sshHostKey = this.guest.sshHostKey;
    this.registerOutputs({
      rootPath: this.rootPath,
      domid: this.domid,
      ip: this.ip,
      sshHostKey: this.sshHostKey,
    });
  }
}

/** Drops undefined fields so the resources' own defaults apply. */
function optional<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
