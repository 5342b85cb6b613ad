/**
 * NatDomU: a guest on a host-local network behind the dom0's NAT.
 *
 * Every NAT vif gets the network's gateway address (its first host address) and a /32 route to its guest, set up
 * by the `vif-xen-estate-nat` hotplug script this resource installs. That works for every address in the network,
 * unlike the old vif-nat's "last octet + 127" router addresses, which break for guests above .128.
 */
import * as pulumi from "@pulumi/pulumi";
import type { GuestArgsBase } from "../../guest/args";
import { defineGuestResource } from "../../guest/resource";
import { natDomUKind } from "./kind";

export { natDomUKind };

export interface NatDomUArgs extends GuestArgsBase {
  /** The guest's address in `network`; not the network, gateway (first) or broadcast address. */
  readonly ip: pulumi.Input<string>;
  /** The host-local network; one per dom0. The dom0 is its first address. @default "10.0.0.0/24" */
  readonly network?: pulumi.Input<string>;
  /** The guest's MAC. @default derived from the host and guest name, in Xen's 00:16:3e range */
  readonly mac?: pulumi.Input<string>;
}

/** A Xen guest on a host-local network behind the dom0's NAT. */
export class NatDomU extends defineGuestResource<NatDomUArgs>(natDomUKind) {
  declare readonly natNetwork: pulumi.Output<string>;
}
