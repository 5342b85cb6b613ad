/**
 * Dom0XenBoot's planning and lifecycle: GRUB boots Xen by default with dom0's memory fixed (`dom0_mem=X,max:X`)
 * and its vCPUs, xl never balloons dom0 (`autoballoon="off"`), xendomains shuts guests down with the host instead
 * of saving them and starts those linked in /etc/xen/auto, and pygrub runs de-privileged for guests that use it.
 *
 * Writing the files changes nothing running: the new command line takes effect at the next boot, which
 * Dom0Reboot does when (and only when) the running Xen differs. `bootDigest` changes with the command line.
 */
import { Checker, containsUnknown, UNKNOWN } from "../../core/validate";
import {
  checkOnDelete,
  deleteOwnedFiles,
  observeFiles,
  refuseInput,
  writeOwnedFiles,
  type OnDelete,
} from "../../dom0/concern";
import type { CommonInputs, Context, Kind } from "../../framework/kind";
import { renderedFiles } from "../../framework/plan";
import { sha256 } from "../../remote/files";
import {
  GRUB_XEN,
  MEMORY_SCRIPT,
  renderXenBootFiles,
  updateGrubScript,
  xenCommandLine,
  type XenBootPlan,
} from "./plan";

export interface Dom0XenBootInputs extends CommonInputs, XenBootPlan {
  onDelete: OnDelete;
  files: Record<string, string>;
}

export interface Dom0XenBootOutputs extends Dom0XenBootInputs {
  /** Xen's command line as GRUB boots it. */
  commandLine: string;
  /** Digest of what the next boot reads (changes when a reboot is owed). */
  bootDigest: string;
}

/** Words a command line may hold: nothing a shell, GRUB or the quoting in grub.d would read. */
const ARGS = /^[A-Za-z0-9_.,:=+/@-]+( [A-Za-z0-9_.,:=+/@-]+)*$/;
const BRIDGE = /^[a-z][a-z0-9_-]{0,14}$/;

export const dom0XenBootKind: Kind<Dom0XenBootInputs, Dom0XenBootOutputs> = {
  name: "Dom0XenBoot",
  replaceOn: [],
  outputOnly: ["commandLine", "bootDigest"],
  changeClasses: { reboot: ["dom0MemMiB", "dom0Vcpus", "xenArgs", "dom0KernelArgs"] },
  changeNotes: { reboot: "takes effect at the next boot (Dom0Reboot reboots the host)" },

  check(raw, c: Checker) {
    const dom0MemMiB = c.integer(raw, "dom0MemMiB", {
      min: 512,
      max: 1_048_576,
      default: 1024,
      unit: "MiB",
      hint: "dom0 needs at least 512 MiB for its kernel, xenstored and the guests' backends",
    });
    const dom0Vcpus = c.integer(raw, "dom0Vcpus", { min: 1, max: 512 }) ?? null;
    const args = (key: string): string | null => {
      const v = c.string(raw, key, { max: 1024 });
      if (v === undefined) return null;
      if (v !== UNKNOWN && !ARGS.test(v)) {
        c.fail(
          key,
          v,
          "must be command-line words of letters, digits and `_.,:=+/@-`, separated by single spaces",
        );
        return null;
      }
      return v;
    };
    const xenArgs = args("xenArgs");
    const dom0KernelArgs = args("dom0KernelArgs");
    if (xenArgs && /(^| )dom0_(mem|max_vcpus)=/.test(xenArgs))
      c.fail("xenArgs", xenArgs, "must not set dom0_mem or dom0_max_vcpus", "Use dom0MemMiB and dom0Vcpus");
    const bridge = c.string(raw, "bridge", {
      default: "xenbr0",
      pattern: BRIDGE,
      rule: "must be an interface name (lower-case letters, digits, `_-`, at most 15)",
    });
    const bootloaderRestrict = c.boolean(raw, "bootloaderRestrict", true);
    const stopSeconds =
      c.integer(raw, "stopSeconds", { min: 10, max: 3600, default: 300, unit: "seconds" }) ?? 300;
    const onDelete = checkOnDelete(c, raw);
    if (dom0MemMiB === undefined || !bridge || !c.ok) return undefined;
    const plan: XenBootPlan = {
      dom0MemMiB,
      dom0Vcpus,
      xenArgs,
      dom0KernelArgs,
      bridge,
      bootloaderRestrict,
      stopSeconds,
    };
    return { ...plan, onDelete, files: renderedFiles(plan, renderXenBootFiles) };
  },

  id: (i) => `${i.connection.host}:xen-boot`,

  async create(ctx, i) {
    return apply(ctx, i, true);
  },

  async read(ctx, _id, outs) {
    return { ...outs, files: await observeFiles(ctx, outs.files) };
  },

  async update(ctx, _id, olds, news) {
    return apply(ctx, news, olds.bootDigest !== digest(news));
  },

  async delete(ctx, _id, outs) {
    await deleteOwnedFiles(ctx, "Xen's boot settings", Object.keys(outs.files), outs.onDelete);
    if (outs.onDelete === "restore")
      await ctx.host.script(
        "if command -v update-grub >/dev/null; then update-grub >&2; else grub-mkconfig -o /boot/grub/grub.cfg >&2; fi",
        { summary: "update-grub" },
      );
  },
};

function digest(i: Dom0XenBootInputs): string {
  return sha256(i.files[GRUB_XEN] ?? "").slice(0, 16);
}

async function apply(ctx: Context, i: Dom0XenBootInputs, grubOwed: boolean): Promise<Dom0XenBootOutputs> {
  if (containsUnknown(i)) throw new Error("Dom0XenBoot inputs are not known");
  const m = await ctx.host.script(MEMORY_SCRIPT, { summary: "how much memory the host has" });
  const kib = Number(/^memtotal (\d+)$/m.exec(m.stdout)?.[1]);
  if (!Number.isFinite(kib) || kib <= 0) throw new Error(`cannot tell how much memory ${ctx.conn.host} has`);
  const hostMiB = Math.floor(kib / 1024);
  // dom0 needs the memory; Xen itself and the guests need the rest. Known only on the host, so refused here.
  if (i.dom0MemMiB > hostMiB - 256)
    refuseInput(
      "dom0MemMiB",
      i.dom0MemMiB,
      `must leave at least 256 MiB of the host's ${hostMiB} MiB to Xen and the guests`,
    );
  const changed = await writeOwnedFiles(ctx, i.files);
  const commandLine = xenCommandLine(i);
  if (changed.includes(GRUB_XEN) || grubOwed) {
    ctx.log.info("update-grub: Xen boots by default with " + commandLine);
    await ctx.host.script(updateGrubScript(commandLine), { summary: "update-grub", timeoutMs: 900_000 });
  }
  return { ...i, commandLine, bootDigest: digest(i) };
}
