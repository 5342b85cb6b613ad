/** Dom0Packages' pure planning: package sources, apt settings and the scripts that install. */
import { render } from "../../core/templates";
import { shellQuote } from "../../core/shell";
import type { OsFacts } from "../../dom0/os";

export const APT_CONF = "/etc/apt/apt.conf.d/90xen-estate";
export const DEBIAN_SOURCES = "/etc/apt/sources.list";
export const UBUNTU_SOURCES = "/etc/apt/sources.list.d/ubuntu.sources";

export interface SourcesPlan {
  distribution: string;
  release: string;
  mirror: string;
  securityMirror: string;
  components: string[];
  proxy: string | null;
  recommends: boolean;
}

/** The files Dom0Packages owns, path → content. */
export function renderPackageFiles(p: SourcesPlan, facts: OsFacts): Record<string, string> {
  const sources: Record<string, string> =
    facts.distribution === "ubuntu"
      ? { [UBUNTU_SOURCES]: render("dom0-packages/ubuntu.sources", p) }
      : { [DEBIAN_SOURCES]: render("dom0-packages/sources.list", p) };
  return { ...sources, [APT_CONF]: render("dom0-packages/apt.conf", p) };
}

const APT = [
  "apt-get -q -y",
  "-o DPkg::Lock::Timeout=600",
  "-o APT::Status-Fd=2",
  "-o Dpkg::Options::=--force-confdef",
  "-o Dpkg::Options::=--force-confold",
].join(" ");

/**
 * apt-get update, an optional dist-upgrade, then the packages: non-interactive, waiting up to 10 minutes for the
 * dpkg lock, keeping config files the admin changed, status lines on stderr (`pmstatus:…`, `dlstatus:…`) for
 * progress. Prints the newest installed kernel and Xen at the end.
 */
export function installScript(packages: readonly string[], upgrade: boolean): string {
  return [
    "export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a",
    `${APT} update >&2`,
    ...(upgrade ? [`${APT} dist-upgrade >&2`] : []),
    `${APT} install -- ${packages.map(shellQuote).join(" ")} >&2`,
    INSTALLED_SCRIPT,
  ].join("\n");
}

/** Prints `kernel VERSION` and `xen FILE` (newest under /boot), and `missing PKG` for each package not installed. */
export const INSTALLED_SCRIPT = [
  `k=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sed 's,^/boot/vmlinuz-,,' | sort -V | tail -n1 || true)`,
  `echo "kernel $k"`,
  `x=$(ls -1 /boot/xen-*.gz /boot/xen-*[0-9] 2>/dev/null | sort -V | tail -n1 || true)`,
  `echo "xen \${x#/boot/}"`,
].join("\n");

export function missingScript(packages: readonly string[]): string {
  return [
    `for p in ${packages.map(shellQuote).join(" ")}; do`,
    // dpkg-query exits 1 for a package it does not know; anything else it says is an answer.
    `  s=$(dpkg-query -W -f='\${db:Status-Abbrev}' -- "$p" 2>/dev/null || true)`,
    `  case "$s" in ii*) ;; *) echo "missing $p" ;; esac`,
    `done`,
    INSTALLED_SCRIPT,
  ].join("\n");
}

/** Turns an apt status line into a progress message, or null. */
export function aptProgress(line: string): string | null {
  const m = /^(pmstatus|dlstatus):([^:]*):([\d.]+):(.*)$/.exec(line);
  if (!m) return null;
  const pct = Math.floor(Number(m[3]));
  return `${m[1] === "dlstatus" ? "downloading" : "installing"} ${pct}%: ${m[4]}`;
}

export function parseInstalled(out: string): {
  kernel: string | null;
  xen: string | null;
  missing: string[];
} {
  const kernel = /^kernel (\S+)$/m.exec(out)?.[1] ?? null;
  const xen = /^xen (\S+)$/m.exec(out)?.[1] ?? null;
  const missing = [...out.matchAll(/^missing (\S+)$/gm)].map((m) => m[1]!);
  return { kernel, xen, missing };
}
