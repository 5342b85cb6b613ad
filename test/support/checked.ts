/** `check` for tests: the normalised inputs of a kind (asserting there is no failure), or its failures. */
import assert from "node:assert/strict";
import { checkInputs, InputError } from "../../provider";

/** The normalised inputs of `kind` for `raw`; fails the test, listing every failure, when there is one. */
export function checked<T = Record<string, unknown>>(kind: string, raw: Record<string, unknown>): T {
  const { inputs, failures } = checkInputs(kind, raw);
  assert.deepEqual(
    failures.map((f) => f.message),
    [],
  );
  return inputs as T;
}

/** The failures of `kind` for `raw` (asserting `check` did not throw). */
export function failuresOf(kind: string, raw: Record<string, unknown>): InputError[] {
  return checkInputs(kind, raw).failures;
}

/** The properties of the failures of `kind` for `raw`. */
export function failingProperties(kind: string, raw: Record<string, unknown>): string[] {
  return failuresOf(kind, raw).map((f) => f.property);
}
