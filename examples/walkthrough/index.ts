/**
 * The 2013 walkthrough as one program, on today's stack: a rented server becomes a hardened Xen dom0 (optionally
 * installed from Hetzner's rescue system first), the Linode VPS moves onto it as a bridged guest with its own
 * public IP and Robot MAC, a fresh guest behind the dom0's NAT installs itself unattended, and Varnish on the dom0
 * makes that guest visible on HTTP by host name.
 *
 * Everything host-specific comes from stack config; the schema is in README.md next to this file, and
 * Pulumi.ci.yaml is a complete stack with documentation addresses that `pulumi preview` plans offline.
 * Every guest and volume takes the Dom0Host's outputs (its connection, volume group, bridge and NAT network), which
 * resolve only once the dom0 has rebooted into Xen with its bridge up, so nothing is made on a half-ready dom0.
 */
import * as pulumi from "@pulumi/pulumi";
// Inside this repository the example imports the sources; a project of yours imports "xen-estate" and
// "xen-estate/components".
import { Dom0Host, MigratedGuest, XenGuest } from "../../components";
import { VarnishFrontend } from "../../provider";

const config = new pulumi.Config();

/** The bare server, and what it becomes (config key `dom0`). */
interface Dom0Config {
  host: string;
  /** sshd's port today (22 on a fresh install or in the rescue system). */
  port?: number;
  /** The pin of the host key of the system reached today (the rescue system's with `installimage`). */
  hostKey: string;
  uplink: string;
  mac: string;
  /** `"dhcp"`, or the main IP with its prefix (Hetzner: a /32) … */
  address: string;
  /** … and its gateway (Hetzner: on-link, outside the /32). */
  gateway?: string;
  ipv6?: { address: string; gateway: string };
  sshPort?: number;
  trustedSources?: string[];
  dom0MemMiB?: number;
  dom0Vcpus?: number;
  volumeGroup?: string;
  natNetwork?: string;
  upgrade?: boolean;
  mirror?: string;
  /** An HTTP proxy for apt (apt-cacher-ng and the like). */
  aptProxy?: string;
  /** The port the provider dials once sshd moved to `sshPort`, when a NAT or port forward sits between. */
  connectPort?: number;
  /** Extra Xen command line (a serial console, for example). */
  xenArgs?: string;
  /** Extra dom0 kernel command line. */
  dom0KernelArgs?: string;
  /** How long the rollback waits for the provider to confirm a firewall or sshd change, in seconds. */
  confirmSeconds?: number;
  /** How long a reboot may take before SSH answers again, in seconds. */
  rebootTimeoutSeconds?: number;
  monitoring?: {
    mailTo: string;
    relay: { host: string; port?: number; starttls?: boolean };
    mailName?: string;
    smartDisks?: string[];
  };
}

/** Phase 0, off unless the key `installimage` is set (it wipes `drives`). */
interface InstallimageConfig {
  drives: string[];
  image: string;
  hostname: string;
  rootGiB?: number;
  swapGiB?: number;
}

/** The VPS to migrate, booted into rescue mode (config key `linode`). */
interface LinodeConfig {
  host: string;
  port?: number;
  hostKey: string;
  user?: string;
  device?: string;
  /** A seed copy while the VPS still runs (no guest yet); false for the final copy from rescue mode. */
  live?: boolean;
  /** The address the dom0 dials the VPS at, when it differs from `host` (another route, a forward). */
  dom0Host?: string;
  /** The authorized_keys file the VPS's sshd reads, when not root's `~/.ssh/authorized_keys`. */
  authorizedKeysFile?: string;
}

/** The migrated guest on the bridge (config key `migrated`). */
interface MigratedConfig {
  name: string;
  /** The additional IP the VPS's address becomes. */
  ip: string;
  /** The separate MAC Robot assigned to `ip`. */
  mac: string;
  gateway: string;
  prefix?: number;
  size: string;
  memoryMiB: number;
  vcpus?: number;
  nameservers?: string[];
  /** Copy-on-write space of the snapshot of the migrated disk before its first boot; `"0"` for none. */
  snapshotSize?: string;
  /** How long its first boot may take until SSH answers, in seconds. */
  bootTimeoutSeconds?: number;
}

/** The fresh guest behind NAT, and the host names Varnish routes to it (config key `nat`). */
interface NatConfig {
  name: string;
  ip: string;
  rootSize: string;
  swapSize?: string;
  memoryMiB: number;
  /** The ceiling `memoryMiB` can be raised to later without a restart (ballooning); default `memoryMiB`. */
  maxMemoryMiB?: number;
  vcpus?: number;
  /** How long a clean shutdown may take before the guest is destroyed, in seconds (default 120). */
  shutdownTimeoutSeconds?: number;
  /** A root-filesystem tarball on the dom0; without it, debootstrap from `mirror`. */
  image?: string;
  suite?: string;
  mirror?: string;
  authorizedKeys?: string[];
  hostnames: string[];
  port?: number;
}

const dom0Config = config.requireObject<Dom0Config>("dom0");
const installimage = config.getObject<InstallimageConfig>("installimage");
const admin = config.requireObject<{ name: string; authorizedKeys: string[] }>("admin");
const linode = config.requireObject<LinodeConfig>("linode");
const migrated = config.requireObject<MigratedConfig>("migrated");
const nat = config.requireObject<NatConfig>("nat");
const frontendConfig = config.getObject<{ cacheSize?: string; listen?: string[] }>("frontend") ?? {};

// The walkthrough's first half: installimage (phase 0, optional), then the hardened dom0 with Xen and the bridge.
const dom0 = new Dom0Host("dom0", {
  connection: {
    host: dom0Config.host,
    port: dom0Config.port ?? 22,
    hostKey: dom0Config.hostKey,
    privateKey: config.requireSecret("dom0PrivateKey"),
  },
  ...(installimage
    ? {
        installimage: {
          drives: installimage.drives,
          wipeDisks: true,
          hostname: installimage.hostname,
          image: installimage.image,
          ...(dom0Config.volumeGroup ? { volumeGroup: dom0Config.volumeGroup } : {}),
          ...(installimage.rootGiB !== undefined ? { rootGiB: installimage.rootGiB } : {}),
          ...(installimage.swapGiB !== undefined ? { swapGiB: installimage.swapGiB } : {}),
        },
      }
    : {}),
  ...(dom0Config.mirror ? { mirror: dom0Config.mirror } : {}),
  ...(dom0Config.aptProxy ? { aptProxy: dom0Config.aptProxy } : {}),
  upgrade: dom0Config.upgrade ?? true,
  admin,
  ssh: {
    port: dom0Config.sshPort ?? 22,
    ...(dom0Config.connectPort !== undefined ? { connectPort: dom0Config.connectPort } : {}),
    ...(dom0Config.trustedSources ? { trustedSources: dom0Config.trustedSources } : {}),
  },
  network: {
    uplink: dom0Config.uplink,
    mac: dom0Config.mac,
    address:
      dom0Config.address === "dhcp"
        ? "dhcp"
        : { address: dom0Config.address, gateway: dom0Config.gateway ?? "" },
    ...(dom0Config.ipv6 ? { ipv6: dom0Config.ipv6 } : {}),
  },
  xen: {
    dom0MemMiB: dom0Config.dom0MemMiB ?? 2048,
    ...(dom0Config.dom0Vcpus !== undefined ? { dom0Vcpus: dom0Config.dom0Vcpus } : {}),
    ...(dom0Config.xenArgs ? { xenArgs: dom0Config.xenArgs } : {}),
    ...(dom0Config.dom0KernelArgs ? { dom0KernelArgs: dom0Config.dom0KernelArgs } : {}),
  },
  ...(dom0Config.monitoring ? { monitoring: dom0Config.monitoring } : {}),
  ...(dom0Config.volumeGroup ? { volumeGroup: dom0Config.volumeGroup } : {}),
  ...(dom0Config.natNetwork ? { natNetwork: dom0Config.natNetwork } : {}),
  ...(dom0Config.confirmSeconds !== undefined ? { confirmSeconds: dom0Config.confirmSeconds } : {}),
  ...(dom0Config.rebootTimeoutSeconds !== undefined
    ? { reboot: { timeoutSeconds: dom0Config.rebootTimeoutSeconds } }
    : {}),
});

// Rescue systems take a password (Linode's Finnix: `passwd; service ssh start`); a key works as well.
const linodePassword = config.getSecret("linodePassword");
const linodeKey = config.getSecret("linodePrivateKey");
if (!linodePassword && !linodeKey) throw new Error("set linodePassword or linodePrivateKey (as secrets)");

// The Linode: its disk copied by the dom0 into a volume of its own, fixed up for Xen and booted on the bridge with
// its own public IP and Robot MAC (the walkthrough's `ssh -C … dd | dd` and hand-written xm config).
const linodeGuest = new MigratedGuest(migrated.name, {
  connection: dom0.connection,
  volumeGroup: dom0.volumeGroup,
  bridge: dom0.bridge,
  source: {
    connection: {
      host: linode.host,
      port: linode.port ?? 22,
      user: linode.user ?? "root",
      hostKey: linode.hostKey,
      ...(linodeKey ? { privateKey: linodeKey } : linodePassword ? { password: linodePassword } : {}),
    },
    ...(linode.device ? { device: linode.device } : {}),
    ...(linode.dom0Host ? { dom0Host: linode.dom0Host } : {}),
    ...(linode.authorizedKeysFile ? { authorizedKeysFile: linode.authorizedKeysFile } : {}),
  },
  live: linode.live ?? false,
  size: migrated.size,
  ip: migrated.ip,
  mac: migrated.mac,
  gateway: migrated.gateway,
  ...(migrated.prefix !== undefined ? { prefix: migrated.prefix } : {}),
  ...(migrated.nameservers ? { nameservers: migrated.nameservers } : {}),
  memoryMiB: migrated.memoryMiB,
  ...(migrated.vcpus !== undefined ? { vcpus: migrated.vcpus } : {}),
  waitForNetwork: { port: 22, timeoutSeconds: migrated.bootTimeoutSeconds ?? 600 },
  // What the walkthrough recommended and never did: a snapshot of the migrated disk before its first boot.
  ...(migrated.snapshotSize !== "0" ? { snapshotBeforeBoot: migrated.snapshotSize ?? "8GiB" } : {}),
});

// The fresh guest behind the dom0's NAT, installed unattended before its first boot (the walkthrough used Ubuntu's
// netboot installer with a preseed file; debootstrap, or an image, does it today) and booting its own kernel.
const natGuest = new XenGuest(nat.name, {
  connection: dom0.connection,
  volumeGroup: dom0.volumeGroup,
  network: { mode: "nat", ip: nat.ip, network: dom0.natNetwork },
  rootSize: nat.rootSize,
  ...(nat.swapSize ? { swapSize: nat.swapSize } : {}),
  memoryMiB: nat.memoryMiB,
  ...(nat.maxMemoryMiB !== undefined ? { maxMemoryMiB: nat.maxMemoryMiB } : {}),
  ...(nat.vcpus !== undefined ? { vcpus: nat.vcpus } : {}),
  ...(nat.shutdownTimeoutSeconds !== undefined ? { shutdownTimeoutSeconds: nat.shutdownTimeoutSeconds } : {}),
  type: "pv",
  boot: { bootloader: "pvgrub2" },
  install: {
    ...(nat.image
      ? { image: nat.image }
      : {
          debootstrap: {
            suite: nat.suite ?? "bookworm",
            mirror: nat.mirror ?? "http://deb.debian.org/debian",
            // The NAT guest serves the site Varnish routes to it.
            include: ["nginx-light"],
          },
        }),
    ...(nat.authorizedKeys ? { authorizedKeys: nat.authorizedKeys } : {}),
  },
  waitForNetwork: { port: nat.port ?? 80, timeoutSeconds: 1800 },
});

// Varnish on the dom0 answers HTTP for the NAT guest's host names (the walkthrough's Varnish 3, in VCL 4.1).
const frontend = new VarnishFrontend(
  "frontend",
  {
    connection: dom0.connection,
    sites: [
      {
        hostnames: nat.hostnames,
        backend: natGuest.ip.apply((ip) => (nat.port ? `${ip}:${nat.port}` : ip)),
      },
    ],
    ...(frontendConfig.listen ? { listen: frontendConfig.listen } : {}),
    ...(frontendConfig.cacheSize ? { cacheSize: frontendConfig.cacheSize } : {}),
    // After the guest is up: the frontend's up waits until each site answers through Varnish.
  },
  { dependsOn: [natGuest] },
);

export const dom0Running = dom0.running;
export const dom0LastReboot = dom0.lastReboot;
export const migrationPhase = linodeGuest.phase;
export const migratedDisk = linodeGuest.rootPath;
/** What the last copy moved: bytes of data, bytes already there, bytes on the wire, seconds. */
export const migrationLastTransfer = linodeGuest.migration.lastTransfer;
export const natGuestHostKey = natGuest.sshHostKey;
export const frontendVcl = frontend.activeVcl;
