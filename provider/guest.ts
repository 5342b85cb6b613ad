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
import { RefusedError } from "./errors";
import { contains, Ipv4Network, macProblem, parseCidr } from "./network";
import { removeRemoteFile, sha256, statRemoteFiles, withHostLock, writeRemoteFile } from "./remote-file";
import { shellQuote } from "./shell";
import { render } from "./templates";
import { Checker, isIPv4, isSafeAbsolutePath } from "./validate";

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

/** Root filesystem to put on a fresh root disk before the first boot. */
export interface GuestInstallArgs {
  /**
   * A root filesystem tarball on the dom0 (`.tar`, `.tar.gz`, `.tar.zst`…), unpacked onto the first disk when that
   * disk holds an empty ext4 filesystem. A disk that already holds files is never touched.
   */
  readonly image: pulumi.Input<string>;
  /** Resolvers written to the guest's /etc/resolv.conf. @default Hetzner's 185.12.64.1 and 185.12.64.2 */
  readonly nameservers?: pulumi.Input<pulumi.Input<string>[]>;
}

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
  install: { image: string; nameservers: string[] } | null;
  guestNetwork: GuestNetwork;
  /** The NAT network this guest lives in (NatDomU only). */
  natNetwork: string | null;
  /** Files this guest owns on the dom0, path → content: `pulumi preview --diff` shows them line by line. */
  files: Record<string, string>;
}

export interface GuestOutputs extends GuestInputs {
  /** Domain id while running, else null. */
  domid: number | null;
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
  let install: GuestInputs["install"] = null;
  const inst = c.object(raw, "install");
  if (inst) {
    const ic = c.at("install");
    const image = ic.string(inst, "image", { required: true });
    if (image !== undefined && !isSafeAbsolutePath(image))
      ic.fail("image", image, "must be an absolute path on the dom0");
    const ns = ic.array(inst, "nameservers") ?? DEFAULT_NAMESERVERS;
    ns.forEach((n, i) => {
      if (typeof n !== "string" || !isIPv4(n)) ic.fail(`nameservers[${i}]`, n, "must be an IPv4 address");
    });
    if (image) install = { image, nameservers: ns as string[] };
    const root = disks[0];
    if (root && root.access !== "rw")
      c.fail("disks[0].access", root.access, "must be rw to install onto the root disk");
  }
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
          ? { kind: "pvgrub2", kernel: "/usr/lib/grub-xen/grub-i386-xen_pvh.bin" }
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

/** Unpacks the image onto an empty root filesystem; never touches a disk that holds files. */
export function installScript(g: GuestInputs): string {
  if (!g.install) return "";
  const dev = shellQuote(g.disks[0]!.path);
  const net = g.guestNetwork;
  const interfaces = render("guest-interfaces", { version: VERSION, ...net });
  const resolv = g.install.nameservers.map((n) => `nameserver ${n}`).join("\n") + "\n";
  const put = (file: string, content: string): string =>
    `printf '%s' ${shellQuote(content)} > "$mnt"${shellQuote(file)}`;
  return withHostLock(
    [
      `fs=$(blkid -p -o value -s TYPE ${dev} 2>/dev/null || true)`,
      `if [ "$fs" != ext4 ]; then echo "install needs an ext4 root disk; ${g.disks[0]!.path} holds ${"${fs:-nothing}"}" >&2; exit 3; fi`,
      `mnt=$(mktemp -d /run/xen-estate-install.XXXXXX)`,
      `trap 'umount "$mnt" 2>/dev/null; rmdir "$mnt"' EXIT`,
      `mount ${dev} "$mnt"`,
      `if [ -e "$mnt/etc/os-release" ] || [ -e "$mnt/sbin/init" ]; then echo "already installed" >&2; exit 0; fi`,
      `if [ -n "$(ls -A "$mnt" | grep -vx lost+found)" ]; then echo "refusing to install onto ${g.disks[0]!.path}: it already holds files" >&2; exit 3; fi`,
      `[ -f ${shellQuote(g.install.image)} ] || { echo "image ${g.install.image} not found on $(hostname)" >&2; exit 3; }`,
      `tar -x --numeric-owner -C "$mnt" -f ${shellQuote(g.install.image)}`,
      `mkdir -p "$mnt/etc/network"`,
      put("/etc/hostname", `${g.name}\n`),
      put("/etc/network/interfaces", interfaces),
      `rm -f "$mnt/etc/resolv.conf"`,
      put("/etc/resolv.conf", resolv),
      `sync`,
      `echo installed`,
    ].join("\n"),
  );
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
  await ctx.host.script(`xl create -q ${shellQuote(configPath(g.name))}`, {
    summary: `xl create ${g.name}`,
    timeoutMs: 600_000,
  });
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
  outputOnly: ["domid"],
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
  if (g.install)
    await ctx.host.refusable(installScript(g), {
      summary: `install ${g.name} from ${g.install.image}`,
      timeoutMs: 1_800_000,
    });
  let domid: number | null = null;
  if (g.running) {
    domid = await startDomain(ctx, g);
    await waitForNetwork(ctx, g);
  }
  return { ...g, domid };
}

export async function readGuest(ctx: Context, outs: GuestOutputs): Promise<GuestOutputs | null> {
  const paths = Object.keys(outs.files);
  const states = await statRemoteFiles(ctx.host, paths);
  const domid = await domainState(ctx, outs.name);
  const cfgIndex = paths.indexOf(configPath(outs.name));
  if (domid === null && cfgIndex >= 0 && !states[cfgIndex]) return null; // gone entirely
  const files: Record<string, string> = {};
  for (const [i, p] of paths.entries()) {
    const st = states[i];
    const want = outs.files[p]!;
    if (st && st.sha256 === sha256(want)) files[p] = want;
    else if (!st) files[p] = "";
    else files[p] = (await ctx.host.script(`cat -- ${shellQuote(p)}`, { summary: `read ${p}` })).stdout;
  }
  const autostart =
    (
      await ctx.host.script(
        `[ -e ${shellQuote(`${XEN_CONFIG_DIR}/auto/${outs.name}.cfg`)} ] && echo yes || echo no`,
      )
    ).stdout.trim() === "yes";
  return { ...outs, files, domid, running: domid !== null, autostart };
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
  if (domid !== null && !news.running) {
    await stopDomain(ctx, news.name, news.shutdownTimeoutSeconds);
    return { ...news, domid: null };
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
    if (news.install)
      await ctx.host.refusable(installScript(news), {
        summary: `install ${news.name}`,
        timeoutMs: 1_800_000,
      });
    domid = await startDomain(ctx, news);
    await waitForNetwork(ctx, news);
  }
  if (changedFiles.length > 0) ctx.log.info(`rewrote ${changedFiles.join(", ")}`);
  return { ...news, domid };
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
