/**
 * Dom0Firewall's pure planning: the rule set (an nftables table of our own) from the trusted sources and open
 * ports, and the lockout rules `check` and the apply step enforce.
 */
import { sha256 } from "../../remote/files";
import { render } from "../../core/templates";
import { coveringNetwork, type Network } from "../../dom0/addresses";

export const RULES_FILE = "/etc/xen-estate/firewall.nft";
export const UNIT_FILE = "/etc/systemd/system/xen-estate-firewall.service";
export const TABLE = "inet xen_estate";

export interface FirewallPlan {
  sshPort: number;
  trustedSources: Network[];
  openTcp: number[];
  openUdp: number[];
}

/** Everything that decides the rules, canonical: the revision in the table's comment is its digest. */
export function ruleModel(p: FirewallPlan): {
  sshPort: number;
  sshFromAnywhere: boolean;
  trusted4: string[];
  trusted6: string[];
  openTcp: number[];
  openUdp: number[];
} {
  const trusted4 = [...new Set(p.trustedSources.filter((n) => n.family === 4).map((n) => n.text))].sort();
  const trusted6 = [...new Set(p.trustedSources.filter((n) => n.family === 6).map((n) => n.text))].sort();
  const sshFromAnywhere = trusted4.includes("0.0.0.0/0") && trusted6.includes("::/0");
  return {
    sshPort: p.sshPort,
    sshFromAnywhere,
    trusted4,
    trusted6,
    openTcp: [...new Set(p.openTcp)].filter((x) => x !== p.sshPort || sshFromAnywhere).sort((a, b) => a - b),
    openUdp: [...new Set(p.openUdp)].sort((a, b) => a - b),
  };
}

/** The revision recorded in the loaded table, to see whether the running rules are the declared ones. */
export function ruleRevision(p: FirewallPlan): string {
  return sha256(JSON.stringify(ruleModel(p))).slice(0, 16);
}

export function renderRules(p: FirewallPlan): string {
  return render("dom0-firewall/firewall.nft", { ...ruleModel(p), revision: ruleRevision(p) });
}

export function renderUnit(): string {
  return render("dom0-firewall/xen-estate-firewall.service", { rulesFile: RULES_FILE });
}

/** Loads the rule file, or removes our table when the file is gone (after a restore of "no firewall"). */
export const ACTIVATE_SCRIPT = [
  `if [ -f ${RULES_FILE} ]; then nft -f ${RULES_FILE}`,
  `else nft delete table ${TABLE} 2>/dev/null || true; fi`,
].join("\n");

/** Prints `revision REV` of the loaded table, `table absent`, and the unit's state. */
export const PROBE_SCRIPT = [
  `if out=$(nft list table ${TABLE} 2>&1); then`,
  `  rev=$(printf '%s\\n' "$out" | sed -n 's/.*comment "xen-estate \\([0-9a-f]*\\)".*/\\1/p' | head -n1)`,
  `  echo "revision \${rev:-none}"`,
  `else`,
  `  case "$out" in *"No such file"*|*"does not exist"*) echo "table absent" ;; *) echo "$out" >&2; exit 1 ;; esac`,
  `fi`,
  `if [ -d /run/systemd/system ]; then echo "unit $(systemctl is-enabled xen-estate-firewall.service 2>/dev/null || true)"; fi`,
].join("\n");

/**
 * The problem with applying the rules while the provider connects from `peer` (the address the host sees), or
 * undefined when that address may still reach sshd.
 */
export function peerProblem(p: FirewallPlan, peer: string): string | undefined {
  const m = ruleModel(p);
  if (m.sshFromAnywhere) return undefined;
  if (coveringNetwork(p.trustedSources, peer)) return undefined;
  return `leaves out ${peer}, the address this very connection comes from: applying the rules would cut xen-estate's SSH path`;
}
