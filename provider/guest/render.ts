/**
 * The files of a guest, rendered from templates/guest/ (pure): its xl config on the dom0, and the settings an
 * install writes into its own filesystem (network, resolvers, fstab, GRUB menu).
 */
import { VERSION } from "../core/package";
import { render } from "../core/templates";
import type { GuestInputs, GuestNetwork } from "./args";
import { PVGRUB2 } from "./paths";

/** The xl config for a guest. Pure. */
export function renderGuestConfig(
  g: Omit<GuestInputs, "files" | "connection" | "credentials" | "xenEstateVersion">,
): string {
  return render("guest/xl-domu.cfg", {
    name: g.name,
    owner: g.owner,
    type: g.type,
    vcpus: g.vcpus,
    maxvcpus: g.maxVcpus,
    memoryMiB: g.memoryMiB,
    maxMemoryMiB: g.maxMemoryMiB,
    boot:
      g.boot.kind === "direct"
        ? g.boot
        : g.boot.kind === "pvgrub2"
          ? { kind: "pvgrub2", kernel: PVGRUB2[g.type] }
          : g.boot,
    disks: g.disks,
    vifs: g.vifs,
    onPoweroff: g.onPoweroff,
    onReboot: g.onReboot,
    onCrash: g.onCrash,
    natNetwork: g.natNetwork,
  });
}

/** GRUB menu that pvgrub2 and pygrub read from inside the guest. Pure. */
export function guestGrubConfig(g: Pick<GuestInputs, "name" | "disks">): string {
  return render("guest/grub.cfg", { version: VERSION, name: g.name, rootDevice: `/dev/${g.disks[0]!.vdev}` });
}

/** The guest's fstab: its root disk, and the disks that hold swap (by their vdev). Pure. */
export function guestFstab(g: Pick<GuestInputs, "name" | "disks">, swapVdevs: readonly string[]): string {
  return render("guest/fstab", {
    version: VERSION,
    name: g.name,
    rootDevice: `/dev/${g.disks[0]!.vdev}`,
    swapDevices: swapVdevs.map((v) => `/dev/${v}`),
  });
}

/** The guest's /etc/network/interfaces (ifupdown, also read by busybox ifup). Pure. */
export function guestInterfaces(n: GuestNetwork): string {
  return render("guest/interfaces", { version: VERSION, ...n });
}

/** The guest's /etc/resolv.conf. Pure. */
export function guestResolvConf(nameservers: readonly string[]): string {
  return nameservers.map((n) => `nameserver ${n}\n`).join("");
}
