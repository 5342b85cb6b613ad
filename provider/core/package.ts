/**
 * Facts about the installed package, resolved once from its root so that files can move without `../../`
 * breaking: the version every resource records, the module token of its types, and the templates directory.
 */
import * as fs from "node:fs";
import * as path from "node:path";

/** The package's root directory: the nearest directory upwards whose package.json is named xen-estate. */
export const PACKAGE_ROOT: string = findRoot(__dirname);

function findRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, "package.json");
    if (
      fs.existsSync(pkg) &&
      (JSON.parse(fs.readFileSync(pkg, "utf8")) as { name?: string }).name === "xen-estate"
    )
      return dir;
    if (path.dirname(dir) === dir)
      throw new Error(`xen-estate: no package.json named xen-estate above ${from}`);
  }
}

/** This package's version; an input of every resource so that upgrading the library shows up as a diff. */
export const VERSION: string = (
  JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, "package.json"), "utf8")) as { version: string }
).version;

/** The npm module token of every resource type: `pulumi-nodejs:dynamic/xen-estate:<Kind>`. */
export const MODULE = "xen-estate";

/** The templates shipped with the package (`templates/<kind>/<file>.hbs`). */
export const TEMPLATE_DIR: string = path.join(PACKAGE_ROOT, "templates");
