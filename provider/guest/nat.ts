/**
 * The NAT of a host-local guest network: MASQUERADE and FORWARD rules and `ip_forward`, added exactly once
 * (checked with `-C` under a lock), probed by refresh, removed with the network's last guest.
 */
import { shellQuote } from "../core/shell";
import { withHostLock } from "../remote/lock";
import { NAT_CONF, NAT_LOCK, NAT_SCRIPT, NAT_TAG, XEN_CONFIG_DIR } from "./paths";

function natRules(network: string): { table: string; chain: string; spec: string }[] {
  const n = shellQuote(network);
  return [
    {
      table: "nat",
      chain: "POSTROUTING",
      spec: `-s ${n} ! -d ${n} -m comment --comment xen-estate-nat -j MASQUERADE`,
    },
    { table: "filter", chain: "FORWARD", spec: `-s ${n} -m comment --comment xen-estate-nat -j ACCEPT` },
    {
      table: "filter",
      chain: "FORWARD",
      spec: `-d ${n} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment xen-estate-nat -j ACCEPT`,
    },
  ];
}

/** NAT rules for a network, added exactly once (checked with -C under a lock) or removed when unused. */
export function natRulesScript(network: string, action: "add" | "remove"): string {
  const body = natRules(network).map(({ table, chain, spec }) =>
    action === "add"
      ? `iptables -t ${table} -C ${chain} ${spec} 2>/dev/null || iptables -t ${table} -A ${chain} ${spec}`
      : `while iptables -t ${table} -C ${chain} ${spec} 2>/dev/null; do iptables -t ${table} -D ${chain} ${spec}; done`,
  );
  return [
    `exec 8>>${NAT_LOCK}`,
    `flock -w 120 8`,
    ...(action === "add" ? ["sysctl -qw net.ipv4.ip_forward=1"] : []),
    ...body,
    `exec 8>&-`,
  ].join("\n");
}

/**
 * Prints `nat ok` when every rule of the network is in place and `ip_forward` is on, else `nat missing`. Fails when
 * iptables cannot be asked at all (so "could not look" never reads as "missing").
 */
export function natProbeScript(network: string): string {
  return [
    `iptables -t nat -S POSTROUTING >/dev/null`,
    `ok=1`,
    ...natRules(network).map(
      ({ table, chain, spec }) => `iptables -t ${table} -C ${chain} ${spec} 2>/dev/null || ok=0`,
    ),
    `[ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || ok=0`,
    `if [ "$ok" = 1 ]; then echo "nat ok"; else echo "nat missing"; fi`,
  ].join("\n");
}

/** Removes the network's rules, script and settings when no guest config names the network any more. */
export function natCleanupScript(network: string): string {
  return withHostLock(
    [
      // grep finds nothing (exit 1) when this was the last user: not a failure under pipefail.
      `users=$( (grep -l -F ${shellQuote(`${NAT_TAG}${network}`)} ${XEN_CONFIG_DIR}/*.cfg 2>/dev/null || true) | wc -l)`,
      `if [ "$users" -eq 0 ]; then`,
      natRulesScript(network, "remove"),
      `  rm -f -- ${shellQuote(NAT_CONF)} ${shellQuote(NAT_SCRIPT)}`,
      `  echo ${shellQuote(`removed the NAT rules and script of ${network}: no guest uses it any more`)}`,
      `fi`,
    ].join("\n"),
  );
}
