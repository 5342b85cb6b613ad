/**
 * The guest engine shared by BridgedDomU and NatDomU: validation, the rendered xl config, the change policy and
 * the remote lifecycle (`xl create`, live memory/vcpu changes, restart, shutdown with a deadline).
 *
 * What a change does is declared in one place, {@link GUEST_CHANGES}: live (applied to the running domain and
 * persisted to its config), restart (config rewritten, domain restarted), config (takes effect at next boot), or
 * replace (the kind's `replaceOn`).
 */
import type * as pulumi from "@pulumi/pulumi";
import { ConnectionArgs } from "./connection";
import { CommonInputs, Context, deepEqual, VERSION } from "./dynamic";
import { RefusedError, RemoteCommandError } from "./errors";
import { contains, Ipv4Network, macProblem, parseCidr } from "./network";
import {
  observeOwnedFiles,
  removeRemoteFile,
  statRemoteFiles,
  withHostLock,
  writeRemoteFile,
} from "./remote-file";
import { shellQuote } from "./shell";
import type { RunResult } from "./ssh/executor";
import { fingerprintOf } from "./ssh/hostkey";
import { render } from "./templates";
import { Checker, isIPv4, isSafeAbsolutePath, UNKNOWN } from "./validate";

export type GuestType = "pvh" | "pv";
export type LifecycleAction =
  | "destroy"
  | "restart"
  | "rename-restart"
  | "preserve"
  | "coredump-destroy"
  | "coredump-restart"
  | "soft-reset";
const ACTIONS: readonly LifecycleAction[] = [
  "destroy",
  "restart",
  "rename-restart",
  "preserve",
  "coredump-destroy",
  "coredump-restart",
  "soft-reset",
];

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
  /** Block device in dom0, e.g. an LvmVolume's `path`. */
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
  /** Package mirror (http or https URL); also written to the guest's sources.list. @default "http://deb.debian.org/debian" */
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
        mirror: string;
        include: string[];
        variant: string;
        proxy: string | null;
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
  /** Unattended install of a fresh root disk. */
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

/** Which change does what. Anything not listed is bookkeeping (no remote action beyond converging). */
export const GUEST_CHANGES = {
  /** Applied to the running domain (`xl mem-set`, `xl vcpu-set`) and persisted to the config. */
  live: ["memoryMiB", "vcpus"],
  /** Config rewritten, then the domain is shut down and created again. */
  restart: ["type", "boot", "disks", "vifs", "maxMemoryMiB", "maxVcpus"],
  /** Config rewritten; takes effect at the next boot. */
  config: ["onPoweroff", "onReboot", "onCrash", "autostart"],
  /** Replace the guest (the old one is deleted first: names, MACs and IPs are unique on a host). */
  replace: ["name", "connection.host"],
} as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const VDEV = /^xvd[a-z]{1,2}$/;
const MIN_MEMORY_MIB = 64;
export const XEN_CONFIG_DIR = "/etc/xen";
/** GRUB images for Xen guests from Debian's grub-xen-host: one per guest type (a PV guest cannot boot the PVH one). */
export const PVGRUB2: Record<GuestType, string> = {
  pvh: "/usr/lib/grub-xen/grub-i386-xen_pvh.bin",
  pv: "/usr/lib/grub-xen/grub-x86_64-xen.bin",
};
export const NAT_SCRIPT = "/etc/xen/scripts/vif-xen-estate-nat";
export const NAT_CONF = "/etc/xen/xen-estate-nat.conf";
export const NAT_LOCK = "/run/lock/xen-estate-nat.lock";
/** Resolvers Hetzner runs for its customers since 2021 (the old 213.133.x set is retired). */
export const DEFAULT_NAMESERVERS = ["185.12.64.1", "185.12.64.2"];

/** Validates the network-independent part of a guest. Pure. */
export function checkGuestBase(
  raw: Record<string, unknown>,
  c: Checker,
): Omit<GuestInputs, keyof CommonInputs | "vifs" | "guestNetwork" | "natNetwork" | "files"> | undefined {
  const name = c.string(raw, "name", {
    required: true,
    pattern: NAME,
    rule: "must be a domain name: letters, digits and `_.-`, starting with a letter or digit, at most 64 characters",
  });
  const vcpus = c.integer(raw, "vcpus", { min: 1, max: 128, default: 1 });
  const maxVcpus = c.integer(raw, "maxVcpus", { min: 1, max: 128, default: vcpus ?? 1 });
  if (vcpus !== undefined && maxVcpus !== undefined && maxVcpus < vcpus)
    c.fail("maxVcpus", maxVcpus, `must be at least vcpus (${vcpus})`);
  const memoryMiB = c.integer(raw, "memoryMiB", {
    required: true,
    min: MIN_MEMORY_MIB,
    max: 16 * 1024 * 1024,
    unit: "MiB",
    hint: "A Linux guest needs at least 64 MiB; booting Debian's stock initrd needs about 768 MiB",
  });
  const maxMemoryMiB = c.integer(raw, "maxMemoryMiB", {
    min: MIN_MEMORY_MIB,
    max: 16 * 1024 * 1024,
    default: memoryMiB ?? MIN_MEMORY_MIB,
    unit: "MiB",
  });
  if (memoryMiB !== undefined && maxMemoryMiB !== undefined && maxMemoryMiB < memoryMiB)
    c.fail("maxMemoryMiB", maxMemoryMiB, `must be at least memoryMiB (${memoryMiB})`);
  const type = c.oneOf<GuestType>(raw, "type", ["pvh", "pv"], "pvh");

  let boot: GuestInputs["boot"] | undefined;
  const b = c.object(raw, "boot", true);
  if (b) {
    const bc = c.at("boot");
    if ("bootloader" in b) {
      const kind = bc.oneOf<"pvgrub2" | "pygrub">(b, "bootloader", ["pvgrub2", "pygrub"]);
      if (kind) boot = { kind };
    } else {
      const kernel = bc.string(b, "kernel", { required: true });
      if (kernel !== undefined && !isSafeAbsolutePath(kernel))
        bc.fail("kernel", kernel, "must be an absolute path on the dom0");
      const ramdisk = bc.string(b, "ramdisk") ?? null;
      if (ramdisk !== null && !isSafeAbsolutePath(ramdisk))
        bc.fail("ramdisk", ramdisk, "must be an absolute path on the dom0");
      const cmdline = bc.string(b, "cmdline", { max: 2048 }) ?? "";
      if (/["\n\r\\]/.test(cmdline))
        bc.fail("cmdline", cmdline, "must not contain quotes, backslashes or newlines");
      if (kernel) boot = { kind: "direct", kernel, ramdisk, cmdline };
    }
  }

  const disks: GuestDisk[] = [];
  const rawDisks = c.array(raw, "disks", true);
  rawDisks?.forEach((d, i) => {
    const dc = c.at(`disks[${i}]`);
    if (!d || typeof d !== "object") return dc.fail("", d, "must be an object with `path` and `vdev`");
    const o = d as Record<string, unknown>;
    const path = dc.string(o, "path", { required: true });
    if (path !== undefined && !/^\/dev\/[A-Za-z0-9_./+-]+$/.test(path))
      dc.fail("path", path, "must be a block device under /dev");
    const vdev = dc.string(o, "vdev", {
      required: true,
      pattern: VDEV,
      rule: "must be a Xen disk name such as xvda",
    });
    const access = dc.oneOf<"rw" | "ro">(o, "access", ["rw", "ro"], "rw");
    if (path && vdev && access) disks.push({ path, vdev, access });
  });
  if (rawDisks && rawDisks.length === 0) c.fail("disks", rawDisks, "must list at least the root disk");
  const seen = new Map<string, number>();
  disks.forEach((d, i) => {
    if (seen.has(d.vdev))
      c.fail(`disks[${i}].vdev`, d.vdev, `must be unique (disks[${seen.get(d.vdev)}] uses it too)`);
    seen.set(d.vdev, i);
  });

  const autostart = c.boolean(raw, "autostart", true);
  const running = c.boolean(raw, "running", true);
  const onPoweroff = c.oneOf(raw, "onPoweroff", ACTIONS, "destroy");
  const onReboot = c.oneOf(raw, "onReboot", ACTIONS, "restart");
  const onCrash = c.oneOf(raw, "onCrash", ACTIONS, "restart");
  let waitForNetwork: GuestInputs["waitForNetwork"] = null;
  const w = c.object(raw, "waitForNetwork");
  if (w) {
    const wc = c.at("waitForNetwork");
    waitForNetwork = {
      port: wc.integer(w, "port", { min: 1, max: 65535 }) ?? null,
      timeoutSeconds:
        wc.integer(w, "timeoutSeconds", { min: 1, max: 3600, default: 300, unit: "seconds" }) ?? 300,
    };
  }
  const shutdownTimeoutSeconds =
    c.integer(raw, "shutdownTimeoutSeconds", { min: 1, max: 3600, default: 120, unit: "seconds" }) ?? 120;
  const install = checkInstall(c, raw, disks);
  if (
    !name ||
    !vcpus ||
    !maxVcpus ||
    !memoryMiB ||
    !maxMemoryMiB ||
    !type ||
    !boot ||
    !onPoweroff ||
    !onReboot ||
    !onCrash
  )
    return undefined;
  if (rawDisks === undefined || disks.length !== rawDisks.length) return undefined;
  return {
    name,
    vcpus,
    maxVcpus,
    memoryMiB,
    maxMemoryMiB,
    type,
    boot,
    disks,
    autostart,
    running,
    onPoweroff,
    onReboot,
    onCrash,
    waitForNetwork,
    shutdownTimeoutSeconds,
    install,
  };
}

const PACKAGE = /^[a-z0-9][a-z0-9+.-]+$/;
const SUITE = /^[a-z][a-z0-9-]{1,31}$/;
const URL_RULE = "must be an http:// or https:// URL without spaces or quotes";
/** An OpenSSH public key line: type, base64 blob, optional comment; no options, no newlines. */
const AUTHORIZED_KEY =
  /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [\x20-\x7e]*)?$/;

function isHttpUrl(v: string): boolean {
  if (v === UNKNOWN) return true; // checked again at `up`, when it is known
  return /^https?:\/\/[A-Za-z0-9._~:@[\]%-]+(\/[A-Za-z0-9._~%/+-]*)?$/.test(v);
}

/** Validates `install`: exactly one source, safe paths, URLs, package names and keys. Pure. */
function checkInstall(c: Checker, raw: Record<string, unknown>, disks: GuestDisk[]): GuestInstall | null {
  const inst = c.object(raw, "install");
  if (!inst) return null;
  const ic = c.at("install");
  const nameservers = (ic.array(inst, "nameservers") ?? DEFAULT_NAMESERVERS).filter((n, i) => {
    if (typeof n === "string" && isIPv4(n)) return true;
    ic.fail(`nameservers[${i}]`, n, "must be an IPv4 address");
    return false;
  }) as string[];
  const authorizedKeys = (ic.array(inst, "authorizedKeys") ?? []).filter((k, i) => {
    if (typeof k === "string" && AUTHORIZED_KEY.test(k.trim())) return true;
    ic.fail(
      `authorizedKeys[${i}]`,
      k,
      "must be one OpenSSH public key line: `ssh-ed25519 AAAA… comment` (no options, no newlines)",
    );
    return false;
  }) as string[];
  const root = disks[0];
  if (root && root.access !== "rw")
    c.fail("disks[0].access", root.access, "must be rw to install onto the root disk");
  const hasImage = inst.image !== undefined && inst.image !== null;
  const hasDebootstrap = inst.debootstrap !== undefined && inst.debootstrap !== null;
  if (hasImage === hasDebootstrap) {
    ic.fail(
      "",
      inst,
      "must name exactly one source: `image` (a tarball on the dom0) or `debootstrap` (a mirror)",
    );
    return null;
  }
  const common = { nameservers, authorizedKeys: authorizedKeys.map((k) => k.trim()) };
  if (hasImage) {
    const image = ic.string(inst, "image", { required: true });
    if (image !== undefined && !isSafeAbsolutePath(image))
      return ic.fail("image", image, "must be an absolute path on the dom0") ?? null;
    return image ? { ...common, image, debootstrap: null } : null;
  }
  const d = ic.object(inst, "debootstrap", true);
  if (!d) return null;
  const dc = ic.at("debootstrap");
  const suite = dc.string(d, "suite", {
    default: "bookworm",
    pattern: SUITE,
    rule: "must be a release codename such as bookworm, trixie or noble",
  });
  const mirror = dc.string(d, "mirror", { default: "http://deb.debian.org/debian" });
  if (mirror !== undefined && !isHttpUrl(mirror)) dc.fail("mirror", mirror, URL_RULE);
  const proxy = dc.string(d, "proxy") ?? null;
  if (proxy !== null && !isHttpUrl(proxy)) dc.fail("proxy", proxy, URL_RULE);
  const variant = dc.oneOf(d, "variant", ["minbase", "buildd", "default"], "minbase");
  const include = (dc.array(d, "include") ?? []).filter((p, i) => {
    if (typeof p === "string" && PACKAGE.test(p)) return true;
    dc.fail(`include[${i}]`, p, "must be a Debian package name (lower case letters, digits and `+.-`)");
    return false;
  }) as string[];
  if (!suite || !mirror || !variant || !isHttpUrl(mirror) || (proxy !== null && !isHttpUrl(proxy)))
    return null;
  return { ...common, image: null, debootstrap: { suite, mirror, include, variant, proxy } };
}

/** Checks a guest's IPv4 address against an optional network. */
export function checkIp(
  c: Checker,
  raw: Record<string, unknown>,
  key: string,
  net?: Ipv4Network,
): string | undefined {
  const ip = c.string(raw, key, { required: true });
  if (ip === undefined) return undefined;
  if (!isIPv4(ip)) return c.fail(key, ip, "must be an IPv4 address such as 10.0.0.5");
  if (net && !contains(net, ip))
    return c.fail(key, ip, `must lie in the NAT network ${net.address}/${net.prefix}`);
  return ip;
}

export function checkMac(
  c: Checker,
  raw: Record<string, unknown>,
  key: string,
  required: boolean,
): string | undefined {
  const mac = c.string(raw, key, { required });
  if (mac === undefined) return undefined;
  const problem = macProblem(mac);
  if (problem) return c.fail(key, mac, problem);
  return mac.toLowerCase();
}

export function checkCidr(
  c: Checker,
  raw: Record<string, unknown>,
  key: string,
  def: string,
): Ipv4Network | undefined {
  const text = c.string(raw, key, { default: def });
  if (text === undefined) return undefined;
  const net = parseCidr(text);
  if ("error" in net) return c.fail(key, text, net.error);
  return net;
}

export function configPath(name: string): string {
  return `${XEN_CONFIG_DIR}/${name}.cfg`;
}

/** The xl config for a guest. Pure. */
export function renderGuestConfig(g: Omit<GuestInputs, "files">): string {
  return render("xl-domu.cfg", {
    version: VERSION,
    name: g.name,
    type: g.type,
    vcpus: g.vcpus,
    maxvcpus: g.maxVcpus,
    memoryMiB: g.memoryMiB,
    maxMemoryMiB: g.maxMemoryMiB,
    boot:
      g.boot.kind === "direct"
        ? g.boot
        : g.boot.kind === "pvgrub2"
          ? { kind: "pvgrub2", kernel: PVGRUB2[g.type] }
          : g.boot,
    disks: g.disks,
    vifs: g.vifs,
    onPoweroff: g.onPoweroff,
    onReboot: g.onReboot,
    onCrash: g.onCrash,
    natNetwork: g.natNetwork,
  });
}

/** Which of the declared change classes a diff falls into. Pure. */
export function classifyChange(
  olds: GuestInputs,
  news: GuestInputs,
): { live: string[]; restart: string[]; config: string[] } {
  const pick = (keys: readonly string[]): string[] =>
    keys.filter(
      (k) =>
        !deepEqual(
          (olds as unknown as Record<string, unknown>)[k],
          (news as unknown as Record<string, unknown>)[k],
        ),
    );
  return {
    live: pick(GUEST_CHANGES.live),
    restart: pick(GUEST_CHANGES.restart),
    config: pick(GUEST_CHANGES.config),
  };
}

// ---- Program-side duplicate detection ----------------------------------------------------------------------

const claimed = new Map<string, string>();

/**
 * Refuses, at construction time in the program, a MAC or IP that another guest of the same program already claims
 * on the same host, so `pulumi preview` fails before anything is changed.
 */
export function claimAddresses(
  resourceName: string,
  host: string,
  addresses: { kind: "MAC" | "IP"; value: string }[],
): void {
  for (const a of addresses) {
    const key = `${host}\0${a.kind}\0${a.value.toLowerCase()}`;
    const other = claimed.get(key);
    if (other && other !== resourceName)
      throw new Error(
        `${resourceName}: ${a.kind} ${a.value} on ${host} is already used by ${other} in this program; every guest on a host needs its own`,
      );
    claimed.set(key, resourceName);
  }
}

// ---- Remote lifecycle --------------------------------------------------------------------------------------

/** A marker every config we write carries, so we recognise our own guests' configs. */
const MANAGED = "# Managed by xen-estate";

/** Refuses when another guest on the host (running or configured) uses one of our MACs or IPs. */
function duplicateCheckScript(g: GuestInputs): string {
  const own = shellQuote(configPath(g.name));
  const checks: [string, string][] = g.vifs.flatMap((v): [string, string][] => [
    ["mac", v.mac],
    ["ip", v.ip],
  ]);
  return [
    `for cfg in ${XEN_CONFIG_DIR}/*.cfg; do`,
    `  [ -f "$cfg" ] && [ "$cfg" != ${own} ] || continue`,
    ...checks.map(
      ([k, v]) =>
        `  if grep -Eiq ${shellQuote(`(^|[^a-z])${k}=${v.replace(/\./g, "\\.")}([^0-9a-f.:]|$)`)} "$cfg"; then echo "${k.toUpperCase()} ${v} is already used by the guest config $cfg" >&2; exit 3; fi`,
    ),
    `done`,
    // Running domains whose config file is gone still hold their MACs.
    `if command -v xenstore-ls >/dev/null 2>&1; then`,
    ...g.vifs.map(
      (v) =>
        `  if xenstore-ls -f /local/domain/0/backend/vif 2>/dev/null | grep -i ${shellQuote(`/mac = "${v.mac}"`)} | grep -v -q "/$(xl domid ${shellQuote(g.name)} 2>/dev/null || echo none)/"; then echo "MAC ${v.mac} is already used by a running domain" >&2; exit 3; fi`,
    ),
    `fi`,
    ...(g.natNetwork
      ? [
          // One NAT network per host: its gateway address sits on every NAT vif.
          `for cfg in ${XEN_CONFIG_DIR}/*.cfg; do`,
          `  [ -f "$cfg" ] && [ "$cfg" != ${own} ] || continue`,
          `  other=$(sed -n 's/^# xen-estate-nat-network //p' "$cfg")`,
          `  if [ -n "$other" ] && [ "$other" != ${shellQuote(g.natNetwork)} ]; then echo "this host's NAT network is $other (guest config $cfg); NatDomU supports one NAT network per host" >&2; exit 3; fi`,
          `done`,
        ]
      : []),
  ].join("\n");
}

/** Writes every file the guest owns (config, NAT script and settings); returns the paths that changed. */
async function writeFiles(ctx: Context, g: GuestInputs): Promise<string[]> {
  const changed: string[] = [];
  for (const [path, content] of Object.entries(g.files)) {
    const isScript = path === NAT_SCRIPT;
    const r = await writeRemoteFile(ctx.host, path, content, {
      mode: isScript ? "755" : "644",
      // xl parses the config on a live dom0 before it replaces the old one.
      ...(path === configPath(g.name) ? { validate: "xl create -n -q %s >/dev/null" } : {}),
    });
    if (r.changed) changed.push(path);
  }
  return changed;
}

function autostartScript(g: GuestInputs): string {
  const link = shellQuote(`${XEN_CONFIG_DIR}/auto/${g.name}.cfg`);
  return g.autostart
    ? `mkdir -p ${XEN_CONFIG_DIR}/auto && ln -sfn ${shellQuote(configPath(g.name))} ${link}`
    : `rm -f -- ${link}`;
}

/** Left at the root of a disk while an install runs: proof that the disk was empty when the install began. */
export const INSTALL_MARKER = ".xen-estate-install-incomplete";
/** Packages every debootstrapped guest gets: enough to boot unattended, configure its network and be reached. */
export const DEBOOTSTRAP_BASE = [
  "systemd-sysv",
  "udev",
  "kmod",
  "ifupdown",
  "iproute2",
  "iputils-ping",
  "openssh-server",
];

/** The kernel release of a direct-boot kernel named like Debian's `/boot/vmlinuz-<release>`, else null. */
export function directKernelRelease(g: Pick<GuestInputs, "boot">): string | null {
  if (g.boot.kind !== "direct") return null;
  const m = /^\/boot\/vmlinuz-([A-Za-z0-9._+-]+)$/.exec(g.boot.kernel);
  return m ? m[1]! : null;
}

/** GRUB menu that pvgrub2 and pygrub read from inside the guest. Pure. */
export function guestGrubConfig(g: Pick<GuestInputs, "name" | "disks">): string {
  return render("guest-grub.cfg", { version: VERSION, name: g.name, rootDevice: `/dev/${g.disks[0]!.vdev}` });
}

/** The guest's fstab: its root disk, and the disks that hold swap (by their vdev). Pure. */
export function guestFstab(g: Pick<GuestInputs, "name" | "disks">, swapVdevs: readonly string[]): string {
  return render("guest-fstab", {
    version: VERSION,
    name: g.name,
    rootDevice: `/dev/${g.disks[0]!.vdev}`,
    swapDevices: swapVdevs.map((v) => `/dev/${v}`),
  });
}

/**
 * Installs a fresh root filesystem onto the first disk, from an image or by debootstrap, then writes the
 * guest's own settings (hostname, network, resolvers, fstab, SSH keys). Never touches a disk that holds files;
 * an install interrupted earlier (marker present) is wiped and run again. `swapVdevs` are the guest's disks that
 * hold swap, listed in the fstab of a debootstrapped guest. Prints `hostkey <type> <base64>` when
 * the guest has an SSH host key.
 */
export function installScript(g: GuestInputs, swapVdevs: readonly string[] = []): string {
  const inst = g.install;
  if (!inst) return "";
  const root = g.disks[0]!;
  const dev = shellQuote(root.path);
  const interfaces = render("guest-interfaces", { version: VERSION, ...g.guestNetwork });
  const resolv = inst.nameservers.map((n) => `nameserver ${n}`).join("\n") + "\n";
  const put = (file: string, content: string, mode = "644"): string =>
    `install -D -m ${mode} /dev/null "$mnt"${shellQuote(file)} && printf '%s' ${shellQuote(content)} > "$mnt"${shellQuote(file)}`;
  const release = directKernelRelease(g);
  const body: string[] = [];
  if (inst.image !== null) {
    const image = shellQuote(inst.image);
    body.push(
      `[ -f ${image} ] || { echo "image ${inst.image} not found on $(hostname)" >&2; exit 3; }`,
      `echo "unpacking ${inst.image}" >&2`,
      `tar -x --numeric-owner -C "$mnt" -f ${image}`,
      // An image is shared by many guests: each gets its own SSH host keys and machine id.
      `if [ -d "$mnt/etc/ssh" ]; then rm -f "$mnt"/etc/ssh/ssh_host_*; ssh-keygen -q -A -f "$mnt"; fi`,
      `if [ -e "$mnt/etc/machine-id" ]; then : > "$mnt/etc/machine-id"; fi`,
      // A bootloader guest needs a GRUB menu; an image that brings its own keeps it.
      ...(g.boot.kind === "direct"
        ? []
        : [`[ -e "$mnt/boot/grub/grub.cfg" ] || { ${put("/boot/grub/grub.cfg", guestGrubConfig(g))}; }`]),
    );
  } else {
    const d = inst.debootstrap;
    const packages = [
      ...DEBOOTSTRAP_BASE,
      ...(g.boot.kind === "direct" ? [] : ["linux-image-amd64"]),
      ...d.include,
    ];
    const suite = shellQuote(d.suite);
    body.push(
      `command -v debootstrap >/dev/null || { echo "debootstrap is not installed on $(hostname): apt-get install debootstrap" >&2; exit 3; }`,
      `[ -e /usr/share/debootstrap/scripts/${d.suite} ] || { echo "the debootstrap on $(hostname) does not know the suite ${d.suite}: upgrade it or pick another suite" >&2; exit 3; }`,
      ...(d.proxy ? [`export http_proxy=${shellQuote(d.proxy)} https_proxy=${shellQuote(d.proxy)}`] : []),
      `echo "debootstrap ${d.suite} from ${d.mirror}" >&2`,
      // Every line goes to stderr: the provider turns them into progress and keeps the tail for errors.
      `debootstrap --arch=amd64 --variant=${d.variant} --include=${shellQuote(packages.join(","))} ${suite} "$mnt" ${shellQuote(d.mirror)} >&2`,
      `rm -rf "$mnt"/var/cache/apt/archives/*.deb`,
      put("/etc/fstab", guestFstab(g, swapVdevs)),
      ...(d.proxy
        ? [put("/etc/apt/apt.conf.d/01xen-estate-proxy", `Acquire::http::Proxy "${d.proxy}";\n`)]
        : []),
      ...(g.boot.kind === "direct" ? [] : [put("/boot/grub/grub.cfg", guestGrubConfig(g))]),
    );
    if (release) {
      // The guest boots the dom0's kernel: give it that kernel's Xen front-end drivers.
      const mods = shellQuote(`/lib/modules/${release}`);
      body.push(
        `if [ -d ${mods} ]; then`,
        `  find ${mods} -name 'xen-*front.ko*' | while read -r m; do install -D -m 644 "$m" "$mnt$m"; done`,
        `  for f in modules.order modules.builtin modules.builtin.modinfo; do [ ! -f ${mods}/$f ] || install -D -m 644 ${mods}/$f "$mnt"${mods}/$f; done`,
        `  depmod -b "$mnt" ${shellQuote(release)}`,
        `  printf 'xen-netfront\nxen-blkfront\n' >> "$mnt/etc/modules"`,
        `fi`,
      );
    }
  }
  return withHostLock(
    [
      `fs=$(blkid -p -o value -s TYPE ${dev} 2>/dev/null || true)`,
      `if [ "$fs" != ext4 ]; then echo "install needs an ext4 root disk; ${root.path} holds ${"${fs:-nothing}"}" >&2; exit 3; fi`,
      `mnt=$(mktemp -d /run/xen-estate-install.XXXXXX)`,
      `trap 'umount "$mnt" 2>/dev/null; rmdir "$mnt"' EXIT`,
      `mount ${dev} "$mnt"`,
      `hostkey() { if [ -f "$mnt/etc/ssh/ssh_host_ed25519_key.pub" ]; then echo "hostkey $(cut -d' ' -f1-2 "$mnt/etc/ssh/ssh_host_ed25519_key.pub")"; fi; }`,
      `if [ -e "$mnt/${INSTALL_MARKER}" ]; then`,
      `  echo "an earlier install onto ${root.path} did not finish: wiping it and starting again" >&2`,
      `  find "$mnt" -mindepth 1 -maxdepth 1 ! -name lost+found ! -name ${INSTALL_MARKER} -exec rm -rf {} +`,
      `elif [ -e "$mnt/etc/os-release" ] || [ -L "$mnt/sbin/init" ] || [ -e "$mnt/sbin/init" ]; then`,
      `  echo "already installed" >&2; hostkey; exit 0`,
      `elif [ -n "$(ls -A "$mnt" | grep -vx lost+found)" ]; then`,
      `  echo "refusing to install onto ${root.path}: it already holds files" >&2; exit 3`,
      `fi`,
      `: > "$mnt/${INSTALL_MARKER}"`,
      ...body,
      `mkdir -p "$mnt/etc/network"`,
      put("/etc/hostname", `${g.name}\n`),
      put("/etc/network/interfaces", interfaces),
      `rm -f "$mnt/etc/resolv.conf"`,
      put("/etc/resolv.conf", resolv),
      ...(inst.authorizedKeys.length > 0
        ? [
            `install -d -m 700 "$mnt/root/.ssh"`,
            put("/root/.ssh/authorized_keys", inst.authorizedKeys.join("\n") + "\n", "600"),
          ]
        : []),
      `rm -f "$mnt/${INSTALL_MARKER}"`,
      `sync`,
      `hostkey`,
      `echo installed >&2`,
    ].join("\n"),
  );
}

/** Turns debootstrap's `I: Retrieving …` lines into a progress line with counts and, once known, a percent. */
export class DebootstrapProgress {
  private retrieved = 0;
  private stage = "resolving";
  private done = 0;
  private readonly started = Date.now();

  /** Returns a progress message for this line, or null when the line says nothing new. */
  line(text: string): string | null {
    const m =
      /^I: (Retrieving|Validating|Extracting|Unpacking|Configuring|Installing|Base system installed)/.exec(
        text,
      );
    if (!m) return null;
    const verb = m[1]!;
    if (verb === "Retrieving") {
      this.retrieved++;
      return this.message("downloading", `${this.retrieved} packages`);
    }
    if (verb === "Base system installed") return this.message("finished", `${this.retrieved} packages`);
    if (verb === "Installing") {
      this.stage = "installing";
      this.done = 0;
      return this.message("installing", "");
    }
    const stage = verb.toLowerCase();
    if (stage !== this.stage) {
      this.stage = stage;
      this.done = 0;
    }
    this.done++;
    const total = Math.max(this.retrieved, this.done);
    return this.message(stage, `${this.done}/${total} (${Math.floor((100 * this.done) / total)}%)`);
  }

  private message(stage: string, detail: string): string {
    const s = Math.round((Date.now() - this.started) / 1000);
    return `debootstrap: ${stage}${detail ? ` ${detail}` : ""}, ${s} s`;
  }
}

/** State of the domain: its id, or null when it is not running. */
export async function domainState(ctx: Context, name: string): Promise<number | null> {
  const r = await ctx.host.script(`xl domid ${shellQuote(name)} 2>/dev/null || true`, {
    summary: `xl domid ${name}`,
  });
  const id = r.stdout.trim();
  return /^\d+$/.test(id) ? Number(id) : null;
}

async function startDomain(ctx: Context, g: GuestInputs): Promise<number> {
  ctx.log.info(`starting ${g.name}`);
  const create = (): Promise<RunResult> =>
    ctx.host.script(`xl create -q ${shellQuote(configPath(g.name))}`, {
      summary: `xl create ${g.name}`,
      timeoutMs: 600_000,
    });
  try {
    await create();
  } catch (err) {
    // A hotplug script that outlives libxl's deadline (a loaded dom0, several guests starting at once) makes xl
    // give up and tear the half-built domain down again; one more attempt is safe and usually enough.
    if (!(err instanceof RemoteCommandError) || !/because of timeout/.test(err.stderrTail)) throw err;
    ctx.log.warn(`xl create ${g.name}: a hotplug script timed out (dom0 busy?); trying once more`);
    await create();
  }
  const deadline = Date.now() + 120_000;
  for (;;) {
    const r = await ctx.host.script(
      `xl list ${shellQuote(g.name)} 2>/dev/null | awk 'NR==2 {print $2, $5}' || true`,
      {
        summary: `xl list ${g.name}`,
      },
    );
    const [id, state] = r.stdout.trim().split(" ");
    // r(unning), b(locked) and ------ (runnable, waiting for a CPU) all mean it is up.
    if (id && /^\d+$/.test(id) && state && !/[cds]/.test(state)) return Number(id);
    if (state && /[cd]/.test(state))
      throw new Error(
        `guest ${g.name} crashed or is dying right after start (state ${state}); see \`xl dmesg\` and /var/log/xen/`,
      );
    if (Date.now() > deadline)
      throw new Error(
        `guest ${g.name} did not reach the running state within 120 s (last state: ${state ?? "absent"})`,
      );
    await new Promise((r2) => setTimeout(r2, 1000));
  }
}

async function waitForNetwork(ctx: Context, g: GuestInputs): Promise<void> {
  if (!g.waitForNetwork) return;
  const ip = g.vifs[0]?.ip;
  if (!ip) return;
  const { port, timeoutSeconds } = g.waitForNetwork;
  ctx.log.progress(
    `waiting up to ${timeoutSeconds} s for ${g.name} (${ip}) to answer${port ? ` on port ${port}` : ""}`,
  );
  const probe = port
    ? `timeout 3 bash -c ${shellQuote(`exec 3<>/dev/tcp/${ip}/${port}`)}`
    : `ping -c1 -W2 ${shellQuote(ip)} >/dev/null`;
  await ctx.host.script(
    [
      `end=$(( $(date +%s) + ${timeoutSeconds} ))`,
      `until ${probe} 2>/dev/null; do`,
      `  if [ "$(date +%s)" -ge "$end" ]; then echo "${g.name} (${ip}) did not answer${port ? ` on port ${port}` : ""} within ${timeoutSeconds} s" >&2; exit 1; fi`,
      `  sleep 2`,
      `done`,
    ].join("\n"),
    { summary: `wait for ${g.name} on the network`, timeoutMs: (timeoutSeconds + 30) * 1000 },
  );
}

async function stopDomain(ctx: Context, name: string, timeoutSeconds: number): Promise<void> {
  const q = shellQuote(name);
  ctx.log.info(`shutting ${name} down (up to ${timeoutSeconds} s, then xl destroy)`);
  await ctx.host.script(
    [
      `xl domid ${q} >/dev/null 2>&1 || exit 0`,
      `if ! timeout ${timeoutSeconds} xl shutdown -w ${q} >&2; then`,
      `  echo "${name} did not shut down within ${timeoutSeconds} s: destroying it" >&2`,
      `  xl destroy ${q} >&2 || true`,
      `fi`,
      // xl shutdown -w returns when the domain is gone, but give the toolstack a moment to clean up.
      `for _ in $(seq 1 30); do xl domid ${q} >/dev/null 2>&1 || exit 0; sleep 1; done`,
      `xl destroy ${q} >&2 || true`,
    ].join("\n"),
    { summary: `stop ${name}`, timeoutMs: (timeoutSeconds + 60) * 1000 },
  );
}

/** NAT rules for a network, added exactly once (checked with -C under a lock) or removed when unused. */
export function natRulesScript(network: string, action: "add" | "remove"): string {
  const n = shellQuote(network);
  const rules = [
    `-t nat POSTROUTING -s ${n} ! -d ${n} -m comment --comment xen-estate-nat -j MASQUERADE`,
    `-t filter FORWARD -s ${n} -m comment --comment xen-estate-nat -j ACCEPT`,
    `-t filter FORWARD -d ${n} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment xen-estate-nat -j ACCEPT`,
  ];
  const body = rules.map((r) => {
    const [tableFlag, table, chain, ...rest] = r.split(" ");
    const spec = `${tableFlag} ${table} ${rest.join(" ")}`.replace(/^(-t \S+) /, "");
    const t = `${tableFlag} ${table}`;
    return action === "add"
      ? `iptables ${t} -C ${chain} ${spec} 2>/dev/null || iptables ${t} -A ${chain} ${spec}`
      : `while iptables ${t} -C ${chain} ${spec} 2>/dev/null; do iptables ${t} -D ${chain} ${spec}; done`;
  });
  return [
    `exec 8>>${NAT_LOCK}`,
    `flock -w 120 8`,
    ...(action === "add" ? ["sysctl -qw net.ipv4.ip_forward=1"] : []),
    ...body,
  ].join("\n");
}

/**
 * Everything of a guest kind but its `name` and `check`: BridgedDomU and NatDomU differ only in how they
 * validate and render their network.
 */
export const guestLifecycle = {
  replaceOn: GUEST_CHANGES.replace,
  deleteBeforeReplace: true,
  outputOnly: ["domid", "sshHostKey"],
  id: (i: GuestInputs): string => `${i.connection.host}:${i.name}`,
  create: (ctx: Context, i: GuestInputs, progress: (p: Partial<GuestOutputs>) => void) =>
    createGuest(ctx, i, progress),
  read: (ctx: Context, _id: string, outs: GuestOutputs) => readGuest(ctx, outs),
  update: (ctx: Context, _id: string, olds: GuestOutputs, news: GuestInputs) => updateGuest(ctx, olds, news),
  delete: (ctx: Context, _id: string, outs: GuestOutputs) => deleteGuest(ctx, outs),
} as const;

/** Runs the create steps; reports progress so a failure after the config exists is recorded, not forgotten. */
export async function createGuest(
  ctx: Context,
  g: GuestInputs,
  progress: (p: Partial<GuestOutputs>) => void,
): Promise<GuestOutputs> {
  await ctx.host.refusable(withHostLock(duplicateCheckScript(g)), {
    summary: `check ${g.name}'s addresses are free`,
  });
  const existing = await domainState(ctx, g.name);
  if (existing !== null)
    throw new RefusedError(
      `a domain named ${g.name} is already running on ${ctx.conn.host} (domid ${existing})`,
      "Pick another name, or remove that domain first",
    );
  const [cfg] = await statRemoteFiles(ctx.host, [configPath(g.name)]);
  if (cfg) {
    const content = (await ctx.host.script(`head -n1 ${shellQuote(configPath(g.name))}`)).stdout;
    if (!content.startsWith(MANAGED))
      throw new RefusedError(
        `${configPath(g.name)} already exists and was not written by xen-estate`,
        "Move it away or pick another name",
      );
  }
  await writeFiles(ctx, g);
  progress({ domid: null, running: false });
  await ctx.host.script(autostartScript(g), { summary: `autostart ${g.name}` });
  if (g.natNetwork)
    await ctx.host.script(natRulesScript(g.natNetwork, "add"), { summary: `NAT rules for ${g.natNetwork}` });
  const sshHostKey = g.install ? await installGuest(ctx, g) : null;
  let domid: number | null = null;
  if (g.running) {
    domid = await startDomain(ctx, g);
    await waitForNetwork(ctx, g);
  }
  return { ...g, domid, sshHostKey };
}

/** Runs the install with its progress in Pulumi's output; returns the guest's SSH host key fingerprint. */
async function installGuest(ctx: Context, g: GuestInputs): Promise<string | null> {
  if (!g.install) return null;
  const source = g.install.image ?? `${g.install.debootstrap.suite} from ${g.install.debootstrap.mirror}`;
  ctx.log.info(`installing ${g.name}: ${source}`);
  const tracker = new DebootstrapProgress();
  let last = 0;
  const swapVdevs: string[] = [];
  for (const d of g.install.debootstrap ? g.disks.slice(1) : []) {
    const r = await ctx.host.script(`blkid -p -o value -s TYPE ${shellQuote(d.path)} 2>/dev/null || true`, {
      summary: `blkid ${d.path}`,
    });
    if (r.stdout.trim() === "swap") swapVdevs.push(d.vdev);
  }
  const out = await ctx.host.refusable(installScript(g, swapVdevs), {
    summary: `install ${g.name} (${source})`,
    // debootstrap under load or emulation takes tens of minutes.
    timeoutMs: 3_600_000,
    onStderrLine: (line) => {
      const msg = tracker.line(line);
      if (msg && (Date.now() - last > 2000 || msg.includes("finished"))) {
        last = Date.now();
        ctx.log.progress(`${g.name}: ${msg}`);
      }
    },
  });
  const key = /^hostkey (\S+) ([A-Za-z0-9+/=]+)$/m.exec(out);
  return key ? fingerprintOf(Buffer.from(key[2]!, "base64")) : null;
}

export async function readGuest(ctx: Context, outs: GuestOutputs): Promise<GuestOutputs | null> {
  const paths = Object.keys(outs.files);
  const states = await statRemoteFiles(ctx.host, paths);
  const domid = await domainState(ctx, outs.name);
  const cfgIndex = paths.indexOf(configPath(outs.name));
  if (domid === null && cfgIndex >= 0 && !states[cfgIndex]) return null; // gone entirely
  const files = await observeOwnedFiles(ctx.host, outs.files, states);
  const autostart =
    (
      await ctx.host.script(
        `[ -e ${shellQuote(`${XEN_CONFIG_DIR}/auto/${outs.name}.cfg`)} ] && echo yes || echo no`,
      )
    ).stdout.trim() === "yes";
  return { ...outs, files, domid, running: domid !== null, autostart, sshHostKey: outs.sshHostKey ?? null };
}

export async function updateGuest(
  ctx: Context,
  olds: GuestOutputs,
  news: GuestInputs,
): Promise<GuestOutputs> {
  const change = classifyChange(olds, news);
  await ctx.host.refusable(withHostLock(duplicateCheckScript(news)), {
    summary: `check ${news.name}'s addresses are free`,
  });
  const changedFiles = await writeFiles(ctx, news);
  await ctx.host.script(autostartScript(news), { summary: `autostart ${news.name}` });
  if (news.natNetwork)
    await ctx.host.script(natRulesScript(news.natNetwork, "add"), {
      summary: `NAT rules for ${news.natNetwork}`,
    });
  let domid = await domainState(ctx, news.name);
  let sshHostKey = olds.sshHostKey ?? null;
  if (domid !== null && !news.running) {
    await stopDomain(ctx, news.name, news.shutdownTimeoutSeconds);
    return { ...news, domid: null, sshHostKey };
  }
  if (domid !== null && change.restart.length > 0) {
    ctx.log.info(`${change.restart.join(", ")} changed: restarting ${news.name}`);
    await stopDomain(ctx, news.name, news.shutdownTimeoutSeconds);
    domid = null;
  } else if (domid !== null && change.live.length > 0) {
    const q = shellQuote(news.name);
    if (change.live.includes("memoryMiB"))
      await ctx.host.script(`xl mem-set ${q} ${news.memoryMiB}m`, { summary: `xl mem-set ${news.name}` });
    if (change.live.includes("vcpus"))
      await ctx.host.script(`xl vcpu-set ${q} ${news.vcpus}`, { summary: `xl vcpu-set ${news.name}` });
  }
  if (domid === null && news.running) {
    if (news.install) sshHostKey = (await installGuest(ctx, news)) ?? sshHostKey;
    domid = await startDomain(ctx, news);
    await waitForNetwork(ctx, news);
  }
  if (changedFiles.length > 0) ctx.log.info(`rewrote ${changedFiles.join(", ")}`);
  return { ...news, domid, sshHostKey };
}

export async function deleteGuest(ctx: Context, outs: GuestOutputs): Promise<void> {
  await stopDomain(ctx, outs.name, outs.shutdownTimeoutSeconds);
  await removeRemoteFile(ctx.host, `${XEN_CONFIG_DIR}/auto/${outs.name}.cfg`);
  await removeRemoteFile(ctx.host, configPath(outs.name));
  if (outs.natNetwork) {
    // Shared NAT pieces go with the last NAT guest of that network on this host.
    const r = await ctx.host.script(
      withHostLock(
        [
          // grep finds nothing (exit 1) when this was the last user: not a failure under pipefail.
          `users=$( (grep -l -F ${shellQuote(`# xen-estate-nat-network ${outs.natNetwork}`)} ${XEN_CONFIG_DIR}/*.cfg 2>/dev/null || true) | wc -l)`,
          `if [ "$users" -eq 0 ]; then`,
          natRulesScript(outs.natNetwork, "remove"),
          `  rm -f -- ${shellQuote(NAT_CONF)} ${shellQuote(NAT_SCRIPT)}`,
          `  echo ${shellQuote(`removed the NAT rules and script of ${outs.natNetwork}: no guest uses it any more`)}`,
          `fi`,
        ].join("\n"),
      ),
      { summary: `NAT cleanup for ${outs.natNetwork}` },
    );
    if (r.stdout.trim()) ctx.log.info(r.stdout.trim());
  }
}
