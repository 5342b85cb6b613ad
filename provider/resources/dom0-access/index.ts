/** Dom0Access: the admin user and sshd's hardening, never locking the operator out. See ./kind.ts. */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { ConnectionArgs } from "../../ssh/connection";
import { dom0AccessKind } from "./kind";

export { dom0AccessKind };
export type { Dom0AccessInputs, Dom0AccessOutputs } from "./kind";
export { renderSshdDropIn, sshdActivateScript, lockoutProblem, SSHD_DROP_IN } from "./plan";

export interface Dom0AccessArgs {
  /** How to reach the host before the hardening (e.g. root on port 22 right after the install). */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** `debian` or `ubuntu` (Ubuntu 24.04 starts sshd through ssh.socket). @default "debian" */
  readonly distribution?: pulumi.Input<"debian" | "ubuntu">;
  /** @default the distribution's supported release */
  readonly release?: pulumi.Input<string>;
  /** The admin's user name (not root). Changing it makes a new admin (the old one stays on the host). */
  readonly adminUser: pulumi.Input<string>;
  /**
   * Public keys (`ssh-ed25519 AAAA… comment`, no options) that may log in as the admin. Must include the key of
   * `connection.privateKey`: xen-estate logs in as the admin from now on.
   */
  readonly authorizedKeys: pulumi.Input<pulumi.Input<string>[]>;
  /** sshd's port. @default 22 */
  readonly sshPort?: pulumi.Input<number>;
  /** The port xen-estate dials to reach sshd's port, when a port forward sits in between (a lab). @default sshPort */
  readonly connectPort?: pulumi.Input<number>;
  /** Seconds the host waits for the provider to log in again before it undoes an sshd change. @default 90 */
  readonly confirmSeconds?: pulumi.Input<number>;
  /** `keep` (default) or `restore`; the hardening itself is never undone by destroy (it would cut the SSH path). */
  readonly onDelete?: pulumi.Input<"keep" | "restore">;
}

/** The admin user and sshd's hardening of a dom0. */
export class Dom0Access extends defineResource<Dom0AccessArgs>({
  name: dom0AccessKind.name,
  outputOnly: dom0AccessKind.outputOnly ?? [],
}) {
  declare readonly adminUser: pulumi.Output<string>;
  declare readonly sshPort: pulumi.Output<number>;
  /** How the host is reached since the hardening was confirmed. */
  declare readonly applied: pulumi.Output<{ port: number; user: string } | null>;
}
