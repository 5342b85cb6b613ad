/** Dom0Network: the bridge carrying the uplink, and the dom0's forwarding sysctls. See ./kind.ts. */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { ConnectionArgs } from "../../ssh/connection";
import { dom0NetworkKind } from "./kind";

export { dom0NetworkKind };
export type { Dom0NetworkInputs, Dom0NetworkOutputs } from "./kind";
export { renderNetworkFiles, onLinkGateway } from "./plan";

export interface Dom0NetworkArgs {
  /** How to reach the host. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** `debian` (ifupdown) or `ubuntu` (netplan). @default "debian" */
  readonly distribution?: pulumi.Input<"debian" | "ubuntu">;
  /** @default the distribution's supported release */
  readonly release?: pulumi.Input<string>;
  /** The NIC carrying the server's address, e.g. `eth0` or `enp0s31f6`. */
  readonly uplink: pulumi.Input<string>;
  /** The NIC's own MAC: the bridge sends with it (Hetzner locks a server that sends from unknown MACs). */
  readonly mac: pulumi.Input<string>;
  /** The bridge's name. @default "xenbr0" */
  readonly bridge?: pulumi.Input<string>;
  /** `"dhcp"`, or the server's address with its prefix and the gateway (`{ address: "203.0.113.5/32", gateway: "203.0.113.1" }`; a gateway outside the prefix is reached on-link). @default "dhcp" */
  readonly address?: pulumi.Input<"dhcp" | { address: pulumi.Input<string>; gateway: pulumi.Input<string> }>;
  /** IPv6 address with prefix and gateway (Hetzner: `fe80::1`). @default none */
  readonly ipv6?: pulumi.Input<{ address: pulumi.Input<string>; gateway: pulumi.Input<string> }>;
  /** Answer ARP for routed guests' addresses (`net.ipv4.conf.all.proxy_arp`). @default false */
  readonly proxyArp?: pulumi.Input<boolean>;
  /** Pass bridged frames through iptables (Xen's vif-bridge rules need it). @default true */
  readonly bridgeNetfilter?: pulumi.Input<boolean>;
  /** Ubuntu: the netplan file to own. @default "/etc/netplan/01-netcfg.yaml" (what installimage writes) */
  readonly netplanFile?: pulumi.Input<string>;
  /** `keep` (default) or `restore` the original network files on destroy. @default "keep" */
  readonly onDelete?: pulumi.Input<"keep" | "restore">;
}

/** A dom0's bridge and forwarding settings. */
export class Dom0Network extends defineResource<Dom0NetworkArgs>({
  name: dom0NetworkKind.name,
  outputOnly: dom0NetworkKind.outputOnly ?? [],
}) {
  declare readonly bridge: pulumi.Output<string>;
  declare readonly files: pulumi.Output<Record<string, string>>;
  declare readonly networkDigest: pulumi.Output<string>;
}
