/**
 * Dom0Reboot's planning and lifecycle: the reboot that makes the other concerns' changes real (Xen, its command
 * line, a new kernel, the bridge), done only when the running host differs from the declaration, and proven
 * afterwards.
 *
 * Its `triggers` are the other concerns' digests, so the engine runs it after them and again when one changes;
 * what decides a reboot is the host itself ({@link rebootReasons}: not under Xen, another command line, a newer
 * kernel or Xen installed after this boot, the bridge missing or changed). It reboots, waits for SSH to answer
 * from a new boot (with a deadline), then checks `xl info` (Xen's version, dom0's memory) and the bridge, and
 * reports what was rebooted and why. `refresh` shows owed reboots as `pending`.
 */
import { Checker, checkPath, containsUnknown, UNKNOWN } from "../../core/validate";
import { refuseInput } from "../../dom0/concern";
import type { CommonInputs, Context, Kind } from "../../framework/kind";
import { SshPool } from "../../ssh/pool";
import {
  parseProbe,
  probeScript,
  REBOOT_SCRIPT,
  rebootReasons,
  verifyProblems,
  type BootExpectation,
  type BootProbe,
} from "./plan";

export interface Dom0RebootInputs extends CommonInputs, BootExpectation {
  triggers: Record<string, string>;
  allowReboot: boolean;
  timeoutSeconds: number;
  /** Reasons a boot is owed; `[]` is the declared state, refresh shows what the host still lacks. */
  pending: string[];
}

export interface Dom0RebootOutputs extends Dom0RebootInputs {
  /** What the host ran when last seen. */
  running: {
    bootId: string;
    xenVersion: string | null;
    dom0MemMiB: number | null;
    kernel: string;
    bridgePorts: string[] | null;
  } | null;
  /** The last reboot this resource did and why; null when none was needed. */
  lastReboot: { at: string; reasons: string[]; seconds: number } | null;
}

const IFNAME = /^[a-z][a-z0-9_.-]{0,14}$/;
const XEN_VERSION = /^\d+\.\d+$/;

export const dom0RebootKind: Kind<Dom0RebootInputs, Dom0RebootOutputs> = {
  name: "Dom0Reboot",
  replaceOn: [],
  outputOnly: ["running", "lastReboot"],

  check(raw, c: Checker) {
    const t = c.object(raw, "triggers");
    const triggers: Record<string, string> = {};
    if (t === UNKNOWN) Object.assign(triggers, { all: UNKNOWN });
    else
      for (const [k, v] of Object.entries(t ?? {}))
        triggers[k] =
          typeof v === "string" || typeof v === "number"
            ? String(v)
            : v === null || v === undefined
              ? ""
              : JSON.stringify(v);
    const xenVersion = c.string(raw, "xenVersion", {
      default: "4.17",
      pattern: XEN_VERSION,
      rule: "must be a Xen version such as 4.17",
    });
    const dom0MemMiB = c.integer(raw, "dom0MemMiB", { min: 512, max: 1_048_576, default: 1024, unit: "MiB" });
    const bridge = c.string(raw, "bridge", {
      default: "xenbr0",
      pattern: IFNAME,
      rule: "must be an interface name",
    });
    const uplink = c.string(raw, "uplink", {
      required: true,
      pattern: IFNAME,
      rule: "must be an interface name",
    });
    const networkFile = checkPath(c, raw, "networkFile", {
      default: "/etc/network/interfaces",
      under: "/etc",
      what: "a file",
    });
    const allowReboot = c.boolean(raw, "allowReboot", true);
    const timeoutSeconds =
      c.integer(raw, "timeoutSeconds", { min: 60, max: 7200, default: 900, unit: "seconds" }) ?? 900;
    if (!xenVersion || dom0MemMiB === undefined || !bridge || !uplink || !networkFile || !c.ok)
      return undefined;
    return {
      triggers,
      xenVersion,
      dom0MemMiB,
      bridge,
      uplink,
      networkFile,
      allowReboot,
      timeoutSeconds,
      pending: [],
    };
  },

  id: (i) => `${i.connection.host}:boot`,

  async create(ctx, i) {
    return converge(ctx, i);
  },

  async read(ctx, _id, outs) {
    const p = await probe(ctx.host, outs);
    return { ...outs, pending: rebootReasons(p, outs), running: runningOf(p) };
  },

  async update(ctx, _id, olds, news) {
    const outs = await converge(ctx, news);
    return { ...outs, lastReboot: outs.lastReboot ?? olds.lastReboot ?? null };
  },

  delete(ctx) {
    ctx.log.info(`nothing to undo for the boot of ${ctx.conn.host}: it keeps running as it is`);
    return Promise.resolve();
  },
};

function runningOf(p: BootProbe): Dom0RebootOutputs["running"] {
  return {
    bootId: p.bootId,
    xenVersion: p.xenVersion,
    dom0MemMiB: p.dom0MemMiB,
    kernel: p.kernelRunning,
    bridgePorts: p.bridgePorts,
  };
}

async function probe(
  host: Context["host"],
  e: Pick<BootExpectation, "bridge" | "networkFile">,
): Promise<BootProbe> {
  const r = await host.script(probeScript(e), { summary: "what the host runs" });
  return parseProbe(r.stdout);
}

async function converge(ctx: Context, i: Dom0RebootInputs): Promise<Dom0RebootOutputs> {
  if (containsUnknown(i)) throw new Error("Dom0Reboot inputs are not known");
  const before = await probe(ctx.host, i);
  const reasons = rebootReasons(before, i);
  if (reasons.length === 0) {
    ctx.log.info(
      `no reboot needed: Xen ${before.xenVersion}, dom0 ${before.dom0MemMiB} MiB, ${i.bridge} carries ${i.uplink}`,
    );
    return { ...i, pending: [], running: runningOf(before), lastReboot: null };
  }
  // A reboot cannot be taken back: the names the reasons compare (checked, but read back from state here) are
  // checked again, so a value no host could show never reboots one.
  if (!IFNAME.test(i.bridge)) refuseInput("bridge", i.bridge, "must be an interface name");
  if (!IFNAME.test(i.uplink)) refuseInput("uplink", i.uplink, "must be an interface name");
  if (!XEN_VERSION.test(i.xenVersion))
    refuseInput("xenVersion", i.xenVersion, "must be a Xen version such as 4.17");
  if (!i.allowReboot)
    throw new Error(
      `${ctx.conn.host} needs a reboot (${reasons.join("; ")}), and allowReboot is false: reboot it yourself, then run up again`,
    );
  ctx.log.warn(`rebooting ${ctx.conn.host}: ${reasons.join("; ")}`);
  const started = Date.now();
  await ctx.host.script(REBOOT_SCRIPT, { summary: "reboot" });
  const after = await waitForNewBoot(ctx, i, before.bootId);
  const seconds = Math.round((Date.now() - started) / 1000);
  const problems = verifyProblems(after, i);
  if (problems.length > 0)
    throw new Error(`${ctx.conn.host} came back after ${seconds} s but ${problems.join("; ")}`);
  ctx.log.info(
    `${ctx.conn.host} rebooted in ${seconds} s (${reasons.join("; ")}): Xen ${after.xenVersion}, dom0 ${after.dom0MemMiB} MiB, ${i.bridge} carries ${after.bridgePorts?.join(" ")}`,
  );
  return {
    ...i,
    pending: [],
    running: runningOf(after),
    lastReboot: { at: new Date().toISOString(), reasons, seconds },
  };
}

/** Dials afresh until the host answers from a boot other than `oldBootId`, or the deadline passes. */
async function waitForNewBoot(ctx: Context, i: Dom0RebootInputs, oldBootId: string): Promise<BootProbe> {
  const timeoutSeconds = i.timeoutSeconds;
  const deadline = Date.now() + timeoutSeconds * 1000;
  let last = "no answer yet";
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5000));
    const pool = new SshPool();
    try {
      const host = pool.host({ ...ctx.conn, dialErrorLimit: 1, perDialTimeout: 15 }, ctx.log);
      const p = await probe(host, i);
      if (p.bootId && p.bootId !== oldBootId) return p;
      last = "still the old boot";
    } catch (err) {
      last = (err as Error).message.split("\n")[0]!;
    } finally {
      await pool.close();
    }
    ctx.log.progress(
      `waiting for ${ctx.conn.host} to boot (${Math.round((deadline - Date.now()) / 1000)} s left; ${last})`,
    );
  }
  throw new Error(
    `${ctx.conn.host} did not answer SSH from a new boot within ${timeoutSeconds} s (last: ${last})`,
  );
}
