/**
 * The package as a new user meets it: `npm pack`, a fresh Pulumi TypeScript project outside this repository that
 * depends on the tarball, type-checked with both module resolutions Pulumi users have (`node`, which Pulumi's own
 * templates use and which ignores `exports` subpaths, and `node16`), then `pulumi preview` of it with the real
 * engine — offline: preview opens no connection.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createStack, resourceChanges, type PulumiStack } from "./engine/harness";
import { repoRoot } from "./support/repo";
import { fixtureKeys } from "./support/fixture-keys";

const PROGRAM = `import * as pulumi from "@pulumi/pulumi";
import { LvmVolume, VarnishFrontend } from "xen-estate";
import { XenGuest } from "xen-estate/components";

const config = new pulumi.Config();
const connection = {
  host: config.require("dom0Host"),
  hostKey: config.require("dom0HostKey"),
  privateKey: config.requireSecret("sshKey"),
};

const data = new LvmVolume("data", { connection, name: "data", size: "10GiB", filesystem: "ext4" });
const shop = new XenGuest("shop", {
  connection,
  network: { mode: "nat", ip: "10.0.0.5" },
  rootSize: "20GiB",
  memoryMiB: 2048,
  boot: { bootloader: "pvgrub2" },
});
new VarnishFrontend("frontend", {
  connection,
  sites: [{ hostnames: ["shop.example.org"], backend: shop.ip }],
});
export const dataPath: pulumi.Output<string> = data.path;
`;

function tsconfig(moduleResolution: "node" | "node16"): object {
  // What Pulumi's TypeScript template writes, with the module settings node16 needs.
  return {
    compilerOptions: {
      strict: true,
      outDir: "bin",
      target: "es2020",
      module: moduleResolution === "node16" ? "node16" : "commonjs",
      moduleResolution,
      sourceMap: true,
      experimentalDecorators: true,
      pretty: true,
      noFallthroughCasesInSwitch: true,
      noImplicitReturns: true,
      forceConsistentCasingInFileNames: true,
    },
    files: ["index.ts"],
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
    const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot(), "package.json"), "utf8")) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
    };
    fs.writeFileSync(
      path.join(dir, "package.json"),
      JSON.stringify({
        name: "my-estate",
        private: true,
        main: "bin/index.js",
        dependencies: {
          "xen-estate": `file:${path.join(dir, packed)}`,
          "@pulumi/pulumi": pkg.dependencies["@pulumi/pulumi"],
        },
        devDependencies: { "@types/node": pkg.devDependencies["@types/node"] },
      }),
    );
    fs.writeFileSync(path.join(dir, "index.ts"), PROGRAM);
    fs.writeFileSync(
      path.join(dir, "Pulumi.yaml"),
      "name: my-estate\nruntime:\n  name: nodejs\n  options:\n    typescript: false\nmain: bin/index.js\n",
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
    for (const kind of ["LvmVolume", "NatDomU", "VarnishFrontend", "XenGuest"])
      assert.ok(creates.includes(kind), `${kind} is planned: ${creates.join(", ")}`);
  });
});
