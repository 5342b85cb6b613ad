/**
 * Disks for migration tests and benchmarks: ext filesystems in image files over stale random data, loop devices
 * over them, and the traces that must not leak (a deleted file's blocks on a source, old data on a target).
 *
 *   const disks = new Disks(dir);
 *   const src = disks.source("xe-src", 96, 24);      // 96 MiB ext4, a 24 MiB file, a deleted file's ghost
 *   const dev = disks.loop(src, true);              // read-only loop device
 *   disks.cleanup();                                // unmounts and detaches what it made
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

const MiB = 2 ** 20;

export function sh(cmd: string): string {
  return execFileSync("bash", ["-euo", "pipefail", "-c", cmd], { encoding: "utf8", maxBuffer: 64 * MiB });
}

/** Runs `body` with `device` mounted at `dir`, unmounting it afterwards whatever `body` did. */
export function mountedAt<T>(device: string, dir: string, body: () => T): T {
  sh(`mount ${device} ${dir}`);
  try {
    return body();
  } finally {
    sh(`umount ${dir}`);
  }
}

/** `mib` MiB of pseudo-random bytes (AES-CTR keystream: fast, incompressible) into `file`, at byte `offsetMiB`. */
export function randomInto(file: string, mib: number, seed: string, offsetMiB = 0): void {
  // openssl dies of SIGPIPE when dd has enough: not a failure.
  sh(
    `{ openssl enc -aes-128-ctr -pass pass:${seed} -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } | dd of=${file} bs=1M count=${mib} seek=${offsetMiB} iflag=fullblock conv=notrunc status=none`,
  );
}

/** A pattern repeated over `mib` MiB at `offsetMiB` of `file`. */
export function patternInto(file: string, pattern: string, mib: number, offsetMiB: number): void {
  sh(
    `{ yes ${pattern} || true; } | dd of=${file} bs=1M count=${mib} seek=${offsetMiB} iflag=fullblock conv=notrunc status=none`,
  );
}

/** How many lines of `file` (or device) hold `pattern`. */
export function occurrences(pattern: string, file: string): number {
  return Number(sh(`grep -a -c -- ${pattern} ${file} || true`).trim());
}

export class Disks {
  private readonly loops: string[] = [];

  constructor(readonly dir: string) {}

  /** A loop device over `file`. */
  loop(file: string, readOnly = false): string {
    const dev = sh(`losetup -f --show ${readOnly ? "-r " : ""}${file}`).trim();
    this.loops.push(dev);
    return dev;
  }

  detach(dev: string): void {
    sh(`losetup -d ${dev} || true`);
    const i = this.loops.indexOf(dev);
    if (i >= 0) this.loops.splice(i, 1);
  }

  /** Mounts `what` at a fresh directory, runs `fn`, unmounts. */
  withMount<T>(what: string, fn: (mnt: string) => T, opts = ""): T {
    const mnt = fs.mkdtempSync(path.join(this.dir, "mnt-"));
    sh(`mount ${opts} ${what} ${mnt}`);
    try {
      return fn(mnt);
    } finally {
      sh(`umount ${mnt}`);
      fs.rmdirSync(mnt);
    }
  }

  /**
   * A Linode-style source: a whole-disk ext filesystem of `sizeMiB` over stale random data, holding an fstab, a
   * marker and `dataMiB` of random data (optionally `tree`, copied in), and the ghost of a deleted file whose
   * blocks still hold `XE-DELETED-SECRET`.
   */
  source(
    name: string,
    sizeMiB: number,
    dataMiB: number,
    opts: { fsType?: string; tree?: string } = {},
  ): string {
    const fsType = opts.fsType ?? "ext4";
    const img = path.join(this.dir, `${name}.img`);
    sh(`truncate -s 0 ${img}`);
    randomInto(img, sizeMiB, `${name}-stale`);
    const tree = path.join(this.dir, `${name}-tree`);
    fs.rmSync(tree, { recursive: true, force: true });
    fs.mkdirSync(path.join(tree, "etc"), { recursive: true });
    fs.mkdirSync(path.join(tree, "root"), { recursive: true });
    fs.writeFileSync(
      path.join(tree, "etc", "fstab"),
      `/dev/sda / ${fsType} errors=remount-ro 0 1\n/dev/sdb none swap sw 0 0\n`,
    );
    fs.writeFileSync(path.join(tree, "root", "marker"), `source ${name}\n`);
    if (dataMiB > 0) {
      fs.writeFileSync(path.join(tree, "root", "data.bin"), "");
      randomInto(path.join(tree, "root", "data.bin"), dataMiB, `${name}-data`);
    }
    sh(`mkfs.${fsType} -q -F -E nodiscard -L ${name.slice(0, 16)} -d ${tree} ${img}`);
    fs.rmSync(tree, { recursive: true, force: true });
    this.withMount(
      img,
      (mnt) => {
        if (opts.tree) sh(`cp -a ${opts.tree} ${mnt}/tree && sync`);
        sh(
          `{ yes XE-DELETED-SECRET || true; } | head -c ${2 * MiB} > ${mnt}/gone && sync && rm ${mnt}/gone && sync`,
        );
      },
      "-o loop",
    );
    return img;
  }

  /** A target of `sizeMiB` full of old data, with `XE-STALE-TARGET` in its middle and its last MiB. */
  target(name: string, sizeMiB: number): string {
    const img = path.join(this.dir, `${name}.img`);
    sh(`truncate -s 0 ${img}`);
    randomInto(img, sizeMiB, `${name}-old`);
    patternInto(img, "XE-STALE-TARGET", 1, Math.floor(sizeMiB / 2));
    patternInto(img, "XE-STALE-TARGET", 1, sizeMiB - 1);
    return img;
  }

  /** Unmounts anything left under the directory and detaches every loop device made here. */
  cleanup(): void {
    sh(
      `findmnt -rn -o TARGET | grep -F -- ${this.dir}/ | sort -r | while read -r m; do umount "$m"; done || true`,
    );
    for (const l of [...this.loops]) this.detach(l);
  }
}
