/** Dom0XenBoot: GRUB, xl.conf and xendomains of a dom0. See ./kind.ts. */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { ConnectionArgs } from "../../ssh/connection";
import { dom0XenBootKind } from "./kind";

export { dom0XenBootKind };
export type { Dom0XenBootInputs, Dom0XenBootOutputs } from "./kind";
export { renderXenBootFiles, xenCommandLine } from "./plan";

export interface Dom0XenBootArgs {
  /** How to reach the host. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** dom0's memory in MiB, fixed (`dom0_mem=X,max:X`). Checked against the host's memory. @default 1024 */
  readonly dom0MemMiB?: pulumi.Input<number>;
  /** dom0's vCPUs (`dom0_max_vcpus`). @default all */
  readonly dom0Vcpus?: pulumi.Input<number>;
  /** More words for Xen's command line (e.g. `console=com1 com1=115200,8n1`). @default none */
  readonly xenArgs?: pulumi.Input<string>;
  /** dom0 kernel's command line under Xen (`GRUB_CMDLINE_LINUX_XEN_REPLACE`), e.g. `console=hvc0`. @default the kernel's usual one */
  readonly dom0KernelArgs?: pulumi.Input<string>;
  /** Bridge guests' vifs join by default (xl.conf). @default "xenbr0" */
  readonly bridge?: pulumi.Input<string>;
  /** Run pygrub de-privileged (LIBXL_BOOTLOADER_RESTRICT, Xen 4.17), also for guests started at boot. @default true */
  readonly bootloaderRestrict?: pulumi.Input<boolean>;
  /** Seconds xendomains waits for guests to shut down with the host. @default 300 */
  readonly stopSeconds?: pulumi.Input<number>;
  /** `keep` (default) or `restore` the package's files and GRUB settings on destroy. @default "keep" */
  readonly onDelete?: pulumi.Input<"keep" | "restore">;
}

/** Xen's boot settings on a dom0. */
export class Dom0XenBoot extends defineResource<Dom0XenBootArgs>({
  name: dom0XenBootKind.name,
  outputOnly: dom0XenBootKind.outputOnly ?? [],
}) {
  declare readonly files: pulumi.Output<Record<string, string>>;
  declare readonly commandLine: pulumi.Output<string>;
  declare readonly bootDigest: pulumi.Output<string>;
}
