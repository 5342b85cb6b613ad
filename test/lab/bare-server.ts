/**
 * The lab's bare server made ready for a Dom0Host, as a rented server is after Hetzner's installimage: plain Debian
 * 12 booting through its own GRUB, a RAID 1 of two disks holding the LVM volume group vg0 (mdadm.conf knowing the
 * array), and the busybox guest kit in `LAB_NET.kitDir` (the kernel and images guests of the lab boot).
 *
 *   const bare = await startBareServer({ sshPort: 2222, log });
 *   bare.lab                       the machine (Lab), rebootable inside QEMU
 *   await bare.asAdmin("xl info")  a root command through the admin's sudo on the new sshd port
 *   await bare.stop()
 *
 * Each file that uses it changes the machine beyond undoing (installs Xen, reboots it), so each boots its own.
 * The main job (`npm run estate`) starts one detached under a fixed instance name and attaches to it on later runs
 * (`attachBareServer`), so a second `up` meets the machine the first one left.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import {
  buildImage,
  Lab,
  labCacheDir,
  LAB_NET,
  runSystemSsh,
  systemSshArgs,
  type LabStartOptions,
  type SshResult,
} from "./lab";

export interface BareServerOptions {
  /** The port sshd moves to (forwarded from 127.0.0.1 as `lab.forwarded[sshPort]`). */
  sshPort: number;
  /** QEMU RAM in MiB. @default 2048 */
  memoryMiB?: number;
  /** The admin user Dom0Host makes, who logs in with the lab's client key. @default "ops" */
  admin?: string;
  /** Kit files copied to `LAB_NET.kitDir`. @default ["vmlinuz", "initrd.gz"] */
  kitFiles?: string[];
  /** Passed to Lab.start. */
  forwards?: LabStartOptions["forwards"];
  secondNic?: LabStartOptions["secondNic"];
  /** More guest ports of eth0 forwarded (besides `sshPort`). */
  forwardPorts?: number[];
  log: (line: string) => void;
  /** The machine's instance name (its state directory). @default `bare-<pid>` */
  instance?: string;
  /**
   * Keep the machine running after this process exits (the main job); its scratch files (known_hosts, the SMTP
   * sink's file) then live beside its state, not in a temporary directory. @default false
   */
  detach?: boolean;
}

export interface BareServer {
  lab: Lab;
  /** A scratch directory of the test's (known_hosts, the SMTP sink's file), removed by stop(). */
  dir: string;
  /** Every message the machine sent to the lab's SMTP sink, one JSON object per line. */
  sinkFile: string;
  /** known_hosts pinning the machine's host key on every forwarded port. */
  knownHosts: string;
  /** The admin's public key (the lab's client key). */
  adminKey: string;
  /** ssh to the machine through the forwarded `hostPort` as `user`, with the machine's pinned host key. */
  sshVia(
    hostPort: number,
    user: string,
    command: string,
    timeoutMs?: number,
    input?: string | Buffer,
  ): Promise<SshResult>;
  /**
   * A root command through the admin's sudo on the new sshd port (`input` on its stdin); fails the test when it
   * fails or outlasts `timeoutMs` (default 60 s).
   */
  asAdmin(command: string, input?: string | Buffer, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

/** Where a detached bare server keeps its scratch files. */
const filesOf = (instance: string): string => path.join(labCacheDir(), "run", `${instance}.files`);

/** Boots the bare server and gives it what installimage leaves; see the file's header. */
export async function startBareServer(o: BareServerOptions): Promise<BareServer> {
  let dir: string;
  if (o.detach && o.instance) {
    dir = filesOf(o.instance);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
  } else dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-bare-"));
  const sinkFile = path.join(dir, "mail.jsonl");
  fs.writeFileSync(sinkFile, "");
  let lab: Lab;
  try {
    lab = await Lab.start("bare", {
      ...(o.instance ? { instance: o.instance } : {}),
      ...(o.detach ? { detach: true } : {}),
      memoryMiB: o.memoryMiB ?? 2048,
      reboot: true,
      extraDisksGiB: [8],
      forwardPorts: [o.sshPort, ...(o.forwardPorts ?? [])],
      ...(o.secondNic ? { secondNic: o.secondNic } : {}),
      ...(o.forwards ? { forwards: o.forwards } : {}),
      smtpSink: sinkFile,
      sshTimeoutMs: 600_000,
      log: o.log,
    });
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const knownHosts = path.join(dir, "known_hosts");
  fs.writeFileSync(
    knownHosts,
    [lab.port, ...Object.values(lab.forwarded), ...Object.values(lab.forwarded2)]
      .map((p) => `[127.0.0.1]:${p} ${lab.hostPublicKey}\n`)
      .join(""),
  );
  await lab.ssh(
    [
      // Both disks are blank (zeros), so the mirrors already agree: no resync competing with the tests for the disk.
      "mdadm --create /dev/md0 --level=1 --raid-devices=2 --metadata=1.2 --assume-clean --run /dev/vdb /dev/vdc",
      "pvcreate -q /dev/md0 && vgcreate -q vg0 /dev/md0",
      "mdadm --detail --scan >> /etc/mdadm/mdadm.conf",
      `mkdir -p ${LAB_NET.kitDir}`,
    ].join(" && "),
  );
  // The kit's kernel is the one this machine runs (both images come from the same debootstrapped base).
  const kit = path.join((await buildImage("dom0", { log: o.log })).dir, "kit");
  for (const f of o.kitFiles ?? ["vmlinuz", "initrd.gz"])
    await lab.ssh(`cat > ${LAB_NET.kitDir}/${f}`, { input: fs.readFileSync(path.join(kit, f)) });
  return bareServerHandle(lab, dir, o);
}

/**
 * The bare server a detached start left running under `instance`, or undefined when none runs; `o` holds what it
 * was started with (its new sshd port, its admin).
 */
export function attachBareServer(
  instance: string,
  o: Pick<BareServerOptions, "sshPort" | "admin">,
): BareServer | undefined {
  const lab = Lab.attach(instance);
  const dir = filesOf(instance);
  if (!lab?.isRunning() || !fs.existsSync(path.join(dir, "known_hosts"))) return undefined;
  return bareServerHandle(lab, dir, o);
}

function bareServerHandle(
  lab: Lab,
  dir: string,
  o: Pick<BareServerOptions, "sshPort" | "admin">,
): BareServer {
  const admin = o.admin ?? "ops";
  const knownHosts = path.join(dir, "known_hosts");
  const adminKey = execFileSync("ssh-keygen", ["-y", "-f", lab.privateKeyFile], { encoding: "utf8" }).trim();
  const sshVia: BareServer["sshVia"] = (hostPort, user, command, timeoutMs = 60_000, input) =>
    runSystemSsh(
      systemSshArgs({
        keyFile: lab.privateKeyFile,
        port: hostPort,
        knownHostsFile: knownHosts,
        destination: `${user}@127.0.0.1`,
        connectTimeoutSeconds: 15,
      }),
      command,
      { timeoutMs, ...(input !== undefined ? { input } : {}) },
    );
  return {
    lab,
    dir,
    sinkFile: path.join(dir, "mail.jsonl"),
    knownHosts,
    adminKey,
    sshVia,
    async asAdmin(command, input, timeoutMs = 60_000) {
      const r = await sshVia(
        lab.forwarded[String(o.sshPort)]!,
        admin,
        `sudo -n bash -c ${JSON.stringify(command).replace(/\$/g, "\\$")}`,
        timeoutMs,
        input,
      );
      assert.equal(r.exitCode, 0, `${command}: ${r.stderr}`);
      return r.stdout;
    },
    async stop() {
      await lab.stop({ keepConsoleLog: true });
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs `f`, recording its wall time in seconds under `name` and logging it. */
export async function timed<T>(
  timings: Record<string, number>,
  log: (line: string) => void,
  name: string,
  f: () => Promise<T>,
): Promise<T> {
  const t = Date.now();
  try {
    return await f();
  } finally {
    timings[name] = Math.round((Date.now() - t) / 1000);
    log(`${name}: ${timings[name]} s`);
  }
}
