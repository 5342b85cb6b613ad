/**
 * The state this release writes, as a fixture for the releases after it (issue 15 item 6): for one resource of each
 * kind variant of test/support/kind-inputs.ts, the program's arguments, the inputs `check` makes of them and the
 * outputs `create` returns (run against the simulator, test/support/recording-host.ts), completed the way the
 * runtime records them (schema version, the connection, the machine it was made on). Credentials are left out of
 * all three (state keeps them only as the engine's encrypted secrets); the other values a program would mark secret
 * (a sensitive file's content, mirror and proxy passwords) are the test corpus's made-up ones.
 *
 *   node dist/test/support/state-fixture.js > test/fixtures/state/<version>.json && npx prettier --write test/fixtures/state/<version>.json
 *
 * Run it once per release whose state shape changed, from that release's own code, and never again for that file:
 * test/framework/upgrade.unit.test.ts upgrades every file in test/fixtures/state/ with the code of the day.
 */
import { checkInputs, VERSION } from "../../provider";
import { kindOf } from "../../provider/framework/registry";
import { completeOuts } from "../../provider/framework/runtime";
import { kindVariants } from "./kind-inputs";
import { recordLifecycle } from "./recording-host";

/** The machine id the fixture's resources were made on (the runtime records the host's /etc/machine-id). */
export const FIXTURE_HOST_ID = "0d5e7a1c9b2f4e8d8a6b3c1f2e9d7a40";

export interface FixtureResource {
  kind: string;
  variant: string;
  program: Record<string, unknown>;
  inputs: Record<string, unknown>;
  outputs: Record<string, unknown>;
}

export interface StateFixture {
  release: string;
  note: string;
  resources: FixtureResource[];
}

/** Drops `credentials` wherever it is (the top level, a migration's source). */
function withoutCredentials(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutCredentials);
  if (!value || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([k]) => k !== "credentials")
      .map(([k, v]) => [k, withoutCredentials(v)]),
  );
}

export async function stateFixture(): Promise<StateFixture> {
  const resources: FixtureResource[] = [];
  for (const v of kindVariants()) {
    const program = withoutCredentials(v.inputs) as Record<string, unknown>;
    const { inputs, failures } = checkInputs(v.kind, program, {});
    if (!inputs || failures.length > 0)
      throw new Error(`${v.name}: check refused the fixture's program: ${JSON.stringify(failures)}`);
    const { operations, outs } = await recordLifecycle(v.kind, inputs);
    const create = operations.find((o) => o.operation === "create");
    if (!outs || create?.error)
      throw new Error(
        `${v.name}: create failed against the simulator: ${create?.error?.message ?? "no outputs"}`,
      );
    // As the runtime records a create's outputs: the schema version, the common inputs, the machine.
    const outputs = completeOuts(kindOf(v.kind), inputs, outs, FIXTURE_HOST_ID);
    resources.push({
      kind: v.kind,
      variant: v.name,
      program,
      inputs,
      outputs: withoutCredentials(outputs) as Record<string, unknown>,
    });
  }
  return {
    release: VERSION,
    note: `State as xen-estate ${VERSION} writes it: one resource of each kind variant, its program's arguments, checked inputs and create's outputs (test/support/state-fixture.ts). Regenerate only from that release.`,
    resources,
  };
}

if (require.main === module)
  void stateFixture().then(
    (f) => process.stdout.write(`${JSON.stringify(f, null, 2)}\n`),
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
