/**
 * `node dist/test/support/plan.js FILE…` prints, as one JSON object keyed by file, what each compiled test file
 * declares at its top level: its lab machine (test/lab/shared.ts `labMachine`) and its tier
 * (test/support/tier.ts `slowTier`), without running a test. While the files load, node:test is replaced by
 * no-ops that still enter `describe` bodies (so a declaration there is seen too) but run no test and no hook.
 * test/run-tests.mjs calls it for the files that mention a declaration.
 */
import Module from "node:module";
import * as path from "node:path";

const noop = (): void => undefined;
function suite(...args: unknown[]): void {
  const fn = args.find((a) => typeof a === "function") as (() => void) | undefined;
  fn?.();
}
const stub = Object.assign(noop, {
  describe: suite,
  suite,
  it: noop,
  test: noop,
  before: noop,
  after: noop,
  beforeEach: noop,
  afterEach: noop,
  mock: {
    fn: () => noop,
    method: noop,
    reset: noop,
    restoreAll: noop,
    timers: { enable: noop, reset: noop },
  },
});
type Load = (request: string, parent: unknown, isMain: boolean) => unknown;
const mod = Module as unknown as { _load: Load };
const load = mod._load;
mod._load = function (request: string, parent: unknown, isMain: boolean): unknown {
  if (request === "node:test" || request === "test") return stub;
  return load.call(this, request, parent, isMain);
};

// Only now (node:test stubbed) the registries, so they too get the stub.
const { takeDeclaredNeeds } = require("../lab/shared") as typeof import("../lab/shared");
const { takeDeclaredTiers } = require("./tier") as typeof import("./tier");

const plan: Record<string, { lab: ReturnType<typeof takeDeclaredNeeds>; slow: string[] }> = {};
for (const file of process.argv.slice(2)) {
  require(path.resolve(file));
  plan[file] = { lab: takeDeclaredNeeds(), slow: takeDeclaredTiers() };
}
process.stdout.write(`${JSON.stringify(plan)}\n`);
