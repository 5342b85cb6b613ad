/**
 * Helpers for the busybox guest kit that lives in the dom0 image at /var/lib/xen-estate/kits/busybox
 * (built by test/lab/images/build-kit.sh): a Debian-kernel PV guest that answers HTTP on port 80.
 */
import { LAB_NET, Lab } from "./lab";

export interface KitGuest {
  /** Xen domain name. */
  name: string;
  /** Address on xenbr0 (10.99.0.2–254). */
  ip: string;
  /** LV in vg0 used as xvda; omit for a guest without disk. */
  lv?: string;
  /** MAC for the vif; Xen's 00:16:3e prefix. */
  mac: string;
  /** @default 192 */
  memoryMiB?: number;
}

/** The first line the kit serves at `/`. */
export function kitAnswer(name: string): string {
  return `xen-estate-kit ok name=${name}`;
}

/**
 * The first line an image install of the kit's root filesystem serves at `/` (the kit's initramfs boots a disk that
 * holds it): its name is the guest's /etc/hostname and its address the one in /etc/network/interfaces, both
 * written by the install.
 */
export function imageAnswer(name: string): string {
  return `xen-estate-image ok name=${name}`;
}

/** An xl.cfg for a kit guest: PV, the kit's kernel and initramfs, an LV disk and a vif on xenbr0. */
export function kitGuestConfig(g: KitGuest): string {
  const lines = [
    `name = "${g.name}"`,
    `type = "pv"`,
    `kernel = "${LAB_NET.kitDir}/vmlinuz"`,
    `ramdisk = "${LAB_NET.kitDir}/initrd.gz"`,
    `extra = "console=hvc0 xe.ip=${g.ip}/24 xe.gw=${LAB_NET.bridgeAddress} xe.name=${g.name}"`,
    `memory = ${g.memoryMiB ?? 192}`,
    `vcpus = 1`,
    ...(g.lv ? [`disk = [ "format=raw, vdev=xvda, access=rw, target=/dev/vg0/${g.lv}" ]`] : []),
    `vif = [ "bridge=${LAB_NET.bridge}, mac=${g.mac}" ]`,
    `on_poweroff = "destroy"`,
    `on_crash = "destroy"`,
  ];
  return `${lines.join("\n")}\n`;
}

/** Polls `curl http://ip/` from dom0 until the kit answers; returns the body. */
export async function waitForKitHttp(
  lab: Lab,
  ip: string,
  timeoutMs: number,
  urlPath = "/",
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const r = await lab.exec(`curl -fsS --noproxy '*' --max-time 5 http://${ip}${urlPath}`, {
      timeoutMs: 30_000,
    });
    if (r.exitCode === 0) return r.stdout;
    last = r.stderr.trim();
    await new Promise((res) => setTimeout(res, 2000));
  }
  throw new Error(`kit guest ${ip} gave no HTTP answer in ${timeoutMs} ms (last: ${last})`);
}

/** `xl destroy` (if the domain exists) and `lvremove` (if the LV exists). */
export async function destroyKitGuest(lab: Lab, name: string, lv?: string): Promise<void> {
  await lab.ssh(`if xl domid ${name} >/dev/null 2>&1; then xl destroy ${name}; fi`);
  if (lv) await lab.ssh(`if lvs vg0/${lv} >/dev/null 2>&1; then lvremove -q -y vg0/${lv}; fi`);
}
