/**
 * XenGuest: the walkthrough's unit in one declaration: a guest with its root (and optional swap) volume, bridged
 * with its own public IP or behind the dom0's NAT.
 *
 * Children are named after the component (`<name>-root`, `<name>-swap`, `<name>`) and parented to it; renaming the
 * component renames (so replaces) them.
 */
import * as pulumi from "@pulumi/pulumi";
import {
  BridgedDomU,
  ConnectionArgs,
  GuestBoot,
  GuestInstallArgs,
  LifecycleAction,
  LvmVolume,
  NatDomU,
} from "../provider";

/** A guest with its own public IP and the provider-assigned MAC on the dom0's bridge. */
export interface BridgedNetworkArgs {
  readonly mode: "bridged";
  /** Public IPv4 address. */
  readonly ip: pulumi.Input<string>;
  /** The MAC the provider assigned to `ip` (Hetzner Robot: "Request separate MAC"). */
  readonly mac: pulumi.Input<string>;
  /** @default "xenbr0" */
  readonly bridge?: pulumi.Input<string>;
  /** @default 32 */
  readonly prefix?: pulumi.Input<number>;
  /** The guest's gateway (required with `install`). */
  readonly gateway?: pulumi.Input<string>;
}

/** A guest on the dom0's host-local network behind NAT. */
export interface NatNetworkArgs {
  readonly mode: "nat";
  /** Address in `network`. */
  readonly ip: pulumi.Input<string>;
  /** @default "10.0.0.0/24" */
  readonly network?: pulumi.Input<string>;
  /** @default derived from host and name */
  readonly mac?: pulumi.Input<string>;
}

export interface XenGuestArgs {
  /** How to reach the dom0. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** Domain name. @default the component's name */
  readonly domainName?: pulumi.Input<string>;
  readonly network: BridgedNetworkArgs | NatNetworkArgs;
  /** Volume group for the volumes. @default "vg0" */
  readonly volumeGroup?: pulumi.Input<string>;
  /** Root volume size (`"10GiB"`…); grown in place when raised. */
  readonly rootSize: pulumi.Input<string | number>;
  /** Root filesystem. @default "ext4" */
  readonly rootFilesystem?: pulumi.Input<"ext4" | "none">;
  /** Swap volume size; no swap volume when unset. */
  readonly swapSize?: pulumi.Input<string | number>;
  /** @default 1 */
  /** Virtual CPUs at boot; changed live up to `maxVcpus`. @default 1 */
  readonly vcpus?: pulumi.Input<number>;
  /** Most vCPUs without a restart. @default vcpus */
  readonly maxVcpus?: pulumi.Input<number>;
  /** Memory in MiB; changed live up to `maxMemoryMiB`. Minimum 64. */
  readonly memoryMiB: pulumi.Input<number>;
  /** Most memory in MiB without a restart. @default memoryMiB */
  readonly maxMemoryMiB?: pulumi.Input<number>;
  /** `pvh` or `pv`. @default "pvh" */
  readonly type?: pulumi.Input<"pvh" | "pv">;
  /** A kernel on the dom0, or `{ bootloader: "pvgrub2" }` for the guest's own kernel. */
  readonly boot: pulumi.Input<GuestBoot>;
  /** Unattended install onto the fresh root volume (an image or debootstrap). @default none */
  readonly install?: pulumi.Input<GuestInstallArgs>;
  /** Start the guest when the dom0 boots. @default true */
  readonly autostart?: pulumi.Input<boolean>;
  /** @default "restart" */
  readonly onCrash?: pulumi.Input<LifecycleAction>;
  /** Wait until the guest answers ping (and this TCP port) from the dom0. @default no wait */
  readonly waitForNetwork?: pulumi.Input<{ port?: number; timeoutSeconds?: number }>;
  /** Seconds `xl shutdown -w` may take before the domain is destroyed. @default 120 */
  readonly shutdownTimeoutSeconds?: pulumi.Input<number>;
  /** Let a volume change that destroys data (filesystem, name) go ahead. @default false */
  readonly allowReplace?: pulumi.Input<boolean>;
}

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
    super("xen-estate:components:XenGuest", name, {}, opts);
    const domainName = args.domainName ?? name;
    const child = { parent: this };
    this.root = new LvmVolume(
      `${name}-root`,
      {
        connection: args.connection,
        ...(args.volumeGroup !== undefined ? { volumeGroup: args.volumeGroup } : {}),
        name: pulumi.interpolate`${domainName}-root`,
        size: args.rootSize,
        filesystem: args.rootFilesystem ?? "ext4",
        label: "root",
        ...(args.allowReplace !== undefined ? { allowReplace: args.allowReplace } : {}),
      },
      child,
    );
    const disks: pulumi.Input<{ path: pulumi.Input<string>; vdev: string }>[] = [
      { path: this.root.path, vdev: "xvda" },
    ];
    if (args.swapSize !== undefined) {
      this.swap = new LvmVolume(
        `${name}-swap`,
        {
          connection: args.connection,
          ...(args.volumeGroup !== undefined ? { volumeGroup: args.volumeGroup } : {}),
          name: pulumi.interpolate`${domainName}-swap`,
          size: args.swapSize,
          filesystem: "swap",
          label: "swap",
          ...(args.allowReplace !== undefined ? { allowReplace: args.allowReplace } : {}),
        },
        child,
      );
      disks.push({ path: this.swap.path, vdev: "xvdb" });
    }
    const common = {
      connection: args.connection,
      name: domainName,
      memoryMiB: args.memoryMiB,
      boot: args.boot,
      disks,
      ...optional({
        vcpus: args.vcpus,
        maxVcpus: args.maxVcpus,
        maxMemoryMiB: args.maxMemoryMiB,
        type: args.type,
        install: args.install,
        autostart: args.autostart,
        onCrash: args.onCrash,
        waitForNetwork: args.waitForNetwork,
        shutdownTimeoutSeconds: args.shutdownTimeoutSeconds,
      }),
    };
    const net = args.network;
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
