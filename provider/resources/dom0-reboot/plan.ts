/** Dom0Reboot's pure planning: what the running host must show, and the reasons a boot is owed. */
import { shellQuote } from "../../core/shell";

export interface BootExpectation {
  /** Xen version prefix the host must run, e.g. `4.17`. */
  xenVersion: string;
  dom0MemMiB: number;
  bridge: string;
  uplink: string;
  /** The network file the bridge is configured in (a change after this boot means a boot is owed). */
  networkFile: string;
}

export interface BootProbe {
  bootId: string;
  bootTime: number;
  underXen: boolean;
  xenVersion: string | null;
  xenCommandLine: string | null;
  dom0MemMiB: number | null;
  kernelRunning: string;
  kernelNewest: string | null;
  xenMtime: number | null;
  networkMtime: number | null;
  bridgePorts: string[] | null;
}

/** Prints one `key value` line per fact of {@link BootProbe}. */
export function probeScript(e: Pick<BootExpectation, "bridge" | "networkFile">): string {
  const brif = shellQuote(`/sys/class/net/${e.bridge}/brif`);
  return [
    `echo "bootid $(cat /proc/sys/kernel/random/boot_id)"`,
    `echo "boottime $(( $(date +%s) - $(cut -d. -f1 /proc/uptime) ))"`,
    `if [ -r /proc/xen/capabilities ] && grep -q control_d /proc/xen/capabilities && command -v xl >/dev/null; then`,
    `  info=$(xl info)`,
    `  echo "xen $(printf '%s\\n' "$info" | awk '$1 == "xen_major" {ma=$3} $1 == "xen_minor" {mi=$3} $1 == "xen_extra" {ex=$3} END {print ma "." mi ex}')"`,
    `  echo "xencmdline $(printf '%s\\n' "$info" | sed -n 's/^xen_commandline *: *//p')"`,
    `  echo "dom0mem $(xl list 0 | awk 'NR == 2 {print $3}')"`,
    `fi`,
    `echo "kernel $(uname -r)"`,
    `k=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sed 's,^/boot/vmlinuz-,,' | sort -V | tail -n1 || true)`,
    `echo "newestkernel \${k:-none}"`,
    `x=$(ls -1 /boot/xen-*.gz 2>/dev/null | sort -V | tail -n1 || true)`,
    `[ -n "$x" ] && echo "xenmtime $(stat -c %Y -- "$x")"`,
    `[ -f ${shellQuote(e.networkFile)} ] && echo "netmtime $(stat -c %Y -- ${shellQuote(e.networkFile)})"`,
    `if [ -d ${brif} ]; then echo "bridge $(ls ${brif} | paste -sd' ')"; else echo "bridge -"; fi`,
    `true`,
  ].join("\n");
}

export function parseProbe(out: string): BootProbe {
  // A key is the whole first word: `xen` must not read the `xenmtime` line of a host that does not run Xen.
  const get = (k: string): string | undefined => {
    const m = new RegExp(`^${k}(?: (.*))?$`, "m").exec(out);
    return m ? (m[1] ?? "").trim() : undefined;
  };
  const num = (k: string): number | null => {
    const v = get(k);
    return v !== undefined && /^\d+$/.test(v) ? Number(v) : null;
  };
  const bridge = get("bridge");
  return {
    bootId: get("bootid") ?? "",
    bootTime: num("boottime") ?? 0,
    underXen: get("xen") !== undefined,
    xenVersion: get("xen") ?? null,
    xenCommandLine: get("xencmdline") ?? null,
    dom0MemMiB: num("dom0mem"),
    kernelRunning: get("kernel") ?? "",
    kernelNewest: get("newestkernel") === "none" ? null : (get("newestkernel") ?? null),
    xenMtime: num("xenmtime"),
    networkMtime: num("netmtime"),
    bridgePorts: bridge === undefined || bridge === "-" ? null : bridge.split(" ").filter(Boolean),
  };
}

/** Why the running host is not what the declaration asks for, in words; empty when no boot is owed. Pure. */
export function rebootReasons(p: BootProbe, e: BootExpectation): string[] {
  const reasons: string[] = [];
  if (!p.underXen) reasons.push("the host does not run under Xen");
  else {
    if (p.xenVersion && !p.xenVersion.startsWith(e.xenVersion))
      reasons.push(`it runs Xen ${p.xenVersion}, not ${e.xenVersion}`);
    const mem = `dom0_mem=${e.dom0MemMiB}M,max:${e.dom0MemMiB}M`;
    if (!(p.xenCommandLine ?? "").split(/\s+/).includes(mem)) reasons.push(`Xen's command line lacks ${mem}`);
  }
  if (p.kernelNewest && p.kernelNewest !== p.kernelRunning)
    reasons.push(`kernel ${p.kernelNewest} is installed, ${p.kernelRunning} runs`);
  if (p.xenMtime !== null && p.xenMtime > p.bootTime)
    reasons.push("Xen was installed or updated after this boot");
  if (!p.bridgePorts) reasons.push(`there is no bridge ${e.bridge}`);
  else if (!p.bridgePorts.includes(e.uplink))
    reasons.push(`the bridge ${e.bridge} does not carry ${e.uplink}`);
  if (p.networkMtime !== null && p.networkMtime > p.bootTime)
    reasons.push("the network configuration changed after this boot");
  return reasons;
}

/** What must hold after a boot: Xen of the declared version, dom0 with its memory, the bridge carrying the uplink. */
export function verifyProblems(p: BootProbe, e: BootExpectation): string[] {
  const problems = rebootReasons(p, e);
  // xl reports dom0's current allocation, a little under dom0_mem once Xen took its own share.
  if (
    p.underXen &&
    p.dom0MemMiB !== null &&
    Math.abs(p.dom0MemMiB - e.dom0MemMiB) > Math.max(16, e.dom0MemMiB * 0.02)
  )
    problems.push(`dom0 has ${p.dom0MemMiB} MiB, not ${e.dom0MemMiB}`);
  return problems;
}

/** Reboots in a moment, after this command has returned (so its SSH channel closes cleanly). */
export const REBOOT_SCRIPT = [
  `if [ -d /run/systemd/system ]; then systemd-run --quiet --on-active=2 --timer-property=AccuracySec=100ms /bin/systemctl reboot`,
  `else setsid nohup bash -c 'sleep 2; reboot' </dev/null >/dev/null 2>&1 & fi`,
  `echo scheduled`,
].join("\n");
