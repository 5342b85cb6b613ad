/**
 * The Xen lab: real Debian 12 + Xen 4.17 machines booted in QEMU (software emulation) for tests.
 *
 *   const lab = await Lab.start("dom0");
 *   await lab.ssh("xl info");          // stdout; throws LabCommandError on a non-zero exit
 *   lab.host, lab.port, lab.user, lab.privateKey, lab.hostKey, lab.httpPort, lab.consoleLog
 *   await lab.stop();
 *
 * Each start boots from a fresh qcow2 overlay over the cached image (built once per recipe hash by
 * test/lab/images/build-dom0.sh), so every run begins pristine. QEMU runs in its own process group under
 * test/lab/qemu-run.sh, which also kills QEMU when the starting process dies (unless `detach` is set, as
 * for `npm run lab -- up`). State lives in <cache>/lab/run/<instance>/ (state.json, qemu.pid, overlays,
 * known_hosts, console.log); `npm run lab -- down` (downAll) kills whatever is listed there.
 *
 * Only one emulated machine runs at a time on a machine (2 cores): every start takes the machine-wide lab lock
 * (LAB_LOCK, flock) before QEMU starts and holds it while QEMU runs, waiting with a progress line when another
 * run holds it. Test files that share one booted machine (test/lab/shared.ts) attach to it instead of starting.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { labLockFile, lockHeldByAncestor, lockHolder } from "./lock";
import { freePort } from "../support/sshd";
import { repoRoot } from "../support/repo";

/** Re-exported for tests that already take it from here. */
export { freePort, labLockFile, lockHeldByAncestor, lockHolder };

/**
 * dom0: Debian 12 + Xen 4.17, booted by QEMU multiboot. bare: plain Debian 12 that boots through its own
 * GRUB from its own partitioned disk (a rented server before xen-estate touches it).
 */
export type LabHostName = "dom0" | "bare";
export const LAB_HOSTS: readonly LabHostName[] = ["dom0", "bare"];

/** Addresses inside the lab (see README). */
export const LAB_NET = {
  /** The dom0's address on QEMU's user network (DHCP). */
  dom0Eth0: "10.0.2.15",
  /** Where lab machines find the host's package proxy (QEMU guestfwd). */
  aptProxy: "http://10.0.2.100:3142/",
  /** Debian mirror URL usable by debootstrap inside the lab. */
  debianMirror: "http://10.0.2.100:3142/debian",
  /** The guest bridge in dom0 and its address; guests use the rest of 10.99.0.0/24. */
  bridge: "xenbr0",
  bridgeAddress: "10.99.0.1",
  bridgeCidr: "10.99.0.0/24",
  /** The busybox guest kit inside dom0. */
  kitDir: "/var/lib/xen-estate/kits/busybox",
} as const;

export { repoRoot };

/** `${XEN_ESTATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xen-estate}/lab` */
export function labCacheDir(): string {
  const base =
    process.env.XEN_ESTATE_CACHE ??
    path.join(process.env.XDG_CACHE_HOME ?? path.join(process.env.HOME ?? "/root", ".cache"), "xen-estate");
  return path.join(base, "lab");
}

function runDir(): string {
  return path.join(labCacheDir(), "run");
}

export interface LabImage {
  host: LabHostName;
  dir: string;
  recipeHash: string;
  kernelVersion: string;
  xen: string;
  hostKeyFingerprint: string;
  /** Seconds the build took when it was built (not this call). */
  buildSeconds: number;
  /** True when this call had to build it. */
  builtNow: boolean;
}

/** Builds the image for `host` if the cache has none for the current recipe; returns it. */
export async function buildImage(
  host: LabHostName = "dom0",
  opts: { log?: (line: string) => void; force?: boolean } = {},
): Promise<LabImage> {
  const script = path.join(repoRoot(), "test", "lab", "images", `build-${host}.sh`);
  const existed = fs.existsSync(path.join(imageDir(host), "done")) && !opts.force;
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const dir = await new Promise<string>((resolve, reject) => {
    const p = spawn("bash", [script, ...(opts.force ? ["--force"] : [])], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    let partial = "";
    p.stderr.on("data", (d: Buffer) => {
      partial += d.toString();
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      lines.forEach(log);
    });
    p.on("error", reject);
    // "close", not "exit": the process can exit before its stdout is read to the end, and the directory is the
    // last line of that stdout (a cached image's script prints it and exits at once: seen once as an empty answer).
    p.on("close", (code) => {
      if (partial) log(partial);
      const printed = out.trim().split("\n").pop() ?? "";
      if (code === 0 && printed) resolve(printed);
      else
        reject(
          new Error(`${script} exited ${code}${code === 0 ? " without printing the image's directory" : ""}`),
        );
    });
  });
  const meta = JSON.parse(fs.readFileSync(path.join(dir, "image.json"), "utf8")) as Omit<
    LabImage,
    "host" | "dir" | "builtNow"
  >;
  return { ...meta, host, dir, builtNow: !existed };
}

/** Where the image for `host` lives (or will) for the current recipe. */
export function imageDir(host: LabHostName): string {
  const hash = recipeHash();
  return path.join(labCacheDir(), host === "dom0" ? hash : `${host}-${hash}`);
}

function libHash(fn: "lab_recipe_hash" | "lab_base_hash"): string {
  const lib = path.join(repoRoot(), "test", "lab", "images", "lib.sh");
  const r = spawnSync("bash", ["-c", `source "${lib}" && ${fn}`], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${fn} failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** The recipe hash, computed by the same shell function the build uses. */
export function recipeHash(): string {
  return libHash("lab_recipe_hash");
}

/** The hash of the debootstrap stage (images/debootstrap.sh + images/packages.txt). */
export function baseHash(): string {
  return libHash("lab_base_hash");
}

/**
 * Removes cached images of other recipes, except those a running instance boots from; returns the removed
 * directories. The apt cache and logs stay.
 */
export function pruneImages(): string[] {
  const cache = labCacheDir();
  if (!fs.existsSync(cache)) return [];
  const hash = recipeHash();
  const keep = new Set([
    hash,
    `bare-${hash}`,
    `source-${hash}`,
    `base-${baseHash()}`,
    "run",
    "apt",
    "logs",
    "sources",
  ]);
  for (const lab of Lab.list()) if (lab.isRunning()) keep.add(path.basename(lab.imageDir));
  const removed: string[] = [];
  for (const d of fs.readdirSync(cache)) {
    if (keep.has(d)) continue;
    if (!/^((bare|source|base)-)?[0-9a-f]{16}(\.tmp\.\d+)?$/.test(d)) continue;
    fs.rmSync(path.join(cache, d), { recursive: true, force: true });
    removed.push(d);
  }
  return removed;
}

export interface SshResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
}

export class LabCommandError extends Error {
  constructor(
    readonly instance: string,
    readonly command: string,
    readonly result: SshResult,
  ) {
    const tail = result.stderr.trim().split("\n").slice(-10).join("\n");
    super(
      `lab ${instance}: \`${command}\` ${result.timedOut ? "timed out" : `exited ${result.exitCode ?? result.signal}`} after ${result.durationMs} ms` +
        (tail ? `\n${tail}` : ""),
    );
    this.name = "LabCommandError";
  }
}

export interface LabStartOptions {
  /** Name of this running instance (its state directory). Default: `<host>-<pid>` for tests, `<host>` for the CLI. */
  instance?: string;
  /** Guest RAM for QEMU in MiB. @default 2048 for dom0 (Xen scrubs all of it: more is slower), 1024 for bare */
  memoryMiB?: number;
  /** Size of the blank LVM disk (vg0) in GiB. @default 8 */
  vgDiskGiB?: number;
  /**
   * Give up waiting for SSH after this long in all. Before that, a boot whose serial console has been silent for
   * `bootStallMs` without SSH answering is given up as stuck. @default 900000
   */
  sshTimeoutMs?: number;
  /** See `sshTimeoutMs`. @default 300000 */
  bootStallMs?: number;
  /** Keep QEMU running after this process exits (the CLI's `up`). @default false */
  detach?: boolean;
  /** Progress lines. @default stderr */
  log?: (line: string) => void;
  /**
   * Extra addresses the machine may reach on the host: each guest connection to guestAddress:guestPort is
   * relayed to `target` (HOST:PORT on the host, e.g. a SourceVps in its namespace). See SourceVps.dom0Forward().
   */
  forwards?: { guestAddress: string; guestPort: number; target: string }[];
  /** Let the machine reboot inside QEMU (the guest restarts; QEMU keeps running). @default false (-no-reboot) */
  reboot?: boolean;
  /** Sizes in GiB of more blank disks after the vg0 disk (`/dev/vdc`, …), e.g. the second half of a RAID 1. @default [] */
  extraDisksGiB?: number[];
  /** More guest TCP ports of eth0 forwarded from 127.0.0.1 (see {@link Lab.forwarded}), e.g. a new sshd port. */
  forwardPorts?: number[];
  /**
   * A second NIC (eth1) on its own QEMU user network, 10.0.3.0/24: connections forwarded to it arrive from
   * 10.0.3.2, not eth0's 10.0.2.2, so a firewall can tell two sources apart. Its guest ports are forwarded from
   * 127.0.0.1 (see {@link Lab.forwarded2}).
   */
  secondNic?: { forwardPorts: number[] };
  /** Relay guest connections to 10.0.2.102:25 to an SMTP sink appending each message to this file. */
  smtpSink?: string;
}

/** Where lab machines find the SMTP sink (QEMU guestfwd), with LabStartOptions.smtpSink. */
export const LAB_SMTP = { address: "10.0.2.102", port: 25 } as const;

/** What state.json holds; enough to reattach from another process. */
export interface LabState {
  instance: string;
  hostName: LabHostName;
  imageDir: string;
  recipeHash: string;
  stateDir: string;
  /** Process group (the qemu-run.sh wrapper) and QEMU's own pid. */
  pgid: number;
  qemuPid: number;
  host: string;
  port: number;
  httpPort: number;
  user: string;
  privateKeyFile: string;
  knownHostsFile: string;
  hostKey: string;
  consoleLog: string;
  startedAt: string;
  /** Milliseconds from QEMU start to SSH answering. */
  bootMs?: number;
  /** Guest port of eth0 → host port on 127.0.0.1 (LabStartOptions.forwardPorts). */
  forwarded?: Record<string, number>;
  /** Guest port of eth1 → host port on 127.0.0.1 (LabStartOptions.secondNic). */
  forwarded2?: Record<string, number>;
}

const liveLabs = new Set<Lab>();
let exitHooked = false;
function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on("exit", () => {
    for (const lab of liveLabs) lab.killSync();
  });
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      for (const lab of liveLabs) lab.killSync();
      process.exit(128 + (sig === "SIGINT" ? 2 : sig === "SIGTERM" ? 15 : 1));
    });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function qemuEscape(s: string): string {
  return s.replace(/,/g, ",,");
}

/** QEMU RAM in MiB when Lab.start is not told otherwise. */
export function defaultMemoryMiB(host: LabHostName): number {
  // Xen scrubs all of the machine's RAM at boot: more is slower.
  return host === "dom0" ? 2048 : 1024;
}

function readOr(file: string, fallback = ""): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return fallback;
  }
}

/**
 * How much CPU the emulated machine gets before anything else on this machine, as a nice value (-20…19; default
 * -10, about 9 times the weight of a process at 0). The lab is the critical path of a test run and its emulated
 * CPUs keep both cores busy: beside the host lane's suites (thousands of short processes) it got half the machine
 * or less and ran 2–3 times slower than alone (DEVELOPERS.md, "Tiers"). `XEN_ESTATE_LAB_NICE` overrides it
 * (`0` leaves the machine's share as any process's).
 */
export const LAB_NICE = -10;

/**
 * Gives QEMU's process group (`pid`, the session leader qemu-run.sh) the lab's CPU priority. With the kernel's
 * autogroups on (Debian's default), the scheduler first shares the CPUs between sessions, so a nice value alone
 * would only rank QEMU against its own wrapper: the session's autogroup gets the value too. Both need root (the
 * lab does); when either is refused, the machine runs at the default priority and the log says so.
 */
function prioritise(pid: number, log: (line: string) => void): void {
  const wanted = process.env.XEN_ESTATE_LAB_NICE ?? String(LAB_NICE);
  const nice = Number(wanted);
  if (!Number.isInteger(nice) || nice < -20 || nice > 19) {
    log(
      `lab: XEN_ESTATE_LAB_NICE=${JSON.stringify(wanted)} is not a nice value (an integer from -20 to 19): ignored`,
    );
    return;
  }
  if (nice === 0) return;
  const refused: string[] = [];
  try {
    os.setPriority(pid, nice);
  } catch (e) {
    refused.push(`nice: ${(e as Error).message}`);
  }
  if (readOr("/proc/sys/kernel/sched_autogroup_enabled").trim() === "1")
    try {
      fs.writeFileSync(`/proc/${pid}/autogroup`, String(nice));
    } catch (e) {
      refused.push(`autogroup: ${(e as Error).message}`);
    }
  if (refused.length > 0)
    log(
      `lab: could not give the emulated machine CPU priority ${nice} (${refused.join("; ")}): it runs at the default`,
    );
}

/**
 * Waits until qemu-run.sh (process group `wrapperPid`) holds the lab lock, saying every 30 s who holds it meanwhile.
 * If this process is interrupted while waiting, the wrapper goes too.
 */
async function waitForLock(
  wrapperPid: number,
  pidFile: string,
  lock: string,
  instance: string,
  log: (line: string) => void,
): Promise<void> {
  const onSignal = (): void => {
    try {
      process.kill(-wrapperPid, "SIGKILL");
    } catch {
      // already gone
    }
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const waitStarted = Date.now();
  // The first note after 2 s (a free lock is taken at once), then one every 30 s.
  let nextNote = waitStarted + 2_000;
  let noted = false;
  try {
    while (!fs.existsSync(`${pidFile}.locked`)) {
      if (!alive(wrapperPid))
        throw new Error(
          `lab ${instance}: qemu-run.sh exited while waiting for the lab lock\n${readOr(path.join(path.dirname(pidFile), "qemu.stderr"))}`,
        );
      if (Date.now() >= nextNote) {
        noted = true;
        nextNote = Date.now() + 30_000;
        const holder = lockHolder(lock);
        log(
          `lab: ${instance}: waiting ${Math.round((Date.now() - waitStarted) / 1000)} s for the lab lock ${lock} ` +
            "(one emulated machine at a time); held by " +
            (holder
              ? holder.alive
                ? `pid ${holder.pid}: ${holder.command.slice(0, 240)}`
                : holder.command.slice(0, 240)
              : "nobody /proc/locks names"),
        );
      }
      await sleep(200);
    }
    if (noted)
      log(`lab: ${instance}: got the lab lock after ${Math.round((Date.now() - waitStarted) / 1000)} s`);
  } finally {
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
}

export class Lab implements LabState {
  readonly instance: string;
  readonly hostName: LabHostName;
  readonly imageDir: string;
  readonly recipeHash: string;
  readonly stateDir: string;
  readonly pgid: number;
  readonly qemuPid: number;
  readonly host: string;
  readonly port: number;
  readonly httpPort: number;
  readonly user: string;
  readonly privateKeyFile: string;
  readonly knownHostsFile: string;
  /** `SHA256:…` fingerprint of the pinned host key. */
  readonly hostKey: string;
  readonly consoleLog: string;
  readonly startedAt: string;
  bootMs?: number;
  /** Milliseconds Lab.start waited for the lab lock (this process only; not in state.json). */
  lockWaitMs?: number;
  readonly forwarded: Record<string, number>;
  readonly forwarded2: Record<string, number>;
  private stopped = false;

  private constructor(s: LabState) {
    this.instance = s.instance;
    this.hostName = s.hostName;
    this.imageDir = s.imageDir;
    this.recipeHash = s.recipeHash;
    this.stateDir = s.stateDir;
    this.pgid = s.pgid;
    this.qemuPid = s.qemuPid;
    this.host = s.host;
    this.port = s.port;
    this.httpPort = s.httpPort;
    this.user = s.user;
    this.privateKeyFile = s.privateKeyFile;
    this.knownHostsFile = s.knownHostsFile;
    this.hostKey = s.hostKey;
    this.consoleLog = s.consoleLog;
    this.startedAt = s.startedAt;
    if (s.bootMs !== undefined) this.bootMs = s.bootMs;
    this.forwarded = s.forwarded ?? {};
    this.forwarded2 = s.forwarded2 ?? {};
  }

  /** The client private key (OpenSSH PEM text). */
  get privateKey(): string {
    return fs.readFileSync(this.privateKeyFile, "utf8");
  }

  /** The host's public key line (`ssh-ed25519 AAAA…`). */
  get hostPublicKey(): string {
    return fs
      .readFileSync(path.join(this.imageDir, "ssh_host_ed25519_key.pub"), "utf8")
      .trim()
      .split(" ")
      .slice(0, 2)
      .join(" ");
  }

  state(): LabState {
    const s: LabState = {
      instance: this.instance,
      hostName: this.hostName,
      imageDir: this.imageDir,
      recipeHash: this.recipeHash,
      stateDir: this.stateDir,
      pgid: this.pgid,
      qemuPid: this.qemuPid,
      host: this.host,
      port: this.port,
      httpPort: this.httpPort,
      user: this.user,
      privateKeyFile: this.privateKeyFile,
      knownHostsFile: this.knownHostsFile,
      hostKey: this.hostKey,
      consoleLog: this.consoleLog,
      startedAt: this.startedAt,
      forwarded: this.forwarded,
      forwarded2: this.forwarded2,
    };
    if (this.bootMs !== undefined) s.bootMs = this.bootMs;
    return s;
  }

  /** Builds the image if needed, boots it in QEMU and waits until SSH answers with the pinned host key. */
  static async start(hostName: LabHostName = "dom0", opts: LabStartOptions = {}): Promise<Lab> {
    const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
    if (process.env.XEN_ESTATE_LAB_SHARED)
      // The test runner holds the lab lock for the machine it shares with this file: a second machine would wait
      // for that lock forever.
      throw new Error(
        `Lab.start("${hostName}") in a test file that runs on a shared lab machine: take the machine from the ` +
          "file's labMachine(…) declaration (test/lab/shared.ts, DEVELOPERS.md) instead",
      );
    const image = await buildImage(hostName, { log });
    const instance = opts.instance ?? (opts.detach ? hostName : `${hostName}-${process.pid}`);
    const stateDir = path.join(runDir(), instance);
    const existing = Lab.attach(instance);
    if (existing?.isRunning())
      throw new Error(
        `lab instance ${instance} is already running (pid ${existing.qemuPid}); stop it with \`npm run lab -- down\``,
      );
    fs.rmSync(stateDir, { recursive: true, force: true });
    fs.mkdirSync(stateDir, { recursive: true });

    // First the lab lock: qemu-run.sh takes it and then waits for the command line, written below once the
    // machine's host ports are chosen (a wait for the lock may be long; ports chosen before it may be taken).
    const lock = labLockFile();
    const pidFile = path.join(stateDir, "qemu.pid");
    const argsFile = path.join(stateDir, "qemu-args.nul");
    const stderrFd = fs.openSync(path.join(stateDir, "qemu.stderr"), "w");
    const child = spawn(
      "bash",
      [
        path.join(repoRoot(), "test", "lab", "qemu-run.sh"),
        pidFile,
        opts.detach ? "0" : String(process.pid),
        lockHeldByAncestor(lock) ? "-" : lock,
        argsFile,
      ],
      { detached: true, stdio: ["ignore", stderrFd, stderrFd] },
    );
    fs.closeSync(stderrFd);
    if (child.pid === undefined) throw new Error("could not start qemu-run.sh");
    const wrapperPid = child.pid;
    // Before the wrapper starts QEMU (it waits for the lock and the command line first), so QEMU inherits it.
    prioritise(wrapperPid, log);
    child.unref();
    const killWrapper = (): void => {
      try {
        process.kill(-wrapperPid, "SIGKILL");
      } catch {
        // already gone
      }
    };
    const lockWaitStarted = Date.now();
    await waitForLock(wrapperPid, pidFile, lock, instance, log);
    const lockWaitMs = Date.now() - lockWaitStarted;
    let qemuPid: number;
    let started: number;
    let lab: Lab;
    try {
      ({ lab, qemuPid, started } = await Lab.launch(hostName, image, instance, stateDir, opts, {
        wrapperPid,
        pidFile,
        argsFile,
      }));
    } catch (e) {
      killWrapper();
      throw e;
    }
    if (!opts.detach) {
      liveLabs.add(lab);
      hookExit();
    }
    log(
      `lab: ${instance}: QEMU pid ${qemuPid}, ssh on 127.0.0.1:${lab.port}, http on 127.0.0.1:${lab.httpPort}, console ${lab.consoleLog}`,
    );
    try {
      await lab.waitForSsh(opts.sshTimeoutMs ?? 900_000, opts.bootStallMs ?? 300_000);
    } catch (e) {
      await lab.stop({ keepConsoleLog: true });
      throw e;
    }
    lab.bootMs = Date.now() - started;
    lab.lockWaitMs = lockWaitMs;
    lab.saveState();
    log(`lab: ${instance}: SSH answered ${Math.round(lab.bootMs / 1000)} s after QEMU started`);
    return lab;
  }

  /** Everything after the lab lock: ports, keys, overlays, QEMU's command line; returns once QEMU runs. */
  private static async launch(
    hostName: LabHostName,
    image: LabImage,
    instance: string,
    stateDir: string,
    opts: LabStartOptions,
    w: { wrapperPid: number; pidFile: string; argsFile: string },
  ): Promise<{ lab: Lab; qemuPid: number; started: number }> {
    const port = await freePort();
    let httpPort = await freePort();
    while (httpPort === port) httpPort = await freePort();
    const taken = new Set([port, httpPort]);
    const another = async (): Promise<number> => {
      let p = await freePort();
      while (taken.has(p)) p = await freePort();
      taken.add(p);
      return p;
    };
    const forwarded: Record<string, number> = {};
    for (const g of opts.forwardPorts ?? []) forwarded[String(g)] = await another();
    const forwarded2: Record<string, number> = {};
    for (const g of opts.secondNic?.forwardPorts ?? []) forwarded2[String(g)] = await another();
    const privateKeyFile = path.join(stateDir, "id_ed25519");
    fs.copyFileSync(path.join(image.dir, "id_ed25519"), privateKeyFile);
    fs.chmodSync(privateKeyFile, 0o600);
    const hostPub = fs
      .readFileSync(path.join(image.dir, "ssh_host_ed25519_key.pub"), "utf8")
      .trim()
      .split(" ")
      .slice(0, 2)
      .join(" ");
    const knownHostsFile = path.join(stateDir, "known_hosts");
    fs.writeFileSync(knownHostsFile, `[127.0.0.1]:${port} ${hostPub}\n`);
    const consoleLog = path.join(stateDir, "console.log");
    const rootOverlay = path.join(stateDir, "root.qcow2");
    const vgDisk = path.join(stateDir, "vg0.qcow2");
    const img = (f: string): string => path.join(image.dir, f);
    const qimg = (args: string[]): void => {
      const r = spawnSync("qemu-img", args, { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`qemu-img ${args.join(" ")} failed: ${r.stderr}`);
    };
    qimg([
      "create",
      "-q",
      "-f",
      "qcow2",
      "-F",
      "raw",
      "-b",
      img(hostName === "dom0" ? "dom0.img" : "disk.img"),
      rootOverlay,
    ]);
    qimg(["create", "-q", "-f", "qcow2", vgDisk, `${opts.vgDiskGiB ?? 8}G`]);
    const extraDisks = (opts.extraDisksGiB ?? []).map((gib, i) => {
      const f = path.join(stateDir, `disk${i + 2}.qcow2`);
      qimg(["create", "-q", "-f", "qcow2", f, `${gib}G`]);
      return f;
    });

    const aptCache = path.join(labCacheDir(), "apt");
    fs.mkdirSync(aptCache, { recursive: true });
    const proxyCmd = [
      process.execPath,
      path.join(__dirname, "aptproxy.js"),
      "--stdio",
      "--cache",
      aptCache,
      "--log",
      path.join(stateDir, "aptproxy.log"),
    ];
    const netdev = [
      "user,id=n0,restrict=on",
      `hostfwd=tcp:127.0.0.1:${port}-:22`,
      `hostfwd=tcp:127.0.0.1:${httpPort}-:80`,
      `guestfwd=tcp:10.0.2.100:3142-cmd:${qemuEscape(proxyCmd.join(" "))}`,
      ...(opts.forwards ?? []).map(
        (f) =>
          `guestfwd=tcp:${f.guestAddress}:${f.guestPort}-cmd:${qemuEscape([process.execPath, path.join(__dirname, "aptproxy.js"), "--connect", f.target].join(" "))}`,
      ),
      ...Object.entries(forwarded).map(([g, h]) => `hostfwd=tcp:127.0.0.1:${h}-:${g}`),
      ...(opts.smtpSink
        ? [
            `guestfwd=tcp:${LAB_SMTP.address}:${LAB_SMTP.port}-cmd:${qemuEscape([process.execPath, path.join(__dirname, "smtpsink.js"), "--out", opts.smtpSink].join(" "))}`,
          ]
        : []),
    ].join(",");
    const secondNic = opts.secondNic
      ? [
          "-netdev",
          [
            "user,id=n1,restrict=on,net=10.0.3.0/24,host=10.0.3.2",
            ...Object.entries(forwarded2).map(([g, h]) => `hostfwd=tcp:127.0.0.1:${h}-10.0.3.15:${g}`),
          ].join(","),
          "-device",
          "virtio-net-pci,netdev=n1,mac=52:54:00:12:34:57",
        ]
      : [];
    // dom0: Xen straight from QEMU's multiboot loader with the dom0 kernel and initrd as modules.
    // bare: the disk's own MBR and GRUB.
    const boot =
      hostName === "dom0"
        ? [
            "-kernel",
            img("xen"),
            "-append",
            "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=2 noreboot",
            "-initrd",
            `${img("vmlinuz")} console=hvc0 root=/dev/vda rw net.ifnames=0,${img("initrd.img")}`,
          ]
        : [];
    const qemuArgs = [
      "-name",
      `xen-estate-lab-${instance}`,
      "-machine",
      "q35",
      "-accel",
      "tcg,thread=multi",
      // -cpu max crashes the PV dom0 early under TCG (SMAP): FIELD-NOTES §10. `max,-smap` boots, but in
      // QEMU 7.2 its AVX/XSAVE state under Xen PV gave intermittently wrong SHA-256 results (apt "Hash Sum
      // mismatch" with matching MD5) and failed ed25519 logins: qemu64 has no AVX and none of that.
      // RDRAND, which every server CPU of the last decade has: without it the kernel's random pool took 36 s to
      // initialise in the dom0 under Xen, with lvm in the initramfs blocked on it at every boot (TCG implements the
      // instruction from the host's getrandom; Xen passes it to the dom0 and the guests).
      "-cpu",
      process.env.XEN_ESTATE_LAB_CPU ?? "qemu64,+rdrand",
      "-smp",
      "2",
      "-m",
      String(opts.memoryMiB ?? defaultMemoryMiB(hostName)),
      ...boot,
      "-drive",
      `file=${qemuEscape(rootOverlay)},if=virtio,format=qcow2,cache=unsafe`,
      "-drive",
      `file=${qemuEscape(vgDisk)},if=virtio,format=qcow2,cache=unsafe`,
      "-netdev",
      netdev,
      ...extraDisks.flatMap((f) => ["-drive", `file=${qemuEscape(f)},if=virtio,format=qcow2,cache=unsafe`]),
      "-device",
      "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
      ...secondNic,
      "-display",
      "none",
      "-monitor",
      "none",
      "-serial",
      `file:${consoleLog}`,
      ...(opts.reboot ? [] : ["-no-reboot"]),
      "-pidfile",
      path.join(stateDir, "qemu.pid"),
    ];
    fs.writeFileSync(
      path.join(stateDir, "qemu-args.json"),
      JSON.stringify(["qemu-system-x86_64", ...qemuArgs], null, 1),
    );
    fs.writeFileSync(`${w.argsFile}.tmp`, ["qemu-system-x86_64", ...qemuArgs].map((a) => `${a}\0`).join(""));
    fs.renameSync(`${w.argsFile}.tmp`, w.argsFile);
    let qemuPid = 0;
    for (let i = 0; i < 100 && !qemuPid; i++) {
      await sleep(100);
      try {
        qemuPid = Number(fs.readFileSync(w.pidFile, "utf8").trim()) || 0;
      } catch {
        // not yet
      }
    }
    if (!qemuPid)
      throw new Error(
        `lab ${instance}: qemu-run.sh did not start QEMU\n${readOr(path.join(stateDir, "qemu.stderr"))}`,
      );
    const started = Date.now();
    const lab = new Lab({
      instance,
      hostName,
      imageDir: image.dir,
      recipeHash: image.recipeHash,
      stateDir,
      pgid: w.wrapperPid,
      qemuPid,
      host: "127.0.0.1",
      port,
      httpPort,
      user: "root",
      privateKeyFile,
      knownHostsFile,
      hostKey: image.hostKeyFingerprint,
      consoleLog,
      startedAt: new Date(started).toISOString(),
      forwarded,
      forwarded2,
    });
    lab.saveState();
    return { lab, qemuPid, started };
  }

  /** The instance recorded in <cache>/lab/run/<instance>/state.json, if any. */
  static attach(instance: string): Lab | undefined {
    const s = readInstanceState<LabState>(runDir(), instance);
    return s && new Lab(s);
  }

  /** Every instance with a state directory. */
  static list(): Lab[] {
    return listInstances(runDir(), (i) => Lab.attach(i));
  }

  private saveState(): void {
    fs.writeFileSync(path.join(this.stateDir, "state.json"), JSON.stringify(this.state(), null, 2));
  }

  /**
   * True while this instance's QEMU process is alive (and really is ours): its command line names the instance, or
   * it is still the wrapper's child between fork and exec (same process group; on a busy machine that moment is
   * long enough for a first look to land in it).
   */
  isRunning(): boolean {
    if (!alive(this.qemuPid)) return false;
    try {
      if (this.qemuPid === this.pgid) return true;
      if (
        fs
          .readFileSync(`/proc/${this.qemuPid}/cmdline`, "utf8")
          .includes(`\0xen-estate-lab-${this.instance}\0`)
      )
        return true;
      // /proc/PID/stat: "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses, so split after the last ")".
      const stat = fs.readFileSync(`/proc/${this.qemuPid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return Number(fields[2]) === this.pgid && fields[0] !== "Z";
    } catch {
      return false;
    }
  }

  /** Arguments for the system ssh client, up to and including the destination. */
  sshArgs(): string[] {
    return systemSshArgs({
      keyFile: this.privateKeyFile,
      port: this.port,
      knownHostsFile: this.knownHostsFile,
      destination: `${this.user}@${this.host}`,
      // The banner exchange alone took more than 10 s on an emulated dom0 beside other work (measured here): the
      // connection is to a machine known to be up, so a slow answer is waited for, not taken for a dead host.
      connectTimeoutSeconds: 60,
      keepAlive: true,
    });
  }

  /** A command line a person can paste. */
  sshCommandLine(): string {
    return ["ssh", ...this.sshArgs()].map((a) => (/^[\w@.:/=,+-]+$/.test(a) ? a : `'${a}'`)).join(" ");
  }

  /** Runs `command` through the remote shell; never throws for a non-zero exit. */
  exec(command: string, opts: { timeoutMs?: number; input?: string | Buffer } = {}): Promise<SshResult> {
    return runSystemSsh(this.sshArgs(), command, opts);
  }

  /** Runs `command`, returns its stdout; throws LabCommandError unless it exits 0. */
  async ssh(command: string, opts: { timeoutMs?: number; input?: string | Buffer } = {}): Promise<string> {
    const r = await this.exec(command, opts);
    if (r.exitCode !== 0) throw new LabCommandError(this.instance, command, r);
    return r.stdout;
  }

  /** Public-key logins this machine's sshd has accepted since boot (this count itself adds one). */
  async acceptedLogins(): Promise<number> {
    return Number(
      (
        await this.ssh("journalctl -u ssh.service --no-pager -o cat | grep -c 'Accepted publickey' || true")
      ).trim(),
    );
  }

  /** Stack config that points the example estate (and the lab's test programs) at this machine. */
  stackConfig(): Record<string, { value: string; secret?: boolean }> {
    return {
      dom0Host: { value: this.host },
      dom0Port: { value: String(this.port) },
      dom0HostKey: { value: this.hostKey },
      dom0PrivateKey: { value: this.privateKey, secret: true },
    };
  }

  /**
   * Waits until `true` runs over SSH (host key pinned), or throws with the console's last lines: when QEMU exits,
   * when the console has been silent for `stallMs` (the boot is stuck, not slow: an emulated boot on a busy
   * machine took 46 s to over 5 minutes here, always writing to the console as it went), or after `timeoutMs`.
   */
  async waitForSsh(timeoutMs: number, stallMs = 300_000): Promise<void> {
    const started = Date.now();
    const deadline = started + timeoutMs;
    let last = "";
    let consoleSize = -1;
    let consoleChanged = started;
    for (;;) {
      if (!this.isRunning())
        throw new Error(
          `lab ${this.instance}: QEMU exited while booting\n${this.consoleTail(30)}\n${this.qemuStderr()}`,
        );
      const r = await this.exec("true", { timeoutMs: 75_000 });
      if (r.exitCode === 0) return;
      last = r.stderr.trim();
      if (/host key|REMOTE HOST IDENTIFICATION/i.test(last))
        throw new Error(`lab ${this.instance}: host key mismatch: ${last}`);
      let size = consoleSize;
      try {
        size = fs.statSync(this.consoleLog).size;
      } catch {
        // not written yet
      }
      if (size !== consoleSize) {
        consoleSize = size;
        consoleChanged = Date.now();
      }
      const now = Date.now();
      const why =
        now >= deadline
          ? `no SSH after ${Math.round((now - started) / 1000)} s`
          : now - consoleChanged >= stallMs
            ? `no SSH, and the console silent for ${Math.round((now - consoleChanged) / 1000)} s (${Math.round((now - started) / 1000)} s after QEMU started)`
            : undefined;
      if (why)
        throw new Error(
          `lab ${this.instance}: ${why} (last: ${last})\n--- console tail ---\n${this.consoleTail(40)}`,
        );
      await sleep(2000);
    }
  }

  consoleTail(lines = 40): string {
    try {
      return fs.readFileSync(this.consoleLog, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no console log)";
    }
  }

  private qemuStderr(): string {
    try {
      return fs.readFileSync(path.join(this.stateDir, "qemu.stderr"), "utf8");
    } catch {
      return "";
    }
  }

  /** Kills the process group right now (for exit handlers); leaves files. */
  killSync(): void {
    for (const pid of [-this.pgid, this.qemuPid]) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }

  /**
   * Kills QEMU (the disks are throw-away overlays, so there is nothing to shut down cleanly) and removes the
   * state directory. With `keepConsoleLog` the console log is first copied to <cache>/lab/logs/.
   * @returns the kept console log's path, if any
   */
  async stop(opts: { keepConsoleLog?: boolean } = {}): Promise<string | undefined> {
    if (this.stopped) return undefined;
    this.stopped = true;
    liveLabs.delete(this);
    for (const pid of [-this.pgid, this.qemuPid]) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // already gone
      }
    }
    for (let i = 0; i < 50 && (alive(this.qemuPid) || alive(this.pgid)); i++) await sleep(100);
    this.killSync();
    for (let i = 0; i < 20 && alive(this.qemuPid); i++) await sleep(100);
    let kept: string | undefined;
    if (opts.keepConsoleLog && fs.existsSync(this.consoleLog)) {
      const logs = path.join(labCacheDir(), "logs");
      fs.mkdirSync(logs, { recursive: true });
      kept = path.join(logs, `${this.instance}-${this.startedAt.replace(/[:.]/g, "-")}.console.log`);
      fs.copyFileSync(this.consoleLog, kept);
      pruneLogs(logs, 20);
    }
    fs.rmSync(this.stateDir, { recursive: true, force: true });
    return kept;
  }
}

function pruneLogs(dir: string, keep: number): void {
  const files = fs
    .readdirSync(dir)
    .map((f) => ({ f, t: fs.statSync(path.join(dir, f)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const { f } of files.slice(keep)) fs.rmSync(path.join(dir, f), { force: true });
}

/** Stops every recorded instance; returns their names. */
export async function downAll(): Promise<string[]> {
  const names: string[] = [];
  for (const lab of Lab.list()) {
    names.push(lab.instance);
    await lab.stop();
  }
  return names;
}

/** Options of the system ssh client for a lab machine: its pinned host key only, our key only, never a prompt. */
export function systemSshArgs(o: {
  keyFile: string;
  port: number;
  knownHostsFile: string;
  destination: string;
  connectTimeoutSeconds: number;
  /** Detect a dead connection within 30 s. */
  keepAlive?: boolean;
}): string[] {
  const opt = (v: string): string[] => ["-o", v];
  return [
    "-i",
    o.keyFile,
    "-p",
    String(o.port),
    ...opt("StrictHostKeyChecking=yes"),
    ...opt(`UserKnownHostsFile=${o.knownHostsFile}`),
    ...opt("GlobalKnownHostsFile=/dev/null"),
    ...opt("IdentitiesOnly=yes"),
    ...opt("BatchMode=yes"),
    ...opt("LogLevel=ERROR"),
    ...opt(`ConnectTimeout=${o.connectTimeoutSeconds}`),
    ...(o.keepAlive ? [...opt("ServerAliveInterval=5"), ...opt("ServerAliveCountMax=6")] : []),
    o.destination,
  ];
}

/** Runs `command` with the system ssh client; never throws for a non-zero exit. */
export function runSystemSsh(
  args: string[],
  command: string,
  opts: { timeoutMs?: number; input?: string | Buffer } = {},
): Promise<SshResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const p = spawn("ssh", [...args, command], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      p.kill("SIGKILL");
    }, opts.timeoutMs ?? 120_000);
    p.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ exitCode: code, signal, stdout, stderr, timedOut, durationMs: Date.now() - started });
    });
    p.stdin.on("error", () => undefined);
    p.stdin.end(opts.input);
  });
}

/** The state.json of `<dir>/<instance>`, if there is one (lab machines and source VPSes keep their state so). */
export function readInstanceState<T>(dir: string, instance: string): T | undefined {
  const f = path.join(dir, instance, "state.json");
  if (!fs.existsSync(f)) return undefined;
  return JSON.parse(fs.readFileSync(f, "utf8")) as T;
}

/** Every instance under `dir` that `attach` can read. */
export function listInstances<T>(dir: string, attach: (instance: string) => T | undefined): T[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map(attach)
    .filter((x): x is T => x !== undefined);
}
