/**
 * BridgedDomU: a guest with its own public IP on the dom0's bridge.
 *
 * On Hetzner (and most providers that route additional IPs to a server) a bridged guest must use the MAC the
 * provider assigned to that IP (Robot: "Request separate MAC"). A frame from an unknown MAC on the switch gets the
 * whole server locked, so `mac` is required and never invented.
 */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { GuestArgsBase } from "../../guest/args";
import { claimOnConstruction, ownerOf } from "../../guest/claims";
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
export class BridgedDomU extends defineResource<BridgedDomUArgs>({
  name: bridgedDomUKind.name,
  outputOnly: bridgedDomUKind.outputOnly ?? [],
  onConstruct: claimOnConstruction,
  programInputs: (_args, name) => ({ owner: ownerOf(name) }),
}) {
  declare readonly name: pulumi.Output<string>;
  /** Domain id while running, else null. */
  declare readonly domid: pulumi.Output<number | null>;
  /** Fingerprint (`SHA256:…`) of the SSH host key the install gave the guest; pin it to reach the guest. */
  declare readonly sshHostKey: pulumi.Output<string | null>;
  declare readonly running: pulumi.Output<boolean>;
  /** Files the guest owns on the dom0 (path → content). */
  declare readonly files: pulumi.Output<Record<string, string>>;
}
