/**
 * The layering ARCHITECTURE.md describes, checked on every relative import of provider/ and components/:
 * imports point down only, no resource imports another resource, the framework knows no resource.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { repoRoot } from "../support/repo";

/** Each layer and the layers it may import (besides itself). */
const ALLOWED: Record<string, readonly string[]> = {
  index: ["components", "resources", "guest", "dom0", "framework", "remote", "ssh", "core"],
  components: ["resources", "guest", "dom0", "framework", "remote", "ssh", "core"],
  resources: ["guest", "dom0", "framework", "remote", "ssh", "core"],
  guest: ["framework", "remote", "ssh", "core"],
  dom0: ["framework", "remote", "ssh", "core"],
  framework: ["ssh", "core"],
  remote: ["ssh", "core"],
  ssh: ["core"],
  core: [],
};

function layerOf(rel: string): string {
  if (rel === "provider/index.ts") return "index";
  if (rel.startsWith("components/")) return "components";
  const m = /^provider\/([^/]+)\//.exec(rel);
  if (!m || !(m[1]! in ALLOWED)) throw new Error(`${rel} is in no layer`);
  return m[1]!;
}

function sources(dir: string): string[] {
  return (fs.readdirSync(path.join(repoRoot(), dir), { recursive: true }) as string[])
    .filter((f) => f.endsWith(".ts"))
    .map((f) => path.join(dir, f).split(path.sep).join("/"));
}

function importsOf(rel: string): string[] {
  const text = fs.readFileSync(path.join(repoRoot(), rel), "utf8");
  const found = [...text.matchAll(/(?:from|import|require)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)].map((m) => m[1]!);
  return found.map((spec) => {
    const base = path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec));
    for (const candidate of [`${base}.ts`, `${base}/index.ts`])
      if (fs.existsSync(path.join(repoRoot(), candidate))) return candidate;
    throw new Error(`${rel}: cannot resolve ${spec}`);
  });
}

const files = [...sources("provider"), ...sources("components")];

describe("the layering of provider/ and components/", () => {
  test("every import points to the same layer or one below it", () => {
    const wrong: string[] = [];
    for (const f of files)
      for (const target of importsOf(f)) {
        const from = layerOf(f);
        const to = layerOf(target);
        if (from !== to && !ALLOWED[from]!.includes(to))
          wrong.push(`${f} (${from}) imports ${target} (${to})`);
      }
    assert.deepEqual(wrong, []);
  });

  test("no resource imports another resource's folder", () => {
    const wrong: string[] = [];
    for (const f of files.filter((x) => x.startsWith("provider/resources/")))
      for (const target of importsOf(f)) {
        const own = f.split("/")[2];
        if (target.startsWith("provider/resources/") && target.split("/")[2] !== own)
          wrong.push(`${f} imports ${target}`);
      }
    assert.deepEqual(wrong, []);
  });

  test("each resource folder has its args and class in index.ts and its kind in kind.ts", () => {
    const kinds = fs.readdirSync(path.join(repoRoot(), "provider", "resources"));
    for (const k of kinds) {
      const dir = path.join(repoRoot(), "provider", "resources", k);
      const index = fs.readFileSync(path.join(dir, "index.ts"), "utf8");
      assert.match(index, /export interface \w+Args\b/, `${k}/index.ts declares its Args`);
      assert.match(
        index,
        /extends define\w*Resource</,
        `${k}/index.ts makes its class with a resource factory`,
      );
      assert.ok(fs.existsSync(path.join(dir, "kind.ts")), `${k}/kind.ts exists`);
    }
  });
});
