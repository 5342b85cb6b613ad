/** Dom0Reboot: the reboot a dom0's changes need, only when needed, verified. See ./kind.ts. */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { ConnectionArgs } from "../../ssh/connection";
import { dom0RebootKind } from "./kind";

export { dom0RebootKind };
export type { Dom0RebootInputs, Dom0RebootOutputs } from "./kind";
export { rebootReasons, verifyProblems, parseProbe } from "./plan";

export interface Dom0RebootArgs {
  /** How to reach the host. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** Digests of the other concerns (kernel, Xen, boot settings, network): a change runs this again. */
  readonly triggers: pulumi.Input<Record<string, pulumi.Input<string | null>>>;
  /** The Xen version the host must run. @default "4.17" */
  readonly xenVersion?: pulumi.Input<string>;
  /** dom0's memory in MiB, as on Xen's command line. @default 1024 */
  readonly dom0MemMiB?: pulumi.Input<number>;
  /** @default "xenbr0" */
  readonly bridge?: pulumi.Input<string>;
  /** The NIC the bridge must carry. */
  readonly uplink: pulumi.Input<string>;
  /** The file the bridge is configured in. @default "/etc/network/interfaces" */
  readonly networkFile?: pulumi.Input<string>;
  /** Reboot when needed; false fails instead, naming the reasons. @default true */
  readonly allowReboot?: pulumi.Input<boolean>;
  /** Seconds to wait for SSH after a reboot. @default 900 */
  readonly timeoutSeconds?: pulumi.Input<number>;
}

/** The reboot that makes a dom0's boot settings real. */
export class Dom0Reboot extends defineResource<Dom0RebootArgs>({
  name: dom0RebootKind.name,
  outputOnly: dom0RebootKind.outputOnly ?? [],
}) {
  declare readonly running: pulumi.Output<{
    bootId: string;
    xenVersion: string | null;
    dom0MemMiB: number | null;
    kernel: string;
    bridgePorts: string[] | null;
  } | null>;
  declare readonly lastReboot: pulumi.Output<{ at: string; reasons: string[]; seconds: number } | null>;
}
