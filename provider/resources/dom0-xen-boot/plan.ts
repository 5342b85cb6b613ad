/** Dom0XenBoot's pure planning: Xen's command line for GRUB, xl.conf and xendomains. */
import { shellQuote } from "../../core/shell";
import { render } from "../../core/templates";

export const GRUB_XEN = "/etc/default/grub.d/xen-estate.cfg";
export const XL_CONF = "/etc/xen/xl.conf";
export const XENDOMAINS = "/etc/default/xendomains";

export interface XenBootPlan {
  dom0MemMiB: number;
  dom0Vcpus: number | null;
  xenArgs: string | null;
  dom0KernelArgs: string | null;
  bridge: string;
  bootloaderRestrict: boolean;
  stopSeconds: number;
}

/** Xen's own command line: dom0's memory fixed (with `max:`, so it never balloons), its vCPUs, the extras. */
export function xenCommandLine(p: XenBootPlan): string {
  return [
    `dom0_mem=${p.dom0MemMiB}M,max:${p.dom0MemMiB}M`,
    ...(p.dom0Vcpus ? [`dom0_max_vcpus=${p.dom0Vcpus}`] : []),
    ...(p.xenArgs ? [p.xenArgs] : []),
  ].join(" ");
}

export function renderXenBootFiles(p: XenBootPlan): Record<string, string> {
  return {
    [GRUB_XEN]: render("dom0-xen-boot/grub-xen.cfg", {
      xenCommandLine: xenCommandLine(p),
      linuxCommandLine: p.dom0KernelArgs,
    }),
    [XL_CONF]: render("dom0-xen-boot/xl.conf", { bridge: p.bridge }),
    [XENDOMAINS]: render("dom0-xen-boot/xendomains", {
      stopSeconds: p.stopSeconds,
      bootloaderRestrict: p.bootloaderRestrict,
    }),
  };
}

/**
 * Regenerates grub.cfg (update-grub where grub-pc/grub-efi installed it, else grub-mkconfig) and checks that the
 * default entry boots Xen with the declared command line and that GRUB loads gzio before it (Xen's image is
 * compressed, and Debian's Xen entry does not load it itself). Also makes /etc/xen/auto, where guests that start with
 * the host are linked. Prints `memtotal KIB` first, for the check against the host's memory.
 */
export function updateGrubScript(commandLine: string): string {
  return [
    `install -d -m 755 /etc/xen/auto`,
    `if command -v update-grub >/dev/null; then update-grub >&2; else grub-mkconfig -o /boot/grub/grub.cfg >&2; fi`,
    `grep -qF -- ${shellQuote(commandLine)} /boot/grub/grub.cfg || { xe_say ${shellQuote(`grub.cfg has no entry with Xen's command line (${commandLine}): is Xen installed?`)}; exit 1; }`,
    `grep -Eq '^set default="?[^"]*Xen' /boot/grub/grub.cfg || grep -q 'with Xen hypervisor' /boot/grub/grub.cfg || { xe_say "grub.cfg does not boot Xen by default"; exit 1; }`,
    `grep -qx 'insmod gzio' /boot/grub/grub.cfg || { xe_say "grub.cfg does not load gzio before its menu: GRUB could not unpack Xen's image (no multiboot header found)"; exit 1; }`,
  ].join("\n");
}

/** Prints `memtotal KIB`: dom0 memory must leave room (checked on the host: check cannot know its memory). */
export const MEMORY_SCRIPT = [
  `if command -v xl >/dev/null && [ -e /proc/xen/capabilities ] && grep -q control_d /proc/xen/capabilities; then`,
  `  echo "memtotal $(( $(xl info | awk '$1 == "total_memory" {print $3}') * 1024 ))"`,
  `else echo "memtotal $(awk '$1 == "MemTotal:" {print $2}' /proc/meminfo)"; fi`,
].join("\n");
