/**
 * The walkthrough program (examples/walkthrough) previewed from its CI stack file (Pulumi.ci.yaml: documentation
 * addresses, realistic production values, pinned host keys, secrets under the passphrase provider) by the real
 * engine, with no host reachable: every pulumi command runs inside a network namespace whose only interface is
 * loopback, and the provider processes record every SSH dial they attempt (XEN_ESTATE_DIAL_LOG). The preview must
 * plan the whole estate with every check passing, open no connection, and fail on a bad value naming the property.
 * A control proves the two instruments work: an `up` of the first resource in the same namespace dials, is
 * recorded, and cannot get out.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DIAL_LOG_ENV } from "../../provider";
import {
  createStack,
  diagnostics,
  LOOPBACK_ONLY,
  resourceChanges,
  type PulumiStack,
  type RunResult,
} from "../engine/harness";
import { repoPath } from "../support/repo";

const PROGRAM = "examples/walkthrough";
/** The CI stack's passphrase, public on purpose (see the file's header). */
const CI_PASSPHRASE = "xen-estate-walkthrough-ci";
const ciStack = fs.readFileSync(repoPath(PROGRAM, "Pulumi.ci.yaml"), "utf8");

/** The custom resources the walkthrough plans: one per Dom0Host concern, the migration, the guests, the volumes (the migrated disk's pre-boot snapshot too), Varnish. */
const EXPECTED = [
  "BridgedDomU web1",
  "Dom0Access dom0-access",
  "Dom0Firewall dom0-firewall",
  "Dom0Monitoring dom0-monitoring",
  "Dom0Network dom0-network",
  "Dom0Packages dom0-packages",
  "Dom0Reboot dom0-reboot",
  "Dom0XenBoot dom0-xen-boot",
  "LinodeMigration web1-migration",
  "LvmVolume blog1-root",
  "LvmVolume blog1-swap",
  "LvmVolume web1-preboot",
  "LvmVolume web1-root",
  "NatDomU blog1",
  "VarnishFrontend frontend",
];
const COMPONENTS = ["Dom0Host dom0", "MigratedGuest web1", "XenGuest blog1"];

/** `Kind name` of each planned create, sorted; custom resources and components apart. */
function planned(result: RunResult): { custom: string[]; components: string[] } {
  const creates = resourceChanges(result).filter((s) => s.op === "create");
  const label = (s: { urn: string; type: string }) => `${s.type.split(":").pop()} ${s.urn.split("::").pop()}`;
  return {
    custom: creates
      .filter((s) => s.type.startsWith("pulumi-nodejs:dynamic/"))
      .map(label)
      .sort(),
    components: creates
      .filter((s) => s.type.startsWith("xen-estate:components:"))
      .map(label)
      .sort(),
  };
}

describe(
  "the walkthrough previewed from its CI stack with no host reachable",
  { timeout: 20 * 60_000 },
  () => {
    let stack: PulumiStack;
    let logDir: string;
    let dialLog: string;
    const dials = (): string[] =>
      fs.existsSync(dialLog) ? fs.readFileSync(dialLog, "utf8").split("\n").filter(Boolean) : [];
    /** Makes the stack's config the CI stack file, edited by `edit`. */
    const useStack = (edit: (text: string) => string = (t) => t): void => {
      fs.rmSync(dialLog, { force: true });
      const text = edit(ciStack);
      fs.writeFileSync(path.join(stack.workDir, `Pulumi.${stack.name}.yaml`), text);
    };

    before(async () => {
      logDir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-walk-dials-"));
      dialLog = path.join(logDir, "dials.log");
      stack = await createStack({
        programDir: PROGRAM,
        linkPackage: true,
        wrapper: LOOPBACK_ONLY,
        // The provider processes inherit the engine's environment: each records its dials here.
        env: { PULUMI_CONFIG_PASSPHRASE: CI_PASSPHRASE, [DIAL_LOG_ENV]: dialLog },
      });
    });

    after(async () => {
      await stack?.remove();
      fs.rmSync(logDir, { recursive: true, force: true });
    });

    const preview = (o: { expectFailure?: boolean } = {}) => stack.preview(o);

    test("the commands run where nothing but loopback exists", async () => {
      const r = await stack.run(["version"]);
      assert.equal(r.code, 0, r.stderr);
      const links = execFileSync(LOOPBACK_ONLY[0]!, [...LOOPBACK_ONLY.slice(1), "ip", "-o", "link", "show"], {
        encoding: "utf8",
      });
      assert.deepEqual(
        links
          .trim()
          .split("\n")
          .map((l) => l.split(":")[1]!.trim()),
        ["lo"],
      );
    });

    test("preview plans every resource of the walkthrough, every check passing, and dials nobody", async () => {
      useStack();
      const r = await preview();
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(diagnostics(r, "error"), []);
      assert.deepEqual(diagnostics(r, "warning"), []);
      assert.deepEqual(planned(r), { custom: EXPECTED, components: COMPONENTS });
      assert.deepEqual(dials(), [], "no SSH dial was attempted");
    });

    test("the installimage phase of the stack file's comment plans and passes its checks too", async () => {
      useStack((t) => {
        const on = t
          .replace(/^ {2}# {3}(xen-estate-walkthrough:installimage:)$/m, "  $1")
          .replace(/^ {2}# {5}/gm, "    ");
        assert.notEqual(on, t, "the stack file shows the installimage block");
        return on;
      });
      const r = await preview();
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(diagnostics(r, "error"), []);
      assert.deepEqual(diagnostics(r, "warning"), []);
      assert.deepEqual(planned(r).custom, [...EXPECTED, "HetznerInstallimage dom0-install"].sort());
      assert.deepEqual(dials(), []);
    });

    test("an admin named root fails preview, naming the property and the rule", async () => {
      useStack((t) => {
        const bad = t.replace(/^( {4}name: )ops$/m, "$1root");
        assert.notEqual(bad, t);
        return bad;
      });
      const r = await preview({ expectFailure: true });
      assert.notEqual(r.code, 0);
      const errors = diagnostics(r, "error").map((d) => d.message);
      assert.ok(
        errors.some((m) => /adminUser/.test(m) && /"root"/.test(m)),
        `an error names adminUser and shows "root":\n${errors.join("\n")}`,
      );
    });

    test("control: an up of the first resource in the same namespace dials the dom0, is recorded and gets nowhere", async () => {
      useStack();
      const r0 = await preview();
      const changes = resourceChanges(r0);
      const access = changes.find((s) => s.type.endsWith(":Dom0Access"));
      const host = changes.find((s) => s.type === "xen-estate:components:Dom0Host");
      assert.ok(access && host, "the preview plans Dom0Access in its Dom0Host");
      const r = await stack.up({ expectFailure: true, args: ["--target", host.urn, "--target", access.urn] });
      assert.notEqual(r.code, 0);
      const failure = diagnostics(r, "error")
        .map((d) => d.message)
        .join("\n");
      const attempts = /203\.0\.113\.70:22: network: .*ENETUNREACH.*\(after (\d+) attempts\)/.exec(failure);
      assert.ok(attempts, `the dial found no route out of the namespace:\n${failure}`);
      assert.deepEqual(
        dials(),
        Array.from({ length: Number(attempts[1]) }, () => "dial root@203.0.113.70:22"),
        "each attempt the error counts was recorded, with the stack file's connection",
      );
    });
  },
);
