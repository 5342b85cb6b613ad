/**
 * RemoteFile's planning and lifecycle: one file on a host, kept at the declared content, owner and mode.
 *
 * A file that existed before is kept as its original (outside the rotation of dated backups) and put back on
 * destroy; when the original cannot be found, destroy refuses instead of removing the file.
 *
 * Secret content is never recorded in the outputs, only its digest (core/secrets.ts says why). A refresh compares
 * digests and never reads a secret file back.
 */
import type { Context, Kind } from "../../framework/kind";
import type { CommonInputs } from "../../framework/kind";
import { Checker, checkPath, USER_NAME } from "../../core/validate";
import {
  normalMode,
  ORIGINAL_SUFFIX,
  readRemoteFile,
  removeRemoteFile,
  sha256,
  statRemoteFiles,
  writeRemoteFile,
} from "../../remote/files";
import { shellQuote } from "../../core/shell";
import { RefusedError } from "../../core/errors";
import { recordedSecret, secretMarker, secretSha } from "../../core/secrets";

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
  /** The content is secret (marked with `pulumi.secret` in the program, or `sensitive: true`). */
  sensitive: boolean;
  /** Keep the dated backups when the resource is destroyed (always kept for a file that is not secret). */
  keepBackups: boolean;
}

export interface RemoteFileOutputs extends RemoteFileInputs {
  /** SHA-256 of the content written and reloaded; null while a reload is still owed. */
  sha256: string | null;
  /** The copy of the file as it was before this resource first wrote it; put back on destroy. */
  previousBackup: string | null;
}

/** The SHA-256 of the content `p` records (a marker's, for secret content). */
function recordedSha(p: Pick<RemoteFileInputs, "content">): string {
  return secretSha(p.content);
}

/** The content as the outputs record it: a marker for secret content, the content itself otherwise. */
function recordedContent(p: Pick<RemoteFileInputs, "content" | "sensitive">): string {
  return p.sensitive ? recordedSecret(p.content) : p.content;
}

/** A group name: like a user name. */
const GROUP_NAME = USER_NAME;
/** What a one-line command may not hold: it is run by bash, but never across lines. */
const ONE_LINE = /[\n\r\0]/;

export const remoteFileKind: Kind<RemoteFileInputs, RemoteFileOutputs> = {
  name: "RemoteFile",
  replaceOn: ["path"],
  deleteBeforeReplace: true,
  outputOnly: ["sha256", "previousBackup"],
  schemaVersion: 2,
  // 0.1.0 had no notion of secret content: such files were handled as not secret, and their backups kept.
  migrate: (old) => ({ sensitive: false, keepBackups: true, ...old }),
  // Outputs hold secret content as its digest: compare digests, so a recorded marker equals the same content.
  diffView: (p) =>
    typeof p.content === "string" && typeof p.sensitive === "boolean"
      ? { ...p, content: recordedContent(p as Pick<RemoteFileInputs, "content" | "sensitive">) }
      : p,

  check(raw, c: Checker) {
    const path = checkPath(c, raw, "path", { required: true });
    if (path === "/") c.fail("path", path, "must name a file, not the root directory");
    const content = raw.content;
    if (typeof content !== "string") c.fail("content", content, "must be a string", undefined, true);
    const owner = c.string(raw, "owner", {
      default: "root",
      pattern: USER_NAME,
      rule: "must be a Unix user name",
    });
    const group = c.string(raw, "group", {
      default: "root",
      pattern: GROUP_NAME,
      rule: "must be a Unix group name",
    });
    const mode = c.string(raw, "mode", {
      default: "644",
      pattern: /^0*[0-7]{3,4}$/,
      rule: 'must be octal permission bits such as "644", "0600" or "4755"',
    });
    if (mode && normalMode(mode).length > 4)
      c.fail("mode", mode, 'must be octal permission bits such as "644", "0600" or "4755"');
    const validate = c.string(raw, "validate", { max: 4096 }) ?? null;
    if (validate !== null && (!validate.includes("%s") || ONE_LINE.test(validate)))
      c.fail("validate", validate, "must be one command line that contains `%s` (the new file's path)");
    const createDirectories = c.boolean(raw, "createDirectories", false);
    const reloadCommand = c.string(raw, "reloadCommand", { max: 4096 }) ?? null;
    if (reloadCommand !== null && ONE_LINE.test(reloadCommand))
      c.fail("reloadCommand", reloadCommand, "must be one command line");
    const sensitive = c.boolean(raw, "sensitive", false);
    const keepBackups = c.boolean(raw, "keepBackups", !sensitive);
    if (!path || typeof content !== "string" || !owner || !group || !mode) return undefined;
    return {
      path,
      content,
      owner,
      group,
      mode: normalMode(mode),
      validate,
      createDirectories,
      reloadCommand,
      sensitive,
      keepBackups,
    };
  },

  id: (i) => `${i.connection.host}:${i.path}`,

  async create(ctx, inputs, progress) {
    const write = await put(ctx, inputs);
    const previousBackup = write.original ?? null;
    // From here on the file exists: a failing reload must not make the engine forget it.
    progress({ content: recordedContent(inputs), sha256: null, previousBackup });
    await reload(ctx, inputs);
    return { ...inputs, content: recordedContent(inputs), sha256: sha256(inputs.content), previousBackup };
  },

  async read(ctx, _id, outs) {
    const [state] = await statRemoteFiles(ctx.host, [outs.path]);
    if (!state) return null;
    const declared = recordedSha(outs);
    let content = recordedContent(outs);
    if (state.sha256 !== declared)
      content = outs.sensitive
        ? secretMarker(state.sha256)
        : ((await readRemoteFile(ctx.host, outs.path)) ?? "");
    return {
      ...outs,
      content,
      owner: state.owner,
      group: state.group,
      mode: state.mode,
      sha256: state.sha256 === declared ? outs.sha256 : state.sha256,
    };
  },

  async update(ctx, _id, olds, news) {
    const write = await put(ctx, news);
    // Reload when the file changed now, or when an earlier reload failed (sha256 still null).
    if (write.changed || olds.sha256 !== sha256(news.content)) await reload(ctx, news);
    return {
      ...news,
      content: recordedContent(news),
      sha256: sha256(news.content),
      previousBackup: olds.previousBackup ?? write.original ?? null,
    };
  },

  async delete(ctx, _id, outs) {
    const dropBackups = outs.sensitive === true && outs.keepBackups !== true;
    const prev = outs.previousBackup;
    if (prev && !prev.endsWith(ORIGINAL_SUFFIX)) {
      // State from 0.1: the original was the dated backup made at create. Put it back, or refuse.
      const b = shellQuote(prev);
      const p = shellQuote(outs.path);
      await ctx.host.refusable(
        `if [ -f ${b} ]; then cp -p -- ${b} ${p}; else xe_refuse ${shellQuote(`cannot put back the original of ${outs.path}: its backup ${prev} is gone; refusing to remove the file`)}; fi`,
        { summary: `restore ${outs.path}` },
      );
      return;
    }
    const result = await removeRemoteFile(ctx.host, outs.path, { expectOriginal: !!prev, dropBackups });
    if (prev && result !== "restored")
      throw new RefusedError(`the original of ${outs.path} was not put back (${result})`);
  },
};

async function reload(ctx: Context, i: RemoteFileInputs): Promise<void> {
  if (i.reloadCommand)
    await ctx.host.exec(i.reloadCommand, { summary: `reload after ${i.path}: ${i.reloadCommand}` });
}

function put(ctx: Context, i: RemoteFileInputs): ReturnType<typeof writeRemoteFile> {
  return writeRemoteFile(ctx.host, i.path, i.content, {
    owner: i.owner,
    group: i.group,
    mode: i.mode,
    mkdirs: i.createDirectories,
    sensitive: i.sensitive,
    ...(i.validate ? { validate: i.validate } : {}),
  });
}
