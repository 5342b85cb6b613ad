/**
 * The one template renderer. Every config file xen-estate writes comes from `templates/<name>.hbs`, compiled
 * with `strict` (a missing field throws instead of rendering an empty string into a config) and `noEscape`
 * (config files are not HTML). Rendering is pure: the same context always gives the same bytes.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { HelperDelegate } from "handlebars";
import { shellQuote } from "./shell";
import { TEMPLATE_DIR } from "./package";

/** The templates directory shipped with the package. */
export { TEMPLATE_DIR };

type Compiled = (context: unknown) => string;
const cache = new Map<string, Compiled>();
let hb: typeof import("handlebars") | undefined;

const helpers: Record<string, HelperDelegate> = {
  /** `{{quote x}}`: one shell word. */
  quote: (v: unknown) => shellQuote(String(v)),
  /** `{{json x}}`: a JSON literal (also a valid xl.cfg / VCL string). */
  json: (v: unknown) => JSON.stringify(v),
  /** `{{join list ", "}}` */
  join: (list: unknown, sep: unknown) =>
    Array.isArray(list) ? list.map(String).join(typeof sep === "string" ? sep : ", ") : "",
  /** `{{#if (eq a b)}}` */
  eq: (a: unknown, b: unknown) => a === b,
  /** `{{#if (ne a b)}}` */
  ne: (a: unknown, b: unknown) => a !== b,
  /** `{{#if (or a b)}}` */
  or: (...args: unknown[]) => args.slice(0, -1).some(Boolean),
  /** `{{#if (and a b)}}` */
  and: (...args: unknown[]) => args.slice(0, -1).every(Boolean),
  /** `{{#if (not a)}}` */
  not: (a: unknown) => !a,
  /** xl disk spec (xl-disk-configuration(5)); `target` goes last because it may contain commas. */
  diskSpec: (d: { format?: string; vdev: string; access: string; path: string }) => {
    for (const k of ["vdev", "access", "path"] as const)
      if (typeof d[k] !== "string") throw new Error(`diskSpec: disk has no ${k}`);
    return `format=${d.format ?? "raw"}, vdev=${d.vdev}, access=${d.access}, target=${d.path}`;
  },
  /** xl vif spec (xl-network-configuration(5)); null fields are left out. */
  vifSpec: (v: Record<string, unknown>) =>
    ["mac", "bridge", "ip", "script", "vifname", "gatewaydev"]
      .filter((k) => v[k] !== null && v[k] !== undefined && v[k] !== "")
      .map((k) => `${k}=${String(v[k])}`)
      .join(","),
};

function handlebars(): typeof import("handlebars") {
  if (!hb) {
    hb = (require("handlebars") as typeof import("handlebars")).create();
    for (const [name, fn] of Object.entries(helpers)) hb.registerHelper(name, fn);
  }
  return hb;
}

/** Names of the templates shipped, `<kind>/<file>` without `.hbs`. */
export function templateNames(dir = TEMPLATE_DIR): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => f.endsWith(".hbs"))
    .map((f) => f.slice(0, -4).split(path.sep).join("/"))
    .sort();
}

/**
 * Renders `templates/<name>.hbs` with `context`. Throws when the template reads a field the context lacks
 * (pass `null` for an intentionally empty optional field).
 */
export function render(name: string, context: object, dir = TEMPLATE_DIR): string {
  const key = `${dir}\0${name}`;
  let fn = cache.get(key);
  if (!fn) {
    const file = path.join(dir, `${name}.hbs`);
    const source = fs.readFileSync(file, "utf8");
    fn = handlebars().compile(source, { strict: true, noEscape: true, preventIndent: true });
    cache.set(key, fn);
  }
  try {
    return fn(context);
  } catch (err) {
    throw new Error(`template ${name}.hbs: ${(err as Error).message}`, { cause: err });
  }
}
