/** HetznerInstallimage: phase 0 of a Dom0Host, from Hetzner's rescue system to an installed system. See ./kind.ts. */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { ConnectionArgs } from "../../ssh/connection";
import { hetznerInstallimageKind } from "./kind";

export { hetznerInstallimageKind };
export type { HetznerInstallimageInputs, HetznerInstallimageOutputs } from "./kind";
export { postInstallScript } from "./scripts";

export interface HetznerInstallimageArgs {
  /** How to reach the rescue system: root, its host key pinned (Robot shows it when rescue is activated). */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /**
   * The drives to install on (wiped!): one, or two for software RAID 1. A device path, or `{ device, sizeBytes,
   * serial }` so a drive that is not the declared one is refused.
   */
  readonly drives: pulumi.Input<
    pulumi.Input<
      | string
      | { device: pulumi.Input<string>; sizeBytes?: pulumi.Input<number>; serial?: pulumi.Input<string> }
    >[]
  >;
  /** Must be true: installimage erases every drive in `drives`. */
  readonly wipeDisks: pulumi.Input<boolean>;
  /** The installed system's host name. */
  readonly hostname: pulumi.Input<string>;
  /** The image in the rescue system, e.g. `/root/.oldroot/nfs/images/Debian-1210-bookworm-amd64-base.tar.gz`. */
  readonly image: pulumi.Input<string>;
  /** Size of /boot in MiB. @default 1024 */
  readonly bootMiB?: pulumi.Input<number>;
  /** The volume group on the LVM physical volume. @default "vg0" */
  readonly volumeGroup?: pulumi.Input<string>;
  /** Root logical volume in GiB (the rest of the group stays free for guests). @default 30 */
  readonly rootGiB?: pulumi.Input<number>;
  /** Swap logical volume in GiB. @default 4 */
  readonly swapGiB?: pulumi.Input<number>;
  /** Seconds to wait for the installed system after the reboot. @default 900 */
  readonly bootTimeoutSeconds?: pulumi.Input<number>;
}

/** Hetznerʼs installimage run from the rescue system. */
export class HetznerInstallimage extends defineResource<HetznerInstallimageArgs>({
  name: hetznerInstallimageKind.name,
  outputOnly: hetznerInstallimageKind.outputOnly ?? [],
}) {
  /** The installed system's host key: pin it in the connection of everything that follows. */
  declare readonly installedHostKey: pulumi.Output<string>;
  declare readonly installedFingerprint: pulumi.Output<string>;
  declare readonly config: pulumi.Output<string>;
}
