/**
 * The kinds the runtime knows. The framework depends on no resource: the package entry (provider/index.ts) fills
 * this table with every kind it ships, and the runtime looks kinds up by name.
 */
import { VERSION } from "../core/package";
import type { AnyKind, Kind } from "./kind";

const kinds = new Map<string, AnyKind>();

/** Makes kinds known to the runtime. Registering the same name twice is a programming error. */
export function registerKinds(list: readonly AnyKind[]): void {
  for (const k of list) {
    const known = kinds.get(k.name);
    if (known && known !== k) throw new Error(`xen-estate: resource kind ${k.name} registered twice`);
    kinds.set(k.name, k);
  }
}

/** The kind registered under `name`. */
export function kindOf<In extends object, Out extends In>(name: string): Kind<In, Out> {
  const k = kinds.get(name);
  if (!k) throw new Error(`xen-estate ${VERSION} has no resource kind ${name}`);
  return k as Kind<In, Out>;
}

/** Names of every registered kind. */
export function kindNames(): string[] {
  return [...kinds.keys()].sort();
}
