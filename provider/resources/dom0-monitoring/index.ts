/** Dom0Monitoring: mail relay and aliases, mdadm and smartd mail, relatime. See ./kind.ts. */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { ConnectionArgs } from "../../ssh/connection";
import { dom0MonitoringKind } from "./kind";

export { dom0MonitoringKind };
export type { Dom0MonitoringInputs, Dom0MonitoringOutputs } from "./kind";
export { renderMonitoringFiles, relatimeFstab, DEFAULT_SMART_SCHEDULE } from "./plan";

export interface Dom0MonitoringArgs {
  /** How to reach the host. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** Where root's and the admin's mail goes (RAID and SMART alerts among it). */
  readonly mailTo: pulumi.Input<string>;
  /** The SMTP relay mail leaves through. */
  readonly relay: pulumi.Input<{
    host: pulumi.Input<string>;
    port?: pulumi.Input<number>;
    starttls?: pulumi.Input<boolean>;
  }>;
  /** The host's mail name (sender domain). @default "localhost" */
  readonly mailName?: pulumi.Input<string>;
  /** More local accounts whose mail goes to `mailTo` (root always does). @default [] */
  readonly users?: pulumi.Input<pulumi.Input<string>[]>;
  /** Disks smartd watches, each with its self-test schedule. @default [] (smartd is not configured) */
  readonly smartDisks?: pulumi.Input<
    pulumi.Input<string | { device: pulumi.Input<string>; schedule?: pulumi.Input<string> }>[]
  >;
  /** `keep` (default) or `restore` the original files on destroy. @default "keep" */
  readonly onDelete?: pulumi.Input<"keep" | "restore">;
}

/** A dom0's mail and disk monitoring. */
export class Dom0Monitoring extends defineResource<Dom0MonitoringArgs>({
  name: dom0MonitoringKind.name,
  outputOnly: dom0MonitoringKind.outputOnly ?? [],
}) {
  declare readonly files: pulumi.Output<Record<string, string>>;
}
