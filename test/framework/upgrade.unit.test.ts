/**
 * Upgrading from the previous release: state that xen-estate 0.1.0 wrote (test/fixtures/state/0.1.0.json, made by
 * that release's own code) is migrated, and the same program checked by this release plans no replacement, no
 * restart and no rewrite inside a guest; VarnishFrontend neither restarts nor loses its cache.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { checkInputs, kindNames, planDiff, varnishFrontendKind, VERSION } from "../../provider";
import type { VarnishFrontendInputs, VarnishFrontendOutputs } from "../../provider";
import { SCHEMA_KEY, upgradeState } from "../../provider/framework/plan";
import { fakeVarnishHost } from "../support/fake-host";
import { repoPath } from "../support/repo";

interface OldResource {
  kind: string;
  program: Record<string, unknown>;
  inputs: Record<string, unknown>;
  outputs: Record<string, unknown>;
}

const old = JSON.parse(fs.readFileSync(repoPath("test", "fixtures", "state", "0.1.0.json"), "utf8")) as {
  release: string;
  resources: OldResource[];
};

const connection = { host: "203.0.113.5", hostKey: "SHA256:nxtWv4ZCCsBO9ecLwEn0zCyMCj4iO1kGBHzV/VGlw78" };

/** The same program checked by this release, with the old inputs as the engine passes them to `check`. */
function current(r: OldResource): Record<string, unknown> {
  const { inputs, failures } = checkInputs(
    r.kind,
    { connection, xenEstateVersion: VERSION, ...r.program },
    r.inputs,
  );
  assert.deepEqual(failures, []);
  return inputs!;
}

/** No replacement and no restart, settings or live change when `outputs` is upgraded and diffed against `inputs`. */
function assertNoDisruption(
  kind: string,
  outputs: Record<string, unknown>,
  inputs: Record<string, unknown>,
): void {
  const d = planDiff(kind, upgradeState(kind, outputs), inputs);
  assert.deepEqual(d.replaces, [], JSON.stringify(d.changed));
  for (const cls of ["restart", "settings", "live"])
    assert.deepEqual(d.classes[cls] ?? [], [], `${cls}: ${JSON.stringify(d.changed)}`);
}

describe(`state written by xen-estate ${old.release}`, () => {
  for (const r of old.resources)
    test(`a ${r.kind} (${JSON.stringify(r.inputs.name ?? r.inputs.path ?? "")}) upgrades without a replacement, a restart or a guest rewrite`, () => {
      assert.equal(upgradeState(r.kind, r.outputs)[SCHEMA_KEY], 2);
      assertNoDisruption(r.kind, r.outputs, current(r));
    });

  test("a volume 0.1.0 was told to adopt is kept on delete, since 0.1.0 did not record whether it existed before", () => {
    const legacy = old.resources.find((r) => r.kind === "LvmVolume" && r.inputs.adopt === true)!;
    assert.equal(upgradeState("LvmVolume", legacy.outputs).adopted, true);
    const made = old.resources.find((r) => r.kind === "LvmVolume" && r.inputs.adopt !== true)!;
    assert.equal(upgradeState("LvmVolume", made.outputs).adopted, false);
  });

  test("the VarnishFrontend it left is neither restarted nor emptied: at most the VCL is loaded again", async () => {
    const r = old.resources.find((x) => x.kind === "VarnishFrontend")!;
    const news = current(r) as unknown as VarnishFrontendInputs;
    const h = fakeVarnishHost(news.files["/etc/varnish/xen-estate.vcl"]!, "changed  \n");
    const olds = upgradeState(r.kind, r.outputs) as unknown as VarnishFrontendOutputs;
    await varnishFrontendKind.update(h.ctx, "id", olds, news, { changed: [], replaces: [], classes: {} });
    assert.ok(!h.summaries.includes("restart varnish"), h.summaries.join(", "));
  });

  test("state at this release's schema version is left as it is", () => {
    const r = old.resources[0]!;
    const now = { ...current(r), sha256: "x", previousBackup: null, [SCHEMA_KEY]: 2 };
    assert.deepEqual(upgradeState(r.kind, now), now);
  });
});

/**
 * Every later fixture (test/support/state-fixture.ts made each from its release's own code): one resource of each kind
 * variant, Dom0Host's concerns and LinodeMigration included. The program, checked by the code of the day, plans no
 * replacement and no disruptive change against the migrated state.
 */
const later = fs
  .readdirSync(repoPath("test", "fixtures", "state"))
  .filter((f) => /^\d+\.\d+\.\d+\.json$/.test(f) && f !== "0.1.0.json")
  .sort();

for (const file of later) {
  const fixture = JSON.parse(fs.readFileSync(repoPath("test", "fixtures", "state", file), "utf8")) as {
    release: string;
    resources: (OldResource & { variant: string })[];
  };
  describe(`state written by xen-estate ${fixture.release}`, () => {
    test("holds every kind this release has", () => {
      const kinds = new Set(fixture.resources.map((r) => r.kind));
      for (const k of kindNames()) assert.ok(kinds.has(k), `no ${k} in ${file}`);
    });
    for (const r of fixture.resources)
      test(`a ${r.variant} upgrades without a replacement or a disruptive change`, () => {
        const { inputs, failures } = checkInputs(r.kind, r.program, r.inputs);
        assert.deepEqual(failures, []);
        assertNoDisruption(r.kind, r.outputs, inputs!);
      });
  });
}
