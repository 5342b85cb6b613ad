/**
 * Migration speed: a 4 GiB ext4 source about 45 % used (a Debian system plus incompressible data), its free blocks
 * full of stale random data, copied over a link shaped to 1 Gbit/s with tc between network namespaces: the source
 * VPS is a real sshd in its own namespace, the receiving host ("dom0") a real sshd on this machine writing into a
 * loop device as the dom0 writes into an LV. QEMU's emulated network is kept out: the measure is the method.
 *
 * In the same run: the walkthrough's `ssh -C … dd | dd` into an image, then `dd` of the image into the target; a
 * plain `ssh … dd | dd` straight into the target; LinodeMigration's transfer (through its provider entry points);
 * and the resume after the transfer was cut at half its data. Figures: each time, each ratio to the walkthrough,
 * LinodeMigration's ratio to the physical limit (its bytes on the wire after compression over the link rate), the
 * resume's time and the share of the data it sent, and first what the shaped link itself carries (one TCP stream,
 * one ssh session, against its rate), which tells the method's cost from the link's. Both ends share this machine's
 * cores: a real dom0 and VPS each have their own, so the figures here are the pessimistic side.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import {
  checkInputs,
  runtime,
  setLogSink,
  setSharedPool,
  SshPool,
  stateDir,
  VERSION,
  type LinodeMigrationOutputs,
} from "../../provider";
import { labCacheDir, repoRoot } from "../lab/lab";
import { Disks, randomInto, sh } from "../support/disks";
import { parseRate, ShapedLink } from "../support/link";
import { shellQuote } from "../../provider/core/shell";
import { generateKey, startSshd } from "../support/sshd";

const MiB = 2 ** 20;
const SIZE_MIB = 4096;
const RATE = "1gbit";
const CHUNK = 4 * MiB;

type Print = (name: string, value: number, unit: string) => void;

/** The 4 GiB source, built once and kept in the cache (`<cache>/bench/`): about 45 % used, stale free blocks. */
function sourceImage(log: (l: string) => void): string {
  const dir = path.join(path.dirname(labCacheDir()), "bench");
  const img = path.join(dir, "migration-source-v1.img");
  if (fs.existsSync(`${img}.done`)) return img;
  fs.mkdirSync(dir, { recursive: true });
  log(`building ${img} (4 GiB: stale random data, ext4, a Debian system, incompressible data)`);
  const base = sh(`bash ${repoRoot()}/test/lab/images/debootstrap.sh`).trim().split("\n").pop()!;
  sh(`rm -f ${img} && truncate -s 0 ${img}`);
  randomInto(img, SIZE_MIB, "bench-stale");
  sh(`mkfs.ext4 -q -F -E nodiscard -L bench-src ${img}`);
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), "xe-bench-mnt-"));
  sh(`mount -o loop ${img} ${mnt}`);
  try {
    sh(`cp -a ${base} ${mnt}/rootfs && mkdir ${mnt}/data && sync`);
    // Incompressible data (media, archives, databases' compressed pages) up to 45 % of the disk.
    for (let i = 0; ; i++) {
      const df = sh(`df -B1 --output=used,size ${mnt} | tail -n1`).trim().split(/\s+/).map(Number);
      if (df[0]! >= 0.45 * df[1]!) break;
      const f = `${mnt}/data/blob${i}.bin`;
      sh(`truncate -s 0 ${f}`);
      randomInto(f, 64, `bench-data-${i}`);
    }
    sh(`sync`);
  } finally {
    sh(`umount ${mnt}`);
    fs.rmdirSync(mnt);
  }
  fs.writeFileSync(`${img}.done`, "");
  return img;
}

/** Busy and total CPU ticks of the whole machine (every process, ours and anyone else's) from /proc/stat. */
function cpuTicks(): { busy: number; total: number } {
  const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - (f[4] ?? 0), total };
}

function timed(cmd: string): number {
  const t = Date.now();
  const r = spawnSync("bash", ["-euo", "pipefail", "-c", cmd], { stdio: ["ignore", "ignore", "pipe"] });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr.toString().slice(-500)}`);
  return (Date.now() - t) / 1000;
}

export async function benchMigration(
  print: Print,
  log: (l: string) => void = (l) => console.error(l),
): Promise<void> {
  const img = sourceImage(log);
  const dir = fs.mkdtempSync(path.join("/var/tmp", "xe-bench-migration-"));
  const disks = new Disks(dir);
  const key = await generateKey(dir, "client");
  const link = new ShapedLink(`xebm${process.pid % 100000}`, `10.233.${(process.pid % 200) + 20}`, RATE);
  await link.up();
  const source = await startSshd({
    authorizedKeys: [key.publicKey],
    netns: link.netns,
    listen: link.nsAddress,
    machineId: `b3c40000000000000000000000${String(process.pid).padStart(6, "0")}`,
  });
  const dom0 = await startSshd({ authorizedKeys: [key.publicKey] });
  const pool = new SshPool();
  setSharedPool(pool);
  // The resource's own messages (progress lines) are not the benchmark's output; XEN_ESTATE_BENCH_TRACE names a
  // file that gets them, each with the milliseconds since the bench began (where a transfer's time goes).
  const trace = process.env.XEN_ESTATE_BENCH_TRACE;
  const began = Date.now();
  setLogSink(
    trace
      ? (_severity, message) => fs.appendFileSync(trace, `${Date.now() - began} ${message}\n`)
      : () => undefined,
  );
  try {
    const srcDev = disks.loop(img, true);
    const tgtFile = path.join(dir, "target.img");
    const fresh = (): string => {
      sh(`rm -f ${tgtFile} && truncate -s ${SIZE_MIB}M ${tgtFile}`);
      return disks.loop(tgtFile);
    };
    // Warm the source's page cache so every method starts alike.
    sh(`dd if=${srcDev} of=/dev/null bs=4M status=none`);
    const kh = path.join(dir, "known_hosts");
    fs.writeFileSync(kh, `${link.nsAddress} ${source.hostKey.publicKey.split(" ").slice(0, 2).join(" ")}\n`);
    const ssh = (opts: string) =>
      `ssh -F /dev/null ${opts} -i ${key.file} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=${kh} root@${link.nsAddress}`;

    // 0. What the shaped link itself carries: one TCP stream, then one ssh session (its cipher and framing), each
    // of zeros the source does not read from a disk. They tell the method's cost from the link's.
    const CAL = 512 * MiB;
    log("the link: one TCP stream, then one ssh session");
    const port = 40000 + (process.pid % 20000);
    const tcp = Number(
      sh(
        `ip netns exec ${link.netns} python3 -c ${shellQuote(SEND_ZEROS)} ${link.nsAddress} ${port} ${CAL} & ` +
          `python3 -c ${shellQuote(RECEIVE)} ${link.nsAddress} ${port}; wait`,
      ).trim(),
    );
    const sshCal = timed(`${ssh("")} "head -c ${CAL} /dev/zero" > /dev/null`);
    const rate = parseRate(RATE) / 8;
    print("migration.link.tcp.vs-rate", round(CAL / tcp / rate, 3), "ratio");
    print("migration.link.ssh.vs-rate", round(CAL / sshCal / rate, 3), "ratio");

    // 1. The walkthrough: ssh -C … dd | dd into an image, then the image into the target.
    let tgt = fresh();
    const image = path.join(dir, "walkthrough.img");
    log("walkthrough: ssh -C … dd | dd, then dd into the target");
    const walkCopy = timed(
      `${ssh("-C")} "dd if=${srcDev} bs=1M status=none" | dd of=${image} bs=1M status=none conv=fsync`,
    );
    const walkInto = timed(`dd if=${image} of=${tgt} bs=1M status=none conv=fsync`);
    const walk = walkCopy + walkInto;
    fs.rmSync(image);
    disks.detach(tgt);
    print("migration.walkthrough.seconds", round(walk), "s");

    // 2. A plain ssh … dd | dd straight into the target.
    tgt = fresh();
    log("plain: ssh … dd | dd into the target");
    const plain = timed(
      `${ssh("")} "dd if=${srcDev} bs=1M status=none" | dd of=${tgt} bs=1M status=none conv=fsync`,
    );
    disks.detach(tgt);
    print("migration.plain.seconds", round(plain), "s");
    print("migration.plain.vs-walkthrough", round(plain / walk, 3), "ratio");

    // 3. LinodeMigration.
    const raw = (device: string): Record<string, unknown> => {
      const { inputs, failures } = checkInputs("LinodeMigration", {
        connection: { host: dom0.host, port: dom0.port, hostKey: dom0.hostKey.fingerprint },
        credentials: { privateKey: key.privateKey },
        xenEstateVersion: VERSION,
        source: {
          connection: { host: link.nsAddress, hostKey: source.hostKey.fingerprint },
          credentials: { privateKey: key.privateKey },
          device: srcDev,
          authorizedKeysFile: source.authorizedKeysFile,
        },
        target: { device },
        fixups: false,
        grow: false,
      });
      if (failures.length > 0) throw new Error(failures.map((f) => f.message).join("\n"));
      return inputs!;
    };
    tgt = fresh();
    log("LinodeMigration");
    let t0 = Date.now();
    const cpu0 = cpuTicks();
    const full = (await runtime.create("LinodeMigration", raw(tgt))).outs as LinodeMigrationOutputs;
    const total = (Date.now() - t0) / 1000;
    const cpu1 = cpuTicks();
    // How busy the machine's cores were meanwhile (near 1: the copy waited for CPU, not for the link).
    print(
      "migration.machine.cpu-busy",
      round((cpu1.busy - cpu0.busy) / (cpu1.total - cpu0.total), 2),
      "ratio",
    );
    print("migration.machine.load-average", round(os.loadavg()[0]!, 1), "processes");
    const s = full.lastTransfer!;
    const limit = (s.wireBytes * 8) / parseRate(RATE);
    print("migration.linode.transfer.seconds", round(s.seconds), "s");
    print("migration.linode.total.seconds", round(total), "s");
    print("migration.linode.vs-walkthrough", round(s.seconds / walk, 3), "ratio");
    print("migration.linode.total.vs-walkthrough", round(total / walk, 3), "ratio");
    print("migration.linode.data.bytes", s.dataBytes, "bytes");
    print("migration.linode.wire.bytes", s.wireBytes, "bytes");
    print("migration.physical-limit.seconds", round(limit), "s");
    print("migration.linode.vs-physical-limit", round(s.seconds / limit, 3), "ratio");
    await runtime.delete("LinodeMigration", "id", full as unknown as Record<string, unknown>);
    disks.detach(tgt);

    // 4. Resume: the copy cut when half its data has landed, then run again.
    tgt = fresh();
    const journal = path.join(stateDir(path.basename(tgt)), "journal");
    const zero = createHash("sha256").update(Buffer.alloc(CHUNK)).digest("hex");
    let cutAt = 0;
    const watcher = setInterval(() => {
      if (cutAt || !fs.existsSync(journal)) return;
      const landed = fs
        .readFileSync(journal, "utf8")
        .split("\n")
        .filter((l) => l.includes(" ") && !l.endsWith(zero)).length;
      if (landed * CHUNK >= 0.5 * s.dataBytes) {
        const pid = sh(`pgrep -f -- 'migration-${path.basename(tgt)}/key' || true`)
          .trim()
          .split("\n")[0];
        if (pid) {
          process.kill(Number(pid), "SIGKILL");
          cutAt = landed;
        }
      }
    }, 100);
    log("LinodeMigration, cut at half its data");
    let partial: Record<string, unknown> | undefined;
    try {
      await runtime.create("LinodeMigration", raw(tgt));
    } catch (err) {
      partial = (err as { properties?: Record<string, unknown> }).properties;
    } finally {
      clearInterval(watcher);
    }
    if (!partial || !cutAt) throw new Error("the copy to resume was not cut");
    log("resuming");
    t0 = Date.now();
    const resumed = (await runtime.update("LinodeMigration", "id", partial, raw(tgt)))
      .outs as LinodeMigrationOutputs;
    const resumeTotal = (Date.now() - t0) / 1000;
    const r = resumed.lastTransfer!;
    print("migration.resume.seconds", round(resumeTotal), "s");
    print("migration.resume.transfer.seconds", round(r.seconds), "s");
    print("migration.resume.data-fraction", round(r.dataBytes / s.dataBytes, 3), "ratio");
    print("migration.resume.wire-fraction", round(r.wireBytes / s.wireBytes, 3), "ratio");
    await runtime.delete("LinodeMigration", "id", resumed as unknown as Record<string, unknown>);
    disks.detach(tgt);
  } finally {
    setLogSink(undefined);
    await pool.close();
    setSharedPool(undefined);
    disks.cleanup();
    await source.stop();
    await dom0.stop();
    await link.down();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Listens on ADDRESS:PORT (argv) in the source's namespace, sends N zero bytes (argv) to the first client. */
const SEND_ZEROS = [
  "import socket, sys",
  "s = socket.create_server((sys.argv[1], int(sys.argv[2])))",
  "c, _ = s.accept()",
  "n = int(sys.argv[3]); b = bytes(1 << 20)",
  "while n > 0:",
  "    c.sendall(b[: min(n, len(b))]); n -= len(b)",
  "c.close()",
].join("\n");

/**
 * Connects to ADDRESS:PORT (argv), retrying while the sender starts, reads until the sender closes, and prints the
 * seconds from the connection to the end.
 */
const RECEIVE = [
  "import socket, sys, time",
  "for _ in range(100):",
  "    try:",
  "        c = socket.create_connection((sys.argv[1], int(sys.argv[2]))); break",
  "    except OSError:",
  "        time.sleep(0.05)",
  "t = time.monotonic()",
  "while c.recv(1 << 20):",
  "    pass",
  "print(time.monotonic() - t)",
].join("\n");

function round(v: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
