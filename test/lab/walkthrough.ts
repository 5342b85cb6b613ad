/**
 * examples/walkthrough against the lab: the bare server (what installimage leaves), the source VPS (the lab's
 * Linode: a real sshd in its own namespace with a real Debian 12 ext4 disk, read-only as its rescue system sees it)
 * and a stack of the example whose config points at both. Used by the walkthrough's lab test and its benchmark.
 *
 *   const w = await startWalkthroughLab({ log, timed });
 *   await w.stack.up();
 *   await w.stop();
 *
 * The lab's stand-ins for the real estate, all given through the example's own stack config: the server is reached
 * through QEMU's port forwards (`connectPort`), its public network is QEMU's user network (10.0.2.0/24, DHCP), apt
 * goes through the lab's package proxy, the migrated guest's "additional IP" is 10.0.2.60 on the bridge, the Linode
 * takes a key instead of a rescue password, and the NAT guest's image is the lab kit's root filesystem. Two source
 * addresses: eth0 is on one QEMU user network, where every forwarded connection comes from 10.0.2.2 (the trusted
 * source), eth1 on a second one, where they come from 10.0.3.2 (untrusted). Mail leaves through dma to the lab's
 * SMTP sink (10.0.2.102:25 → test/lab/smtpsink.ts).
 */
import * as fs from "node:fs";
import { createStack, diagnostics, type PulumiStack, type RunResult } from "../engine/harness";
import { sh } from "../support/disks";
import { startBareServer, type BareServer, type BareServerOptions } from "./bare-server";
import { adminKeyWithHostileComment } from "./hostile";
import { LAB_NET, LAB_SMTP } from "./lab";
import { SOURCE_GUEST_ADDRESS } from "./shared";
import { SourceVps } from "./source";

/** sshd's port once Dom0Host hardened it. */
export const SSH_PORT = 2222;
/** The migrated VPS as a bridged guest with its "additional IP". */
export const MIGRATED = { name: "linode1", ip: "10.0.2.60" };
/** The NAT guest and the host name Varnish routes to it. */
export const NAT = { name: "app1", ip: "10.0.0.5", hostname: "app1.walkthrough.test" };

export interface WalkthroughLab {
  src: SourceVps;
  /** The source's disk as a read-only loop device (what the VPS's rescue system shows). */
  loop: string;
  /** sha256 of the source's disk before anything ran. */
  sourceHash: string;
  bare: BareServer;
  stack: PulumiStack;
  /** The example's `dom0` config for the lab, with `change` applied. */
  dom0Config: (change?: Record<string, unknown>) => Record<string, unknown>;
  /** The example's `nat` config for the lab, with `change` applied. */
  natConfig: (change?: Record<string, unknown>) => Record<string, unknown>;
  /** Removes the stack, stops the machine and the source VPS. */
  stop(): Promise<void>;
}

/** The bare server as the walkthrough boots it: dom0, the migrated Debian and the NAT guest fit its memory. */
export function walkthroughBareOptions(src: SourceVps): Omit<BareServerOptions, "log"> {
  return {
    sshPort: SSH_PORT,
    // dom0 1024 MiB; the migrated Debian 768 (its stock initramfs, FIELD-NOTES §10); the NAT guests 192 and less.
    memoryMiB: 3072,
    kitFiles: ["vmlinuz", "initrd.gz", "rootfs-boot.tar.gz"],
    forwards: [src.dom0Forward(SOURCE_GUEST_ADDRESS)],
    secondNic: { forwardPorts: [22, SSH_PORT, 80] },
  };
}

/** The example's stack config for the lab: the bare server, the source VPS (its disk as `loop`), the guests. */
export interface WalkthroughConfig {
  /** Every key of the example's config, as createStack and `pulumi config set` take them. */
  config: Record<string, { value: string; secret?: boolean }>;
  /** The example's `dom0` config for the lab, with `change` applied. */
  dom0Config: (change?: Record<string, unknown>) => Record<string, unknown>;
  /** The example's `nat` config (the NAT guest and its host names) for the lab, with `change` applied. */
  natConfig: (change?: Record<string, unknown>) => Record<string, unknown>;
}

export function walkthroughConfig(bare: BareServer, src: SourceVps, loop: string): WalkthroughConfig {
  const lab = bare.lab;
  const json = (v: unknown): { value: string } => ({ value: JSON.stringify(v) });
  const dom0Config = (change: Record<string, unknown> = {}): Record<string, unknown> => ({
    host: lab.host,
    port: lab.port,
    hostKey: lab.hostKey,
    uplink: "eth0",
    mac: "52:54:00:12:34:56",
    address: "dhcp",
    sshPort: SSH_PORT,
    connectPort: lab.forwarded[String(SSH_PORT)],
    // Every connection QEMU forwards comes from 10.0.2.2: the provider's and the test's own.
    trustedSources: ["10.0.2.2/32"],
    dom0MemMiB: 1024,
    dom0Vcpus: 2,
    volumeGroup: "vg0",
    natNetwork: "10.0.0.0/24",
    // The lab's image is fresh: an upgrade would only cost minutes of emulated dpkg.
    upgrade: false,
    aptProxy: LAB_NET.aptProxy,
    xenArgs: "console=com1 com1=115200,8n1",
    // tsc_early_khz: under emulation the dom0 kernel's TSC rate from Xen's pvclock was once 20 times too high after
    // a reboot on a busy machine (`tsc: Detected 42846 MHz`), and every udelay of its boot took 20 times as long.
    // QEMU's TCG clocks the guest's TSC at this machine's own rate, so the kernel is told that rate.
    dom0KernelArgs: `console=hvc0 net.ifnames=0${hostTscKhz() ? ` tsc_early_khz=${hostTscKhz()}` : ""}`,
    rebootTimeoutSeconds: 900,
    monitoring: {
      mailTo: "ops@example.org",
      relay: { host: LAB_SMTP.address, port: 25 },
      mailName: "dom0.walkthrough.test",
    },
    ...change,
  });
  const natConfig = (change: Record<string, unknown> = {}): Record<string, unknown> => ({
    name: NAT.name,
    ip: NAT.ip,
    rootSize: "64MiB",
    memoryMiB: 192,
    // Room to raise its memory live; the lab's busybox image ignores a shutdown request, so do not wait for it long.
    maxMemoryMiB: 256,
    shutdownTimeoutSeconds: 10,
    image: `${LAB_NET.kitDir}/rootfs-boot.tar.gz`,
    hostnames: [NAT.hostname],
    port: 80,
    ...change,
  });
  return {
    dom0Config,
    natConfig,
    config: {
      dom0: json(dom0Config()),
      dom0PrivateKey: { value: lab.privateKey, secret: true },
      // The admin's key carries hostile pieces in its comment (test/lab/hostile.ts): data all the way to sshd.
      admin: json({ name: "ops", authorizedKeys: [adminKeyWithHostileComment(bare.adminKey)] }),
      linode: json({
        host: src.address,
        port: 22,
        user: "root",
        hostKey: src.hostKey,
        device: loop,
        live: false,
        dom0Host: SOURCE_GUEST_ADDRESS,
        // The lab's sshd reads its own authorized_keys file.
        authorizedKeysFile: `${src.stateDir}/authorized_keys`,
      }),
      linodePrivateKey: { value: src.privateKey, secret: true },
      migrated: json({
        name: MIGRATED.name,
        ip: MIGRATED.ip,
        mac: "00:16:3e:99:00:60",
        gateway: "10.0.2.2",
        prefix: 24,
        size: "1536MiB",
        snapshotSize: "256MiB",
        memoryMiB: 768,
        nameservers: ["10.0.2.3"],
        bootTimeoutSeconds: 900,
      }),
      nat: json(natConfig()),
      frontend: json({ cacheSize: "64MiB" }),
    },
  };
}

export async function startWalkthroughLab(o: {
  log: (line: string) => void;
  timed: <R>(name: string, f: () => Promise<R>) => Promise<R>;
}): Promise<WalkthroughLab> {
  const src = await SourceVps.start();
  let loop = "";
  let bare: BareServer | undefined;
  try {
    loop = sh(`losetup -f --show -r ${src.diskImage}`).trim();
    const sourceHash = sh(`sha256sum < ${src.diskImage}`);
    bare = await o.timed("boot", () => startBareServer({ ...walkthroughBareOptions(src), log: o.log }));
    const started = bare;
    const { config, dom0Config, natConfig } = walkthroughConfig(started, src, loop);
    const stack = await createStack({
      programDir: "examples/walkthrough",
      linkPackage: true,
      timeoutMs: 60 * 60_000,
      config,
    });
    return {
      src,
      loop,
      sourceHash,
      bare: started,
      stack,
      dom0Config,
      natConfig,
      stop: async () => {
        try {
          await stack.remove();
          await started.stop();
        } finally {
          sh(`losetup -d ${loop} || true`);
          await src.stop();
        }
      },
    };
  } catch (e) {
    await bare?.stop();
    if (loop) sh(`losetup -d ${loop} || true`);
    await src.stop();
    throw e;
  }
}

/** What one resource operation cost, from the provider's debug line at its end (provider/ssh/meter.ts). */
export interface OperationCost {
  kind: string;
  id: string;
  op: string;
  roundTrips: number;
  handshakes: number;
  /** Handshakes by login, `user@host:port`. */
  logins: Record<string, number>;
}

/** Every resource operation's cost line in a run's event log. */
export function operationCosts(run: RunResult): OperationCost[] {
  const out: OperationCost[] = [];
  for (const d of diagnostics(run, "debug")) {
    const m =
      /^\[(\w+) ([^\]]+)\] (create|read|update|delete): (\d+) remote round trips, (\d+) SSH handshakes(?: \(([^)]*)\))?/.exec(
        d.message,
      );
    if (!m) continue;
    const logins: Record<string, number> = {};
    for (const part of (m[6] ?? "").split(", ").filter(Boolean)) {
      const [login, n] = part.split(" ");
      logins[login!] = Number(n);
    }
    out.push({
      kind: m[1]!,
      id: m[2]!,
      op: m[3]!,
      roundTrips: Number(m[4]),
      handshakes: Number(m[5]),
      logins,
    });
  }
  return out;
}

/** This machine's TSC rate in kHz (the rate QEMU's TCG gives the lab's guests), from /proc/cpuinfo; 0 if unknown. */
export function hostTscKhz(): number {
  try {
    const m = /^cpu MHz\s*:\s*([0-9.]+)$/m.exec(fs.readFileSync("/proc/cpuinfo", "utf8"));
    return m ? Math.round(Number(m[1]) * 1000) : 0;
  } catch {
    return 0;
  }
}
