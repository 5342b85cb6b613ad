/**
 * The package as a new user meets it: the starter (examples/starter, what `pulumi new` makes) as a project outside
 * this repository, depending on the tarball `npm pack` makes, type-checked with both module resolutions Pulumi
 * users have (`node`, which Pulumi's own templates use and which ignores `exports` subpaths, and `node16`), then
 * `pulumi preview` of it with the real engine — offline: preview opens no connection.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createStack, resourceChanges, type PulumiStack } from "../engine/harness";
import { repoPath, repoRoot } from "../support/repo";
import { fixtureKeys } from "../support/fixture-keys";

/** The starter's files with `${PROJECT}` and `${DESCRIPTION}` filled in, as `pulumi new` does. */
function fromStarter(file: string): string {
  return fs
    .readFileSync(repoPath("examples", "starter", file), "utf8")
    .replaceAll("${PROJECT}", "my-estate")
    .replaceAll("${DESCRIPTION}", "my estate");
}

/** The starter's tsconfig (Pulumi's template settings) with the module settings a resolution needs. */
function tsconfig(moduleResolution: "node" | "node16"): object {
  const base = JSON.parse(fromStarter("tsconfig.json")) as { compilerOptions: Record<string, unknown> };
  return {
    ...base,
    compilerOptions: {
      ...base.compilerOptions,
      module: moduleResolution === "node16" ? "node16" : "commonjs",
      moduleResolution,
    },
  };
}

describe("the packed package in a new user's project", { timeout: 20 * 60_000 }, () => {
  let dir: string;
  let stack: PulumiStack | undefined;
  const tsc = path.join(repoRoot(), "node_modules", ".bin", "tsc");

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-new-user-"));
    const packed = execFileSync("npm", ["pack", "--silent", "--pack-destination", dir], {
      cwd: repoRoot(),
      encoding: "utf8",
    })
      .trim()
      .split("\n")
      .pop()!;
    // The starter as is, but for where xen-estate comes from (the tarball) and the versions of what it depends on
    // (this repository's, which the npm cache holds).
    const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot(), "package.json"), "utf8")) as {
      version: string;
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
    };
    const starter = JSON.parse(fromStarter("package.json")) as Record<string, Record<string, string>>;
    assert.equal(starter.dependencies!["xen-estate"], `^${pkg.version}`, "the starter asks for this release");
    starter.dependencies!["xen-estate"] = `file:${path.join(dir, packed)}`;
    starter.dependencies!["@pulumi/pulumi"] = pkg.dependencies["@pulumi/pulumi"]!;
    starter.devDependencies = { "@types/node": pkg.devDependencies["@types/node"]! };
    fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify(starter));
    fs.writeFileSync(path.join(dir, "index.ts"), fromStarter("index.ts"));
    // This repository's offline-built engine runs JavaScript only: the program runs compiled, from bin/.
    fs.writeFileSync(
      path.join(dir, "Pulumi.yaml"),
      fromStarter("Pulumi.yaml").replace(
        "runtime: nodejs",
        "runtime:\n  name: nodejs\n  options:\n    typescript: false\nmain: bin/index.js",
      ),
    );
    execFileSync(
      "npm",
      ["install", "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund", "--silent"],
      {
        cwd: dir,
        stdio: "inherit",
      },
    );
  });

  after(async () => {
    await stack?.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const resolution of ["node", "node16"] as const)
    test(`type-checks with "moduleResolution": "${resolution}"`, () => {
      fs.writeFileSync(path.join(dir, `tsconfig.${resolution}.json`), JSON.stringify(tsconfig(resolution)));
      const out = (() => {
        try {
          execFileSync(tsc, ["-p", `tsconfig.${resolution}.json`, "--noEmit"], {
            cwd: dir,
            encoding: "utf8",
          });
          return "";
        } catch (e) {
          return String((e as { stdout?: string }).stdout ?? e);
        }
      })();
      assert.equal(out, "", `tsc with moduleResolution ${resolution}:\n${out}`);
    });

  test("pulumi preview plans the estate without connecting anywhere", async () => {
    execFileSync(tsc, ["-p", "tsconfig.node.json"], { cwd: dir });
    stack = await createStack({
      programDir: dir,
      config: {
        "my-estate:dom0Host": { value: "203.0.113.5" },
        "my-estate:dom0HostKey": { value: fixtureKeys.hostFingerprint },
        "my-estate:sshKey": { value: fixtureKeys.clientPrivateKey, secret: true },
      },
    });
    const preview = await stack.preview();
    assert.equal(preview.code, 0, preview.stderr);
    const creates = resourceChanges(preview)
      .filter((s) => s.op === "create")
      .map((s) => s.type.split(":").pop());
    for (const kind of ["LvmVolume", "BridgedDomU", "NatDomU", "VarnishFrontend", "XenGuest"])
      assert.ok(creates.includes(kind), `${kind} is planned: ${creates.join(", ")}`);
  });
});
