// The real Pulumi engine end to end: a dynamic provider whose methods require() modules, run
// through up, an idempotent second up, preview, refresh and destroy.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as path from "node:path";
import { createStack, repoRoot, resourceChanges, steps, type PulumiStack } from "../engine/harness";

const SMOKE = "pulumi-nodejs:dynamic/engine:Smoke";

describe("engine: dynamic provider smoke", { timeout: 45 * 60 * 1000 }, () => {
  let stack: PulumiStack;

  before(async () => {
    stack = await createStack({
      programDir: "test/engine/fixtures/smoke",
      config: { label: { value: "one" } },
      linkPackage: true,
    });
  });

  after(async () => {
    await stack?.remove();
  });

  test("up creates the resource; the provider process requires modules", async () => {
    const up = await stack.up();
    assert.deepEqual(up.changeSummary, { create: 2 });
    assert.deepEqual(
      resourceChanges(up).map((s) => [s.type, s.op]),
      [[SMOKE, "create"]],
    );
    const outputs = await stack.outputs();
    assert.equal(outputs.greeting, "hello one");
    const probe = JSON.parse(String(outputs.providerProbe)) as Record<string, unknown>;
    assert.match(String(probe.handlebars), /node_modules\/handlebars\//);
    assert.match(String(probe.node), /^v22\./);
    // require("xen-estate/...") in the provider process finds this repo through the link.
    assert.equal(probe["xen-estate/package.json"], path.join(repoRoot(), "package.json"));
    const programProbe = outputs.programProbe as Record<string, unknown>;
    // Pulumi.yaml says typescript: false, so the language host does not load ts-node.
    assert.equal(programProbe.typescript, null);
  });

  test("a second up changes nothing", async () => {
    const up = await stack.up();
    assert.deepEqual(up.changeSummary, { same: 2 });
    assert.deepEqual(resourceChanges(up), []);
    assert.ok(steps(up).some((s) => s.type === SMOKE && s.op === "same"));
  });

  test("preview after a config change plans one update", async () => {
    await stack.setConfig("label", "two");
    const preview = await stack.preview();
    assert.deepEqual(preview.changeSummary, { same: 1, update: 1 });
    const json = preview.json as { changeSummary?: Record<string, number> };
    assert.deepEqual(json.changeSummary, { same: 1, update: 1 });
    assert.deepEqual(
      resourceChanges(preview).map((s) => [s.type, s.op]),
      [[SMOKE, "update"]],
    );
  });

  test("refresh calls read and keeps the resource", async () => {
    const refresh = await stack.refresh();
    assert.deepEqual(refresh.changeSummary, { same: 2 });
    const state = await stack.exportState();
    const smoke = state.deployment.resources?.find((r) => r.type === SMOKE);
    assert.equal(smoke?.id, "smoke-one");
  });

  test("destroy deletes everything", async () => {
    const destroy = await stack.destroy();
    assert.deepEqual(destroy.changeSummary, { delete: 2 });
    const state = await stack.exportState();
    assert.equal(state.deployment.resources?.length ?? 0, 0);
  });
});
