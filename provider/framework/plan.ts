/**
 * Pure planning for every kind: `check` (validate the connection and the kind's inputs, every failure at once) and
 * `diff` (which inputs changed, which force a replacement, which class of in-place change each is). Nothing here
 * touches the network.
 *
 * Values not known yet (`preview` before a dependency exists) are "may change": they never count as missing, never
 * as a replacement and never as a refused change; they are checked in full at `up`, when they are known.
 */
import { InputError, InputErrors, showValue } from "../core/errors";
import { VERSION } from "../core/package";
import { Checker, containsUnknown, UNKNOWN } from "../core/validate";
import { checkConnection, checkedCredentials } from "../ssh/connection";
import type { AnyKind, ChangePlan } from "./kind";
import { kindOf } from "./registry";

const INTERNAL = new Set(["__provider"]);
/** The output holding the version of a resource's state (see {@link Kind.schemaVersion}). */
export const SCHEMA_KEY = "xenEstateSchema";

/** State of any release, brought to this release's shape by the kind's migration. Pure. */
export function upgradeState(kindName: string, state: Record<string, unknown>): Record<string, unknown> {
  const kind: AnyKind = kindOf(kindName);
  const current = kind.schemaVersion ?? 1;
  if (!state || typeof state !== "object" || Object.keys(state).length === 0) return state;
  const from = typeof state[SCHEMA_KEY] === "number" ? state[SCHEMA_KEY] : 1;
  if (from >= current || !kind.migrate) return state;
  return { ...kind.migrate(state, from), [SCHEMA_KEY]: current };
}
/** Inputs the framework manages for every kind. */
const COMMON = new Set(["connection", "credentials", "xenEstateVersion"]);

/** Validates every input of `kind`; returns normalised inputs or every failure. Pure, offline, never throws. */
export function checkInputs(
  kindName: string,
  news: Record<string, unknown>,
  olds?: Record<string, unknown>,
): { inputs?: Record<string, unknown>; failures: InputError[] } {
  const kind = kindOf(kindName);
  const c = new Checker();
  let connection: unknown;
  let own: Record<string, unknown> | undefined;
  try {
    connection =
      news.connection === UNKNOWN
        ? UNKNOWN
        : checkConnection(c.at("connection"), news.connection, news.credentials);
    own = kind.check(news, c, olds && Object.keys(olds).length > 0 ? olds : undefined);
    for (const p of kind.nestedConnections ?? []) {
      const holder = news[p];
      if (holder === undefined || holder === null || holder === UNKNOWN) continue;
      if (typeof holder !== "object" || Array.isArray(holder)) continue; // the kind's check reports it
      const h = holder as Record<string, unknown>;
      const nested =
        h.connection === UNKNOWN
          ? UNKNOWN
          : checkConnection(c.at(`${p}.connection`), h.connection, h.credentials);
      const slot = own?.[p];
      if (own && slot && typeof slot === "object") {
        const filled: Record<string, unknown> = { ...(slot as Record<string, unknown>) };
        if (nested !== undefined) filled.connection = nested;
        const creds = h.credentials === UNKNOWN ? UNKNOWN : checkedCredentials(h.connection, h.credentials);
        if (creds !== undefined) filled.credentials = creds;
        own = { ...own, [p]: filled };
      }
    }
  } catch (err) {
    // A check that throws is a bug in that check; report it as a failure rather than crash the engine's call.
    c.fail("", undefined, `could not be checked (${(err as Error).message.split("\n")[0]})`);
  }
  if (!c.ok) return { failures: c.errors };
  if (!connection || !own) {
    // Something is not known yet and the kind could not normalise around it: pass the inputs through; they are
    // checked in full at `up`, when every value is known.
    if (containsUnknown(news)) return { inputs: { ...news }, failures: [] };
    // Everything is known and nothing failed, yet the check made no inputs: a bug in that check. Unchecked
    // inputs must never reach a host, so this is a failure too.
    c.fail(
      "",
      undefined,
      `could not be checked (the ${kind.name} check accepted the inputs without normalising them; please report this)`,
    );
    return { failures: c.errors };
  }
  const inputs: Record<string, unknown> = {
    ...own,
    connection,
    xenEstateVersion: typeof news.xenEstateVersion === "string" ? news.xenEstateVersion : VERSION,
  };
  const credentials =
    news.credentials === UNKNOWN ? UNKNOWN : checkedCredentials(news.connection, news.credentials);
  if (credentials !== undefined) inputs.credentials = credentials;
  if (news.__provider !== undefined) inputs.__provider = news.__provider;
  return { inputs, failures: [] };
}

/** Throws every failure of `check` at once (for use outside the engine, e.g. benchmarks and components). */
export function assertValid(kindName: string, news: Record<string, unknown>): Record<string, unknown> {
  const { inputs, failures } = checkInputs(kindName, news);
  if (failures.length > 0) throw new InputErrors(kindName, failures);
  return inputs!;
}

/**
 * Rendered files of a resource, path → content, or {@link UNKNOWN} when anything they depend on is not known
 * yet (preview): a file that depends on an unknown value is itself unknown.
 */
export function renderedFiles<T extends object>(
  inputs: T,
  render: (known: T) => Record<string, string>,
): Record<string, string> {
  if (containsUnknown(inputs)) return UNKNOWN as unknown as Record<string, string>;
  return render(inputs);
}

/** Whether two JSON-like values are equal. */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") {
    // Absent and undefined are the same thing in state.
    return (a ?? undefined) === (b ?? undefined);
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** The value at a dotted path (`connection.host`), or undefined. */
export function getPath(obj: unknown, dotted: string): unknown {
  return dotted
    .split(".")
    .reduce<unknown>(
      (o, k) => (o && typeof o === "object" ? (o as Record<string, unknown>)[k] : undefined),
      obj,
    );
}

/** The plan for a change. Pure and offline; throws {@link InputError} for a refused change. */
export function planDiff(
  kindName: string,
  olds: Record<string, unknown>,
  news: Record<string, unknown>,
): ChangePlan & { changes: boolean; deleteBeforeReplace: boolean } {
  const kind: AnyKind = kindOf(kindName);
  const skip = new Set([...INTERNAL, ...(kind.outputOnly ?? []), "hostId", SCHEMA_KEY]);
  const keys = new Set([...Object.keys(news), ...Object.keys(olds)].filter((k) => !skip.has(k)));
  const [was, now] = kind.diffView ? [kind.diffView(olds), kind.diffView(news)] : [olds, news];
  const changed = [...keys].filter((k) => !deepEqual(was[k], now[k])).sort();
  const replaces = new Set<string>();
  for (const r of kind.replaceOn) {
    const top = r.split(".")[0]!;
    const now = getPath(news, r);
    // Not known yet: it may change, which is an update until the real value says otherwise.
    if (containsUnknown(now)) continue;
    if (changed.includes(top) && !deepEqual(getPath(olds, r), now)) replaces.add(r);
  }
  const known = !containsUnknown(news);
  const extra = known ? kind.diffDetail?.(olds, news) : undefined;
  for (const r of extra?.replaces ?? []) replaces.add(r);
  if (replaces.size > 0 && kind.replaceConsent && news[kind.replaceConsent] !== true) {
    const first = [...replaces].sort()[0]!;
    throw new InputError(
      first,
      showValue(getPath(news, first)),
      `cannot change on an existing ${kind.name} (was ${showValue(getPath(olds, first))}): it would replace it and destroy its data`,
      `Set \`${kind.replaceConsent}: true\` to accept that, or keep the old value`,
    );
  }
  const classes: Record<string, string[]> = {};
  for (const [name, props] of Object.entries(kind.changeClasses ?? {}))
    classes[name] = props.filter((p) => changed.includes(p) && !COMMON.has(p));
  const tops = [...replaces].map((r) => r.split(".")[0]!);
  return {
    changes: changed.length > 0 || replaces.size > 0,
    changed,
    replaces: [...new Set(tops)].sort(),
    classes,
    deleteBeforeReplace: replaces.size > 0 && !!kind.deleteBeforeReplace,
  };
}

/** One line for `preview` about an in-place change that does more than rewrite state (a restart…), or null. */
export function planNote(kindName: string, plan: ChangePlan): string | null {
  const kind: AnyKind = kindOf(kindName);
  if (plan.replaces.length > 0) return null;
  const notes = Object.entries(kind.changeNotes ?? {})
    .filter(([cls]) => (plan.classes[cls] ?? []).length > 0)
    .map(([cls, note]) => `${note} (${plan.classes[cls]!.join(", ")} changed)`);
  return notes.length > 0 ? notes.join("; ") : null;
}
