/**
 * RemoteFile: one file on a host, kept at the declared content, owner and mode.
 *
 * The smallest real resource: it exercises the whole pattern (check, pure diff, probe-then-write, refresh that
 * sees edits and deletions, atomic writes with backups) and is useful on its own for config files the other
 * resources do not manage. A file that existed before is backed up on create and put back on destroy.
 */
import * as pulumi from "@pulumi/pulumi";
import { ConnectionArgs } from "./connection";
import { CommonInputs, Context, providerFor, registerKind, resourceInputs, MODULE } from "./dynamic";
import { Checker, isSafeAbsolutePath, USER_NAME } from "./validate";
import { readRemoteFile, removeRemoteFile, sha256, statRemoteFiles, writeRemoteFile } from "./remote-file";
import { shellQuote } from "./shell";

export interface RemoteFileArgs {
  /** How to reach the host. */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** Absolute path of the file. Changing it replaces the resource. */
  readonly path: pulumi.Input<string>;
  /** The file's content (UTF-8). Mark it secret with `pulumi.secret` if it holds one. */
  readonly content: pulumi.Input<string>;
  /** Owning user. @default "root" */
  readonly owner?: pulumi.Input<string>;
  /** Owning group. @default "root" */
  readonly group?: pulumi.Input<string>;
  /** Octal permission bits. @default "644" */
  readonly mode?: pulumi.Input<string>;
  /** Command run on the new content before it is put in place; `%s` is its path (e.g. `sshd -t -f %s`). */
  readonly validate?: pulumi.Input<string>;
  /** Create missing parent directories. @default false */
  readonly createDirectories?: pulumi.Input<boolean>;
  /**
   * Command run after the content changed (e.g. `systemctl reload ssh`). If it fails, the file stays written,
   * the resource is recorded as incomplete and the next `up` runs the command again.
   */
  readonly reloadCommand?: pulumi.Input<string>;
}

/** Inputs as the provider sees them after `check`. */
export interface RemoteFileInputs extends CommonInputs {
  path: string;
  content: string;
  owner: string;
  group: string;
  mode: string;
  validate: string | null;
  createDirectories: boolean;
  reloadCommand: string | null;
}

export interface RemoteFileOutputs extends RemoteFileInputs {
  /** SHA-256 of the content written and reloaded; null while a reload is still owed. */
  sha256: string | null;
  /** Backup of a file that was already there when this resource was created; restored on destroy. */
  previousBackup: string | null;
}

export const remoteFileKind = registerKind<RemoteFileInputs, RemoteFileOutputs>({
  name: "RemoteFile",
  replaceOn: ["path", "connection.host"],
  deleteBeforeReplace: true,
  outputOnly: ["sha256", "previousBackup"],

  check(raw, c: Checker) {
    const path = c.string(raw, "path", { required: true, max: 4096 });
    if (path !== undefined && !isSafeAbsolutePath(path))
      c.fail("path", path, "must be an absolute path without `..`, NUL or newlines");
    const content = raw.content;
    if (typeof content !== "string") c.fail("content", content, "must be a string");
    const owner = c.string(raw, "owner", {
      default: "root",
      pattern: USER_NAME,
      rule: "must be a Unix user name",
    });
    const group = c.string(raw, "group", {
      default: "root",
      pattern: USER_NAME,
      rule: "must be a Unix group name",
    });
    const mode = c.string(raw, "mode", {
      default: "644",
      pattern: /^0?[0-7]{3,4}$/,
      rule: 'must be octal permission bits such as "644" or "0600"',
    });
    const validate = c.string(raw, "validate", { max: 4096 }) ?? null;
    if (validate !== null && (!validate.includes("%s") || /[\n\r]/.test(validate)))
      c.fail("validate", validate, "must be one command line that contains `%s` (the new file's path)");
    const createDirectories = c.boolean(raw, "createDirectories", false);
    const reloadCommand = c.string(raw, "reloadCommand", { max: 4096 }) ?? null;
    if (reloadCommand !== null && /[\n\r]/.test(reloadCommand))
      c.fail("reloadCommand", reloadCommand, "must be one command line");
    if (!path || typeof content !== "string" || !owner || !group || !mode) return undefined;
    return {
      path,
      content,
      owner,
      group,
      mode: mode.replace(/^0(?=[0-7]{3}$)/, ""),
      validate,
      createDirectories,
      reloadCommand,
    };
  },

  id: (i) => `${i.connection.host}:${i.path}`,

  async create(ctx, inputs, progress) {
    const write = await put(ctx, inputs);
    const previousBackup = write.backup ?? null;
    // From here on the file exists: a failing reload must not make the engine forget it.
    progress({ sha256: null, previousBackup });
    await reload(ctx, inputs);
    return { ...inputs, sha256: sha256(inputs.content), previousBackup };
  },

  async read(ctx, _id, outs) {
    const [state] = await statRemoteFiles(ctx.host, [outs.path]);
    if (!state) return null;
    let content = outs.content;
    if (state.sha256 !== sha256(outs.content)) content = (await readRemoteFile(ctx.host, outs.path)) ?? "";
    return {
      ...outs,
      content,
      owner: state.owner,
      group: state.group,
      mode: state.mode,
      sha256: state.sha256,
    };
  },

  async update(ctx, _id, olds, news) {
    const write = await put(ctx, news);
    // Reload when the file changed now, or when an earlier reload failed (sha256 still null).
    if (write.changed || olds.sha256 !== sha256(news.content)) await reload(ctx, news);
    return { ...news, sha256: sha256(news.content), previousBackup: olds.previousBackup ?? null };
  },

  async delete(ctx, _id, outs) {
    if (outs.previousBackup) {
      // Put back what was there before this resource took the file over.
      const b = shellQuote(outs.previousBackup);
      await ctx.host.script(
        `if [ -f ${b} ]; then cp -p -- ${b} ${shellQuote(outs.path)}; else rm -f -- ${shellQuote(outs.path)}; fi`,
        {
          summary: `restore ${outs.path}`,
        },
      );
      return;
    }
    await removeRemoteFile(ctx.host, outs.path);
  },
});

async function reload(ctx: Context, i: RemoteFileInputs): Promise<void> {
  if (i.reloadCommand)
    await ctx.host.exec(i.reloadCommand, { summary: `reload after ${i.path}: ${i.reloadCommand}` });
}

function put(ctx: Context, i: RemoteFileInputs): Promise<{ changed: boolean; backup?: string }> {
  return writeRemoteFile(ctx.host, i.path, i.content, {
    owner: i.owner,
    group: i.group,
    mode: i.mode,
    mkdirs: i.createDirectories,
    ...(i.validate ? { validate: i.validate } : {}),
  });
}

/** A file on a remote host with declared content, owner and mode. */
export class RemoteFile extends pulumi.dynamic.Resource {
  declare readonly path: pulumi.Output<string>;
  declare readonly content: pulumi.Output<string>;
  declare readonly owner: pulumi.Output<string>;
  declare readonly group: pulumi.Output<string>;
  declare readonly mode: pulumi.Output<string>;
  /** SHA-256 of the content written (null while a reload is owed). */
  declare readonly sha256: pulumi.Output<string | null>;
  /** Backup of a file that was there before; restored on destroy. */
  declare readonly previousBackup: pulumi.Output<string | null>;

  constructor(name: string, args: RemoteFileArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      providerFor("RemoteFile"),
      name,
      resourceInputs({ ...args }, remoteFileKind.outputOnly),
      opts,
      MODULE,
      "RemoteFile",
    );
  }
}
