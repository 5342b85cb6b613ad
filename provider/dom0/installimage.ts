/**
 * Phase 0 of a Dom0Host, planning only: the config `installimage -a -c FILE` reads in Hetzner's rescue system
 * (drives, software RAID 1, /boot plus an LVM physical volume holding the volume group with root and swap, the
 * host name, the image), and the checks that keep it from wiping the wrong disks. Pure.
 *
 * Not done yet: the resource that runs it from the rescue system, reboots, and switches to the installed
 * system's host key (see the report on the dom0host branch).
 */
import { render } from "../core/templates";
import { Checker, isHostName, isSafeAbsolutePath, PATH_RULE, UNKNOWN } from "../core/validate";

export interface InstallimagePlan {
  drives: { device: string; sizeBytes: number | null; serial: string | null }[];
  raid: boolean;
  hostname: string;
  bootMiB: number;
  volumeGroup: string;
  rootGiB: number;
  swapGiB: number;
  image: string;
}

const DEVICE = /^\/dev\/(sd[a-z]+|nvme\d+n\d+|vd[a-z]+)$/;
const IMAGE = /^\/[A-Za-z0-9_./-]+\.tar\.(gz|xz|zst)$/;

/** Checks phase 0's inputs: the declared drives (each named once), the wipe consent, the layout, the image. */
export function checkInstallimage(c: Checker, raw: Record<string, unknown>): InstallimagePlan | undefined {
  const list = c.array(raw, "drives", true);
  const drives: InstallimagePlan["drives"] = [];
  if (list !== UNKNOWN && list) {
    if (list.length < 1 || list.length > 2)
      c.fail("drives", list, "must name one drive, or two for a RAID 1");
    list.forEach((d, i) => {
      const dc = c.at(`drives[${i}]`);
      const o = (typeof d === "string" ? { device: d } : d) as Record<string, unknown>;
      if (!o || typeof o !== "object")
        return dc.fail("", d, "must be a device or { device, sizeBytes, serial }");
      const device = dc.string(o, "device", {
        required: true,
        pattern: DEVICE,
        rule: "must be a whole disk such as /dev/nvme0n1 or /dev/sda",
      });
      const sizeBytes = dc.integer(o, "sizeBytes", { min: 1 }) ?? null;
      const serial =
        dc.string(o, "serial", {
          max: 64,
          pattern: /^[A-Za-z0-9_.-]+$/,
          rule: "must be the disk's serial number",
        }) ?? null;
      if (device && drives.some((x) => x.device === device)) dc.fail("device", device, "must be named once");
      else if (device) drives.push({ device, sizeBytes, serial });
      return undefined;
    });
  }
  if (raw.wipeDisks !== true)
    c.fail(
      "wipeDisks",
      raw.wipeDisks,
      "must be true: installimage erases every drive named in `drives`",
      "Set wipeDisks: true once you are sure the drives hold nothing you need",
    );
  const hostname = c.string(raw, "hostname", { required: true, max: 253 });
  if (hostname && hostname !== UNKNOWN && !isHostName(hostname))
    c.fail("hostname", hostname, "must be a host name");
  const bootMiB = c.integer(raw, "bootMiB", { min: 256, max: 8192, default: 1024, unit: "MiB" }) ?? 1024;
  const volumeGroup = c.string(raw, "volumeGroup", {
    default: "vg0",
    pattern: /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/,
    rule: "must be an LVM name",
  });
  const rootGiB = c.integer(raw, "rootGiB", { min: 4, max: 65536, default: 30, unit: "GiB" }) ?? 30;
  const swapGiB = c.integer(raw, "swapGiB", { min: 1, max: 1024, default: 4, unit: "GiB" }) ?? 4;
  const image = c.string(raw, "image", {
    required: true,
    pattern: IMAGE,
    rule: "must be the path of an image in the rescue system, such as /root/.oldroot/nfs/images/Debian-1210-bookworm-amd64-base.tar.gz",
  });
  if (image && image !== UNKNOWN && !isSafeAbsolutePath(image)) c.fail("image", image, PATH_RULE);
  if (!hostname || !volumeGroup || !image || !c.ok) return undefined;
  return { drives, raid: drives.length === 2, hostname, bootMiB, volumeGroup, rootGiB, swapGiB, image };
}

export function renderInstallimageConfig(p: InstallimagePlan): string {
  return render("hetzner-installimage/installimage.conf", {
    ...p,
    drives: p.drives.map((d, i) => ({ index: i + 1, device: d.device })),
  });
}

/**
 * Which declared drives are not the ones the rescue system sees (`lsblk -J -b -d -o PATH,SIZE,SERIAL`): missing,
 * another size or serial. Empty when every declared drive matches. Pure.
 */
export function driveMismatches(
  plan: Pick<InstallimagePlan, "drives">,
  seen: { path: string; size: number; serial: string | null }[],
): string[] {
  return plan.drives.flatMap((d) => {
    const s = seen.find((x) => x.path === d.device);
    if (!s) return [`${d.device} is not there`];
    const out: string[] = [];
    if (d.sizeBytes !== null && s.size !== d.sizeBytes)
      out.push(`${d.device} has ${s.size} bytes, not ${d.sizeBytes}`);
    if (d.serial !== null && s.serial !== d.serial)
      out.push(`${d.device} has serial ${s.serial ?? "none"}, not ${d.serial}`);
    return out;
  });
}
