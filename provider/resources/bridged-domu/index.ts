/**
 * BridgedDomU: a guest with its own public IP on the dom0's bridge.
 *
 * On Hetzner (and most providers that route additional IPs to a server) a bridged guest must use the MAC the
 * provider assigned to that IP (Robot: "Request separate MAC"). A frame from an unknown MAC on the switch gets the
 * whole server locked, so `mac` is required and never invented.
 */
import * as pulumi from "@pulumi/pulumi";
import type { GuestArgsBase } from "../../guest/args";
import { defineGuestResource } from "../../guest/resource";
import { bridgedDomUKind } from "./kind";

export { bridgedDomUKind };

export interface BridgedDomUArgs extends GuestArgsBase {
  /** The guest's public IPv4 address. */
  readonly ip: pulumi.Input<string>;
  /** The MAC the provider assigned to `ip` (Hetzner Robot: "Request separate MAC"). Required: see above. */
  readonly mac: pulumi.Input<string>;
  /** Bridge in dom0 the vif joins. @default "xenbr0" */
  readonly bridge?: pulumi.Input<string>;
  /** Prefix length of the guest's address. @default 32 (a single additional IP) */
  readonly prefix?: pulumi.Input<number>;
  /**
   * The guest's default gateway, written into an installed guest. For a single additional IP on Hetzner this is the
   * host's gateway, reached on-link. Required with `install`.
   */
  readonly gateway?: pulumi.Input<string>;
}

/** A Xen guest with its own public IP and the provider-assigned MAC on the dom0's bridge. */
export class BridgedDomU extends defineGuestResource<BridgedDomUArgs>(bridgedDomUKind) {}
