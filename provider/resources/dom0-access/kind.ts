/**
 * Dom0Access' planning and lifecycle: the admin user (its keys, passwordless sudo) and sshd hardened through a
 * drop-in (port, no root login, no passwords, no X11).
 *
 * This is the concern that moves the SSH path, so it never locks the operator out:
 * - `check` refuses what it can know offline: an admin named root, keys with options, and an admin whose keys
 *   leave out the key the connection logs in with (root may not log in afterwards).
 * - the drop-in is applied under the host's rollback timer (remote/rollback.ts): sshd is validated (`sshd -t`, the
 *   effective port and settings) and reloaded, then the provider logs in through a NEW connection on the new port
 *   as the admin; if that fails, the host puts the old drop-in back by itself and the update fails.
 * - once applied, the host is reached as the admin on the new port ({@link Kind.reachedBy}); the outputs say how.
 * - a create whose declared login (root) is refused goes on as the admin on `connectPort`: an earlier run was cut
 *   after the hardening took effect (confirmed, or still waiting for its confirmation, which the host's own timer
 *   then undoes while this run waits), so the host is reached as this resource would leave it.
 */
import { SshConnectError } from "../../core/errors";
import { Checker, UNKNOWN, USER_NAME } from "../../core/validate";
import {
  checkOnDelete,
  checkOs,
  deleteOwnedFiles,
  observeFiles,
  writeOwnedFiles,
  type OnDelete,
} from "../../dom0/concern";
import { parseAuthorizedKey } from "../../dom0/keys";
import type { Distribution } from "../../dom0/os";
import type { CommonInputs, Context, Kind } from "../../framework/kind";
import { renderedFiles } from "../../framework/plan";
import { applyWithRollback } from "../../remote/rollback";
import type { Credentials } from "../../ssh/connection";
import { SshPool } from "../../ssh/pool";
import {
  authorizedKeysPath,
  lockoutProblem,
  renderAuthorizedKeys,
  renderSshdDropIn,
  renderSudoers,
  sshdActivateScript,
  sshdReloadScript,
  SSHD_DROP_IN,
  sudoersPath,
  userProbeScript,
  userScript,
} from "./plan";

export interface Dom0AccessInputs extends CommonInputs {
  distribution: Distribution;
  release: string;
  adminUser: string;
  authorizedKeys: string[];
  sshPort: number;
  /** The port xen-estate dials to reach sshd's port (differs only behind a port forward). */
  connectPort: number;
  confirmSeconds: number;
  onDelete: OnDelete;
  /** The admin's files, path → content. */
  files: Record<string, string>;
  /** The sshd drop-in, path → content (applied under the rollback timer). */
  sshdFiles: Record<string, string>;
  /** The admin user exists; refresh reports a deleted user. Always true. */
  userPresent: boolean;
}

export interface Dom0AccessOutputs extends Dom0AccessInputs {
  /** How the host is reached since the hardening was confirmed: sshd's port and the admin; null before. */
  applied: { port: number; user: string } | null;
}

const RESERVED = new Set(["root", "daemon", "bin", "sys", "sync", "nobody", "sshd", "www-data", "xen"]);

export const dom0AccessKind: Kind<Dom0AccessInputs, Dom0AccessOutputs> = {
  name: "Dom0Access",
  replaceOn: ["adminUser"],
  deleteBeforeReplace: true,
  outputOnly: ["applied"],

  check(raw, c: Checker) {
    const os = checkOs(c, raw);
    const adminUser = c.string(raw, "adminUser", {
      required: true,
      pattern: USER_NAME,
      rule: "must be a Unix user name (lower-case letters, digits, `_` and `-`, starting with a letter or `_`)",
    });
    if (adminUser && RESERVED.has(adminUser))
      c.fail(
        "adminUser",
        adminUser,
        "must not be root or a system account",
        'Name a person or a role, e.g. "ops"',
      );
    const listed = c.array(raw, "authorizedKeys", true);
    const authorizedKeys: string[] = [];
    if (listed === UNKNOWN) authorizedKeys.push(UNKNOWN);
    else {
      if (Array.isArray(listed) && listed.length === 0)
        c.fail(
          "authorizedKeys",
          listed,
          "must hold at least one key: without one the admin could never log in",
        );
      (listed ?? []).forEach((k, i) => {
        if (k === UNKNOWN) return authorizedKeys.push(k);
        if (typeof k !== "string") return c.fail(`authorizedKeys[${i}]`, k, "must be a public key line");
        const parsed = parseAuthorizedKey(k);
        if ("error" in parsed) return c.fail(`authorizedKeys[${i}]`, k, parsed.error);
        authorizedKeys.push(`${parsed.type} ${parsed.key}${parsed.comment ? ` ${parsed.comment}` : ""}`);
        return undefined;
      });
    }
    const sshPort = c.integer(raw, "sshPort", { min: 1, max: 65535, default: 22 });
    const connectPort = c.integer(raw, "connectPort", { min: 1, max: 65535 }) ?? sshPort ?? 22;
    const confirmSeconds =
      c.integer(raw, "confirmSeconds", { min: 15, max: 3600, default: 90, unit: "seconds" }) ?? 90;
    const onDelete = checkOnDelete(c, raw);
    const creds = (
      raw.credentials && typeof raw.credentials === "object" ? raw.credentials : {}
    ) as Credentials;
    const conn = (raw.connection && typeof raw.connection === "object" ? raw.connection : {}) as Record<
      string,
      unknown
    >;
    const privateKey = creds.privateKey ?? (conn.privateKey as string | undefined);
    if (
      adminUser &&
      adminUser !== UNKNOWN &&
      listed !== UNKNOWN &&
      !authorizedKeys.includes(UNKNOWN) &&
      typeof privateKey === "string" &&
      privateKey !== UNKNOWN
    ) {
      const problem = lockoutProblem({
        connectionUser: typeof conn.user === "string" ? conn.user : "root",
        privateKey,
        ...(typeof creds.privateKeyPassword === "string" ? { passphrase: creds.privateKeyPassword } : {}),
        adminUser,
        authorizedKeys,
      });
      if (problem) c.fail("authorizedKeys", `${authorizedKeys.length} key(s)`, problem);
    }
    if (!os || !adminUser || sshPort === undefined || !c.ok) return undefined;
    const partial = { adminUser, authorizedKeys, sshPort };
    return {
      distribution: os.distribution,
      release: os.release,
      ...partial,
      connectPort,
      confirmSeconds,
      onDelete,
      userPresent: true,
      files: renderedFiles(partial, (p) => ({
        [sudoersPath(p.adminUser)]: renderSudoers(p),
        [authorizedKeysPath(p.adminUser)]: renderAuthorizedKeys(p),
      })),
      sshdFiles: renderedFiles(partial, (p) => ({ [SSHD_DROP_IN]: renderSshdDropIn(p) })),
    };
  },

  reachedBy: (outs) => (outs.applied ? { port: outs.applied.port, user: outs.applied.user } : undefined),

  id: (i) => `${i.connection.host}:access`,

  async create(ctx, i, progress) {
    const record = (a: { port: number; user: string }): void => progress({ applied: a });
    try {
      return { ...i, applied: await converge(ctx, i, record) };
    } catch (err) {
      // Refused before anything ran (the first step is the first login): an earlier run's hardening stands.
      if (!(err instanceof SshConnectError) || err.kind !== "auth") throw err;
      const admin = { ...ctx.conn, port: i.connectPort, user: i.adminUser };
      if (admin.user === ctx.conn.user && admin.port === ctx.conn.port) throw err;
      ctx.log.warn(
        `${ctx.conn.user} is refused on port ${ctx.conn.port}: sshd's hardening from an earlier run stands (confirmed, or waiting for its confirmation); going on as ${i.adminUser} on port ${i.connectPort}`,
      );
      const pool = new SshPool();
      try {
        const host = pool.host(admin, ctx.log);
        return { ...i, applied: await converge({ ...ctx, host, conn: host.conn }, i, record) };
      } finally {
        await pool.close();
      }
    }
  },

  async read(ctx, _id, outs) {
    const files = await observeFiles(ctx, outs.files);
    const sshdFiles = await observeFiles(ctx, outs.sshdFiles);
    const r = await ctx.host.script(userProbeScript(outs.adminUser), {
      summary: `look for ${outs.adminUser}`,
    });
    return { ...outs, files, sshdFiles, userPresent: /^user present$/m.test(r.stdout) };
  },

  async update(ctx, _id, _olds, news) {
    const applied = await converge(ctx, news, () => undefined);
    return { ...news, applied };
  },

  async delete(ctx, _id, outs) {
    // Never undone, even with onDelete "restore": removing the admin, its keys or sudo, or putting sshd back on the
    // old port with root logins, would cut the very path xen-estate (and the operator) reach the host by.
    await deleteOwnedFiles(
      ctx,
      `the admin ${outs.adminUser} and sshd's hardening`,
      [...Object.keys(outs.files), ...Object.keys(outs.sshdFiles)],
      "keep",
    );
    if (outs.onDelete === "restore")
      ctx.log.warn(
        `onDelete "restore" does not undo sshd's hardening or the admin ${outs.adminUser}: that would cut the SSH path in use; remove ${SSHD_DROP_IN} yourself (and reload sshd) if you want that`,
      );
  },
};

/** The admin's files first (so the new login works), then sshd under the rollback timer. */
async function converge(
  ctx: Context,
  i: Dom0AccessInputs,
  onApplied: (a: { port: number; user: string }) => void,
): Promise<{ port: number; user: string }> {
  const r = await ctx.host.refusable(userScript(i.adminUser), {
    summary: `make the admin ${i.adminUser}`,
    timeoutMs: 1_800_000,
  });
  if (/^created$/m.test(r)) ctx.log.info(`made the admin user ${i.adminUser}`);
  await writeOwnedFiles(ctx, i.files, {
    [sudoersPath(i.adminUser)]: { mode: "440", validate: "visudo -cqf %s" },
    [authorizedKeysPath(i.adminUser)]: { mode: "600", owner: i.adminUser, group: i.adminUser },
  });
  const facts = { socketActivated: i.distribution === "ubuntu" };
  const next = { port: i.connectPort, user: i.adminUser };
  const result = await applyWithRollback(
    ctx.host,
    {
      label: "sshd",
      files: Object.entries(i.sshdFiles).map(([path, content]) => ({
        path,
        content,
        mode: "644",
        mkdirs: true,
      })),
      activate: sshdActivateScript({ sshPort: i.sshPort, ...facts }),
      reactivate: sshdReloadScript(facts),
      confirmSeconds: i.confirmSeconds,
    },
    {
      reconnect: { ...ctx.conn, port: i.connectPort, user: i.adminUser },
      describe: `sshd on port ${i.sshPort}${i.connectPort !== i.sshPort ? ` (dialled as ${i.connectPort})` : ""}, logging in as ${i.adminUser}`,
    },
  );
  if (result.changed) ctx.log.info(`sshd now answers on port ${i.sshPort}; root and passwords are refused`);
  onApplied(next);
  return next;
}
