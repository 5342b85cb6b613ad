/** Dom0Network's pure planning: the bridge carrying the uplink (ifupdown or netplan), sysctls, modules. */
import { shellQuote } from "../../core/shell";
import { render } from "../../core/templates";
import { networkContains, parseNetwork } from "../../dom0/addresses";

export const INTERFACES = "/etc/network/interfaces";
export const SYSCTL = "/etc/sysctl.d/90-xen-estate.conf";
export const MODULES = "/etc/modules-load.d/xen-estate.conf";

export interface NetworkPlan {
  network: "ifupdown" | "netplan";
  netplanFile: string;
  uplink: string;
  mac: string;
  bridge: string;
  /** `dhcp`, or the address with its prefix (`203.0.113.5/32`) and gateway. */
  address: "dhcp" | { address: string; gateway: string };
  ipv6: { address: string; gateway: string } | null;
  proxyArp: boolean;
  bridgeNetfilter: boolean;
}

/** Whether the gateway lies outside the address's network (Hetzner's /32 with an on-link gateway). */
export function onLinkGateway(address: string, gateway: string): boolean {
  const [ip, prefixText] = address.split("/");
  const prefix = Number(prefixText);
  if (!ip || !Number.isInteger(prefix) || prefix >= 31) return true;
  const n = ip.split(".").reduce((a, o) => a * 256 + Number(o), 0);
  const base = n - (n % 2 ** (32 - prefix));
  const net = parseNetwork(
    `${[24, 16, 8, 0].map((s) => Math.floor(base / 2 ** s) % 256).join(".")}/${prefix}`,
  );
  return "error" in net || !networkContains(net, gateway);
}

export function renderNetworkFiles(p: NetworkPlan): Record<string, string> {
  const ctx = {
    uplink: p.uplink,
    mac: p.mac,
    bridge: p.bridge,
    dhcp: p.address === "dhcp",
    address: p.address === "dhcp" ? null : p.address.address,
    gateway: p.address === "dhcp" ? null : p.address.gateway,
    onLinkGateway: p.address === "dhcp" ? false : onLinkGateway(p.address.address, p.address.gateway),
    ipv6: p.ipv6,
  };
  const net: Record<string, string> =
    p.network === "netplan"
      ? { [p.netplanFile]: render("dom0-network/netplan.yaml", ctx) }
      : { [INTERFACES]: render("dom0-network/interfaces", ctx) };
  return {
    ...net,
    [SYSCTL]: render("dom0-network/sysctl.conf", {
      ipv6Forwarding: p.ipv6 !== null,
      proxyArp: p.proxyArp,
      bridgeNetfilter: p.bridgeNetfilter,
    }),
    [MODULES]: render("dom0-network/modules.conf", {}),
  };
}

/** The keys the sysctl file turns on only when asked (else it leaves them out, to the kernel's default of 0). */
export function optionalSysctls(p: Pick<NetworkPlan, "ipv6" | "proxyArp">): string[] {
  return [
    ...(p.ipv6 !== null ? ["net.ipv6.conf.all.forwarding"] : []),
    ...(p.proxyArp ? ["net.ipv4.conf.all.proxy_arp"] : []),
  ];
}

/** The optional keys `before` turned on that `after` leaves out: their live value must go back to what boot gives. */
export function sysctlsTurnedOff(
  before: Pick<NetworkPlan, "ipv6" | "proxyArp">,
  after: Pick<NetworkPlan, "ipv6" | "proxyArp">,
): string[] {
  const kept = new Set(optionalSysctls(after));
  return optionalSysctls(before).filter((k) => !kept.has(k));
}

/**
 * The sysctls applied now (they need no reboot); br_netfilter first, or the net.bridge keys do not exist. A key
 * turned off (`turnedOff`, from {@link sysctlsTurnedOff}) is set back to the kernel's default, then to what the
 * system's other sysctl files say about it, in boot's order: the live value is the one the next boot gives.
 */
export function sysctlScript(turnedOff: readonly string[] = []): string {
  const reset =
    turnedOff.length === 0
      ? []
      : [
          ...turnedOff.map((k) => `sysctl -q -w ${k}=0 >&2`),
          // procps matches the pattern against the key as the file spells it, blanks before `=` included.
          `sysctl -q -e --pattern ${shellQuote(`^(${turnedOff.map((k) => k.replace(/\./g, "\\.")).join("|")})([[:space:]=]|$)`)} --system >&2`,
        ];
  return [`modprobe br_netfilter`, ...reset, `sysctl -q -p ${SYSCTL} >&2`].join("\n");
}

/** The check of a new interfaces file: ifupdown parses it (`%s` is the temp file). */
export const INTERFACES_VALIDATE = "ifquery --interfaces=%s --list >/dev/null";
/**
 * The check of a new netplan file `file` (`%s` is the temp file): netplan generates the configuration from a copy of
 * /etc/netplan in a scratch root, where the new content has the file's own name. (netplan reads only `*.yaml`, so
 * generating from / would never read the temp file beside the old one: a broken file would pass.) A file netplan
 * cannot parse, or that the others make invalid, is refused before it replaces the old one.
 */
export function netplanValidate(file: string): string {
  const name = file.slice(file.lastIndexOf("/") + 1);
  return [
    `d=$(mktemp -d)`,
    `trap 'rm -rf -- "$d"' EXIT`,
    `mkdir -p -- "$d/etc/netplan"`,
    `for f in /etc/netplan/*.yaml; do if [ -f "$f" ]; then cp -p -- "$f" "$d/etc/netplan/"; fi; done`,
    `cp -p -- %s "$d/etc/netplan/"${shellQuote(name)}`,
    `netplan generate --root-dir "$d"`,
  ].join("\n");
}

/** Prints `bridge PORTS…` (the bridge's member interfaces, or `bridge absent`) and `sysctl KEY VALUE` lines. */
export function probeScript(bridge: string): string {
  return [
    `if [ -d ${shellQuote(`/sys/class/net/${bridge}/brif`)} ]; then echo "bridge $(ls ${shellQuote(`/sys/class/net/${bridge}/brif`)} | paste -sd' ')"; else echo "bridge absent"; fi`,
    `for k in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do echo "sysctl $k $(sysctl -n "$k" 2>/dev/null || echo absent)"; done`,
  ].join("\n");
}
