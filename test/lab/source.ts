/**
 * The "source VPS" for migration tests: a real OpenSSH server in its own network namespace on the host,
 * holding a real ext4 disk image with a bootable Debian 12 userland (built once by
 * test/lab/images/build-source.sh from the same debootstrapped rootfs as the dom0).
 *
 *   const src = await SourceVps.start();
 *   src.address, src.port (22), src.user ("root"), src.privateKey, src.hostKey ("SHA256:…")
 *   src.diskImage        a fresh copy of the image for this run (the VPS's /dev/sda, as a file)
 *   await src.ssh("dumpe2fs -h " + src.diskImage);
 *   await src.stop();
 *
 * The sshd runs as the host's root in the namespace (it shares the host's filesystem): what makes it a
 * separate host is its address (10.201.N.2, reachable from the host over a veth pair), its own host key
 * and its own authorized key. A dom0 lab machine reaches it through a QEMU guestfwd (see `dom0Forward`).
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { shellQuote } from "../../provider/core/shell";
import { keyDir } from "../../provider/resources/linode-migration/scripts";
import { SESSION_ENV } from "../support/sshd";
import {
  LabCommandError,
  SshResult,
  labCacheDir,
  listInstances,
  readInstanceState,
  repoRoot,
  runSystemSsh,
  systemSshArgs,
} from "./lab";

export interface SourceImage {
  dir: string;
  recipeHash: string;
  kernelVersion: string;
  sizeMiB: number;
  hostKeyFingerprint: string;
  /** Random string in /root/xen-estate-source-marker inside the image. */
  marker: string;
  builtNow: boolean;
}

export function buildSourceImage(opts: { force?: boolean } = {}): SourceImage {
  const script = path.join(repoRoot(), "test", "lab", "images", "build-source.sh");
  const r = spawnSync("bash", [script, ...(opts.force ? ["--force"] : [])], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (r.status !== 0) throw new Error(`${script} exited ${r.status}\n${r.stderr}`);
  const dir = r.stdout.trim().split("\n").pop()!;
  const meta = JSON.parse(fs.readFileSync(path.join(dir, "image.json"), "utf8")) as Omit<
    SourceImage,
    "dir" | "builtNow"
  >;
  return { ...meta, dir, builtNow: r.stderr.includes("ready in") };
}

export interface SourceVpsState {
  instance: string;
  stateDir: string;
  netns: string;
  /** The VPS's address (namespace side of the veth pair). */
  address: string;
  /** The host's address on the veth pair. */
  hostAddress: string;
  port: number;
  user: string;
  privateKeyFile: string;
  knownHostsFile: string;
  hostKey: string;
  diskImage: string;
  marker: string;
  sshdPid: number;
}

function sourcesDir(): string {
  return path.join(labCacheDir(), "sources");
}

function sh(args: string[]): void {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${args.join(" ")} failed: ${r.stderr.trim()}`);
}

/**
 * The addresses of source VPS slot `slot` (1–16000): a /30 in 10.201.0.0/16; names fit IFNAMSIZ (15). A shared
 * lab dom0 is booted with a forward to a slot's address before any VPS runs there (test/lab/shared.ts).
 */
export function sourceSlot(slot: number = (process.pid % 16000) + 1): {
  slot: number;
  address: string;
  hostAddress: string;
  netns: string;
} {
  const third = Math.floor((slot * 4) / 256) % 256;
  const fourth = (slot * 4) % 256;
  return {
    slot,
    hostAddress: `10.201.${third}.${fourth + 1}`,
    address: `10.201.${third}.${fourth + 2}`,
    netns: `xesrc${slot}`,
  };
}

const live = new Set<SourceVps>();
let hooked = false;

export class SourceVps implements SourceVpsState {
  readonly instance!: string;
  readonly stateDir!: string;
  readonly netns!: string;
  readonly address!: string;
  readonly hostAddress!: string;
  readonly port!: number;
  readonly user!: string;
  readonly privateKeyFile!: string;
  readonly knownHostsFile!: string;
  readonly hostKey!: string;
  readonly diskImage!: string;
  readonly marker!: string;
  readonly sshdPid!: number;
  private stopped = false;

  private constructor(s: SourceVpsState) {
    Object.assign(this, s);
  }

  get privateKey(): string {
    return fs.readFileSync(this.privateKeyFile, "utf8");
  }

  /** `ssh-ed25519 AAAA…` */
  get hostPublicKey(): string {
    return fs.readFileSync(this.knownHostsFile, "utf8").trim().split(" ").slice(1, 3).join(" ");
  }

  /** Builds the image if needed, makes the namespace and veth pair, copies the disk, starts sshd. */
  static async start(
    opts: { instance?: string; timeoutMs?: number; detach?: boolean; slot?: number } = {},
  ): Promise<SourceVps> {
    const image = buildSourceImage();
    const instance = opts.instance ?? `source-${process.pid}`;
    const stateDir = path.join(sourcesDir(), instance);
    SourceVps.attach(instance)?.stopSync();
    fs.rmSync(stateDir, { recursive: true, force: true });
    fs.mkdirSync(stateDir, { recursive: true });
    // A /30 per instance, chosen from the pid unless the caller reserved a slot.
    const { slot: n, hostAddress, address, netns } = sourceSlot(opts.slot);
    const vethHost = `xs${n}h`;
    const vethNs = `xs${n}n`;
    const state: SourceVpsState = {
      instance,
      stateDir,
      netns,
      address,
      hostAddress,
      port: 22,
      user: "root",
      privateKeyFile: path.join(stateDir, "id_ed25519"),
      knownHostsFile: path.join(stateDir, "known_hosts"),
      hostKey: image.hostKeyFingerprint,
      diskImage: path.join(stateDir, "disk.img"),
      marker: image.marker,
      sshdPid: 0,
    };
    fs.writeFileSync(path.join(stateDir, "state.json"), JSON.stringify(state, null, 2));
    const vps = new SourceVps(state);
    if (!opts.detach) live.add(vps);
    if (!opts.detach && !hooked) {
      hooked = true;
      process.on("exit", () => live.forEach((v) => v.stopSync()));
    }
    try {
      spawnSync("ip", ["netns", "del", netns]);
      sh(["ip", "netns", "add", netns]);
      sh(["ip", "link", "add", vethHost, "type", "veth", "peer", "name", vethNs]);
      sh(["ip", "link", "set", vethNs, "netns", netns]);
      sh(["ip", "addr", "add", `${hostAddress}/30`, "dev", vethHost]);
      sh(["ip", "link", "set", vethHost, "up"]);
      sh(["ip", "netns", "exec", netns, "ip", "addr", "add", `${address}/30`, "dev", vethNs]);
      sh(["ip", "netns", "exec", netns, "ip", "link", "set", vethNs, "up"]);
      sh(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"]);
      sh(["cp", "--sparse=always", path.join(image.dir, "disk.img"), state.diskImage]);
      fs.copyFileSync(path.join(image.dir, "id_ed25519"), state.privateKeyFile);
      fs.chmodSync(state.privateKeyFile, 0o600);
      fs.copyFileSync(
        path.join(image.dir, "ssh_host_ed25519_key"),
        path.join(stateDir, "ssh_host_ed25519_key"),
      );
      fs.chmodSync(path.join(stateDir, "ssh_host_ed25519_key"), 0o600);
      fs.copyFileSync(path.join(image.dir, "id_ed25519.pub"), path.join(stateDir, "authorized_keys"));
      const hostPub = fs
        .readFileSync(path.join(image.dir, "ssh_host_ed25519_key.pub"), "utf8")
        .trim()
        .split(" ")
        .slice(0, 2)
        .join(" ");
      fs.writeFileSync(state.knownHostsFile, `${address} ${hostPub}\n`);
      fs.writeFileSync(
        path.join(stateDir, "sshd_config"),
        [
          `Port 22`,
          `ListenAddress ${address}`,
          `HostKey ${path.join(stateDir, "ssh_host_ed25519_key")}`,
          `AuthorizedKeysFile ${path.join(stateDir, "authorized_keys")}`,
          `PermitRootLogin prohibit-password`,
          `PasswordAuthentication no`,
          `KbdInteractiveAuthentication no`,
          `UsePAM no`,
          `StrictModes no`,
          `UseDNS no`,
          `PidFile ${path.join(stateDir, "sshd.pid")}`,
          `Subsystem sftp internal-sftp`,
          SESSION_ENV,
          "",
        ].join("\n"),
      );
      fs.mkdirSync("/run/sshd", { recursive: true });
      const logFd = fs.openSync(path.join(stateDir, "sshd.log"), "w");
      const child = spawn(
        "ip",
        ["netns", "exec", netns, "/usr/sbin/sshd", "-D", "-e", "-f", path.join(stateDir, "sshd_config")],
        {
          detached: true,
          stdio: ["ignore", logFd, logFd],
        },
      );
      fs.closeSync(logFd);
      child.unref();
      (vps as { sshdPid: number }).sshdPid = child.pid ?? 0;
      fs.writeFileSync(
        path.join(stateDir, "state.json"),
        JSON.stringify({ ...state, sshdPid: vps.sshdPid }, null, 2),
      );
      const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
      for (;;) {
        const r = await vps.exec("true", { timeoutMs: 5000 });
        if (r.exitCode === 0) break;
        if (Date.now() > deadline)
          throw new Error(
            `source VPS sshd did not answer: ${r.stderr}\n${fs.readFileSync(path.join(stateDir, "sshd.log"), "utf8")}`,
          );
        await new Promise((res) => setTimeout(res, 200));
      }
    } catch (e) {
      vps.stopSync();
      throw e;
    }
    return vps;
  }

  static attach(instance: string): SourceVps | undefined {
    const s = readInstanceState<SourceVpsState>(sourcesDir(), instance);
    return s && new SourceVps(s);
  }

  static list(): SourceVps[] {
    return listInstances(sourcesDir(), (i) => SourceVps.attach(i));
  }

  sshArgs(): string[] {
    return systemSshArgs({
      keyFile: this.privateKeyFile,
      port: this.port,
      knownHostsFile: this.knownHostsFile,
      destination: `${this.user}@${this.address}`,
      connectTimeoutSeconds: 5,
    });
  }

  exec(command: string, opts: { timeoutMs?: number } = {}): Promise<SshResult> {
    return runSystemSsh(this.sshArgs(), command, opts);
  }

  async ssh(command: string, opts: { timeoutMs?: number } = {}): Promise<string> {
    const r = await this.exec(command, opts);
    if (r.exitCode !== 0) throw new LabCommandError(this.instance, command, r);
    return r.stdout;
  }

  /** True while this instance's sshd runs (its pid file names a live process). */
  isRunning(): boolean {
    try {
      const pid = Number(fs.readFileSync(path.join(this.stateDir, "sshd.pid"), "utf8").trim());
      return pid > 0 && fs.existsSync(`/proc/${pid}`);
    } catch {
      return false;
    }
  }

  /** A `Lab.start({ forwards })` entry that makes this VPS reachable from a dom0 at `guestAddress`:22. */
  dom0Forward(guestAddress = "10.0.2.101"): { guestAddress: string; guestPort: number; target: string } {
    return { guestAddress, guestPort: 22, target: `${this.address}:${this.port}` };
  }

  /** Kills sshd, deletes the namespace (and with it the veth pair) and the state directory. */
  stopSync(): void {
    if (this.stopped) return;
    this.stopped = true;
    live.delete(this);
    if (this.sshdPid) {
      for (const pid of [-this.sshdPid, this.sshdPid]) {
        try {
          process.kill(pid, "SIGTERM");
        } catch {
          // gone
        }
      }
    }
    try {
      const pid = Number(fs.readFileSync(path.join(this.stateDir, "sshd.pid"), "utf8").trim());
      if (pid) process.kill(pid, "SIGTERM");
    } catch {
      // gone
    }
    spawnSync("ip", ["netns", "del", this.netns]);
    fs.rmSync(this.stateDir, { recursive: true, force: true });
  }

  async stop(): Promise<void> {
    this.stopSync();
    await Promise.resolve();
  }
}

/** Stops every recorded source VPS; returns their names. */
export function downSources(): string[] {
  return SourceVps.list().map((v) => {
    v.stopSync();
    return v.instance;
  });
}

/**
 * A root command for the dom0 that kills the ssh of the migration into `targetKey` (`vg0_linode1-root`), as when
 * the link drops, and prints `killed` when it did. Only an ssh command line matches: the shells that run this probe
 * carry the key path on theirs too.
 */
export function cutCopyCommand(targetKey: string): string {
  const pattern = shellQuote(`^ssh .*${keyDir(targetKey)}/key`);
  return `pid=$(pgrep -o -f -- ${pattern}) && kill -9 "$pid" && echo killed || true`;
}

/** How a migrated guest's boot went, read inside it once systemd says the boot is over. */
export interface BootReport {
  /** systemd's state once the boot was over (`bootFinished`): `running`, `degraded` when a unit failed, `starting` past the deadline. */
  state: string;
  /** The units that failed (`systemctl --failed`). */
  failed: string[];
  /** The boot journal's lines saying a job timed out or a dependency failed (each cost the boot a deadline). */
  timeouts: string[];
  /** Where the time went: `systemd-analyze`, the critical chain to sshd, the ten slowest units. */
  timing: string;
}

/**
 * Runs a bash script in a guest through `inGuest` (a command there as root, over SSH from the dom0): the script
 * travels base64-encoded, so no shell on the way (the dom0's, the guest's login shell) expands anything in it.
 */
function guestScript(inGuest: (command: string) => Promise<string>, script: string): Promise<string> {
  return inGuest(`echo ${Buffer.from(script).toString("base64")} | base64 -d | bash`);
}

/** systemd's states while a boot is not over yet (`systemctl is-system-running`). */
const BOOTING = new Set(["", "initializing", "starting"]);

/**
 * Waits until a guest's boot is over and returns systemd's state then (`running`, `degraded`, ...), or `starting`
 * when `deadlineMs` passed first. Each look waits at most 30 s inside the guest, so it fits the deadline of the SSH
 * call that carries it (asAdmin's is 60 s): a boot slower than one call is waited for, never cut by the transport.
 */
export async function bootFinished(
  inGuest: (command: string) => Promise<string>,
  deadlineMs = 10 * 60_000,
): Promise<string> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const state = (await inGuest("timeout 30 systemctl is-system-running --wait 2>&1 || true")).trim();
    if (!BOOTING.has(state)) return state;
    if (Date.now() >= end) return "starting";
  }
}

/**
 * Reads a guest's boot from inside it once the boot is over (`bootFinished`), the rest in one SSH call: `inGuest`
 * runs a command there as root.
 */
export async function bootReport(inGuest: (command: string) => Promise<string>): Promise<BootReport> {
  const state = await bootFinished(inGuest);
  const script = [
    `systemctl --failed --no-legend --plain 2>&1 | sed 's/^/failed /'`,
    `journalctl -b -q --no-pager -o short-monotonic 2>&1 | grep -E 'Timed out|timed out|Dependency failed' | sed 's/^/timeout /' || true`,
    `{ systemd-analyze; systemd-analyze critical-chain ssh.service; systemd-analyze blame | head -n 10; } 2>&1 | sed 's/^/timing /'`,
  ].join("\n");
  const out = await guestScript(inGuest, script);
  const lines = (tag: string): string[] =>
    out
      .split("\n")
      .filter((l) => l.startsWith(`${tag} `))
      .map((l) => l.slice(tag.length + 1));
  return {
    state,
    failed: lines("failed").filter((l) => l.trim() !== ""),
    timeouts: lines("timeout"),
    timing: lines("timing").join("\n"),
  };
}

/**
 * Asserts that a guest's boot was clean (`running`, no unit failed, no job timed out, no dependency failed) and
 * hands `log` where its time went.
 */
export async function assertCleanBoot(
  inGuest: (command: string) => Promise<string>,
  log: (line: string) => void,
): Promise<void> {
  const boot = await bootReport(inGuest);
  log(`the migrated guest's boot, from inside it:\n${boot.timing}`);
  assert.deepEqual(boot.timeouts, [], "no job timed out and no dependency failed");
  assert.deepEqual(boot.failed, [], "no unit failed");
  assert.equal(boot.state, "running");
}
