/**
 * RemoteFile: one file on a host, kept at the declared content, owner and mode.
 *
 * The smallest real resource: it exercises the whole pattern (check, pure diff, probe-then-write, refresh that
 * sees edits and deletions, atomic writes with backups) and is useful on its own for config files the other
 * resources do not manage. A file that existed before is kept as its original and put back on destroy.
 */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { ConnectionArgs } from "../../ssh/connection";
import { remoteFileKind } from "./kind";

export { remoteFileKind };
export type { RemoteFileInputs, RemoteFileOutputs } from "./kind";

export interface RemoteFileArgs {
  /** How to reach the host. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /**
   * Absolute path of the file: letters, digits and `_.+@%=,:~-` between slashes. It must name a regular file or
   * nothing (a directory, device or symlink is refused). Changing it replaces the resource.
   */
  readonly path: pulumi.Input<string>;
  /**
   * The file's content (UTF-8). Mark it secret with `pulumi.secret` if it holds one: then its backups are mode 600,
   * removed with the resource, and validation output is not shown.
   */
  readonly content: pulumi.Input<string>;
  /** Owning user. @default "root" */
  readonly owner?: pulumi.Input<string>;
  /** Owning group. @default "root" */
  readonly group?: pulumi.Input<string>;
  /** Octal permission bits (`"644"`, `"0600"`, `"4755"`), stored as `stat -c %a` prints them. @default "644" */
  readonly mode?: pulumi.Input<string>;
  /**
   * Command line run by bash on the new content before it is put in place; `%s` stands for its path as one word,
   * so leave it unquoted (e.g. `sshd -t -f %s`).
   */
  readonly validate?: pulumi.Input<string>;
  /** Create missing parent directories. @default false */
  readonly createDirectories?: pulumi.Input<boolean>;
  /**
   * Command run after the content changed (e.g. `systemctl reload ssh`). If it fails, the file stays written,
   * the resource is recorded as incomplete and the next `up` runs the command again.
   */
  readonly reloadCommand?: pulumi.Input<string>;
  /**
   * Treat the content as secret even when it is not marked with `pulumi.secret`: state and the engine's output then
   * hold it encrypted, as a marked one. @default whether it is marked
   */
  readonly sensitive?: pulumi.Input<boolean>;
  /** Keep the dated backups when the resource is destroyed. @default true, false for secret content */
  readonly keepBackups?: pulumi.Input<boolean>;
}

/** A file on a remote host with declared content, owner and mode. */
export class RemoteFile extends defineResource<RemoteFileArgs>({
  name: remoteFileKind.name,
  outputOnly: remoteFileKind.outputOnly ?? [],
  // Whether the content is a secret is known only here, in the program: the provider sees plain values.
  programInputs: (args) => ({
    sensitive: args.sensitive ?? pulumi.isSecret(pulumi.output(args.content)).catch(() => false),
    // Content declared sensitive is kept out of state and the engine's output as `pulumi.secret` keeps it.
    ...(args.sensitive === undefined
      ? {}
      : {
          content: pulumi
            .all([args.sensitive, args.content])
            .apply(([sensitive, content]) => (sensitive ? pulumi.secret(content) : pulumi.output(content))),
        }),
  }),
}) {
  declare readonly path: pulumi.Output<string>;
  /**
   * The content; for secret content only `[secret sha256:<hex>]`, its digest (outputs travel back to the program,
   * whose SDK logs them at debug level): use the value the program declared.
   */
  declare readonly content: pulumi.Output<string>;
  declare readonly owner: pulumi.Output<string>;
  declare readonly group: pulumi.Output<string>;
  declare readonly mode: pulumi.Output<string>;
  /** SHA-256 of the content written (null while a reload is owed). */
  declare readonly sha256: pulumi.Output<string | null>;
  /** The file as it was before this resource first wrote it; put back on destroy. */
  declare readonly previousBackup: pulumi.Output<string | null>;
}
