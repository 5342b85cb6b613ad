/**
 * Dom0Host: a rented server turned into a hardened Xen dom0 by one declaration, in the style of pulumi-awsx's
 * components: one resource per concern, each with its own check, diff, replace list and drift, so `preview` says
 * which concern changes.
 *
 *   install    optional phase 0: installimage from Hetzner's rescue system, with a generated host key
 *   access     the admin user and sshd's hardening, applied under the host's rollback timer (Dom0Access)
 *   packages   package sources, upgrade, Xen and the tools (Dom0Packages)
 *   firewall   the host's own nftables table, applied under the rollback timer (Dom0Firewall)
 *   xen-boot   GRUB (dom0_mem, vCPUs), xl.conf, xendomains (Dom0XenBoot)
 *   network    the bridge carrying the uplink, sysctls (Dom0Network)
 *   monitoring mail relay and aliases, mdadm and smartd mail, relatime (Dom0Monitoring)
 *   reboot     the reboot the others need, only when needed, verified (Dom0Reboot)
 *
 * `connection` is how the host is reached today (root on port 22 after an install). Dom0Access moves sshd to the
 * declared port and turns root logins off; every later concern, and whatever takes this component's `connection`
 * output (guests, volumes), logs in as the admin on the new port, and waits for the dom0 to be ready (rebooted
 * into Xen, bridge up) because that output only resolves after the reboot step.
 */
import * as pulumi from "@pulumi/pulumi";
import { InputError, InputErrors, showValue } from "../provider/core/errors";
import { osFacts } from "../provider/dom0/os";
import { Dom0Access } from "../provider/resources/dom0-access";
import { Dom0Firewall } from "../provider/resources/dom0-firewall";
import { Dom0Monitoring } from "../provider/resources/dom0-monitoring";
import { Dom0Network } from "../provider/resources/dom0-network";
import { Dom0Packages } from "../provider/resources/dom0-packages";
import { Dom0Reboot } from "../provider/resources/dom0-reboot";
import { Dom0XenBoot } from "../provider/resources/dom0-xen-boot";
import {
  HetznerInstallimage,
  type HetznerInstallimageArgs,
} from "../provider/resources/hetzner-installimage";
import type { ConnectionArgs } from "../provider/ssh/connection";

type In<T> = pulumi.Input<T>;
type OnDelete = "keep" | "restore";

export interface Dom0HostArgs {
  /**
   * How to reach the server now: root on port 22 of the installed system, its host key pinned; or, with
   * `installimage`, of Hetzner's rescue system (pinned to the rescue system's key).
   */
  readonly connection: In<ConnectionArgs>;
  /**
   * Phase 0: install the system from Hetzner's rescue system first (wipes `drives`; needs `wipeDisks: true`). The
   * installed system gets a host key the resource generates, which every later step pins. @default none
   */
  readonly installimage?: Omit<HetznerInstallimageArgs, "connection">;
  /** `debian` (12, ifupdown) or `ubuntu` (24.04, netplan, socket-activated sshd). @default "debian" */
  readonly distribution?: "debian" | "ubuntu";
  /** @default "bookworm" for Debian, "noble" for Ubuntu */
  readonly release?: string;
  /** Package mirror. @default the distribution's (http://deb.debian.org/debian) */
  readonly mirror?: In<string>;
  /** Mirror of the security updates. @default the distribution's */
  readonly securityMirror?: In<string>;
  /** HTTP proxy for apt. @default none */
  readonly aptProxy?: In<string>;
  /** `apt-get dist-upgrade` at the first `up`. @default true */
  readonly upgrade?: In<boolean>;
  /** Packages beyond Xen, the bridge tools, nftables, sudo, mdadm and the mail relay. @default [] */
  readonly extraPackages?: In<In<string>[]>;
  /** The admin: user name (not root) and public keys, which must include the key `connection` logs in with. */
  readonly admin: { readonly name: In<string>; readonly authorizedKeys: In<In<string>[]> };
  /** sshd: its port and where SSH may come from. */
  readonly ssh?: {
    /** @default 22 */
    readonly port?: In<number>;
    /** The port xen-estate dials to reach sshd's port, when a port forward sits in between (a lab). @default port */
    readonly connectPort?: In<number>;
    /** Addresses or networks (IPv4/IPv6) SSH is allowed from. @default ["0.0.0.0/0", "::/0"] */
    readonly trustedSources?: In<In<string>[]>;
  };
  /** Ports open to everyone. @default { openTcp: [80, 443] } */
  readonly firewall?: { readonly openTcp?: In<In<number>[]>; readonly openUdp?: In<In<number>[]> };
  /** The bridge carrying the uplink and the server's address. */
  readonly network: {
    /** The NIC, e.g. `eth0` or `enp0s31f6`. */
    readonly uplink: In<string>;
    /** The NIC's own MAC (the bridge sends with it). */
    readonly mac: In<string>;
    /** @default "xenbr0" */
    readonly bridge?: In<string>;
    /** `"dhcp"` or `{ address: "203.0.113.5/32", gateway: "203.0.113.1" }`. @default "dhcp" */
    readonly address?: In<"dhcp" | { address: In<string>; gateway: In<string> }>;
    /** @default none */
    readonly ipv6?: In<{ address: In<string>; gateway: In<string> }>;
    /** @default false */
    readonly proxyArp?: In<boolean>;
  };
  /** Xen: dom0's memory and vCPUs, extra command-line words. */
  readonly xen?: {
    /** @default 1024 */
    readonly dom0MemMiB?: In<number>;
    /** @default all */
    readonly dom0Vcpus?: In<number>;
    /** Extra words for Xen's command line. @default none */
    readonly xenArgs?: In<string>;
    /** dom0 kernel's command line under Xen. @default the kernel's usual one */
    readonly dom0KernelArgs?: In<string>;
    /** The Xen version the host must run after the reboot. @default "4.17" */
    readonly version?: In<string>;
  };
  /** Mail: where root's and the admin's mail goes, through which relay; the disks smartd watches. @default none */
  readonly monitoring?: {
    readonly mailTo: In<string>;
    readonly relay: In<{ host: In<string>; port?: In<number>; starttls?: In<boolean> }>;
    readonly mailName?: In<string>;
    readonly smartDisks?: In<In<string | { device: In<string>; schedule?: In<string> }>[]>;
  };
  /** Reboot when Xen, its command line, the kernel or the bridge need it. @default { allow: true, timeoutSeconds: 900 } */
  readonly reboot?: { readonly allow?: In<boolean>; readonly timeoutSeconds?: In<number> };
  /** Seconds the host waits for a confirmation before it undoes an sshd or firewall change. @default 90 */
  readonly confirmSeconds?: In<number>;
  /** The dom0's host-local network for NAT guests (passed on to them). @default "10.0.0.0/24" */
  readonly natNetwork?: In<string>;
  /** The volume group guests' volumes go in (passed on to them). @default "vg0" */
  readonly volumeGroup?: In<string>;
  /** What destroy does: `keep` the host as it is (default), or `restore` the files xen-estate replaced. */
  readonly onDelete?: In<OnDelete>;
}

export class Dom0Host extends pulumi.ComponentResource {
  /** Phase 0, when `installimage` was given. */
  readonly install?: HetznerInstallimage;
  readonly access: Dom0Access;
  readonly packages: Dom0Packages;
  readonly firewall: Dom0Firewall;
  readonly xenBoot: Dom0XenBoot;
  readonly network: Dom0Network;
  readonly monitoring?: Dom0Monitoring;
  readonly reboot: Dom0Reboot;
  /** How to reach the dom0 from now on (the admin on sshd's port); resolves once the dom0 is ready. */
  readonly connection: pulumi.Output<ConnectionArgs>;
  /** The bridge guests join; resolves once the dom0 is ready. */
  readonly bridge: pulumi.Output<string>;
  readonly natNetwork: pulumi.Output<string>;
  readonly volumeGroup: pulumi.Output<string>;
  /** What the host runs after the last `up` (Xen version, dom0 memory, kernel, bridge ports). */
  readonly running: Dom0Reboot["running"];
  /** The last reboot done by `up`, and why. */
  readonly lastReboot: Dom0Reboot["lastReboot"];

  constructor(name: string, args: Dom0HostArgs, opts?: pulumi.ComponentResourceOptions) {
    const distribution = args.distribution ?? "debian";
    const release = args.release ?? (distribution === "ubuntu" ? "noble" : "bookworm");
    const facts = osFacts(distribution, release);
    if (!facts)
      throw new InputErrors(`Dom0Host ${name}`, [
        new InputError(
          "release",
          showValue(release),
          `must be a supported release of ${distribution} (debian bookworm, ubuntu noble)`,
        ),
      ]);
    super("xen-estate:components:Dom0Host", name, {}, opts);
    const child = { parent: this };
    const os = { distribution, release };
    const onDelete = args.onDelete ?? "keep";
    const sshPort = args.ssh?.port ?? 22;
    const bridge = args.network.bridge ?? "xenbr0";
    const confirm = args.confirmSeconds !== undefined ? { confirmSeconds: args.confirmSeconds } : {};

    // After an install, the installed system is reached like the rescue system but pinned to its generated key.
    let bootstrap: In<ConnectionArgs> = args.connection;
    if (args.installimage) {
      this.install = new HetznerInstallimage(
        `${name}-install`,
        { connection: args.connection, ...args.installimage },
        child,
      );
      bootstrap = pulumi
        .all([pulumi.output(args.connection), this.install.installedHostKey])
        .apply(([c, hostKey]) => ({ ...(c as ConnectionArgs), hostKey }));
    }
    this.access = new Dom0Access(
      `${name}-access`,
      {
        connection: bootstrap,
        ...os,
        adminUser: args.admin.name,
        authorizedKeys: args.admin.authorizedKeys,
        sshPort,
        ...optional({ connectPort: args.ssh?.connectPort }),
        ...confirm,
        onDelete,
      },
      child,
    );
    // Every later concern logs in as the admin on the new port, once the access step confirmed it works.
    const adminConnection = pulumi.all([pulumi.output(bootstrap), this.access.applied]).apply(([c, a]) => ({
      ...(c as ConnectionArgs),
      port: a?.port ?? sshPort,
      user: a?.user ?? "root",
    })) as pulumi.Output<ConnectionArgs>;

    const basePackages = [
      ...facts.xenPackages,
      "bridge-utils",
      "nftables",
      "sudo",
      "mdadm",
      "lvm2",
      "grub-xen-host",
      ...(facts.network === "ifupdown" ? ["ifupdown", "isc-dhcp-client"] : ["netplan.io"]),
      ...(args.monitoring ? ["dma"] : []),
      ...(args.monitoring?.smartDisks ? ["smartmontools"] : []),
    ];
    this.packages = new Dom0Packages(
      `${name}-packages`,
      {
        connection: adminConnection,
        ...os,
        packages: pulumi.output(args.extraPackages ?? []).apply((extra) => [...basePackages, ...extra]),
        ...optional({
          mirror: args.mirror,
          securityMirror: args.securityMirror,
          proxy: args.aptProxy,
          upgrade: args.upgrade,
        }),
        onDelete,
      },
      child,
    );
    const afterPackages = { parent: this, dependsOn: [this.packages] };
    this.firewall = new Dom0Firewall(
      `${name}-firewall`,
      {
        connection: adminConnection,
        sshPort,
        ...optional({
          trustedSources: args.ssh?.trustedSources,
          openTcp: args.firewall?.openTcp,
          openUdp: args.firewall?.openUdp,
        }),
        ...confirm,
        onDelete,
      },
      afterPackages,
    );
    const dom0MemMiB = args.xen?.dom0MemMiB ?? 1024;
    this.xenBoot = new Dom0XenBoot(
      `${name}-xen-boot`,
      {
        connection: adminConnection,
        dom0MemMiB,
        bridge,
        ...optional({
          dom0Vcpus: args.xen?.dom0Vcpus,
          xenArgs: args.xen?.xenArgs,
          dom0KernelArgs: args.xen?.dom0KernelArgs,
        }),
        onDelete,
      },
      afterPackages,
    );
    const netplanFile = "/etc/netplan/01-netcfg.yaml";
    this.network = new Dom0Network(
      `${name}-network`,
      {
        connection: adminConnection,
        ...os,
        uplink: args.network.uplink,
        mac: args.network.mac,
        bridge,
        ...optional({
          address: args.network.address,
          ipv6: args.network.ipv6,
          proxyArp: args.network.proxyArp,
        }),
        onDelete,
      },
      afterPackages,
    );
    if (args.monitoring)
      this.monitoring = new Dom0Monitoring(
        `${name}-monitoring`,
        {
          connection: adminConnection,
          mailTo: args.monitoring.mailTo,
          relay: args.monitoring.relay,
          users: [args.admin.name],
          ...optional({ mailName: args.monitoring.mailName, smartDisks: args.monitoring.smartDisks }),
          onDelete,
        },
        afterPackages,
      );
    this.reboot = new Dom0Reboot(
      `${name}-reboot`,
      {
        connection: adminConnection,
        triggers: {
          kernel: this.packages.kernel,
          xen: this.packages.xen,
          boot: this.xenBoot.bootDigest,
          network: this.network.networkDigest,
        },
        dom0MemMiB,
        bridge,
        uplink: args.network.uplink,
        networkFile: facts.network === "netplan" ? netplanFile : "/etc/network/interfaces",
        ...optional({
          xenVersion: args.xen?.version,
          allowReboot: args.reboot?.allow,
          timeoutSeconds: args.reboot?.timeoutSeconds,
        }),
      },
      {
        parent: this,
        dependsOn: [this.firewall, this.xenBoot, this.network, ...(this.monitoring ? [this.monitoring] : [])],
      },
    );
    // Resolved only once the dom0 is ready, so guests and volumes that take these wait for it.
    const ready = <T>(v: pulumi.Input<T>): pulumi.Output<T> =>
      pulumi.all([pulumi.output(v), this.reboot.id]).apply(([x]) => x as T);
    this.connection = ready(adminConnection);
    this.bridge = ready(bridge);
    this.natNetwork = ready(args.natNetwork ?? "10.0.0.0/24");
    this.volumeGroup = ready(args.volumeGroup ?? "vg0");
    this.running = this.reboot.running;
    this.lastReboot = this.reboot.lastReboot;
    this.registerOutputs({
      connection: this.connection,
      bridge: this.bridge,
      natNetwork: this.natNetwork,
      volumeGroup: this.volumeGroup,
      running: this.running,
      lastReboot: this.lastReboot,
    });
  }
}

/** Drops undefined fields so the resources' own defaults apply. */
function optional<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
