/**
 * VarnishFrontend's arguments and planning: the sites, their checks, and the three files rendered from
 * templates/varnish-frontend/ (the VCL, and drop-ins for the package's varnish.service and varnishncsa.service).
 * Pure.
 */
import { render } from "../../core/templates";
import { Checker, isIPv4, UNKNOWN } from "../../core/validate";

export const VARNISH_VCL = "/etc/varnish/xen-estate.vcl";
/** The check a new VCL passes before it replaces the old file: `varnishd -C` compiles it (C code on stderr is dropped). */
export const VARNISH_VALIDATE =
  'o=$(varnishd -C -f %s 2>&1 >/dev/null) || { echo "$o" | tail -n 30 >&2; exit 1; }';
export const VARNISH_DROP_IN = "/etc/systemd/system/varnish.service.d/xen-estate.conf";
/** The drop-in that makes the package's access log daemon wait for varnishd instead of failing the boot. */
export const VARNISHNCSA_DROP_IN = "/etc/systemd/system/varnishncsa.service.d/xen-estate.conf";
/** Seconds between varnishncsa's attempts to find varnishd (systemd's `RestartSec`). */
export const VARNISHNCSA_RESTART_SECONDS = 5;

export interface VarnishSite {
  /** VCL name of the backend: `site<index>`. */
  id: string;
  hostnames: string[];
  backendHost: string;
  backendPort: number;
  probe: { path: string; intervalSeconds: number; timeoutSeconds: number } | null;
  firstByteTimeoutSeconds: number;
}

/** A DNS name, or `*.` and a DNS name: lower case, at least one dot. */
const HOSTNAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
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
  return render("varnish-frontend/xen-estate.vcl", {
    sites: sites.map((s, i) => ({
      ...s,
      keyword: i === 0 ? "if" : "} elsif",
      condition: hostCondition(s.hostnames),
    })),
  });
}

export function renderDropIn(i: { listen: string[]; cacheMiB: number; keepVcls: number }): string {
  return render("varnish-frontend/varnish-service.conf", {
    listen: i.listen,
    cacheMiB: i.cacheMiB,
    keepVcls: i.keepVcls,
    vclPath: VARNISH_VCL,
  });
}

export function renderLogDropIn(): string {
  return render("varnish-frontend/varnishncsa-service.conf", { restartSeconds: VARNISHNCSA_RESTART_SECONDS });
}

export function checkSites(raw: Record<string, unknown>, c: Checker): VarnishSite[] | undefined {
  const list = c.array(raw, "sites", true);
  if (list === UNKNOWN) return UNKNOWN as unknown as VarnishSite[];
  if (!list) return undefined;
  if (list.length === 0) {
    c.fail("sites", list, "must name at least one site");
    return undefined;
  }
  const owner = new Map<string, number>();
  const sites: VarnishSite[] = [];
  list.forEach((s, i) => {
    const sc = c.at(`sites[${i}]`);
    if (s === UNKNOWN) {
      sites.push(UNKNOWN as unknown as VarnishSite);
      return;
    }
    if (!s || typeof s !== "object" || Array.isArray(s)) {
      sc.fail("", s, "must be an object with `hostnames` and `backend`");
      return;
    }
    const o = s as Record<string, unknown>;
    const listed = sc.array(o, "hostnames", true);
    const names = listed === UNKNOWN ? [UNKNOWN] : (listed ?? []);
    if (Array.isArray(o.hostnames) && names.length === 0)
      sc.fail("hostnames", names, "must name at least one host");
    const hostnames: string[] = [];
    for (const [j, h] of names.entries()) {
      if (h === UNKNOWN) {
        hostnames.push(h);
        continue;
      }
      if (typeof h !== "string" || h.length > 253 || !HOSTNAME.test(h.toLowerCase())) {
        sc.fail(
          `hostnames[${j}]`,
          h,
          "must be a DNS name such as www.example.org, or *.example.org for its subdomains",
        );
        continue;
      }
      const name = h.toLowerCase();
      const other = owner.get(name);
      if (other !== undefined) {
        sc.fail(`hostnames[${j}]`, h, `must belong to one site only (sites[${other}] names it too)`);
        continue;
      }
      owner.set(name, i);
      hostnames.push(name);
    }
    const backend = sc.string(o, "backend", { required: true, max: 21 });
    let backendHost: string | undefined;
    let backendPort = 80;
    if (backend === UNKNOWN) {
      backendHost = UNKNOWN;
      backendPort = UNKNOWN as unknown as number;
    } else if (backend !== undefined) {
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
      if (h === UNKNOWN) probe = UNKNOWN as unknown as VarnishSite["probe"];
      else if (h) {
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
