/**
 * The guest engine's types: what a program declares for a guest (the `…Args` interfaces, shared by BridgedDomU,
 * NatDomU and the XenGuest component) and what the provider sees after `check` (`GuestInputs`, `GuestOutputs`).
 */
import type * as pulumi from "@pulumi/pulumi";
import type { CommonInputs } from "../framework/kind";
import type { ConnectionArgs } from "../ssh/connection";

export type GuestType = "pvh" | "pv";
/** What Xen does when the guest powers off, reboots or crashes (xl.cfg(5) `on_poweroff`…). */
export const LIFECYCLE_ACTIONS = [
  "destroy",
  "restart",
  "rename-restart",
  "preserve",
  "coredump-destroy",
  "coredump-restart",
  "soft-reset",
] as const;
export type LifecycleAction = (typeof LIFECYCLE_ACTIONS)[number];

/** How the guest boots. */
export type GuestBoot =
  /** A kernel (and ramdisk) from the dom0's filesystem, with a command line. */
  | { kernel: string; ramdisk?: string; cmdline?: string }
  /**
   * `pvgrub2`: GRUB built for Xen (package grub-xen-host) reads the guest's own grub.cfg inside the guest.
   * `pygrub`: runs in dom0 and must be de-privileged (XSA-443): set LIBXL_BOOTLOADER_RESTRICT on Xen 4.17.
   */
  | { bootloader: "pvgrub2" | "pygrub" };

/** One disk of a guest. */
export interface GuestDiskArgs {
  /**
   * Block device in dom0 under /dev, e.g. an LvmVolume's `path` (`.`/`..` parts and shell characters are refused).
   * A device another guest's config already lists is refused.
   */
  readonly path: pulumi.Input<string>;
  /** Device name the guest sees: `xvda`…`xvdz`. */
  readonly vdev: pulumi.Input<string>;
  /** @default "rw" */
  readonly access?: pulumi.Input<"rw" | "ro">;
}

/**
 * How to put a root filesystem on a fresh root disk before the first boot: exactly one of `image` or
 * `debootstrap`. Either way the install runs only on an empty ext4 filesystem; a disk that already holds files is
 * never touched, and an install that was interrupted (its marker file is still there) is wiped and started again.
 */
export interface GuestInstallArgs {
  /**
   * A root filesystem tarball on the dom0 (`.tar`, `.tar.gz`, `.tar.zst`…), unpacked onto the first disk. The fast
   * path: build the image once, install many guests from it.
   */
  readonly image?: pulumi.Input<string>;
  /** Install Debian (or Ubuntu) from a package mirror with `debootstrap` on the dom0 (package `debootstrap`). */
  readonly debootstrap?: pulumi.Input<DebootstrapArgs>;
  /** Resolvers written to the guest's /etc/resolv.conf. @default Hetzner's 185.12.64.1 and 185.12.64.2 */
  readonly nameservers?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * OpenSSH public keys (`ssh-ed25519 AAAA… comment`) written to the guest's /root/.ssh/authorized_keys, so the
   * fresh guest can be reached. @default none (a debootstrapped guest then has no way in but `xl console`)
   */
  readonly authorizedKeys?: pulumi.Input<pulumi.Input<string>[]>;
}

/** A Debian-family userland installed by `debootstrap` from a mirror the dom0 can reach. */
export interface DebootstrapArgs {
  /** Release codename, e.g. `bookworm`, `trixie`, `noble` (Ubuntu). @default "bookworm" */
  readonly suite?: pulumi.Input<string>;
  /**
   * Package mirror (http or https URL); also written to the guest's sources.list. Credentials in it
   * (`http://user:password@…`) go to wget and apt in files of mode 600, never on a command line or in a log; mark
   * the whole `install` secret (`pulumi.secret`) so state encrypts them too. @default "http://deb.debian.org/debian"
   */
  readonly mirror?: pulumi.Input<string>;
  /**
   * Packages on top of the base set. The base set is what an unattended guest needs to boot and be reached:
   * systemd-sysv, udev, kmod, ifupdown, iproute2, iputils-ping, openssh-server, plus a kernel and GRUB config when
   * `boot` is a bootloader. @default []
   */
  readonly include?: pulumi.Input<pulumi.Input<string>[]>;
  /** debootstrap's `--variant`. @default "minbase" */
  readonly variant?: pulumi.Input<"minbase" | "buildd" | "default">;
  /** HTTP proxy (URL) for the download, also configured for apt inside the guest. @default none */
  readonly proxy?: pulumi.Input<string>;
}

/** The validated install settings. */
export type GuestInstall = {
  nameservers: string[];
  authorizedKeys: string[];
} & (
  | { image: string; debootstrap: null }
  | {
      image: null;
      debootstrap: {
        suite: string;
        /** The mirror URL without credentials. */
        mirror: string;
        /** Credentials that were in the mirror URL: given to debootstrap's wget in a file, never on a command line. */
        mirrorUser: string | null;
        mirrorPassword: string | null;
        include: string[];
        variant: string;
        /** The proxy URL without credentials. */
        proxy: string | null;
        proxyUser: string | null;
        proxyPassword: string | null;
      };
    }
);

/** What every guest takes, whatever its network. */
export interface GuestArgsBase {
  /** How to reach the dom0. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** Domain name (letters, digits, `_.-`; at most 64). Changing it replaces the guest. */
  readonly name: pulumi.Input<string>;
  /** Virtual CPUs at boot; changed live up to `maxVcpus`. @default 1 */
  readonly vcpus?: pulumi.Input<number>;
  /** Most vCPUs the guest can be given without a restart. @default vcpus */
  readonly maxVcpus?: pulumi.Input<number>;
  /** Memory in MiB; changed live (balloon) up to `maxMemoryMiB`. Minimum 64. */
  readonly memoryMiB: pulumi.Input<number>;
  /** Most memory in MiB the guest can balloon to without a restart. @default memoryMiB */
  readonly maxMemoryMiB?: pulumi.Input<number>;
  /** `pvh` (modern default) or `pv`. Changing it restarts the guest. @default "pvh" */
  readonly type?: pulumi.Input<GuestType>;
  /** How the guest boots. */
  readonly boot: pulumi.Input<GuestBoot>;
  /** Disks, in order; the first is the root disk. */
  readonly disks: pulumi.Input<pulumi.Input<GuestDiskArgs>[]>;
  /** Start the guest when the dom0 boots (link in /etc/xen/auto). @default true */
  readonly autostart?: pulumi.Input<boolean>;
  /** Keep the domain running; refresh reports a stopped guest as drift and `up` starts it. @default true */
  readonly running?: pulumi.Input<boolean>;
  /** @default "destroy" */
  readonly onPoweroff?: pulumi.Input<LifecycleAction>;
  /** @default "restart" */
  readonly onReboot?: pulumi.Input<LifecycleAction>;
  /** @default "restart" */
  readonly onCrash?: pulumi.Input<LifecycleAction>;
  /** Wait until the guest answers ping from the dom0 (and this TCP port, when given). @default no wait */
  readonly waitForNetwork?: pulumi.Input<{ port?: number; timeoutSeconds?: number }>;
  /** Seconds `xl shutdown -w` may take before the domain is destroyed. @default 120 */
  readonly shutdownTimeoutSeconds?: pulumi.Input<number>;
  /**
   * Unattended install of a fresh root disk. Changing `nameservers`, `authorizedKeys` (or the guest's address)
   * later rewrites those files inside the stopped guest's filesystem and restarts it.
   */
  readonly install?: pulumi.Input<GuestInstallArgs>;
}

export interface GuestDisk {
  path: string;
  vdev: string;
  access: "rw" | "ro";
}

export interface GuestVif {
  mac: string;
  bridge: string | null;
  ip: string;
  script: string | null;
}

/** The guest's own network settings, written into a fresh root filesystem. */
export interface GuestNetwork {
  address: string;
  prefix: number;
  gateway: string;
  /** The gateway is outside the guest's prefix (a /32 behind an on-link router). */
  onLink: boolean;
}

/** The settings an install writes into the guest, as one value: a change rewrites them. */
export interface GuestSettings {
  hostname: string;
  address: string;
  prefix: number;
  gateway: string;
  onLink: boolean;
  nameservers: string[];
  authorizedKeys: string[];
}

export interface GuestInputs extends CommonInputs {
  name: string;
  vcpus: number;
  maxVcpus: number;
  memoryMiB: number;
  maxMemoryMiB: number;
  type: GuestType;
  boot:
    | { kind: "direct"; kernel: string; ramdisk: string | null; cmdline: string }
    | { kind: "pvgrub2" | "pygrub" };
  disks: GuestDisk[];
  vifs: GuestVif[];
  autostart: boolean;
  running: boolean;
  onPoweroff: LifecycleAction;
  onReboot: LifecycleAction;
  onCrash: LifecycleAction;
  waitForNetwork: { port: number | null; timeoutSeconds: number } | null;
  shutdownTimeoutSeconds: number;
  install: GuestInstall | null;
  guestNetwork: GuestNetwork;
  /** The NAT network this guest lives in (NatDomU only). */
  natNetwork: string | null;
  /**
   * NatDomU: whether the network's NAT (MASQUERADE and FORWARD rules, `ip_forward`) is in place; refresh reports
   * false when a firewall tool flushed it, and `up` puts it back. Always true for a checked NAT guest; null for a
   * bridged one.
   */
  natActive: boolean | null;
  /**
   * Who owns the guest's config and domain name on the host: `<project>/<stack>/<resource>`, written into the
   * config. Another resource's config is never taken over or removed. null for a guest created before 0.2.
   */
  owner: string | null;
  /** The settings an install wrote into the guest (see GUEST_CHANGES.settings); null without an install. */
  guestSettings: GuestSettings | null;
  /** Files this guest owns on the dom0, path → content: `pulumi preview --diff` shows them line by line. */
  files: Record<string, string>;
}

export interface GuestOutputs extends GuestInputs {
  /** Domain id while running, else null. */
  domid: number | null;
  /**
   * Fingerprint (`SHA256:…`) of the SSH host key an install gave the guest, ready to pin as a connection's
   * `hostKey`; null without an install or when the guest has no SSH server.
   */
  sshHostKey: string | null;
}
