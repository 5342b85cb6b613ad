/**
 * Dom0Monitoring's planning and lifecycle: mail leaves the host through a relay (dma), root's and the admin's mail
 * goes to the operator (/etc/aliases), mdadm mails a degraded array (MAILADDR root), smartd tests each declared
 * disk on a schedule and mails problems, and the root filesystem is mounted relatime.
 */
import { Checker, isDevicePath, isHostName, PATH_RULE, UNKNOWN, USER_NAME } from "../../core/validate";
import {
  checkOnDelete,
  deleteOwnedFiles,
  observeFiles,
  writeOwnedFiles,
  type OnDelete,
} from "../../dom0/concern";
import type { CommonInputs, Context, Kind } from "../../framework/kind";
import { renderedFiles } from "../../framework/plan";
import { readRemoteFile, writeRemoteFile } from "../../remote/files";
import { ensurePackage } from "../../remote/packages";
import {
  DEFAULT_SMART_SCHEDULE,
  MDADM_MAILADDR_SCRIPT,
  PROBE_SCRIPT,
  RELATIME_REMOUNT_SCRIPT,
  relatimeFstab,
  renderMonitoringFiles,
  SMARTD_CONF,
  SMARTD_RESTART_SCRIPT,
  SMARTD_RESTORED_SCRIPT,
  type MonitoringPlan,
} from "./plan";

export interface Dom0MonitoringInputs extends CommonInputs, MonitoringPlan {
  onDelete: OnDelete;
  files: Record<string, string>;
  /** mdadm mails this address (through the aliases). Always "root". */
  mdadmMailTo: string;
  /** The root filesystem's atime mode. Always "relatime" (or "noatime", which is kept). */
  rootAtime: string;
}

export type Dom0MonitoringOutputs = Dom0MonitoringInputs;

const EMAIL = /^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}$/;
const SCHEDULE = /^\([A-Za-z0-9./|]+\)$|^[A-Za-z0-9./]+$/;

export const dom0MonitoringKind: Kind<Dom0MonitoringInputs, Dom0MonitoringOutputs> = {
  name: "Dom0Monitoring",
  replaceOn: [],

  check(raw, c: Checker) {
    const mailTo = c.string(raw, "mailTo", {
      required: true,
      max: 320,
      pattern: EMAIL,
      rule: "must be an e-mail address such as ops@example.org",
    });
    const relay = c.object(raw, "relay", true);
    let relayHost: string | undefined;
    let relayPort = 25;
    if (relay && relay !== UNKNOWN) {
      const rc = c.at("relay");
      relayHost = rc.string(relay, "host", { required: true, max: 253 });
      if (relayHost && relayHost !== UNKNOWN && !isHostName(relayHost))
        rc.fail("host", relayHost, "must be a host name or an IP address");
      relayPort = rc.integer(relay, "port", { min: 1, max: 65535, default: 25 }) ?? 25;
    }
    const starttls = relay && relay !== UNKNOWN ? c.at("relay").boolean(relay, "starttls", false) : false;
    const mailName = c.string(raw, "mailName", { default: "localhost", max: 253 });
    if (mailName && mailName !== UNKNOWN && !isHostName(mailName))
      c.fail("mailName", mailName, "must be a host name");
    const listed = c.array(raw, "users");
    const users = ["root"];
    if (listed !== UNKNOWN)
      (listed ?? []).forEach((u, i) => {
        // One not known yet (preview) keeps the aliases unknown: dropping it would show them without that user.
        if (u === UNKNOWN) users.push(u);
        else if (typeof u !== "string" || !USER_NAME.test(u))
          c.fail(`users[${i}]`, u, "must be a Unix user name");
        else if (!users.includes(u)) users.push(u);
      });
    const disks = c.array(raw, "smartDisks");
    const smartDisks: MonitoringPlan["smartDisks"] = [];
    if (disks !== UNKNOWN)
      (disks ?? []).forEach((d, i) => {
        const dc = c.at(`smartDisks[${i}]`);
        if (typeof d === "string") d = { device: d };
        if (!d || typeof d !== "object")
          return dc.fail("", d, "must be a device path or { device, schedule }");
        const o = d as Record<string, unknown>;
        const device = dc.string(o, "device", {
          required: true,
          pattern: /^\/dev\/[A-Za-z0-9/_.-]+$/,
          rule: "must be a device under /dev, e.g. /dev/nvme0n1",
        });
        const schedule = dc.string(o, "schedule", {
          default: DEFAULT_SMART_SCHEDULE,
          pattern: SCHEDULE,
          rule: "must be a smartd -s regular expression such as (S/../.././02|L/../../6/03)",
        });
        if (device && device !== UNKNOWN && !isDevicePath(device)) dc.fail("device", device, PATH_RULE);
        if (device && schedule && dc.ok) smartDisks.push({ device, schedule });
        return undefined;
      });
    const onDelete = checkOnDelete(c, raw);
    if (!mailTo || !relayHost || !mailName || !c.ok) return undefined;
    const plan: MonitoringPlan = { mailTo, relayHost, relayPort, starttls, mailName, users, smartDisks };
    return {
      ...plan,
      onDelete,
      mdadmMailTo: "root",
      rootAtime: "relatime",
      files: renderedFiles(plan, renderMonitoringFiles),
    };
  },

  id: (i) => `${i.connection.host}:monitoring`,

  async create(ctx, i) {
    return apply(ctx, i);
  },

  async read(ctx, _id, outs) {
    const files = await observeFiles(ctx, outs.files);
    const r = await ctx.host.script(PROBE_SCRIPT, { summary: "look at mdadm's mail and the root mount" });
    const mailaddr = /^mailaddr (\S+)$/m.exec(r.stdout)?.[1] ?? "none";
    const atime = /^atime (\S+)$/m.exec(r.stdout)?.[1] ?? "unknown";
    return { ...outs, files, mdadmMailTo: mailaddr, rootAtime: atime === "noatime" ? "relatime" : atime };
  },

  async update(ctx, _id, _olds, news) {
    return apply(ctx, news);
  },

  async delete(ctx, _id, outs) {
    await deleteOwnedFiles(
      ctx,
      "the mail relay, aliases and smartd's schedule",
      Object.keys(outs.files),
      outs.onDelete,
    );
    // smartd reads its schedule at start only: the restored one needs a restart, as ours did.
    if (outs.onDelete === "restore" && SMARTD_CONF in outs.files)
      await ctx.host.script(SMARTD_RESTORED_SCRIPT, { summary: "restart smartd on the restored schedule" });
  },
};

async function apply(ctx: Context, i: Dom0MonitoringInputs): Promise<Dom0MonitoringOutputs> {
  await ensurePackage(ctx.host, { command: "dma", packages: ["dma"], install: true, setting: "packages" });
  await writeOwnedFiles(ctx, i.files);
  await ctx.host.script(MDADM_MAILADDR_SCRIPT, { summary: "mdadm mails root" });
  if (SMARTD_CONF in i.files)
    await ctx.host.script(SMARTD_RESTART_SCRIPT, { summary: "restart smartd unless it runs this schedule" });
  const fstab = await readRemoteFile(ctx.host, "/etc/fstab");
  const next = fstab === null ? null : relatimeFstab(fstab);
  if (next !== null) await writeRemoteFile(ctx.host, "/etc/fstab", next);
  await ctx.host.script(RELATIME_REMOUNT_SCRIPT, { summary: "remount / relatime if it runs strictatime" });
  return { ...i };
}
