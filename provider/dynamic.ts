/**
 * The dynamic-provider pattern, written once for every resource kind.
 *
 * Program side: {@link providerFor} returns a provider object whose methods do nothing but
 * `require("xen-estate")` and delegate to {@link runtime}. Pulumi serializes that closure; because it captures
 * only the kind's name, the code that runs in the provider process is the installed package, not a frozen copy,
 * and the serialized text never changes between releases. {@link resourceInputs} splits the connection into a
 * public part and a secret `credentials` part and adds the provider version, so upgrades show as diffs.
 *
 * Provider side: {@link runtime} validates in `check` (every failure, each with its property), plans in a pure
 * `diff` whose replacements come from the kind's one declared list, and runs create/read/update/delete over the
 * pooled SSH executor. A create that fails half way throws an error carrying `id` and `properties`, so the engine
 * records what was made and the next `up` finishes it through `update`.
 */
import type * as pulumi from "@pulumi/pulumi";
import { InputError, InputErrors, SECRET_PLACEHOLDER } from "./errors";
import { Checker } from "./validate";
import {
  checkConnection,
  Connection,
  ConnectionArgs,
  Credentials,
  joinConnection,
  ResolvedConnection,
  splitConnection,
} from "./connection";
import { Logger } from "./log";
import { RemoteHost, SshPool } from "./ssh/executor";

/** The npm module token of every resource type: `pulumi-nodejs:dynamic/xen-estate:<Kind>`. */
export const MODULE = "xen-estate";

/** This package's version; an input of every resource so that upgrading the library shows up as a diff. */
export const VERSION: string = (require("../../package.json") as { version: string }).version;

/** Inputs every resource carries besides its own. */
export interface CommonInputs {
  connection: Connection;
  credentials?: Credentials;
  xenEstateVersion: string;
}

/** What a kind's provider methods get to work with. */
export interface Context {
  host: RemoteHost;
  log: Logger;
  conn: ResolvedConnection;
}

/** Everything that makes one resource kind. Only `check` and `diffDetail` are needed offline; both are pure. */
export interface Kind<In extends object, Out extends In> {
  /** The type name: `LvmVolume`, `RemoteFile`… */
  readonly name: string;
  /**
   * Input properties whose change forces a replacement; dotted paths reach into objects (`connection.host`).
   * Anything else that changes is an in-place update.
   */
  readonly replaceOn: readonly string[];
  /** The old resource must be deleted before its replacement is created (names unique on the host). */
  readonly deleteBeforeReplace?: boolean;
  /** Output-only properties, which a plain diff of inputs must skip. */
  readonly outputOnly?: readonly string[];
  /** Validates and normalises the kind's own inputs (not the connection), recording failures in `c`. Pure. */
  check(
    raw: Record<string, unknown>,
    c: Checker,
    olds: Partial<Out> | undefined,
  ): Omit<In, keyof CommonInputs> | undefined;
  /** Extra pure planning: refuse an impossible change (throw {@link InputError}) or force more replacements. */
  diffDetail?(olds: Out, news: In): { replaces?: string[] } | void;
  /** A stable id for the thing made, from its inputs (e.g. `host:/dev/vg0/name`). */
  id(inputs: In): string;
  create(ctx: Context, inputs: In, progress: (partialOuts: Partial<Out>) => void): Promise<Out>;
  /** Observes the real object: outputs reflecting reality (drift shows as changed inputs), or null when gone. */
  read(ctx: Context, id: string, outs: Out): Promise<Out | null>;
  update(ctx: Context, id: string, olds: Out, news: In): Promise<Out>;
  delete(ctx: Context, id: string, outs: Out): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------------
// Program side

/**
 * The provider object for a kind: a closure over the kind's name and nothing else. Each method requires this
 * package by name, so the serialized text stays tiny and the installed code is what runs.
 */
export function providerFor(kind: string): pulumi.dynamic.ResourceProvider {
  return {
    check: (olds: unknown, news: unknown) => require("xen-estate").runtime.check(kind, olds, news),
    diff: (id: string, olds: unknown, news: unknown) =>
      require("xen-estate").runtime.diff(kind, id, olds, news),
    create: (inputs: unknown) => require("xen-estate").runtime.create(kind, inputs),
    read: (id: string, props: unknown) => require("xen-estate").runtime.read(kind, id, props),
    update: (id: string, olds: unknown, news: unknown) =>
      require("xen-estate").runtime.update(kind, id, olds, news),
    delete: (id: string, props: unknown) => require("xen-estate").runtime.delete(kind, id, props),
  };
}

/**
 * Builds a resource's input bag: the connection split into a readable part and a secret `credentials` part, the
 * provider version, and every output-only property declared as `undefined` so it is registered as an output.
 */
export function resourceInputs(
  args: { connection: pulumi.Input<ConnectionArgs> } & Record<string, unknown>,
  outputOnly: readonly string[] = [],
): Record<string, unknown> {
  const p = require("@pulumi/pulumi") as typeof pulumi;
  const { connection, ...rest } = args;
  const split = p.output(connection).apply((c) => splitConnection((c ?? {}) as Record<string, unknown>));
  const inputs: Record<string, unknown> = {
    ...rest,
    connection: p.unsecret(split.apply((s) => s.connection)),
    credentials: p.secret(split.apply((s) => s.credentials)),
    xenEstateVersion: VERSION,
  };
  for (const k of outputOnly) inputs[k] = undefined;
  return inputs;
}

// ---------------------------------------------------------------------------------------------------------------
// Provider side

// The runtime hands kinds the plain objects the engine sent; each kind's own check typed them.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyKind = Kind<any, any>;
const kinds = new Map<string, AnyKind>();

/** Makes a kind known to the runtime (each resource module registers its own). */
export function registerKind<In extends object, Out extends In>(kind: Kind<In, Out>): Kind<In, Out> {
  kinds.set(kind.name, kind);
  return kind;
}

function kindOf(name: string): AnyKind {
  const k = kinds.get(name);
  if (!k) throw new Error(`xen-estate ${VERSION} has no resource kind ${name}`);
  return k;
}

let pool: SshPool | undefined;

/** The process-wide connection pool (one SSH handshake per host and user per deployment). */
export function sharedPool(): SshPool {
  if (!pool) {
    pool = new SshPool();
    const p = pool;
    process.once("beforeExit", () => void p.close());
  }
  return pool;
}

/** Replaces the shared pool (tests). */
export function setSharedPool(p: SshPool | undefined): void {
  pool = p;
}

const INTERNAL = new Set(["__provider"]);

/** Validates every input of `kind`; returns normalised inputs or every failure. Pure and offline. */
export function checkInputs(
  kindName: string,
  news: Record<string, unknown>,
  olds?: Record<string, unknown>,
): { inputs?: Record<string, unknown>; failures: InputError[] } {
  const kind = kindOf(kindName);
  const c = new Checker();
  const connection = checkConnection(c.at("connection"), news.connection, news.credentials);
  const own = kind.check(news, c, olds && Object.keys(olds).length > 0 ? olds : undefined);
  if (!c.ok) return { failures: c.errors };
  // Some input is not known yet (preview before a dependency exists): pass the inputs through unnormalised; they
  // are checked in full at `up`, when every value is known.
  if (!connection || !own) return { inputs: { ...news }, failures: [] };
  const inputs: Record<string, unknown> = {
    ...own,
    connection,
    xenEstateVersion: typeof news.xenEstateVersion === "string" ? news.xenEstateVersion : VERSION,
  };
  if (news.credentials && typeof news.credentials === "object" && Object.keys(news.credentials).length > 0)
    inputs.credentials = news.credentials;
  if (news.__provider !== undefined) inputs.__provider = news.__provider;
  return { inputs, failures: [] };
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

function getPath(obj: unknown, dotted: string): unknown {
  return dotted
    .split(".")
    .reduce<unknown>(
      (o, k) => (o && typeof o === "object" ? (o as Record<string, unknown>)[k] : undefined),
      obj,
    );
}

/** The plan for a change: which inputs changed and which of them force a replacement. Pure and offline. */
export function planDiff(
  kindName: string,
  olds: Record<string, unknown>,
  news: Record<string, unknown>,
): pulumi.dynamic.DiffResult & { changed: string[] } {
  const kind = kindOf(kindName);
  const skip = new Set([...INTERNAL, ...(kind.outputOnly ?? [])]);
  const keys = new Set([...Object.keys(news), ...Object.keys(olds)].filter((k) => !skip.has(k)));
  const changed = [...keys].filter((k) => !deepEqual(olds[k], news[k])).sort();
  const replaces = new Set<string>();
  for (const r of kind.replaceOn) {
    const top = r.split(".")[0]!;
    if (changed.includes(top) && !deepEqual(getPath(olds, r), getPath(news, r))) replaces.add(top);
  }
  const extra = kind.diffDetail?.(olds, news);
  for (const r of extra?.replaces ?? []) replaces.add(r);
  const result = {
    changes: changed.length > 0 || replaces.size > 0,
    replaces: [...replaces].sort(),
    deleteBeforeReplace: replaces.size > 0 && !!kind.deleteBeforeReplace,
    changed,
  };
  return result;
}

function contextFor(kind: AnyKind, inputs: Record<string, unknown>, id?: string): Context {
  const conn = joinConnection(inputs.connection as Connection, inputs.credentials as Credentials | undefined);
  const log = new Logger(`${kind.name} ${id ?? kind.id(inputs)}`);
  const host = sharedPool().host(conn, log);
  return { host, log: host.log, conn };
}

/** Adds the common inputs back onto a kind's outputs so state always holds the complete picture. */
function completeOuts(
  inputs: Record<string, unknown>,
  outs: Record<string, unknown>,
): Record<string, unknown> {
  const complete: Record<string, unknown> = { ...outs };
  for (const k of ["connection", "credentials", "xenEstateVersion"])
    if (inputs[k] !== undefined) complete[k] = inputs[k];
  delete complete.__provider;
  return complete;
}

/** Makes sure no secret appears in an error's message. */
function scrubError(err: unknown, ctx: Context | undefined): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  if (ctx) {
    const clean = ctx.log.redact(e.message);
    if (clean !== e.message) e.message = clean;
  }
  return e;
}

/** The entry points the serialized provider closures call. */
export const runtime = {
  check(
    kindName: string,
    olds: Record<string, unknown>,
    news: Record<string, unknown>,
  ): Promise<pulumi.dynamic.CheckResult> {
    try {
      const { inputs, failures } = checkInputs(kindName, news, olds);
      if (failures.length > 0)
        return Promise.resolve({
          inputs: news,
          failures: failures.map((f) => ({ property: f.property, reason: f.reason })),
        });
      return Promise.resolve({ inputs: inputs! });
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  },

  diff(
    kindName: string,
    _id: string,
    olds: Record<string, unknown>,
    news: Record<string, unknown>,
  ): Promise<pulumi.dynamic.DiffResult> {
    // A refused change (e.g. a shrink) surfaces as a rejected diff, so `pulumi preview` already fails.
    try {
      const { changed: _changed, ...result } = planDiff(kindName, olds, news);
      return Promise.resolve(result);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  },

  async create(kindName: string, inputs: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
    const kind = kindOf(kindName);
    const id = kind.id(inputs);
    const ctx = contextFor(kind, inputs, id);
    let partial: Record<string, unknown> | undefined;
    try {
      const outs = await kind.create(ctx, inputs, (p) => {
        partial = { ...inputs, ...p };
      });
      return { id, outs: completeOuts(inputs, outs) };
    } catch (err) {
      const e = scrubError(err, ctx);
      if (partial) {
        // Pulumi records a resource whose create threw an error carrying id and properties; the next `up`
        // calls update, which converges from wherever the create stopped.
        Object.assign(e, { id, properties: completeOuts(inputs, partial), reasons: [e.message] });
      }
      throw e;
    }
  },

  async read(
    kindName: string,
    id: string,
    props: Record<string, unknown>,
  ): Promise<pulumi.dynamic.ReadResult> {
    const kind = kindOf(kindName);
    const ctx = contextFor(kind, props, id);
    try {
      const outs = await kind.read(ctx, id, props);
      // An empty id tells the engine the object is gone, so refresh drops it and the next `up` recreates it.
      if (!outs) return { id: "", props: {} };
      return { id, props: completeOuts(props, outs) };
    } catch (err) {
      throw scrubError(err, ctx);
    }
  },

  async update(
    kindName: string,
    id: string,
    olds: Record<string, unknown>,
    news: Record<string, unknown>,
  ): Promise<pulumi.dynamic.UpdateResult> {
    const kind = kindOf(kindName);
    const ctx = contextFor(kind, news, id);
    try {
      const outs = await kind.update(ctx, id, olds, news);
      return { outs: completeOuts(news, outs) };
    } catch (err) {
      throw scrubError(err, ctx);
    }
  },

  async delete(kindName: string, id: string, props: Record<string, unknown>): Promise<void> {
    const kind = kindOf(kindName);
    const ctx = contextFor(kind, props, id);
    try {
      await kind.delete(ctx, id, props);
    } catch (err) {
      throw scrubError(err, ctx);
    }
  },
};

/** Throws every failure of `check` at once (for use outside the engine, e.g. benchmarks and components). */
export function assertValid(kindName: string, news: Record<string, unknown>): Record<string, unknown> {
  const { inputs, failures } = checkInputs(kindName, news);
  if (failures.length > 0) throw new InputErrors(kindName, failures);
  return inputs!;
}

export { SECRET_PLACEHOLDER };
