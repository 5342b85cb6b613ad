/**
 * VarnishFrontend's lifecycle: Varnish 7 on the dom0 routes HTTP by Host header to the estate's guests.
 *
 * It owns three files: the VCL, a drop-in for the package's varnish.service (listen addresses, cache size, that
 * VCL), and one for its varnishncsa.service (try again until varnishd is there, instead of failing the boot). A new
 * VCL is compiled by `varnishd -C` before it replaces the old file, then loaded into the running varnishd, which
 * keeps the cache and every open connection; only a change of listen addresses or cache size restarts varnishd. What was loaded is recorded (`loadedVcl`, `appliedDropIn`): a load or restart that did not
 * happen (a timeout, a dropped connection) is done by the next `up` even though the files are already written, and
 * refresh compares the VCL Varnish runs with the file.
 */
import * as path from "node:path";
import { RefusedError } from "../../core/errors";
import { shellQuote } from "../../core/shell";
import { parseSize } from "../../core/units";
import { Checker, isIPv4, UNKNOWN } from "../../core/validate";
import type { CommonInputs, Context, Kind } from "../../framework/kind";
import { renderedFiles } from "../../framework/plan";
import { observeOwnedFiles, removeRemoteFile, statRemoteFiles, writeRemoteFile } from "../../remote/files";
import { ensurePackage } from "../../remote/packages";
import {
  checkSites,
  renderDropIn,
  renderLogDropIn,
  renderVcl,
  VARNISH_DROP_IN,
  VARNISH_VALIDATE,
  VARNISH_VCL,
  VARNISHNCSA_DROP_IN,
  type VarnishSite,
} from "./plan";
import {
  activeVclScript,
  dropInDigest,
  LOG_DAEMON_SCRIPT,
  reloadScript,
  RESTART_SCRIPT,
  vclDigest,
  runningDeadlineSeconds,
  waitRunningScript,
  waitServingScript,
} from "./scripts";

export interface VarnishFrontendInputs extends CommonInputs {
  sites: VarnishSite[];
  listen: string[];
  cacheMiB: number;
  installPackage: boolean;
  keepVcls: number;
  /** Seconds `up` waits until every site's backend is healthy and answers through Varnish; 0 does not wait. */
  readyTimeoutSeconds: number;
  /** Keep varnishd running; refresh reports a stopped service as drift. Always true. */
  running: boolean;
  /**
   * Varnish runs the declared VCL; refresh reports false when the VCL it runs is not the file's (a load that never
   * happened), and `up` loads it. Always true.
   */
  vclLoaded: boolean;
  /** The files it owns, path → content: `pulumi preview --diff` shows them line by line. */
  files: Record<string, string>;
}

export interface VarnishFrontendOutputs extends VarnishFrontendInputs {
  /** Name of the VCL Varnish runs: `boot` after a (re)start, `xen_estate_<time>` after a reload. */
  activeVcl: string | null;
  /** SHA-256 of the VCL Varnish runs, as far as this resource knows; null while a load is owed. */
  loadedVcl: string | null;
  /** SHA-256 of the drop-in varnishd was last started with; null while a restart is owed. */
  appliedDropIn: string | null;
}

const LISTEN = /^(?:(\d{1,3}(?:\.\d{1,3}){3})?):(\d{1,5})$/;

export const varnishFrontendKind: Kind<VarnishFrontendInputs, VarnishFrontendOutputs> = {
  name: "VarnishFrontend",
  replaceOn: [],
  deleteBeforeReplace: true,
  outputOnly: ["activeVcl", "loadedVcl", "appliedDropIn"],
  schemaVersion: 2,
  // 0.1.0 loaded every VCL it wrote and restarted on every drop-in it wrote: what its files say is what runs.
  migrate: (old) => {
    const files = (old.files ?? {}) as Record<string, string>;
    return {
      readyTimeoutSeconds: 120,
      vclLoaded: true,
      loadedVcl: files[VARNISH_VCL] !== undefined ? vclDigest(files[VARNISH_VCL]) : null,
      appliedDropIn: files[VARNISH_DROP_IN] !== undefined ? dropInDigest(files[VARNISH_DROP_IN]) : null,
      ...old,
    };
  },

  check(raw, c: Checker) {
    const sites = checkSites(raw, c);
    const listed = c.array(raw, "listen");
    const listen =
      listed === UNKNOWN
        ? (UNKNOWN as unknown as string[])
        : ((listed ?? [":80"]).filter((l, i) => {
            if (l === UNKNOWN) return true;
            const m = typeof l === "string" ? LISTEN.exec(l) : null;
            const port = m ? Number(m[2]) : 0;
            if (m && port >= 1 && port <= 65535 && (m[1] === undefined || isIPv4(m[1]))) return true;
            c.fail(
              `listen[${i}]`,
              l,
              "must be `:PORT` (every address) or `IPv4:PORT`, such as :80 or 203.0.113.5:80",
            );
            return false;
          }) as string[]);
    if (Array.isArray(raw.listen) && raw.listen.length === 0)
      c.fail("listen", raw.listen, "must name at least one address");
    let cacheMiB: number | undefined = 256;
    const cache = raw.cacheSize;
    if (cache === UNKNOWN) cacheMiB = UNKNOWN as unknown as number;
    else if (cache !== undefined && cache !== null) {
      const bytes = parseSize(cache);
      if (typeof bytes !== "number") cacheMiB = c.fail("cacheSize", cache, bytes.error);
      else if (bytes < 16 * 2 ** 20) cacheMiB = c.fail("cacheSize", cache, "must be at least 16MiB");
      else cacheMiB = Math.floor(bytes / 2 ** 20);
    }
    const installPackage = c.boolean(raw, "installPackage", true);
    const keepVcls = c.integer(raw, "keepVcls", { min: 0, max: 20, default: 2 }) ?? 2;
    const readyTimeoutSeconds =
      c.integer(raw, "readyTimeoutSeconds", { min: 0, max: 3600, default: 120, unit: "seconds" }) ?? 120;
    if (!sites || cacheMiB === undefined || listen.length === 0 || !c.ok) return undefined;
    const partial = {
      sites,
      listen,
      cacheMiB,
      installPackage,
      keepVcls,
      readyTimeoutSeconds,
      running: true,
      vclLoaded: true,
    };
    return {
      ...partial,
      files: renderedFiles(partial, (p) => ({
        [VARNISH_VCL]: renderVcl(p.sites),
        [VARNISH_DROP_IN]: renderDropIn(p),
        [VARNISHNCSA_DROP_IN]: renderLogDropIn(),
      })),
    };
  },

  id: (i) => `${i.connection.host}:varnish`,

  async create(ctx, inputs, progress) {
    await ensureVarnish(ctx, inputs);
    const [before] = await statRemoteFiles(ctx.host, [VARNISH_VCL]);
    if (before)
      throw new RefusedError(
        `${VARNISH_VCL} already exists on ${ctx.conn.host}: another VarnishFrontend (or a person) manages Varnish here`,
        "One VarnishFrontend per host: remove that one first, or move the file away",
      );
    // Recorded before the first write: a create cut after it wrote the VCL (its answer lost) continues as an
    // update on the next up, instead of a create that finds the VCL and refuses it as another's.
    progress({ activeVcl: null, loadedVcl: null, appliedDropIn: null });
    await writeFiles(ctx, inputs);
    return converge(ctx, inputs, { loadedVcl: null, appliedDropIn: null, running: false, vclLoaded: false });
  },

  async read(ctx, _id, outs) {
    const paths = Object.keys(outs.files);
    const states = await statRemoteFiles(ctx.host, paths);
    if (states.every((s) => !s)) return null;
    const files = await observeOwnedFiles(ctx.host, outs.files, states);
    const r = await ctx.host.script(activeVclScript(), { summary: "which VCL varnish runs" });
    const running = /^service active$/m.test(r.stdout);
    const activeVcl = /^active (\S+)$/m.exec(r.stdout)?.[1] ?? null;
    const runningSha = /^active-sha (\S+)$/m.exec(r.stdout)?.[1] ?? null;
    // The VCL Varnish runs is not the declared one: a load is owed, which the next `up` does.
    const declared = vclDigest(outs.files[VARNISH_VCL] ?? "");
    const loadedVcl = running && runningSha === declared ? declared : null;
    return { ...outs, files, running, vclLoaded: loadedVcl !== null, activeVcl, loadedVcl };
  },

  async update(ctx, _id, olds, news) {
    await ensureVarnish(ctx, news);
    await writeFiles(ctx, news);
    return converge(ctx, news, olds);
  },

  async delete(ctx) {
    await removeRemoteFile(ctx.host, VARNISH_DROP_IN);
    await removeRemoteFile(ctx.host, VARNISHNCSA_DROP_IN);
    await removeRemoteFile(ctx.host, VARNISH_VCL);
    // Back to the package's own settings (and its default.vcl), if Varnish runs at all.
    // The drop-in directories were made for our drop-ins (the package has none): gone with them when nothing else is
    // in them.
    const dropInDirs = [VARNISH_DROP_IN, VARNISHNCSA_DROP_IN].map((f) => shellQuote(path.posix.dirname(f)));
    await ctx.host.script(
      [
        ...dropInDirs.map((d) => `if [ -d ${d} ]; then rmdir --ignore-fail-on-non-empty -- ${d}; fi`),
        "systemctl daemon-reload",
        // A restart an earlier run started may still be under way (its session was cut; systemd's job goes on):
        // wait for it to end, or this run would find varnish not active, leave it be, and return before it runs.
        ...SETTLE_VARNISH,
        "if systemctl is-active --quiet varnish.service; then systemctl restart varnish.service; fi",
      ].join("\n"),
      { summary: "restart varnish with the package's settings" },
    );
  },
};

/** Waits (up to 2 minutes) while varnish.service is between states: a job of systemd's runs for it. */
const SETTLE_VARNISH = [
  "for i in $(seq 120); do",
  '  case "$(systemctl is-active varnish.service 2>/dev/null || true)" in',
  "    activating | deactivating | reloading) sleep 1 ;;",
  "    *) break ;;",
  "  esac",
  "done",
];

function ensureVarnish(ctx: Context, i: VarnishFrontendInputs): Promise<void> {
  return ensurePackage(ctx.host, {
    command: "varnishd",
    packages: ["varnish"],
    install: i.installPackage,
    setting: "installPackage",
  });
}

/**
 * Writes the VCL (compiled by varnishd first) and the drop-ins, then has systemd read the drop-ins: varnishncsa's
 * takes effect at its next failure, varnish's at the restart {@link converge} decides on.
 */
async function writeFiles(ctx: Context, i: VarnishFrontendInputs): Promise<void> {
  await writeRemoteFile(ctx.host, VARNISH_VCL, i.files[VARNISH_VCL]!, { validate: VARNISH_VALIDATE });
  await writeRemoteFile(ctx.host, VARNISH_DROP_IN, i.files[VARNISH_DROP_IN]!, { mkdirs: true });
  await writeRemoteFile(ctx.host, VARNISHNCSA_DROP_IN, i.files[VARNISHNCSA_DROP_IN]!, { mkdirs: true });
  await ctx.host.script("systemctl daemon-reload", { summary: "reload systemd's units" });
}

/**
 * Brings varnishd to the files: a restart when its command line (the drop-in) is not the one it was started with
 * or it is down, else a load of the VCL when the running one is not the file's. Decided by what was recorded as
 * applied, not by whether the write changed a file now, so an owed load or restart is never skipped.
 */
async function converge(
  ctx: Context,
  news: VarnishFrontendInputs,
  olds: Pick<VarnishFrontendOutputs, "loadedVcl" | "appliedDropIn" | "running" | "vclLoaded">,
): Promise<VarnishFrontendOutputs> {
  const vclSha = vclDigest(news.files[VARNISH_VCL]!);
  const dropInSha = dropInDigest(news.files[VARNISH_DROP_IN]!);
  let acted = true;
  if (olds.appliedDropIn !== dropInSha || !olds.running) {
    ctx.log.info(
      olds.appliedDropIn && olds.appliedDropIn !== dropInSha
        ? "listen addresses or cache size changed: restarting varnish (the cache starts empty)"
        : "starting varnish",
    );
    await ctx.host.script(RESTART_SCRIPT, { summary: "restart varnish", timeoutMs: 300_000 });
  } else if (olds.loadedVcl !== vclSha || olds.vclLoaded === false) {
    ctx.log.info("VCL changed: loading it into the running varnish (connections and cache stay)");
    await ctx.host.script(reloadScript(news.keepVcls), {
      summary: "load and use the new VCL",
      timeoutMs: 900_000,
    });
  } else acted = false;
  // varnishd answers the CLI once the child runs; a restart that failed shows here, not at the first request.
  const deadline = runningDeadlineSeconds(news.readyTimeoutSeconds);
  await ctx.host.script(waitRunningScript(deadline), {
    summary: "wait for varnish",
    timeoutMs: (deadline + 60) * 1000,
  });
  const logDaemon = await ctx.host.script(LOG_DAEMON_SCRIPT, {
    summary: "start varnish's access log daemon",
    timeoutMs: 120_000,
  });
  if (/^log-daemon failed$/m.test(logDaemon.stdout))
    ctx.log.warn(
      `varnishncsa.service (Varnish's access log) does not start on ${ctx.conn.host} although it is enabled; see: journalctl -u varnishncsa`,
    );
  const r = await ctx.host.script(activeVclScript(), { summary: "which VCL varnish runs" });
  const activeVcl = /^active (\S+)$/m.exec(r.stdout)?.[1] ?? null;
  const runningSha = /^active-sha (\S+)$/m.exec(r.stdout)?.[1] ?? null;
  if (acted && runningSha === vclSha && news.readyTimeoutSeconds > 0) {
    // `up` returns when the sites serve, not merely when Varnish runs: a new backend's probe may still be sick.
    ctx.log.progress(`waiting up to ${news.readyTimeoutSeconds} s until every site answers through varnish`);
    await ctx.host.script(waitServingScript(news.sites, news.listen[0]!, news.readyTimeoutSeconds), {
      summary: "wait until every site serves",
      timeoutMs: (news.readyTimeoutSeconds + 60) * 1000,
    });
  }
  if (runningSha !== vclSha)
    throw new Error(
      `varnish on ${ctx.conn.host} runs VCL ${activeVcl ?? "?"}, which is not ${VARNISH_VCL} as written; the next up loads it again`,
    );
  return { ...news, running: true, vclLoaded: true, activeVcl, loadedVcl: vclSha, appliedDropIn: dropInSha };
}
