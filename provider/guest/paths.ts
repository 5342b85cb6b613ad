/** Where the guest engine keeps things on a dom0, declared once. */
import type { GuestType } from "./args";

export const XEN_CONFIG_DIR = "/etc/xen";
/** GRUB images for Xen guests from Debian's grub-xen-host: one per guest type (a PV guest cannot boot the PVH one). */
export const PVGRUB2: Record<GuestType, string> = {
  pvh: "/usr/lib/grub-xen/grub-i386-xen_pvh.bin",
  pv: "/usr/lib/grub-xen/grub-x86_64-xen.bin",
};
export const NAT_SCRIPT = "/etc/xen/scripts/vif-xen-estate-nat";
export const NAT_CONF = "/etc/xen/xen-estate-nat.conf";
export const NAT_LOCK = "/run/lock/xen-estate-nat.lock";
/** Resolvers Hetzner runs for its customers since 2021 (the old 213.133.x set is retired). */
export const DEFAULT_NAMESERVERS = ["185.12.64.1", "185.12.64.2"];
/** The first line of every guest config xen-estate writes. */
export const MANAGED = "# Managed by xen-estate";
/** The config line naming the resource that owns a guest: `# xen-estate-owner <owner>`. */
export const OWNER_TAG = "# xen-estate-owner ";
/** The config line naming a NAT guest's network: `# xen-estate-nat-network <cidr>`. */
export const NAT_TAG = "# xen-estate-nat-network ";
/** Left at the root of a disk while an install runs: proof that the disk was empty when the install began. */
export const INSTALL_MARKER = ".xen-estate-install-incomplete";

export function configPath(name: string): string {
  return `${XEN_CONFIG_DIR}/${name}.cfg`;
}

export function autostartPath(name: string): string {
  return `${XEN_CONFIG_DIR}/auto/${name}.cfg`;
}
