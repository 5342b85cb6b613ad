/**
 * VarnishFrontend: Varnish 7 on the dom0 routes HTTP by Host header to guests behind its NAT.
 *
 * It owns two files: the VCL (`/etc/varnish/xen-estate.vcl`) and a drop-in for the package's varnish.service that
 * sets the listen addresses, the cache size and that VCL. A new VCL is compiled by `varnishd -C` before it replaces
 * the old file (a VCL that does not compile never reaches Varnish), then loaded with `systemctl reload varnish`
 * (varnishreload: load, use, discard old VCLs), which keeps the cache and every open connection. Only a change of
 * listen addresses or cache size restarts varnishd. Destroy removes both files and restarts Varnish with the
 * package's own settings; the package itself stays.
 */
import * as pulumi from "@pulumi/pulumi";
import { ConnectionArgs } from "./connection";
import { CommonInputs, Context, MODULE, providerFor, registerKind, resourceInputs, VERSION } from "./dynamic";
import { RefusedError } from "./errors";
import { observeOwnedFiles, removeRemoteFile, statRemoteFiles, writeRemoteFile } from "./remote-file";
import { render } from "./templates";
import { parseSize } from "./units";
import { Checker, containsUnknown, isIPv4, UNKNOWN } from "./validate";

export const VARNISH_VCL = "/etc/varnish/xen-estate.vcl";
/** The check a new VCL passes before it replaces the old file: `varnishd -C` compiles it (C code on stderr is dropped). */
export const VARNISH_VALIDATE =
  'o=$(varnishd -C -f %s 2>&1 >/dev/null) || { echo "$o" | tail -n 30 >&2; exit 1; }';
export const VARNISH_DROP_IN = "/etc/systemd/system/varnish.service.d/xen-estate.conf";

/** Health check of a site's backend. */
export interface VarnishHealthCheckArgs {
  /** Path requested. @default "/" */
  readonly path?: pulumi.Input<string>;
  /** Seconds between checks. @default 5 */
  readonly intervalSeconds?: pulumi.Input<number>;
  /** Seconds a check may take. @default 2 */
  readonly timeoutSeconds?: pulumi.Input<number>;
}

/** One site: the host names it answers and the guest that serves it. */
export interface VarnishSiteArgs {
  /**
   * Host header values (compared lower-case, without a port): exact names such as `www.example.org`, or
   * `*.example.org` for every subdomain (not the name itself). Each name belongs to one site.
   */
  readonly hostnames: pulumi.Input<pulumi.Input<string>[]>;
  /** The guest serving the site: `IPv4` or `IPv4:port`, e.g. a NatDomU's address. Port @default 80 */
  readonly backend: pulumi.Input<string>;
  /** Probe the backend and send no traffic to it while it is sick; `false` turns it off. @default path "/" every 5 s */
  readonly healthCheck?: pulumi.Input<VarnishHealthCheckArgs | false>;
  /** Seconds to wait for the backend's first byte. @default 60 */
  readonly firstByteTimeoutSeconds?: pulumi.Input<number>;
}

export interface VarnishFrontendArgs {
  /** How to reach the dom0 (or any Debian/Ubuntu host with systemd). */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** The sites, in order of precedence. At least one. */
  readonly sites: pulumi.Input<pulumi.Input<VarnishSiteArgs>[]>;
  /** Where Varnish accepts HTTP: `:80` (every address), `203.0.113.5:80`… Changing it restarts varnishd. @default [":80"] */
  readonly listen?: pulumi.Input<pulumi.Input<string>[]>;
  /** Memory for the cache (`256MiB`, `1GiB`). Changing it restarts varnishd, emptying the cache. @default "256MiB" */
  readonly cacheSize?: pulumi.Input<string>;
  /** Install the `varnish` package with apt when it is missing; otherwise refuse. @default true */
  readonly installPackage?: pulumi.Input<boolean>;
  /** Older VCLs kept loaded after a reload, to switch back by hand (`varnishadm vcl.use`). @default 2 */
  readonly keepVcls?: pulumi.Input<number>;
}

export interface VarnishSite {
  /** VCL name of the backend: `site<index>`. */
  id: string;
  hostnames: string[];
  backendHost: string;
  backendPort: number;
  probe: { path: string; intervalSeconds: number; timeoutSeconds: number } | null;
  firstByteTimeoutSeconds: number;
}

export interface VarnishFrontendInputs extends CommonInputs {
  sites: VarnishSite[];
  listen: string[];
  cacheMiB: number;
  installPackage: boolean;
  keepVcls: number;
  /** Keep varnishd running; refresh reports a stopped service as drift. Always true. */
  running: boolean;
  /** The files it owns, path → content: `pulumi preview --diff` shows them line by line. */
  files: Record<string, string>;
}

export interface VarnishFrontendOutputs extends VarnishFrontendInputs {
  /** Name of the VCL Varnish runs: `boot` after a (re)start, `xen_estate_<time>` after a reload. */
  activeVcl: string | null;
}

/** A DNS name, or `*.` and a DNS name: lower case, at least one dot. */
const HOSTNAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const LISTEN = /^(?:(\d{1,3}(?:\.\d{1,3}){3})?):(\d{1,5})$/;
const PROBE_PATH = /^\/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$/;

/** The VCL condition that matches one site's host names. Pure. */
export function hostCondition(hostnames: readonly string[]): string {
  return hostnames
    .map((h) =>
      h.startsWith("*.")
        ? `req.http.Host ~ "\\.${h.slice(2).replace(/[.]/g, "\\.")}$"`
        : `req.http.Host == "${h}"`,
    )
    .join(" || ");
}

export function renderVcl(sites: readonly VarnishSite[]): string {
  return render("varnish-xen-estate.vcl", {
    version: VERSION,
    sites: sites.map((s, i) => ({
      ...s,
      keyword: i === 0 ? "if" : "} elsif",
      condition: hostCondition(s.hostnames),
    })),
  });
}

export function renderDropIn(i: Pick<VarnishFrontendInputs, "listen" | "cacheMiB" | "keepVcls">): string {
  return render("varnish-service.conf", {
    version: VERSION,
    listen: i.listen,
    cacheMiB: i.cacheMiB,
    keepVcls: i.keepVcls,
    vclPath: VARNISH_VCL,
  });
}

function checkSites(raw: Record<string, unknown>, c: Checker): VarnishSite[] | undefined {
  const list = c.array(raw, "sites", true);
  if (!list) return undefined;
  if (list.length === 0) {
    c.fail("sites", list, "must name at least one site");
    return undefined;
  }
  const owner = new Map<string, number>();
  const sites: VarnishSite[] = [];
  list.forEach((s, i) => {
    const sc = c.at(`sites[${i}]`);
    if (!s || typeof s !== "object")
      return sc.fail("", s, "must be an object with `hostnames` and `backend`");
    const o = s as Record<string, unknown>;
    const names = sc.array(o, "hostnames", true) ?? [];
    if (Array.isArray(o.hostnames) && names.length === 0)
      sc.fail("hostnames", names, "must name at least one host");
    const hostnames: string[] = [];
    names.forEach((h, j) => {
      if (h === UNKNOWN) return;
      if (typeof h !== "string" || !HOSTNAME.test(h.toLowerCase()))
        return sc.fail(
          `hostnames[${j}]`,
          h,
          "must be a DNS name such as www.example.org, or *.example.org for its subdomains",
        );
      const name = h.toLowerCase();
      const other = owner.get(name);
      if (other !== undefined)
        return sc.fail(`hostnames[${j}]`, h, `must belong to one site only (sites[${other}] names it too)`);
      owner.set(name, i);
      hostnames.push(name);
    });
    const backend = sc.string(o, "backend", { required: true });
    let backendHost: string | undefined;
    let backendPort = 80;
    if (backend !== undefined && backend !== UNKNOWN) {
      const m = /^([^:]+)(?::(\d{1,5}))?$/.exec(backend);
      if (!m || !isIPv4(m[1]!) || (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535)))
        sc.fail(
          "backend",
          backend,
          "must be an IPv4 address with an optional port, such as 10.0.0.5 or 10.0.0.5:8080",
        );
      else {
        backendHost = m[1]!;
        backendPort = m[2] !== undefined ? Number(m[2]) : 80;
      }
    }
    let probe: VarnishSite["probe"] = { path: "/", intervalSeconds: 5, timeoutSeconds: 2 };
    if (o.healthCheck === false) probe = null;
    else {
      const h = sc.object(o, "healthCheck");
      if (h) {
        const hc = sc.at("healthCheck");
        const path = hc.string(h, "path", {
          default: "/",
          pattern: PROBE_PATH,
          rule: "must be a URL path starting with / (no spaces or quotes)",
        });
        const intervalSeconds = hc.integer(h, "intervalSeconds", {
          min: 1,
          max: 3600,
          default: 5,
          unit: "seconds",
        });
        const timeoutSeconds = hc.integer(h, "timeoutSeconds", {
          min: 1,
          max: 600,
          default: 2,
          unit: "seconds",
        });
        if (intervalSeconds !== undefined && timeoutSeconds !== undefined && timeoutSeconds > intervalSeconds)
          hc.fail("timeoutSeconds", timeoutSeconds, `must not exceed intervalSeconds (${intervalSeconds})`);
        probe = path && intervalSeconds && timeoutSeconds ? { path, intervalSeconds, timeoutSeconds } : null;
      }
    }
    const firstByteTimeoutSeconds =
      sc.integer(o, "firstByteTimeoutSeconds", { min: 1, max: 3600, default: 60, unit: "seconds" }) ?? 60;
    if (backendHost && hostnames.length === names.length && hostnames.length > 0)
      sites.push({ id: `site${i}`, hostnames, backendHost, backendPort, probe, firstByteTimeoutSeconds });
  });
  return sites.length === list.length ? sites : undefined;
}

export const varnishFrontendKind = registerKind<VarnishFrontendInputs, VarnishFrontendOutputs>({
  name: "VarnishFrontend",
  replaceOn: ["connection.host"],
  deleteBeforeReplace: true,
  outputOnly: ["activeVcl"],

  check(raw, c) {
    const sites = checkSites(raw, c);
    const listen = (c.array(raw, "listen") ?? [":80"]).filter((l, i) => {
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
    }) as string[];
    if (Array.isArray(raw.listen) && raw.listen.length === 0)
      c.fail("listen", raw.listen, "must name at least one address");
    let cacheMiB: number | undefined = 256;
    const cache = raw.cacheSize;
    if (cache !== undefined && cache !== null && cache !== UNKNOWN) {
      const bytes = parseSize(cache);
      if (typeof bytes !== "number") cacheMiB = c.fail("cacheSize", cache, bytes.error);
      else if (bytes < 16 * 2 ** 20) cacheMiB = c.fail("cacheSize", cache, "must be at least 16MiB");
      else cacheMiB = Math.floor(bytes / 2 ** 20);
    }
    const installPackage = c.boolean(raw, "installPackage", true);
    const keepVcls = c.integer(raw, "keepVcls", { min: 0, max: 20, default: 2 }) ?? 2;
    if (!sites || cacheMiB === undefined || listen.length === 0) return undefined;
    const partial = { sites, listen, cacheMiB, installPackage, keepVcls, running: true };
    if (containsUnknown(partial)) return { ...partial, files: UNKNOWN as unknown as Record<string, string> };
    return {
      ...partial,
      files: { [VARNISH_VCL]: renderVcl(sites), [VARNISH_DROP_IN]: renderDropIn(partial) },
    };
  },

  id: (i) => `${i.connection.host}:varnish`,

  async create(ctx, inputs, progress) {
    await ensurePackage(ctx, inputs);
    const [before] = await statRemoteFiles(ctx.host, [VARNISH_VCL]);
    if (before)
      throw new RefusedError(
        `${VARNISH_VCL} already exists on ${ctx.conn.host}: another VarnishFrontend (or a person) manages Varnish here`,
        "One VarnishFrontend per host: import that one, or move the file away",
      );
    const changed = await writeFiles(ctx, inputs);
    progress({ activeVcl: null });
    await apply(ctx, changed, true, inputs.keepVcls);
    return { ...inputs, activeVcl: await activeVcl(ctx) };
  },

  async read(ctx, _id, outs) {
    const paths = Object.keys(outs.files);
    const states = await statRemoteFiles(ctx.host, paths);
    if (states.every((s) => !s)) return null;
    const files = await observeOwnedFiles(ctx.host, outs.files, states);
    const active = (
      await ctx.host.script("systemctl is-active varnish.service || true", {
        summary: "systemctl is-active varnish",
      })
    ).stdout.trim();
    return { ...outs, files, running: active === "active", activeVcl: await activeVcl(ctx) };
  },

  async update(ctx, _id, olds, news) {
    await ensurePackage(ctx, news);
    const changed = await writeFiles(ctx, news);
    await apply(ctx, changed, !olds.running, news.keepVcls);
    return { ...news, activeVcl: await activeVcl(ctx) };
  },

  async delete(ctx) {
    await removeRemoteFile(ctx.host, VARNISH_DROP_IN);
    await removeRemoteFile(ctx.host, VARNISH_VCL);
    // Back to the package's own settings (and its default.vcl), if Varnish runs at all.
    await ctx.host.script(
      "systemctl daemon-reload\nif systemctl is-active --quiet varnish.service; then systemctl restart varnish.service; fi",
      { summary: "restart varnish with the package's settings" },
    );
  },
});

async function ensurePackage(ctx: Context, i: VarnishFrontendInputs): Promise<void> {
  const have = await ctx.host.script("command -v varnishd >/dev/null && echo yes || echo no", {
    summary: "is varnish installed",
  });
  if (have.stdout.trim() === "yes") return;
  if (!i.installPackage)
    throw new RefusedError(
      `varnish is not installed on ${ctx.conn.host}`,
      "Install it (apt-get install varnish) or set installPackage: true",
    );
  ctx.log.progress(`installing varnish on ${ctx.conn.host} (apt)`);
  await ctx.host.script(
    "export DEBIAN_FRONTEND=noninteractive\napt-get install -y -q -o Dpkg::Options::=--force-confold varnish >&2",
    { summary: "apt-get install varnish", timeoutMs: 1_800_000 },
  );
}

/** Writes the VCL (compiled by varnishd first) and the drop-in; returns the paths that changed. */
async function writeFiles(ctx: Context, i: VarnishFrontendInputs): Promise<string[]> {
  const changed: string[] = [];
  const vcl = await writeRemoteFile(ctx.host, VARNISH_VCL, i.files[VARNISH_VCL]!, {
    validate: VARNISH_VALIDATE,
  });
  if (vcl.changed) changed.push(VARNISH_VCL);
  const dropIn = await writeRemoteFile(ctx.host, VARNISH_DROP_IN, i.files[VARNISH_DROP_IN]!, {
    mkdirs: true,
  });
  if (dropIn.changed) changed.push(VARNISH_DROP_IN);
  return changed;
}

/** Restarts varnishd when its command line changed or it is down; otherwise reloads a changed VCL. */
/**
 * What varnishreload does, with deadlines that suit a slow host: compile and load the VCL under a new name (the old
 * one keeps serving meanwhile; a VCL that fails leaves it in place), switch to it, then discard our older ones
 * beyond `keep`. varnishadm's own default deadline (5 s) is shorter than a compile on a busy dom0.
 */
export function reloadScript(keep: number): string {
  return [
    `name=xen_estate_$(date -u +%Y%m%d_%H%M%S_%N)`,
    `varnishadm -t 600 vcl.load "$name" ${VARNISH_VCL} >&2`,
    `varnishadm -t 60 vcl.use "$name" >&2`,
    `varnishadm -t 60 vcl.list | awk '$1 == "available" && $NF ~ /^xen_estate_/ {print $NF}' | head -n -${keep} |`,
    `  while read -r old; do varnishadm -t 60 vcl.discard "$old" >&2 || true; done`,
  ].join("\n");
}

async function apply(ctx: Context, changed: string[], mustStart: boolean, keepVcls: number): Promise<void> {
  if (changed.includes(VARNISH_DROP_IN) || mustStart) {
    ctx.log.info(
      changed.includes(VARNISH_DROP_IN)
        ? "listen addresses or cache size changed: restarting varnish (the cache starts empty)"
        : "starting varnish",
    );
    await ctx.host.script(
      "systemctl daemon-reload\nsystemctl enable --quiet varnish.service\nsystemctl restart varnish.service",
      { summary: "restart varnish", timeoutMs: 300_000 },
    );
  } else if (changed.includes(VARNISH_VCL)) {
    ctx.log.info("VCL changed: loading it into the running varnish (connections and cache stay)");
    await ctx.host.script(reloadScript(keepVcls), {
      summary: "load and use the new VCL",
      timeoutMs: 900_000,
    });
  }
  // varnishd answers the CLI once the child runs; a restart that failed shows here, not at the first request.
  await ctx.host.script(
    [
      "for _ in $(seq 1 60); do varnishadm status 2>/dev/null | grep -q 'Child in state running' && exit 0; sleep 1; done",
      'echo "varnish is not running; see: journalctl -u varnish" >&2; exit 1',
    ].join("\n"),
    { summary: "wait for varnish", timeoutMs: 90_000 },
  );
}

async function activeVcl(ctx: Context): Promise<string | null> {
  const r = await ctx.host.script(
    "varnishadm vcl.list 2>/dev/null | awk '$1 == \"active\" {print $NF}' || true",
    {
      summary: "varnishadm vcl.list",
    },
  );
  return r.stdout.trim() || null;
}

/** Varnish on a host routing HTTP by Host header to the estate's guests. */
export class VarnishFrontend extends pulumi.dynamic.Resource {
  declare readonly sites: pulumi.Output<VarnishSite[]>;
  declare readonly listen: pulumi.Output<string[]>;
  /** Files it owns on the host (path → content). */
  declare readonly files: pulumi.Output<Record<string, string>>;
  /** The VCL Varnish runs now. */
  declare readonly activeVcl: pulumi.Output<string | null>;

  constructor(name: string, args: VarnishFrontendArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      providerFor("VarnishFrontend"),
      name,
      resourceInputs({ ...args }, varnishFrontendKind.outputOnly),
      opts,
      MODULE,
      "VarnishFrontend",
    );
  }
}
