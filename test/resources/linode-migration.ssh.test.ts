/**
 * LinodeMigration through its provider entry points against two real sshds: the "dom0" is this machine, the
 * "source VPS" is an sshd in its own network namespace behind a link shaped with tc, with its own machine id.
 * Disks are ext4 (and ext3) filesystems on loop devices, with stale data in every place where stale data could leak:
 * the source's free blocks (a deleted file) and the whole target. The dom0 pulls from the source itself.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  checkInputs,
  FIXUP_BACKUPS,
  InputError,
  RefusedError,
  RemoteHost,
  runtime,
  setLogSink,
  setSharedPool,
  SshPool,
  stateDir,
  verifyScript,
  VERSION,
  type CopyPlan,
  type LinodeMigrationOutputs,
} from "../../provider";
import { buildSourceImage } from "../lab/source";
import { Disks, occurrences, sh } from "../support/disks";
import { ShapedLink } from "../support/link";
import { generateKey, KeyPair, startSshd, Sshd } from "../support/sshd";

const KIND = "LinodeMigration";
const MiB = 2 ** 20;

let dir: string;
let key: KeyPair;
let link: ShapedLink;
let source: Sshd;
let dom0: Sshd;
let pool: SshPool;
let disks: Disks;
let dom0Host: RemoteHost;
/** The source's own sessions: its mounts live in its own mount namespace, as on a real VPS. */
let srcHost: () => RemoteHost;
const progress: string[] = [];
const logged: string[] = [];

const losetup = (file: string, readOnly = false): string => disks.loop(file, readOnly);
const detach = (dev: string): void => disks.detach(dev);
const makeSource = (name: string, sizeMiB: number, dataMiB: number, fsType = "ext4"): string =>
  disks.source(name, sizeMiB, dataMiB, { fsType });
const makeTarget = (name: string, sizeMiB: number): string => disks.target(name, sizeMiB);
const count = occurrences;

function raw(over: Record<string, unknown>): Record<string, unknown> {
  const { source: s, ...rest } = over as { source?: Record<string, unknown> };
  return {
    connection: { host: dom0.host, port: dom0.port, hostKey: dom0.hostKey.fingerprint },
    credentials: { privateKey: key.privateKey },
    xenEstateVersion: VERSION,
    fixups: false,
    ...rest,
    source: {
      connection: { host: link.nsAddress, hostKey: source.hostKey.fingerprint },
      credentials: { privateKey: key.privateKey },
      authorizedKeysFile: source.authorizedKeysFile,
      ...s,
    },
  };
}

function inputs(over: Record<string, unknown>): Record<string, unknown> {
  const { inputs: i, failures } = checkInputs(KIND, raw(over));
  assert.deepEqual(
    failures.map((f) => f.message),
    [],
  );
  return i!;
}

async function create(over: Record<string, unknown>): Promise<LinodeMigrationOutputs> {
  const r = await runtime.create(KIND, inputs(over));
  return r.outs as LinodeMigrationOutputs;
}

function planOf(o: LinodeMigrationOutputs): CopyPlan {
  return {
    key: o.target.device.replace(/^\/dev\//, ""),
    sourceDevice: o.source.device,
    method: o.method,
    sourceBytes: o.sourceBytes,
    chunkBytes: o.transfer.chunkBytes,
    compressionLevel: o.transfer.compressionLevel,
    targetDevice: o.target.device,
    identity: "",
    live: false,
  };
}

function sha(file: string, bytes: number): string {
  return sh(`head -c ${bytes} ${file} | sha256sum | cut -d' ' -f1`).trim();
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-linode-"));
  disks = new Disks(dir);
  key = await generateKey(dir, "client");
  const n = (process.pid % 200) + 20;
  link = new ShapedLink(`xelm${process.pid % 100000}`, `10.231.${n}`, "400mbit");
  await link.up();
  source = await startSshd({
    authorizedKeys: [key.publicKey],
    netns: link.netns,
    listen: link.nsAddress,
    machineId: `0123456789abcdef0123456789${String(process.pid).padStart(6, "0")}`,
  });
  dom0 = await startSshd({ authorizedKeys: [key.publicKey] });
  pool = new SshPool();
  setSharedPool(pool);
  dom0Host = pool.host(
    (() => {
      const { Checker, resolveConnection } = require("../../provider") as typeof import("../../provider");
      return resolveConnection(
        new Checker(),
        { host: dom0.host, port: dom0.port, hostKey: dom0.hostKey.fingerprint },
        { privateKey: key.privateKey },
      )!;
    })(),
  );
  srcHost = () => {
    const { Checker, resolveConnection } = require("../../provider") as typeof import("../../provider");
    return pool.host(
      resolveConnection(
        new Checker(),
        { host: link.nsAddress, hostKey: source.hostKey.fingerprint },
        { privateKey: key.privateKey },
      )!,
    );
  };
  setLogSink((severity, message, opts) => {
    if (opts.ephemeral) progress.push(message);
    else logged.push(`${severity}: ${message}`);
  });
});

after(async () => {
  setLogSink(undefined);
  // In this order: connections closed while the link still carries their goodbyes, then servers, then the link.
  await pool?.close();
  setSharedPool(undefined);
  disks?.cleanup();
  await source?.stop();
  await dom0?.stop();
  await link?.down();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe("a migration of an ext4 disk", { timeout: 10 * 60 * 1000 }, () => {
  let src: string;
  let srcDev: string;
  let tgt: string;
  let tgtDev: string;
  let outs: LinodeMigrationOutputs;

  before(() => {
    src = makeSource("xe-src1", 96, 24);
    srcDev = losetup(src, true);
    tgt = makeTarget("xe-tgt1", 128);
    tgtDev = losetup(tgt);
  });

  test("copies used blocks only: the source's data arrives, its deleted file and the target's old data do not", async () => {
    assert.ok(count("XE-DELETED-SECRET", src) > 0, "the source's free blocks hold the deleted file");
    assert.ok(count("XE-STALE-TARGET", tgt) > 0);
    progress.length = 0;
    outs = await create({
      source: { device: srcDev },
      target: { device: tgtDev },
      transfer: { chunkSize: "1MiB" },
      grow: false,
    });
    assert.equal(outs.phase, "migrated");
    assert.equal(outs.method, "ext");
    assert.equal(outs.sourceBytes, 96 * MiB);
    const s = outs.lastTransfer!;
    // The 24 MiB file and the metadata travel as data; the rest of the disk as zero records.
    assert.ok(s.dataBytes >= 24 * MiB && s.dataBytes < 40 * MiB, `data ${s.dataBytes}`);
    assert.ok(s.zeroBytes > 50 * MiB, `zero ${s.zeroBytes}`);
    assert.equal(s.dataBytes + s.zeroBytes + s.skippedBytes, 96 * MiB);
    assert.ok(s.wireBytes > 20 * MiB && s.wireBytes < s.dataBytes + MiB, `wire ${s.wireBytes}`);
    sh(`sync`);
    assert.equal(count("XE-DELETED-SECRET", tgtDev), 0, "nothing the source had deleted was copied");
    assert.equal(
      Number(sh(`head -c ${96 * MiB} ${tgtDev} | grep -a -c XE-STALE-TARGET || true`).trim()),
      0,
      "no stale data of the target survives in the copied range",
    );
    assert.match(sh(`e2fsck -fn ${tgtDev} 2>&1`), /xe-src1: \d+\/\d+ files/);
    assert.equal(
      sh(`debugfs -R 'cat /root/data.bin' ${tgtDev} 2>/dev/null | sha256sum`),
      sh(`debugfs -R 'cat /root/data.bin' ${srcDev} 2>/dev/null | sha256sum`),
    );
    assert.ok(
      progress.some((m) => /copying [\d.]+\w+ of 96MiB \(\d+%\), [\d.]+\w+\/s, ETA/.test(m)),
      progress.join("\n"),
    );
  });

  test("leaves no credential behind: the dom0's key is gone from the source, its key pair from the dom0", () => {
    assert.doesNotMatch(fs.readFileSync(source.authorizedKeysFile, "utf8"), /xen-estate-migration/);
    assert.equal(fs.existsSync(`/run/xen-estate/migration-${path.basename(tgtDev)}`), false);
  });

  test("a chunk that differs on the target fails verification, naming the chunk", async () => {
    sh(`printf 'XE-CORRUPT' | dd of=${tgtDev} bs=1 seek=${5 * MiB + 100} conv=notrunc status=none; sync`);
    await assert.rejects(
      dom0Host.refusable(verifyScript(planOf(outs)), { summary: "verify" }),
      /XE-MISMATCH chunk 5 \(bytes 5242880-6291456\) of the target holds sha256 [0-9a-f]{64}, the source sent [0-9a-f]{64} \(1 chunk\(s\) differ\)/,
    );
    const journal = fs.readFileSync(path.join(stateDir(path.basename(tgtDev)), "journal"), "utf8");
    assert.doesNotMatch(
      journal,
      /^5 /m,
      "the journal no longer says chunk 5 landed: the next copy sends it again",
    );
    assert.match(journal, /^4 /m);
  });

  test("a chunk corrupted on the way fails the receiver, naming the chunk, before it is written", async () => {
    const state = stateDir(path.basename(tgtDev));
    const data = Buffer.alloc(MiB, 7);
    const wrong = Buffer.alloc(32, 1);
    const hdr = Buffer.alloc(45);
    hdr.write("D", 0, "latin1");
    hdr.writeBigUInt64BE(0n, 1);
    hdr.writeUInt32BE(MiB, 9);
    wrong.copy(hdr, 13);
    const before = sha(tgtDev, MiB);
    const r = await dom0Host.exec(
      `python3 ${state}/chunks.py receive ${tgtDev} ${96 * MiB} ${MiB} ${dir}/j ${dir}/h`,
      { stdin: Buffer.concat([Buffer.from("XEM2\n"), hdr, data]), allowFailure: true },
    );
    assert.equal(r.exitCode, 1);
    assert.match(
      r.stderr,
      /XE-MISMATCH chunk 0 \(bytes 0-1048576\): the source sent sha256 0101.*, [0-9a-f]{64} arrived/,
    );
    assert.equal(sha(tgtDev, MiB), before, "the corrupted chunk was not written");
  });

  test("a second run after the migration finished copies nothing and keeps the disk as it is", async () => {
    const before = sha(tgtDev, 96 * MiB);
    const r = await runtime.update(
      KIND,
      "id",
      outs as unknown as Record<string, unknown>,
      inputs({
        source: { device: srcDev },
        target: { device: tgtDev },
        transfer: { chunkSize: "1MiB" },
        grow: true,
      }),
    );
    assert.equal((r.outs as LinodeMigrationOutputs).phase, "migrated");
    assert.equal(sha(tgtDev, 96 * MiB), before);
    assert.ok(logged.some((l) => /grow changed, but the migration is finished/.test(l)));
  });

  test("destroy removes the journal from the dom0 and leaves the source as it was", async () => {
    const before = sh(`sha256sum < ${src}`);
    await runtime.delete(KIND, "id", outs as unknown as Record<string, unknown>);
    assert.equal(fs.existsSync(stateDir(path.basename(tgtDev))), false);
    assert.equal(sh(`sha256sum < ${src}`), before);
  });
});

describe(
  "bad input is refused before anything is copied, naming the property",
  { timeout: 5 * 60 * 1000 },
  () => {
    let srcDev: string;
    let small: string;
    let full: string;
    let empty: string;
    const untouched: Record<string, string> = {};

    before(() => {
      srcDev = losetup(makeSource("xe-src2", 64, 4), true);
      small = losetup(makeTarget("xe-small", 32));
      full = losetup(makeTarget("xe-full", 96));
      sh(`mkfs.ext4 -q -F -L somebodys ${full}`);
      empty = losetup(makeTarget("xe-empty", 96));
      for (const d of [small, full, empty]) untouched[d] = sha(d, 8 * MiB);
    });

    async function refused(over: Record<string, unknown>, property: RegExp): Promise<void> {
      await assert.rejects(create(over), (err: Error) => {
        assert.ok(err instanceof InputError || err instanceof RefusedError, `${err.name}: ${err.message}`);
        assert.match(err.message, property);
        return true;
      });
      for (const [d, h] of Object.entries(untouched)) assert.equal(sha(d, 8 * MiB), h, `${d} was written`);
    }

    test("a source device that is not a block device", async () => {
      const file = `/dev/shm/xe-linode-${process.pid}.img`;
      fs.copyFileSync(path.join(dir, "xe-src2.img"), file);
      try {
        await refused(
          { source: { device: file }, target: { device: empty } },
          /`source\.device` must be a block device \(it is a regular file\)/,
        );
      } finally {
        fs.rmSync(file, { force: true });
      }
    });

    test("a target smaller than the source's filesystem", () =>
      refused(
        { source: { device: srcDev }, target: { device: small } },
        /`target\.device` must hold at least the source's filesystem \(64MiB\); it has 32MiB/,
      ));

    test("a target that holds data", () =>
      refused(
        { source: { device: srcDev }, target: { device: full } },
        /`target\.device` holds a ext4 filesystem \(UUID [0-9a-f-]+\) that this migration did not copy/,
      ));

    test("the same machine as source and target", () =>
      refused(
        {
          source: {
            device: srcDev,
            connection: { host: dom0.host, port: dom0.port, hostKey: dom0.hostKey.fingerprint },
            authorizedKeysFile: dom0.authorizedKeysFile,
          },
          target: { device: empty },
        },
        /`source\.connection` reaches the dom0 itself \(machine-id:[0-9a-f]+\)/,
      ));

    test("a source that is mounted (not in rescue mode)", async () => {
      const mnt = path.join(dir, "xe-src2-ro");
      fs.mkdirSync(mnt, { recursive: true });
      await srcHost().script(`mount -o ro ${srcDev} ${mnt}`);
      try {
        await refused(
          { source: { device: srcDev }, target: { device: empty } },
          /`source\.device` \/dev\/loop\d+ is in use on the source \(mounted at [^)]+\)/,
        );
      } finally {
        await srcHost().script(`umount ${mnt}`);
      }
    });
  },
);

describe("resume and delta", { timeout: 10 * 60 * 1000 }, () => {
  let img: string;
  let srcDev: string;
  let tgtDev: string;
  let first: LinodeMigrationOutputs;

  before(async () => {
    img = makeSource("xe-src3", 96, 48);
    srcDev = losetup(img, true);
    tgtDev = losetup(makeTarget("xe-tgt3", 96));
    // Slow enough to cut in the middle: 48 MiB of incompressible data at 60 Mbit/s take about 7 s.
    await pool.close();
    await source.stop();
    await link.down();
    link = new ShapedLink(link.name, link.hostAddress.replace(/\.1$/, ""), "60mbit");
    await link.up();
    source = await startSshd({
      authorizedKeys: [key.publicKey],
      netns: link.netns,
      listen: link.nsAddress,
      machineId: `0123456789abcdef0123456789${String(process.pid).padStart(6, "0")}`,
    });
  });

  test("a copy cut in the middle resumes sending only the chunks that did not land", async () => {
    const over = { source: { device: srcDev }, target: { device: tgtDev }, transfer: { chunkSize: "1MiB" } };
    const journal = path.join(stateDir(path.basename(tgtDev)), "journal");
    let cut = false;
    const watcher = setInterval(() => {
      if (cut || !fs.existsSync(journal)) return;
      const landed = fs.readFileSync(journal, "utf8").split("\n").filter(Boolean).length;
      if (landed >= 40) {
        cut = true;
        // The dom0's ssh to the source dies (as when the link drops): its pid, found by this copy's own key path.
        const pid = sh(`pgrep -f -- 'migration-${path.basename(tgtDev)}/key' || true`)
          .trim()
          .split("\n")[0];
        if (pid) process.kill(Number(pid), "SIGKILL");
      }
    }, 100);
    let partial: Record<string, unknown> | undefined;
    try {
      await runtime.create(KIND, inputs(over));
      assert.fail("the cut copy did not fail");
    } catch (err) {
      partial = (err as { properties?: Record<string, unknown> }).properties;
      assert.match((err as Error).message, /the copy stopped|XE-TRUNCATED/);
    } finally {
      clearInterval(watcher);
    }
    assert.ok(cut, "the copy was cut");
    assert.equal(
      (partial as { phase?: string } | undefined)?.phase,
      "copying",
      "the engine records the partial migration",
    );
    assert.doesNotMatch(
      fs.readFileSync(source.authorizedKeysFile, "utf8"),
      /xen-estate-migration/,
      "no key left after a failed copy",
    );
    const r = await runtime.update(KIND, "id", partial!, inputs(over));
    first = r.outs as LinodeMigrationOutputs;
    const s = first.lastTransfer!;
    const used = first.sourceUsedBytes!;
    assert.equal(first.phase, "migrated");
    assert.ok(s.skippedBytes >= 30 * MiB, `skipped ${s.skippedBytes}`);
    assert.ok(s.dataBytes < 0.55 * used, `resume sent ${s.dataBytes} of ${used} bytes of data`);
    assert.match(sh(`e2fsck -fn ${tgtDev} 2>&1`), /xe-src3: \d+\/\d+ files/);
    assert.equal(
      sh(`debugfs -R 'cat /root/data.bin' ${tgtDev} 2>/dev/null | sha256sum`),
      sh(`debugfs -R 'cat /root/data.bin' ${srcDev} 2>/dev/null | sha256sum`),
    );
  });

  test("a live seed copy, then a final copy that sends only what changed on the source", async () => {
    await runtime.delete(KIND, "id", first as unknown as Record<string, unknown>);
    const tgt2 = losetup(makeTarget("xe-tgt4", 96));
    const mnt = path.join(dir, "xe-src3-live");
    fs.mkdirSync(mnt, { recursive: true });
    // The VPS still runs from its disk: mounted, a seed copy is allowed when declared.
    await srcHost().script(`mount -o ro ${srcDev} ${mnt}`);
    let seed: LinodeMigrationOutputs;
    try {
      await assert.rejects(
        create({ source: { device: srcDev }, target: { device: tgt2 }, transfer: { chunkSize: "1MiB" } }),
        /is in use on the source/,
      );
      seed = await create({
        source: { device: srcDev, live: true },
        target: { device: tgt2 },
        transfer: { chunkSize: "1MiB" },
      });
    } finally {
      await srcHost().script(`umount ${mnt}`);
    }
    assert.equal(seed.phase, "seeded");
    assert.deepEqual(seed.fixedFiles, []);
    // The VPS keeps working until it is shut down: 3 MiB change.
    detach(srcDev);
    const rw = losetup(img);
    sh(`mount ${rw} ${mnt}`);
    try {
      sh(`head -c ${3 * MiB} /dev/urandom > ${mnt}/root/new.bin && sync`);
    } finally {
      sh(`umount ${mnt}`);
    }
    detach(rw);
    srcDev = losetup(img, true);
    const r = await runtime.update(
      KIND,
      "id",
      seed as unknown as Record<string, unknown>,
      inputs({ source: { device: srcDev }, target: { device: tgt2 }, transfer: { chunkSize: "1MiB" } }),
    );
    const fin = r.outs as LinodeMigrationOutputs;
    assert.equal(fin.phase, "migrated");
    assert.ok(fin.lastTransfer!.dataBytes < 10 * MiB, `the delta sent ${fin.lastTransfer!.dataBytes} bytes`);
    assert.ok(fin.lastTransfer!.skippedBytes > 80 * MiB);
    assert.equal(
      sh(`debugfs -R 'cat /root/new.bin' ${tgt2} 2>/dev/null | sha256sum`),
      sh(`debugfs -R 'cat /root/new.bin' ${srcDev} 2>/dev/null | sha256sum`),
    );
    await runtime.delete(KIND, "id", fin as unknown as Record<string, unknown>);
  });
});

describe("the relay route and ext3", { timeout: 10 * 60 * 1000 }, () => {
  test("relayed through the provider, an ext3 source arrives, converted to ext4 and grown", async () => {
    const srcDev = losetup(makeSource("xe-src5", 64, 8, "ext3"), true);
    const tgtDev = losetup(makeTarget("xe-tgt5", 96));
    const o = await create({
      source: { device: srcDev },
      target: { device: tgtDev },
      transfer: { route: "relay" },
      convertToExt4: true,
      fixups: {},
    });
    assert.equal(o.phase, "migrated");
    assert.ok(o.lastTransfer!.dataBytes >= 8 * MiB);
    assert.match(sh(`blkid -p -o value -s TYPE ${tgtDev}`), /^ext4$/m);
    assert.match(sh(`dumpe2fs -h ${tgtDev} 2>/dev/null | grep features`), /extent/);
    assert.equal(
      Number(sh(`dumpe2fs -h ${tgtDev} 2>/dev/null | sed -n 's/^Block count: *//p'`)) *
        Number(sh(`dumpe2fs -h ${tgtDev} 2>/dev/null | sed -n 's/^Block size: *//p'`)),
      96 * MiB,
      "the filesystem fills the target",
    );
    assert.equal(count("XE-STALE-TARGET", tgtDev), 0, "the grown part was zeroed first");
    assert.match(sh(`debugfs -R 'cat /etc/fstab' ${tgtDev} 2>/dev/null`), /^\/dev\/xvda \/ ext4 /m);
    await runtime.delete(KIND, "id", o as unknown as Record<string, unknown>);
  });
});

describe("guest fixups on the lab's Debian source disk", { timeout: 10 * 60 * 1000 }, () => {
  test("fstab, GRUB for pvgrub2, the network, resolvers and hostname change, each kept for revert.sh", async () => {
    const image = buildSourceImage();
    const img = path.join(dir, "debian.img");
    sh(`cp --sparse=always ${image.dir}/disk.img ${img}`);
    // This VPS's initramfs has no Xen front ends (MODULES=list with an empty list): the fixups must add them.
    const kver = image.kernelVersion;
    disks.withMount(
      img,
      (m) => {
        sh(
          `sed -i 's/^MODULES=.*/MODULES=list/' ${m}/etc/initramfs-tools/initramfs.conf && : > ${m}/etc/initramfs-tools/modules`,
        );
        for (const d of ["dev", "proc", "sys"]) sh(`mount --bind /${d} ${m}/${d}`);
        try {
          sh(`chroot ${m} update-initramfs -u -k ${kver} >/dev/null 2>&1`);
        } finally {
          for (const d of ["sys", "proc", "dev"]) sh(`umount ${m}/${d}`);
        }
        assert.doesNotMatch(sh(`chroot ${m} lsinitramfs /boot/initrd.img-${kver}`), /xen-blkfront/);
      },
      "-o loop",
    );
    const srcDev = losetup(img, true);
    const tgtFile = path.join(dir, "debian-tgt.img");
    sh(`truncate -s ${image.sizeMiB + 64}M ${tgtFile}`);
    const tgtDev = losetup(tgtFile);
    const o = await create({
      source: { device: srcDev },
      target: { device: tgtDev },
      fixups: {
        hostname: "migrated",
        network: { address: "10.99.0.50/24", gateway: "10.99.0.1", nameservers: ["10.99.0.1"] },
      },
    });
    assert.equal(o.phase, "migrated");
    const mnt = path.join(dir, "debian-mnt");
    fs.mkdirSync(mnt, { recursive: true });
    sh(`mount ${tgtDev} ${mnt}`);
    try {
      const read = (p: string) => fs.readFileSync(path.join(mnt, p), "utf8");
      assert.match(read("etc/fstab"), /^\/dev\/xvda \/ ext4 errors=remount-ro 0 1$/m);
      assert.match(read("etc/fstab"), /^# \/dev\/sdb none swap sw 0 0 .*no swap disk/m);
      assert.match(
        read("boot/grub/grub.cfg"),
        /linux \/vmlinuz root=\/dev\/xvda ro console=hvc0 net\.ifnames=0/,
      );
      assert.match(
        read("etc/systemd/network/05-eth0.network"),
        /Address=10\.99\.0\.50\/24\nDNS=10\.99\.0\.1\n\n\[Route\]\nGateway=10\.99\.0\.1/,
      );
      assert.match(read("etc/resolv.conf"), /^nameserver 10\.99\.0\.1$/m);
      assert.equal(read("etc/hostname"), "migrated\n");
      assert.match(read("etc/hosts"), /^127\.0\.1\.1\tmigrated$/m);
      assert.equal(read("root/xen-estate-source-marker"), fs.readFileSync(`${image.dir}/marker`, "utf8"));
      const initrd = sh(`chroot ${mnt} lsinitramfs /boot/initrd.img-${kver}`);
      assert.match(initrd, /\/xen-blkfront\.ko/, "the initramfs now brings Xen's block front end");
      assert.match(initrd, /\/xen-netfront\.ko/);
      assert.match(read("etc/initramfs-tools/modules"), /^xen-blkfront\nxen-netfront\n$/m);
      assert.ok(o.fixedFiles.includes(`/boot/initrd.img-${kver}`), o.fixedFiles.join(", "));
      const manifest = read(`${FIXUP_BACKUPS.slice(1)}/MANIFEST`);
      assert.match(manifest, /^changed \/etc\/fstab$/m);
      assert.match(manifest, /^changed \/etc\/systemd\/network\/05-eth0\.network$/m);
      assert.deepEqual(o.fixedFiles.slice().sort(), [...new Set(o.fixedFiles)].sort());
      // revert.sh puts every original back.
      sh(`sh ${mnt}${FIXUP_BACKUPS}/revert.sh ${mnt} >/dev/null`);
      assert.match(
        read("etc/fstab"),
        /^\/dev\/sda \/ ext4 errors=remount-ro 0 1\n\/dev\/sdb none swap sw 0 0\n$/,
      );
      assert.match(read("etc/systemd/network/05-eth0.network"), /Address=192\.0\.2\.10\/24/);
      assert.equal(read("etc/hostname"), "source\n");
      assert.doesNotMatch(
        sh(`chroot ${mnt} lsinitramfs /boot/initrd.img-${kver}`),
        /xen-blkfront/,
        "the original initramfs is back",
      );
    } finally {
      sh(`umount ${mnt}`);
    }
    await runtime.delete(KIND, "id", o as unknown as Record<string, unknown>);
  });
});
