/** Dom0Firewall: the dom0's own nftables table, applied without locking the operator out. See ./kind.ts. */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { ConnectionArgs } from "../../ssh/connection";
import { dom0FirewallKind } from "./kind";

export { dom0FirewallKind };
export type { Dom0FirewallInputs, Dom0FirewallOutputs } from "./kind";
export { renderRules, ruleModel, ruleRevision, peerProblem, RULES_FILE } from "./plan";

export interface Dom0FirewallArgs {
  /** How to reach the host. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** sshd's port. @default 22 */
  readonly sshPort?: pulumi.Input<number>;
  /**
   * Where SSH may come from: addresses or networks, IPv4 or IPv6 (`198.51.100.7`, `2001:db8::/32`). Must include
   * the address xen-estate connects from (checked on the host before anything changes).
   * @default ["0.0.0.0/0", "::/0"] (anywhere)
   */
  readonly trustedSources?: pulumi.Input<pulumi.Input<string>[]>;
  /** TCP ports open to everyone. @default [80, 443] */
  readonly openTcp?: pulumi.Input<pulumi.Input<number>[]>;
  /** UDP ports open to everyone. @default [] */
  readonly openUdp?: pulumi.Input<pulumi.Input<number>[]>;
  /** Seconds the host waits for the provider to log in again before it undoes a rule change. @default 90 */
  readonly confirmSeconds?: pulumi.Input<number>;
  /** `keep` the rules on destroy (default), or `restore`: remove the table and its unit. @default "keep" */
  readonly onDelete?: pulumi.Input<"keep" | "restore">;
}

/** A dom0's own firewall table. */
export class Dom0Firewall extends defineResource<Dom0FirewallArgs>({
  name: dom0FirewallKind.name,
  outputOnly: dom0FirewallKind.outputOnly ?? [],
}) {
  declare readonly trustedSources: pulumi.Output<string[]>;
  declare readonly files: pulumi.Output<Record<string, string>>;
  /** Revision of the rules loaded in the kernel. */
  declare readonly loaded: pulumi.Output<string>;
}
