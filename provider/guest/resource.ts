/**
 * The program-side class shared by BridgedDomU and NatDomU: the outputs every guest declares, the program-side
 * claims of its MAC, IP and disks, and its owner tag.
 */
import type * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../framework/resource";
import type { Kind } from "../framework/kind";
import type { GuestArgsBase, GuestInputs, GuestOutputs } from "./args";
import { claimOnConstruction, ownerOf } from "./claims";

/** The outputs every guest resource declares. */
export interface GuestResourceOutputs {
  readonly name: pulumi.Output<string>;
  /** Domain id while running, else null. */
  readonly domid: pulumi.Output<number | null>;
  /** Fingerprint (`SHA256:…`) of the SSH host key the install gave the guest; pin it to reach the guest. */
  readonly sshHostKey: pulumi.Output<string | null>;
  readonly running: pulumi.Output<boolean>;
  /** Files the guest owns on the dom0 (path → content). */
  readonly files: pulumi.Output<Record<string, string>>;
}

/** The base class of a guest kind's resource. */
export function defineGuestResource<Args extends GuestArgsBase & { ip?: unknown; mac?: unknown }>(
  kind: Kind<GuestInputs, GuestOutputs>,
): new (
  name: string,
  args: Args,
  opts?: pulumi.CustomResourceOptions,
) => pulumi.dynamic.Resource & GuestResourceOutputs {
  return defineResource<Args>({
    name: kind.name,
    outputOnly: kind.outputOnly ?? [],
    onConstruct: claimOnConstruction,
    programInputs: (_args, name) => ({ owner: ownerOf(name) }),
  }) as unknown as new (
    name: string,
    args: Args,
    opts?: pulumi.CustomResourceOptions,
  ) => pulumi.dynamic.Resource & GuestResourceOutputs;
}
