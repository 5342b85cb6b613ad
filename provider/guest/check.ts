/**
 * Pure validation of a guest's inputs (shared by BridgedDomU and NatDomU): every failure names its property,
 * shows the value and states the rule; values not known yet (preview) stay unknown instead of failing.
 */
import { contains, Ipv4Network, macProblem, parseCidr } from "../core/network";
import { Checker, checkPath, isDevicePath, isIPv4, PATH_RULE, UNKNOWN } from "../core/validate";
import type { CommonInputs } from "../framework/kind";
import {
  LIFECYCLE_ACTIONS,
  type GuestDisk,
  type GuestInputs,
  type GuestInstall,
  type GuestType,
  type LifecycleAction,
} from "./args";
import { DEFAULT_NAMESERVERS } from "./paths";

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const VDEV = /^xvd[a-z]{1,2}$/;
const MIN_MEMORY_MIB = 64;
/** A kernel command line: printable ASCII without quotes or backslashes (it lands in a quoted xl.cfg string). */
const CMDLINE = /^[\x20-\x21\x23-\x5b\x5d-\x7e]*$/;

/** The part of a guest that does not depend on its network. */
export type GuestBase = Omit<
  GuestInputs,
  | keyof CommonInputs
  | "vifs"
  | "guestNetwork"
  | "natNetwork"
  | "natActive"
  | "files"
  | "owner"
  | "guestSettings"
>;

/** Validates the network-independent part of a guest. Pure; never throws. */
export function checkGuestBase(raw: Record<string, unknown>, c: Checker): GuestBase | undefined {
  const name = c.string(raw, "name", {
    required: true,
    max: 64,
    pattern: NAME,
    rule: "must be a domain name: letters, digits and `_.-`, starting with a letter or digit, at most 64 characters",
  });
  const vcpus = c.integer(raw, "vcpus", { min: 1, max: 128, default: 1 });
  const maxVcpus = c.integer(raw, "maxVcpus", { min: 1, max: 128, default: vcpus ?? 1 });
  if (typeof vcpus === "number" && typeof maxVcpus === "number" && maxVcpus < vcpus)
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
  if (typeof memoryMiB === "number" && typeof maxMemoryMiB === "number" && maxMemoryMiB < memoryMiB)
    c.fail("maxMemoryMiB", maxMemoryMiB, `must be at least memoryMiB (${memoryMiB})`);
  const type = c.oneOf<GuestType>(raw, "type", ["pvh", "pv"], "pvh");
  const boot = checkBoot(raw, c);
  const disks = checkDisks(raw, c);
  const autostart = c.boolean(raw, "autostart", true);
  const running = c.boolean(raw, "running", true);
  const onPoweroff = c.oneOf<LifecycleAction>(raw, "onPoweroff", LIFECYCLE_ACTIONS, "destroy");
  const onReboot = c.oneOf<LifecycleAction>(raw, "onReboot", LIFECYCLE_ACTIONS, "restart");
  const onCrash = c.oneOf<LifecycleAction>(raw, "onCrash", LIFECYCLE_ACTIONS, "restart");
  let waitForNetwork: GuestInputs["waitForNetwork"] = null;
  const w = c.object(raw, "waitForNetwork");
  if (w === UNKNOWN) waitForNetwork = UNKNOWN as unknown as GuestInputs["waitForNetwork"];
  else if (w) {
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
    !disks ||
    !onPoweroff ||
    !onReboot ||
    !onCrash ||
    install === undefined
  )
    return undefined;
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

function checkBoot(raw: Record<string, unknown>, c: Checker): GuestInputs["boot"] | undefined {
  const b = c.object(raw, "boot", true);
  if (b === UNKNOWN) return UNKNOWN as unknown as GuestInputs["boot"];
  if (!b) return undefined;
  const bc = c.at("boot");
  if ("bootloader" in b) {
    const kind = bc.oneOf<"pvgrub2" | "pygrub">(b, "bootloader", ["pvgrub2", "pygrub"]);
    for (const k of Object.keys(b))
      if (k !== "bootloader")
        bc.fail(k, b[k], "must not be given with `bootloader` (the guest's own GRUB boots it)");
    return kind ? { kind } : undefined;
  }
  const kernel = checkPath(bc, b, "kernel", { required: true });
  const ramdisk = checkPath(bc, b, "ramdisk") ?? null;
  const cmdline = bc.string(b, "cmdline", { max: 2048 }) ?? "";
  if (cmdline !== UNKNOWN && !CMDLINE.test(cmdline))
    bc.fail("cmdline", cmdline, "must be printable ASCII without quotes, backslashes or newlines");
  for (const k of Object.keys(b))
    if (!["kernel", "ramdisk", "cmdline"].includes(k))
      bc.fail(k, b[k], "is not a boot setting: give `kernel` (with `ramdisk`, `cmdline`) or `bootloader`");
  return kernel ? { kind: "direct", kernel, ramdisk, cmdline } : undefined;
}

function checkDisks(raw: Record<string, unknown>, c: Checker): GuestDisk[] | undefined {
  const rawDisks = c.array(raw, "disks", true);
  if (rawDisks === UNKNOWN) return UNKNOWN as unknown as GuestDisk[];
  if (!rawDisks) return undefined;
  if (rawDisks.length === 0) {
    c.fail("disks", rawDisks, "must list at least the root disk");
    return undefined;
  }
  if (rawDisks.length > 26) c.fail("disks", `${rawDisks.length} disks`, "must list at most 26 disks");
  const disks: GuestDisk[] = [];
  rawDisks.forEach((d, i) => {
    const dc = c.at(`disks[${i}]`);
    if (d === UNKNOWN) {
      disks.push(UNKNOWN as unknown as GuestDisk);
      return;
    }
    if (!d || typeof d !== "object" || Array.isArray(d)) {
      dc.fail("", d, "must be an object with `path` and `vdev`");
      return;
    }
    const o = d as Record<string, unknown>;
    const path = dc.string(o, "path", { required: true, max: 4096 });
    if (path !== undefined && path !== UNKNOWN && !isDevicePath(path))
      dc.fail("path", path, `must be a block device under /dev/ and ${PATH_RULE.replace(/^must be /, "")}`);
    const vdev = dc.string(o, "vdev", {
      required: true,
      pattern: VDEV,
      rule: "must be a Xen disk name such as xvda",
    });
    const access = dc.oneOf<"rw" | "ro">(o, "access", ["rw", "ro"], "rw");
    if (path && isDevicePath(path) && vdev && access) disks.push({ path, vdev, access });
    else if (path === UNKNOWN && vdev && access) disks.push({ path, vdev, access });
  });
  const seenVdev = new Map<string, number>();
  const seenPath = new Map<string, number>();
  disks.forEach((d, i) => {
    if (d === (UNKNOWN as unknown)) return;
    if (seenVdev.has(d.vdev))
      c.fail(`disks[${i}].vdev`, d.vdev, `must be unique (disks[${seenVdev.get(d.vdev)}] uses it too)`);
    seenVdev.set(d.vdev, i);
    if (d.path !== UNKNOWN && seenPath.has(d.path))
      c.fail(
        `disks[${i}].path`,
        d.path,
        `must be listed once (disks[${seenPath.get(d.path)}] is the same device)`,
      );
    seenPath.set(d.path, i);
  });
  return disks.length === rawDisks.length ? disks : undefined;
}

const PACKAGE = /^[a-z0-9][a-z0-9+.-]{0,99}$/;
const SUITE = /^[a-z][a-z0-9-]{1,31}$/;
const URL_RULE =
  "must be an http:// or https:// URL of a host and a path (letters, digits and `._~%/+-`), without spaces or quotes";
/** An OpenSSH public key line: type, base64 blob, optional comment; no options, no newlines. */
const AUTHORIZED_KEY =
  /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]{16,16384}={0,3}( [\x20-\x7e]{0,256})?$/;
const URL =
  /^(https?):\/\/(?:([A-Za-z0-9._~%!$&'()*+,;=-]{1,128})(?::([A-Za-z0-9._~%!$&'()*+,;=-]{1,256}))?@)?([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::(\d{1,5}))?(\/[A-Za-z0-9._~%/+-]{0,1024})?$/;

/** An http(s) URL split into its public part and its credentials (which never reach argv or a log). */
export interface CheckedUrl {
  /** The URL without credentials. */
  url: string;
  user: string | null;
  password: string | null;
}

/** Parses an http(s) URL, moving `user:password@` out of it; undefined (after a failure) when it is not one. */
export function checkUrl(
  c: Checker,
  obj: Record<string, unknown>,
  key: string,
  def?: string,
): CheckedUrl | undefined {
  // A value with an `@` may hold a password: one that is not even a short string is never shown.
  const raw = obj[key];
  const secret = typeof raw === "string" && raw.includes("@");
  const v = c.string(obj, key, { ...(def !== undefined ? { default: def } : {}), max: 2048, secret });
  if (v === undefined) return undefined;
  if (v === UNKNOWN) return { url: UNKNOWN, user: null, password: null };
  const m = URL.exec(v);
  // The value may hold a password, wherever a malformed URL put it: everything before the last `@` is hidden.
  const at = v.lastIndexOf("@");
  const shown =
    at < 0 ? v : `${/^https?:\/\//.test(v) ? v.slice(0, v.indexOf("//") + 2) : ""}[secret]${v.slice(at)}`;
  if (!m || (m[5] !== undefined && (Number(m[5]) < 1 || Number(m[5]) > 65535))) {
    c.fail(key, shown, URL_RULE);
    return undefined;
  }
  // The credentials go, decoded, into wget's and apt's line-based files (one setting per line, words separated by
  // blanks): each must be a valid percent-encoding of printable characters without blanks.
  const user = m[2] ? decodeCredential(m[2]) : null;
  const password = m[3] ? decodeCredential(m[3]) : null;
  if (user === undefined || password === undefined) {
    c.fail(key, shown, CREDENTIAL_RULE);
    return undefined;
  }
  const url = `${m[1]}://${m[4]}${m[5] ? `:${m[5]}` : ""}${m[6] ?? ""}`;
  return { url, user, password };
}

const CREDENTIAL_RULE =
  "must have a user and password that decode to printable characters without blanks or quotes (valid `%XX` escapes)";

/** A URL's user or password, decoded; undefined when the escapes are invalid or it decodes to what no file can hold. */
function decodeCredential(text: string): string | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(text);
  } catch {
    return undefined;
  }
  return /^[\x21-\x7e]+$/.test(decoded) && !/["'\\]/.test(decoded) ? decoded : undefined;
}

/** Validates `install`: exactly one source, safe paths, URLs, package names and keys. Pure. */
export function checkInstall(
  c: Checker,
  raw: Record<string, unknown>,
  disks: GuestDisk[] | undefined,
): GuestInstall | null | undefined {
  const inst = c.object(raw, "install");
  if (inst === UNKNOWN) return UNKNOWN as unknown as GuestInstall;
  if (!inst) return null;
  const ic = c.at("install");
  const stringList = (
    key: string,
    def: readonly string[],
    ok: (v: string) => boolean,
    rule: string,
  ): string[] | undefined => {
    const list = ic.array(inst, key);
    if (list === UNKNOWN) return UNKNOWN as unknown as string[];
    const out: string[] = [];
    let bad = false;
    for (const [i, v] of (list ?? def).entries()) {
      if (v === UNKNOWN) out.push(v);
      else if (typeof v === "string" && ok(v.trim())) out.push(v.trim());
      else {
        ic.fail(`${key}[${i}]`, v, rule);
        bad = true;
      }
    }
    return bad ? undefined : out;
  };
  const nameservers = stringList("nameservers", DEFAULT_NAMESERVERS, isIPv4, "must be an IPv4 address");
  const authorizedKeys = stringList(
    "authorizedKeys",
    [],
    (k) => AUTHORIZED_KEY.test(k),
    "must be one OpenSSH public key line: `ssh-ed25519 AAAA… comment` (no options, no newlines)",
  );
  const root = disks?.[0];
  if (root && root !== (UNKNOWN as unknown) && root.access !== "rw")
    c.fail("disks[0].access", root.access, "must be rw to install onto the root disk");
  const hasImage = inst.image !== undefined && inst.image !== null;
  const hasDebootstrap = inst.debootstrap !== undefined && inst.debootstrap !== null;
  for (const k of Object.keys(inst))
    if (!["image", "debootstrap", "nameservers", "authorizedKeys"].includes(k))
      ic.fail(
        k,
        inst[k],
        "is not an install setting (`image`, `debootstrap`, `nameservers`, `authorizedKeys`)",
      );
  if (hasImage === hasDebootstrap) {
    ic.fail(
      "",
      Object.keys(inst),
      "must name exactly one source: `image` (a tarball on the dom0) or `debootstrap` (a mirror)",
    );
    return undefined;
  }
  if (!nameservers || !authorizedKeys) return undefined;
  const common = { nameservers, authorizedKeys };
  if (hasImage) {
    const image = checkPath(ic, inst, "image", { required: true });
    return image ? { ...common, image, debootstrap: null } : undefined;
  }
  const d = ic.object(inst, "debootstrap", true);
  if (d === UNKNOWN)
    return {
      ...common,
      image: null,
      debootstrap: UNKNOWN as unknown as NonNullable<GuestInstall["debootstrap"]>,
    };
  if (!d) return undefined;
  const dc = ic.at("debootstrap");
  const suite = dc.string(d, "suite", {
    default: "bookworm",
    pattern: SUITE,
    rule: "must be a release codename such as bookworm, trixie or noble",
  });
  const mirror = checkUrl(dc, d, "mirror", "http://deb.debian.org/debian");
  // An empty proxy is no proxy, as an empty string is an absent value everywhere else.
  const proxy =
    d.proxy === undefined || d.proxy === null || d.proxy === ""
      ? null
      : (checkUrl(dc, d, "proxy") ?? undefined);
  const variant = dc.oneOf(d, "variant", ["minbase", "buildd", "default"], "minbase");
  const includeRaw = dc.array(d, "include") ?? [];
  const include: string[] = [];
  if (includeRaw === UNKNOWN) include.push(UNKNOWN);
  else
    includeRaw.forEach((p, i) => {
      if (p === UNKNOWN || (typeof p === "string" && PACKAGE.test(p))) include.push(p);
      else
        dc.fail(`include[${i}]`, p, "must be a Debian package name (lower case letters, digits and `+.-`)");
    });
  if (
    !suite ||
    !mirror ||
    proxy === undefined ||
    !variant ||
    include.length !== (includeRaw === UNKNOWN ? 1 : includeRaw.length)
  )
    return undefined;
  return {
    ...common,
    image: null,
    debootstrap: {
      suite,
      mirror: mirror.url,
      mirrorUser: mirror.user,
      mirrorPassword: mirror.password,
      include: includeRaw === UNKNOWN ? (UNKNOWN as unknown as string[]) : include,
      variant,
      proxy: proxy ? proxy.url : null,
      proxyUser: proxy ? proxy.user : null,
      proxyPassword: proxy ? proxy.password : null,
    },
  };
}

/** Checks a guest's IPv4 address against an optional network. */
export function checkIp(
  c: Checker,
  raw: Record<string, unknown>,
  key: string,
  net?: Ipv4Network,
): string | undefined {
  const ip = c.string(raw, key, { required: true, max: 15 });
  if (ip === undefined || ip === UNKNOWN) return ip;
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
  const mac = c.string(raw, key, { required, max: 17 });
  if (mac === undefined || mac === UNKNOWN) return mac;
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
  const text = c.string(raw, key, { default: def, max: 18 });
  if (text === undefined) return undefined;
  if (text === UNKNOWN) return UNKNOWN as unknown as Ipv4Network;
  const net = parseCidr(text);
  if ("error" in net) return c.fail(key, text, net.error);
  return net;
}
