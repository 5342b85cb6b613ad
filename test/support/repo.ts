/** Where the repository is, from any compiled test file (dist/test/…) or source file (test/…). */
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";

let cached: string | undefined;

/** The repository root: the nearest directory upwards whose package.json is named xen-estate. */
export function repoRoot(): string {
  if (cached) return cached;
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "xen-estate")
          return (cached = dir);
      } catch {
        // keep looking
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`xen-estate package.json not found above ${__dirname}`);
    dir = parent;
  }
}

/** A path inside the repository. */
export function repoPath(...parts: string[]): string {
  return path.join(repoRoot(), ...parts);
}
