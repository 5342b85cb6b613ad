/**
 * LinodeMigration's pure planning: the validated inputs, the decisions taken from what the hosts report (which
 * method, whether the target may be written), the replacements a finished migration asks consent for, and the
 * progress line. Nothing here touches the network.
 */
import { formatSize, parseSize } from "../../core/units";
import { Checker, checkPath, isDevicePath, isHostName, isIPv4, UNKNOWN } from "../../core/validate";
import type { CommonInputs } from "../../framework/kind";
import { fileNamePart, NAME_MAX } from "../../remote/lock";
import type { Connection, Credentials } from "../../ssh/connection";

export type Method = "auto" | "ext" | "raw";
export type Route = "direct" | "relay";
export type Phase = "copying" | "seeded" | "migrated";

/** Every default of a migration, declared once. */
export const MIGRATION_DEFAULTS = {
  device: "/dev/sda",
  method: "auto" as Method,
  compressionLevel: 1,
  chunkBytes: 4 * 2 ** 20,
  deadlineSeconds: 86_400,
  route: "direct" as Route,
  fstab: "device" as const,
  interfaceNaming: "kernel" as const,
};

/** The source VPS, in rescue mode (or running, for a seed copy). */
export interface SourceInputs {
  connection: Connection;
  credentials?: Credentials;
  device: string;
  /** How the dom0 dials the source, when not as the provider does. */
  dom0Host: string | null;
  dom0Port: number | null;
  /** The source is running from this device: a seed copy, to be followed by a final one in rescue mode. */
  live: boolean;
  /** The authorized_keys file the source's sshd reads for the user; null: `~user/.ssh/authorized_keys`. */
  authorizedKeysFile: string | null;
}

export interface TransferInputs {
  method: Method;
  compressionLevel: number;
  chunkBytes: number;
  deadlineSeconds: number;
  route: Route;
}

export interface NetworkFixup {
  address: string;
  prefix: number;
  gateway: string;
  /** null: the dom0's own resolvers, read when the fixups run. */
  nameservers: string[] | null;
  interfaceNaming: "kernel" | "link";
}

export interface FixupInputs {
  hostname: string | null;
  network: NetworkFixup | null;
  fstab: "device" | "uuid";
  swapDevice: string | null;
}

export interface LinodeMigrationInputs extends CommonInputs {
  source: SourceInputs;
  target: { device: string };
  transfer: TransferInputs;
  verify: boolean;
  grow: boolean;
  convertToExt4: boolean;
  fixups: FixupInputs | null;
  allowReplace: boolean;
}

/** What the last copy did, in bytes of the disk (`data`: sent with its bytes, `zero`, `skipped`) and on the wire. */
export interface TransferStats {
  dataBytes: number;
  zeroBytes: number;
  skippedBytes: number;
  wireBytes: number;
  seconds: number;
}

export interface LinodeMigrationOutputs extends LinodeMigrationInputs {
  phase: Phase;
  /** The method used: `ext` (used blocks only) or `raw`. */
  method: "ext" | "raw";
  sourceFilesystem: string | null;
  /** Bytes copied: the filesystem's size (ext) or the device's (raw). */
  sourceBytes: number;
  sourceUsedBytes: number | null;
  sourceUuid: string | null;
  sourceHostId: string;
  chunks: number;
  /** SHA-256 over every chunk's SHA-256, as the source computed them. */
  sourceHash: string;
  targetDevice: string;
  targetBytes: number;
  /** Filesystem UUID on the target after the migration (after a conversion or growth). */
  filesystemUuid: string | null;
  lastTransfer: TransferStats | null;
  /** Files the guest fixups changed or created inside the copied filesystem (each kept for revert). */
  fixedFiles: string[];
}

const HOSTNAME =
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;
const DEVICE_RULE =
  "must be a block device path under /dev (letters, digits and `_.+@%=,:~-`), e.g. /dev/sda";

/** Validates LinodeMigration's own inputs (its connections are the framework's). Pure; never throws. */
export function checkMigration(
  raw: Record<string, unknown>,
  c: Checker,
): Omit<LinodeMigrationInputs, keyof CommonInputs> | undefined {
  const src = c.object(raw, "source", true);
  let source: Omit<SourceInputs, "connection" | "credentials"> | undefined;
  if (src === UNKNOWN) source = UNKNOWN as unknown as typeof source;
  else if (src) {
    const sc = c.at("source");
    const device = sc.string(src, "device", { default: MIGRATION_DEFAULTS.device, max: 4096 });
    if (device && device !== UNKNOWN && !isDevicePath(device)) sc.fail("device", device, DEVICE_RULE);
    if (src.connection === undefined || src.connection === null)
      sc.fail(
        "connection",
        src.connection,
        "is required: how the provider reaches the source in rescue mode",
      );
    const dom0Host = sc.string(src, "dom0Host", { max: 253 }) ?? null;
    if (dom0Host && dom0Host !== UNKNOWN && !isHostName(dom0Host))
      sc.fail("dom0Host", dom0Host, "must be a host name or an IP address");
    const dom0Port = sc.integer(src, "dom0Port", { min: 1, max: 65535 }) ?? null;
    const live = sc.boolean(src, "live", false);
    const authorizedKeysFile = checkPath(sc, src, "authorizedKeysFile") ?? null;
    if (device) source = { device, dom0Host, dom0Port, live, authorizedKeysFile };
  }
  const tgt = c.object(raw, "target", true);
  let target: { device: string } | undefined;
  if (tgt === UNKNOWN) target = UNKNOWN as unknown as typeof target;
  else if (tgt) {
    const tc = c.at("target");
    const device = tc.string(tgt, "device", {
      required: true,
      max: 4096,
      hint: "Give the LvmVolume's `path` (a `volumeGroup` and `size` make one through the MigratedGuest component)",
    });
    if (device && device !== UNKNOWN && !isDevicePath(device)) tc.fail("device", device, DEVICE_RULE);
    if (device) target = { device };
  }
  const transfer = checkTransfer(raw, c);
  const verify = c.boolean(raw, "verify", true);
  const grow = c.boolean(raw, "grow", true);
  const convertToExt4 = c.boolean(raw, "convertToExt4", false);
  const fixups = checkFixups(raw, c);
  const allowReplace = c.boolean(raw, "allowReplace", false);
  // A source reached through a jump host cannot be dialled by the dom0 the same way: say how, or relay.
  const conn = src && src !== UNKNOWN ? (src.connection as Record<string, unknown> | undefined) : undefined;
  if (
    conn &&
    typeof conn === "object" &&
    conn.proxy &&
    source &&
    (source as unknown) !== UNKNOWN &&
    !source.dom0Host &&
    transfer &&
    (transfer as unknown) !== UNKNOWN &&
    transfer.route === "direct"
  )
    c.fail(
      "source.dom0Host",
      undefined,
      "is required when the provider reaches the source through a jump host (`source.connection.proxy`)",
      'Give the address the dom0 dials, or set `transfer.route: "relay"` to send the data through the provider',
    );
  if (!source || !target || !transfer || fixups === undefined || !c.ok) return undefined;
  return {
    source: source as SourceInputs,
    target,
    transfer,
    verify,
    grow,
    convertToExt4,
    fixups,
    allowReplace,
  };
}

function checkTransfer(raw: Record<string, unknown>, c: Checker): TransferInputs | undefined {
  const D = MIGRATION_DEFAULTS;
  const t = c.object(raw, "transfer");
  if (t === UNKNOWN) return UNKNOWN as unknown as TransferInputs;
  const o = t ?? {};
  const tc = c.at("transfer");
  const method = tc.oneOf<Method>(o, "method", ["auto", "ext", "raw"], D.method);
  const compressionLevel = tc.integer(o, "compressionLevel", {
    min: 1,
    max: 19,
    default: D.compressionLevel,
    hint: "zstd levels: 1 is fastest and keeps up with a gigabit link on one core; higher levels only pay on slow links",
  });
  let chunkBytes: number | undefined = D.chunkBytes;
  const size = o.chunkSize;
  if (size === UNKNOWN) chunkBytes = UNKNOWN as unknown as number;
  else if (size !== undefined && size !== null && size !== "") {
    const parsed = parseSize(size);
    const rule = "must be a power of two from 1MiB to 256MiB (the unit of resume and of a delta)";
    if (typeof parsed !== "number") chunkBytes = tc.fail("chunkSize", size, parsed.error);
    else if (parsed < 2 ** 20 || parsed > 2 ** 28 || (parsed & (parsed - 1)) !== 0)
      chunkBytes = tc.fail("chunkSize", size, rule);
    else chunkBytes = parsed;
  }
  const deadlineSeconds = tc.integer(o, "deadlineSeconds", {
    min: 60,
    max: 30 * 86_400,
    default: D.deadlineSeconds,
    unit: "seconds",
  });
  const route = tc.oneOf<Route>(o, "route", ["direct", "relay"], D.route);
  if (!method || !compressionLevel || !chunkBytes || !deadlineSeconds || !route) return undefined;
  return { method, compressionLevel, chunkBytes, deadlineSeconds, route };
}

/** null: no fixups (`fixups: false`); undefined: invalid. */
function checkFixups(raw: Record<string, unknown>, c: Checker): FixupInputs | null | undefined {
  if (raw.fixups === false) return null;
  const f = c.object(raw, "fixups");
  if (f === UNKNOWN) return UNKNOWN as unknown as FixupInputs;
  const o = f ?? {};
  const fc = c.at("fixups");
  const hostname = fc.string(o, "hostname", {
    max: 253,
    pattern: HOSTNAME,
    rule: "must be a host name (labels of letters, digits and `-`)",
  });
  const fstab = fc.oneOf<"device" | "uuid">(o, "fstab", ["device", "uuid"], MIGRATION_DEFAULTS.fstab);
  const swapDevice = fc.string(o, "swapDevice", { max: 64 }) ?? null;
  if (swapDevice && swapDevice !== UNKNOWN && !/^\/dev\/xvd[a-z]{1,2}[0-9]*$/.test(swapDevice))
    fc.fail("swapDevice", swapDevice, "must be the guest's swap disk as it sees it, e.g. /dev/xvdb");
  let network: NetworkFixup | null = null;
  const n = fc.object(o, "network");
  if (n === UNKNOWN) network = UNKNOWN as unknown as NetworkFixup;
  else if (n) {
    const nc = fc.at("network");
    const address = nc.string(n, "address", { required: true, max: 18 });
    let ip: string | undefined;
    let prefix: number | undefined;
    if (address === UNKNOWN) {
      ip = UNKNOWN;
      prefix = UNKNOWN as unknown as number;
    } else if (address) {
      const m = /^(\d+\.\d+\.\d+\.\d+)(?:\/(\d{1,2}))?$/.exec(address);
      if (!m || !isIPv4(m[1]!) || Number(m[2] ?? 32) < 1 || Number(m[2] ?? 32) > 32)
        nc.fail("address", address, "must be the guest's IPv4 address with its prefix, e.g. 203.0.113.10/32");
      else {
        ip = m[1]!;
        prefix = Number(m[2] ?? 32);
      }
    }
    const gateway = nc.string(n, "gateway", { required: true, max: 15 });
    if (gateway && gateway !== UNKNOWN && !isIPv4(gateway))
      nc.fail("gateway", gateway, "must be an IPv4 address");
    let nameservers: string[] | null = null;
    const ns = nc.array(n, "nameservers");
    if (ns === UNKNOWN) nameservers = UNKNOWN as unknown as string[];
    else if (ns) {
      if (ns.length === 0 || ns.length > 3)
        nc.fail("nameservers", ns, "must list one to three resolvers (what resolv.conf holds)");
      ns.forEach((s, i) => {
        if (s !== UNKNOWN && (typeof s !== "string" || !isIPv4(s)))
          nc.fail(`nameservers[${i}]`, s, "must be an IPv4 address");
      });
      nameservers = ns as string[];
    }
    const interfaceNaming = nc.oneOf<"kernel" | "link">(
      n,
      "interfaceNaming",
      ["kernel", "link"],
      MIGRATION_DEFAULTS.interfaceNaming,
    );
    if (ip && prefix && gateway && interfaceNaming)
      network = { address: ip, prefix, gateway, nameservers, interfaceNaming };
  }
  if (!fstab) return undefined;
  return { hostname: hostname ?? null, network, fstab, swapDevice };
}

/**
 * Replacements a change asks for, beyond the declared list: once the migration finished, a change of what is
 * copied (the source's device or host) would copy over the migrated disk, which now holds the guest's own data.
 * Before that, the same change is an update: the next copy sends what differs.
 */
export function migrationReplaces(olds: LinodeMigrationOutputs, news: LinodeMigrationInputs): string[] {
  if (olds.phase !== "migrated") return [];
  const out: string[] = [];
  const o = olds.source;
  const n = news.source;
  if (!o || !n) return out;
  if (o.device !== n.device) out.push("source.device");
  if (o.connection?.host !== n.connection?.host) out.push("source.connection.host");
  if ((o.connection?.port ?? 22) !== (n.connection?.port ?? 22)) out.push("source.connection.port");
  return out;
}

/** The method for a filesystem: used blocks only for ext2/3/4, a raw copy (zero chunks skipped) for anything else. */
export function resolveMethod(method: Method, fsType: string | null): "ext" | "raw" | { error: string } {
  const ext = fsType === "ext2" || fsType === "ext3" || fsType === "ext4";
  if (method === "raw") return "raw";
  if (method === "ext")
    return ext
      ? "ext"
      : { error: `needs an ext2/3/4 filesystem; the source holds ${fsType ?? "no filesystem"}` };
  return ext ? "ext" : "raw";
}

/**
 * A name for the migration's files on the dom0, from its target device: a directory entry of its own
 * (`migrations/<key>`, `migration-<key>`), so at most {@link NAME_MAX} less that prefix long.
 */
export function stateKey(targetDevice: string): string {
  return fileNamePart(targetDevice.replace(/^\/dev\//, ""), NAME_MAX - "migration-".length);
}

/** What the dom0 records about whose chunks its target holds: a resume continues only the same copy. */
export function copyIdentity(o: {
  sourceHost: string;
  sourceDevice: string;
  sourceUuid: string | null;
  sourceBytes: number;
  chunkBytes: number;
  targetDevice: string;
}): string {
  return [
    "xen-estate-migration-1",
    `source=${o.sourceHost}:${o.sourceDevice}`,
    `uuid=${o.sourceUuid ?? "-"}`,
    `bytes=${o.sourceBytes}`,
    `chunk=${o.chunkBytes}`,
    `target=${o.targetDevice}`,
  ].join(" ");
}

/** One progress report of the chunk engine (`XE-PROGRESS phase position total data zero skip`). */
export interface ProgressReport {
  phase: string;
  position: number;
  total: number;
  data: number;
  zero: number;
  skip: number;
}

export function parseProgress(line: string): ProgressReport | null {
  const m = /^XE-PROGRESS (\w+) (\d+) (\d+) (\d+) (\d+) (\d+)$/.exec(line.trim());
  if (!m) return null;
  return {
    phase: m[1]!,
    position: Number(m[2]),
    total: Number(m[3]),
    data: Number(m[4]),
    zero: Number(m[5]),
    skip: Number(m[6]),
  };
}

const PHASE_WORDS: Record<string, string> = {
  copy: "copying",
  hash: "checking what the target already holds",
  verify: "verifying the target against the source",
  zero: "zeroing the target beyond the source",
};

/**
 * Turns the engine's reports into the line Pulumi shows: bytes, percent, rate, ETA. The rate is over the last
 * reports (a sliding window), so it follows the link rather than the average since the start.
 */
export class ProgressMeter {
  private readonly samples: { t: number; position: number }[] = [];
  private last: ProgressReport | null = null;
  private wire = 0;

  constructor(
    private readonly label: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** Feeds one stderr line; returns true when it was a report. */
  line(text: string): boolean {
    const w = /^XE-WIRE (\d+)$/.exec(text.trim());
    if (w) {
      this.wire = Number(w[1]);
      return true;
    }
    const p = parseProgress(text);
    if (!p) return false;
    if (this.last && this.last.phase !== p.phase) this.samples.length = 0;
    this.last = p;
    this.samples.push({ t: this.now(), position: p.position });
    while (this.samples.length > 10) this.samples.shift();
    return true;
  }

  get wireBytes(): number {
    return this.wire;
  }

  /** The line to show, or null before the first report. */
  message(): string | null {
    const p = this.last;
    if (!p) return null;
    const pct = p.total > 0 ? Math.floor((100 * p.position) / p.total) : 100;
    const first = this.samples[0]!;
    const lastS = this.samples[this.samples.length - 1]!;
    const dt = (lastS.t - first.t) / 1000;
    const rate = dt > 0 ? (lastS.position - first.position) / dt : 0;
    const eta = rate > 0 ? Math.ceil((p.total - p.position) / rate) : null;
    const parts = [
      `${this.label}: ${PHASE_WORDS[p.phase] ?? p.phase} ${formatSize(p.position)} of ${formatSize(p.total)} (${pct}%)`,
      `${formatSize(Math.round(rate))}/s`,
      `ETA ${eta === null ? "?" : formatDuration(eta)}`,
    ];
    if (p.phase === "copy")
      parts.push(
        `${formatSize(p.data)} data, ${formatSize(p.zero)} free, ${formatSize(p.skip)} already there` +
          (this.wire > 0 ? `, ${formatSize(this.wire)} on the wire` : ""),
      );
    return parts.join(", ");
  }
}

export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${seconds} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${seconds % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Key=value lines a probe printed after its marker (`XE-SRC key=value`). */
export function parseFields(stdout: string, marker: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    if (!line.startsWith(`${marker} `)) continue;
    const rest = line.slice(marker.length + 1);
    const eq = rest.indexOf("=");
    if (eq > 0) out[rest.slice(0, eq)] = rest.slice(eq + 1);
  }
  return out;
}
