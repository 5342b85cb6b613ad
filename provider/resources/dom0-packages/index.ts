/** Dom0Packages: a dom0's package sources, an upgrade and its packages. See ./kind.ts. */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { ConnectionArgs } from "../../ssh/connection";
import { dom0PackagesKind } from "./kind";

export { dom0PackagesKind };
export type { Dom0PackagesInputs, Dom0PackagesOutputs } from "./kind";
export { renderPackageFiles, installScript, aptProgress, parseInstalled } from "./plan";

export interface Dom0PackagesArgs {
  /** How to reach the host. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** `debian` or `ubuntu`. @default "debian" */
  readonly distribution?: pulumi.Input<"debian" | "ubuntu">;
  /** Release code name: `bookworm` (Debian 12) or `noble` (Ubuntu 24.04). @default the distribution's */
  readonly release?: pulumi.Input<string>;
  /** Package mirror URL. @default "http://deb.debian.org/debian" (Ubuntu: "http://archive.ubuntu.com/ubuntu") */
  readonly mirror?: pulumi.Input<string>;
  /** Mirror of the security updates. @default "http://deb.debian.org/debian-security" (Ubuntu: security.ubuntu.com) */
  readonly securityMirror?: pulumi.Input<string>;
  /** HTTP proxy apt uses (`Acquire::http::Proxy`). @default none */
  readonly proxy?: pulumi.Input<string>;
  /** Run `apt-get dist-upgrade` when the resource is created. @default true */
  readonly upgrade?: pulumi.Input<boolean>;
  /** Install recommended packages too. @default false */
  readonly recommends?: pulumi.Input<boolean>;
  /** Packages to install. */
  readonly packages: pulumi.Input<pulumi.Input<string>[]>;
  /** What destroy does: `keep` everything as it is, or `restore` the original sources files. @default "keep" */
  readonly onDelete?: pulumi.Input<"keep" | "restore">;
}

/** A dom0's package sources and packages. */
export class Dom0Packages extends defineResource<Dom0PackagesArgs>({
  name: dom0PackagesKind.name,
  outputOnly: dom0PackagesKind.outputOnly ?? [],
}) {
  declare readonly packages: pulumi.Output<string[]>;
  declare readonly files: pulumi.Output<Record<string, string>>;
  /** Newest kernel installed. */
  declare readonly kernel: pulumi.Output<string | null>;
  /** Newest Xen hypervisor under /boot. */
  declare readonly xen: pulumi.Output<string | null>;
}
