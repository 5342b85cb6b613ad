/**
 * Dom0Packages' planning and lifecycle: the host's package sources (Debian or Ubuntu, from a chosen mirror), an
 * upgrade, and the packages a dom0 needs (Xen, bridge tools, the firewall, mail, the caller's extras).
 *
 * A second `up` changes nothing: apt runs at create and when the package list or sources change. `refresh` reports
 * an edited sources file and a package removed by hand (it disappears from `packages`, so the next `up` installs it
 * again). Destroy removes no package.
 */
import { Checker, UNKNOWN } from "../../core/validate";
import {
  checkOnDelete,
  checkOs,
  checkUrl,
  deleteOwnedFiles,
  observeFiles,
  writeOwnedFiles,
  PACKAGE_NAME,
  type OnDelete,
} from "../../dom0/concern";
import type { Distribution } from "../../dom0/os";
import type { CommonInputs, Context, Kind } from "../../framework/kind";
import { renderedFiles } from "../../framework/plan";
import { aptProgress, installScript, missingScript, parseInstalled, renderPackageFiles } from "./plan";

export interface Dom0PackagesInputs extends CommonInputs {
  distribution: Distribution;
  release: string;
  mirror: string;
  securityMirror: string;
  proxy: string | null;
  upgrade: boolean;
  recommends: boolean;
  packages: string[];
  onDelete: OnDelete;
  files: Record<string, string>;
}

export interface Dom0PackagesOutputs extends Dom0PackagesInputs {
  /** Newest kernel installed (what GRUB boots by default), e.g. `6.1.0-28-amd64`. */
  kernel: string | null;
  /** Newest Xen hypervisor under /boot, e.g. `xen-4.17-amd64.gz`; null before Xen is installed. */
  xen: string | null;
}

export const dom0PackagesKind: Kind<Dom0PackagesInputs, Dom0PackagesOutputs> = {
  name: "Dom0Packages",
  replaceOn: [],
  outputOnly: ["kernel", "xen"],

  check(raw, c: Checker) {
    const os = checkOs(c, raw);
    // Without a distribution there is no default mirror: only a declared one is checked (an empty default would be
    // refused as if the user had written it).
    const mirror = checkUrl(c, raw, "mirror", os ? { default: os.facts.defaultMirror } : {});
    const securityMirror = checkUrl(
      c,
      raw,
      "securityMirror",
      os ? { default: os.facts.defaultSecurityMirror } : {},
    );
    const proxyRaw = checkUrl(c, raw, "proxy");
    const upgrade = c.boolean(raw, "upgrade", true);
    const recommends = c.boolean(raw, "recommends", false);
    const list = c.array(raw, "packages", true);
    const packages: string[] = [];
    if (list === UNKNOWN) packages.push(UNKNOWN);
    else
      (list ?? []).forEach((p, i) => {
        if (p === UNKNOWN) packages.push(p);
        else if (typeof p !== "string" || !PACKAGE_NAME.test(p))
          c.fail(`packages[${i}]`, p, "must be a Debian package name (lower-case letters, digits and `+.-`)");
        else if (!packages.includes(p)) packages.push(p);
      });
    const onDelete = checkOnDelete(c, raw);
    if (!os || !mirror || !securityMirror || !c.ok) return undefined;
    const partial = {
      distribution: os.distribution,
      release: os.release,
      mirror,
      securityMirror,
      proxy: proxyRaw ?? null,
      upgrade,
      recommends,
      packages: list === UNKNOWN ? (UNKNOWN as unknown as string[]) : packages.sort(),
      onDelete,
    };
    return {
      ...partial,
      files: renderedFiles(partial, (p) =>
        renderPackageFiles({ ...p, components: os.facts.components }, os.facts),
      ),
    };
  },

  id: (i) => `${i.connection.host}:packages`,

  async create(ctx, i, progress) {
    await writeOwnedFiles(ctx, i.files);
    progress({ kernel: null, xen: null });
    return { ...i, ...(await install(ctx, i, i.upgrade)) };
  },

  async read(ctx, _id, outs) {
    const files = await observeFiles(ctx, outs.files);
    const r = await ctx.host.script(missingScript(outs.packages), {
      summary: "which packages are installed",
    });
    const got = parseInstalled(r.stdout);
    // A package removed by hand leaves the list, so the diff shows it and the next `up` installs it again.
    return {
      ...outs,
      files,
      packages: outs.packages.filter((p) => !got.missing.includes(p)),
      kernel: got.kernel,
      xen: got.xen,
    };
  },

  async update(ctx, _id, olds, news) {
    await writeOwnedFiles(ctx, news.files);
    const upgrade = news.upgrade && !olds.upgrade;
    return { ...news, ...(await install(ctx, news, upgrade)) };
  },

  async delete(ctx, _id, outs) {
    await deleteOwnedFiles(
      ctx,
      "the package sources (no package is removed)",
      Object.keys(outs.files),
      outs.onDelete,
    );
  },
};

async function install(
  ctx: Context,
  i: Dom0PackagesInputs,
  upgrade: boolean,
): Promise<{ kernel: string | null; xen: string | null }> {
  ctx.log.info(`apt: ${upgrade ? "upgrade, then " : ""}install ${i.packages.join(" ")}`);
  let last = "";
  const r = await ctx.host.script(installScript(i.packages, upgrade), {
    summary: `apt-get install ${i.packages.length} package(s)`,
    timeoutMs: 3_600_000,
    onStderrLine: (line) => {
      const p = aptProgress(line);
      if (p && p !== last) {
        last = p;
        ctx.log.progress(`apt: ${p}`);
      }
    },
  });
  const got = parseInstalled(r.stdout);
  return { kernel: got.kernel, xen: got.xen };
}
