/**
 * The provider side of every kind: the entry points the serialized provider closures call
 * (`require("xen-estate").runtime.<method>(kindName, …)`).
 *
 * `check` and `diff` are pure ({@link checkInputs}, {@link planDiff}); create/read/update/delete get a
 * {@link Context} over the process-wide SSH pool. A create that fails half way throws an error carrying `id` and
 * `properties`, so the engine records what was made and the next `up` finishes it through `update`.
 */
import type * as pulumi from "@pulumi/pulumi";
import { RefusedError } from "../core/errors";
import { Logger } from "../core/log";
import {
  HOST_ID_SCRIPT,
  joinConnection,
  poolKey,
  secretsOf,
  type Connection,
  type Credentials,
  type ResolvedConnection,
} from "../ssh/connection";
import { describeMeter, metered, type Meter } from "../ssh/meter";
import { SshPool } from "../ssh/pool";
import type { RemoteHost } from "../ssh/remote-host";
import type { AnyKind, Context } from "./kind";
import { checkInputs, planDiff, planNote, SCHEMA_KEY, upgradeState } from "./plan";
import { kindOf } from "./registry";

let pool: SshPool | undefined;

/** The process-wide connection pool (one SSH handshake per login per deployment). */
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

function contextFor(
  kind: AnyKind,
  inputs: Record<string, unknown>,
  id?: string,
  reachedFrom?: Record<string, unknown>,
): Context {
  const declared = inputs.connection as Connection;
  const override = reachedFrom && kind.reachedBy ? kind.reachedBy(reachedFrom) : undefined;
  const connection = override ? { ...declared, ...definedOnly(override) } : declared;
  const conn = joinConnection(connection, inputs.credentials as Credentials | undefined);
  const base = new Logger(`${kind.name} ${id ?? kind.id(inputs)}`);
  const host = sharedPool().host(conn, base);
  // The kind's other connections: their secrets are hidden in every log line and error of this resource too.
  const nested: Record<string, ResolvedConnection> = {};
  for (const p of kind.nestedConnections ?? []) {
    const holder = inputs[p] as { connection?: Connection; credentials?: Credentials } | undefined;
    if (holder && typeof holder === "object" && holder.connection && typeof holder.connection === "object")
      nested[p] = joinConnection(holder.connection, holder.credentials);
  }
  const log = host.log.with(Object.values(nested).flatMap((c) => secretsOf(c)));
  const hosts: Record<string, RemoteHost> = {};
  for (const [p, c] of Object.entries(nested)) hosts[p] = sharedPool().host(c, log);
  return { host, log, conn, hosts, hostId: hostIdOf };
}

/**
 * A Context for one host outside the engine (tools, tests): no other connections; host ids read like the runtime's.
 */
export function hostContext(host: RemoteHost): Context {
  return { host, log: host.log, conn: host.conn, hosts: {}, hostId: hostIdOf };
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== null)) as Partial<T>;
}

/** Host ids already read, per pool (so a new pool asks again), by login. */
const hostIdsByPool = new WeakMap<object, Map<string, Promise<string>>>();

/** The identity of the machine behind `host` (one round trip per login per pool). */
function hostIdOf(host: RemoteHost): Promise<string> {
  const p = sharedPool();
  let hostIds = hostIdsByPool.get(p);
  if (!hostIds) hostIdsByPool.set(p, (hostIds = new Map()));
  const key = poolKey(host.conn);
  let id = hostIds.get(key);
  if (!id) {
    id = host.script(HOST_ID_SCRIPT, { summary: "read the machine id" }).then((r) => r.stdout.trim());
    // A failed read is not remembered: the next call asks again.
    id.catch(() => hostIds.delete(key));
    hostIds.set(key, id);
  }
  return id;
}

/** Refuses to act when the connection now reaches another machine than the one the resource was made on. */
async function assertSameHost(ctx: Context, kind: AnyKind, id: string, recorded: unknown): Promise<void> {
  if (typeof recorded !== "string" || recorded === "") return;
  const now = await hostIdOf(ctx.host);
  if (now !== recorded)
    throw new RefusedError(
      `${kind.name} ${id} was made on the machine ${recorded}, but ${ctx.conn.host} is ${now}: refusing to act on another machine`,
      "A connection change only changes how the host is reached. If the host was reinstalled, what was on it is gone: `pulumi state delete` the resource; to move it, create a new one on the new host",
    );
}

/** Adds the common inputs back onto a kind's outputs so state always holds the complete picture. */
export function completeOuts(
  kind: AnyKind,
  inputs: Record<string, unknown>,
  outs: Record<string, unknown>,
  hostId: string | null | undefined,
): Record<string, unknown> {
  const complete: Record<string, unknown> = { ...outs, [SCHEMA_KEY]: kind.schemaVersion ?? 1 };
  for (const k of ["connection", "credentials", "xenEstateVersion"])
    if (inputs[k] !== undefined) complete[k] = inputs[k];
  // A kind may record another machine than the one it was created through (a reinstall: the installed system).
  if (hostId && typeof outs.hostId !== "string") complete.hostId = hostId;
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

/** What `read` says when asked about an object without its properties (import, `Resource.get`). */
function notImportable(kind: AnyKind, id: string): Error {
  return new RefusedError(
    `${kind.name} cannot be imported or read without its state (asked for ${JSON.stringify(id)})`,
    "Declare the resource in your program with `adopt: true` (where the kind offers it) to take over an existing object; its data is kept",
  );
}

/** The debug line that ends every remote operation (benchmarks count round trips and handshakes per resource from it). */
function costLine(op: string, m: Meter): string {
  return `${op}: ${describeMeter(m)}`;
}

/** The entry points the serialized provider closures call. */
export const runtime = {
  check(
    kindName: string,
    olds: Record<string, unknown>,
    news: Record<string, unknown>,
  ): Promise<pulumi.dynamic.CheckResult> {
    try {
      const { inputs, failures } = checkInputs(kindName, news ?? {}, olds ?? {});
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
    id: string,
    olds: Record<string, unknown>,
    news: Record<string, unknown>,
  ): Promise<pulumi.dynamic.DiffResult> {
    // A refused change (e.g. a shrink) surfaces as a rejected diff, so `pulumi preview` already fails.
    try {
      const { changes, replaces, deleteBeforeReplace, ...plan } = planDiff(
        kindName,
        upgradeState(kindName, olds),
        news,
      );
      const note = changes ? planNote(kindName, { replaces, ...plan }) : null;
      if (note) new Logger(`${kindName} ${id}`).warn(`this update ${note}`);
      return Promise.resolve({ changes, replaces, deleteBeforeReplace });
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  },

  async create(kindName: string, inputs: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
    const kind: AnyKind = kindOf(kindName);
    const id = kind.id(inputs);
    const ctx = contextFor(kind, inputs, id);
    let partial: Record<string, unknown> | undefined;
    let hostId: string | undefined;
    return metered(
      async () => {
        try {
          hostId = await hostIdOf(ctx.host);
          const outs = await kind.create(ctx, inputs, (p) => {
            partial = { ...inputs, ...p };
          });
          return { id, outs: completeOuts(kind, inputs, outs, hostId) };
        } catch (err) {
          const e = scrubError(err, ctx);
          if (partial) {
            // Pulumi records a resource whose create threw an error carrying id and properties; the next `up`
            // calls update, which converges from wherever the create stopped. The engine records those properties
            // as they are (it adds the serialized provider only to a create that succeeded), so they carry it
            // themselves: without it, a `refresh` or `destroy` before the next `up` could not load the provider.
            const properties = completeOuts(kind, inputs, partial, hostId);
            if (inputs.__provider !== undefined) properties.__provider = inputs.__provider;
            Object.assign(e, { id, properties, reasons: [e.message] });
          }
          throw e;
        }
      },
      (m) => ctx.log.debug(costLine("create", m)),
    );
  },

  async read(
    kindName: string,
    id: string,
    oldProps: Record<string, unknown>,
  ): Promise<pulumi.dynamic.ReadResult> {
    const kind: AnyKind = kindOf(kindName);
    if (!oldProps || typeof oldProps !== "object" || !oldProps.connection) throw notImportable(kind, id);
    const props = upgradeState(kindName, oldProps);
    const ctx = contextFor(kind, props, id, props);
    return metered(
      async () => {
        try {
          await assertSameHost(ctx, kind, id, props.hostId);
          const outs = await kind.read(ctx, id, props);
          // An empty id tells the engine the object is gone, so refresh drops it and the next `up` recreates it.
          if (!outs) return { id: "", props: {} };
          return { id, props: completeOuts(kind, props, outs, props.hostId as string | undefined) };
        } catch (err) {
          throw scrubError(err, ctx);
        }
      },
      (m) => ctx.log.debug(costLine("read", m)),
    );
  },

  async update(
    kindName: string,
    id: string,
    oldState: Record<string, unknown>,
    news: Record<string, unknown>,
  ): Promise<pulumi.dynamic.UpdateResult> {
    const kind: AnyKind = kindOf(kindName);
    const olds = upgradeState(kindName, oldState);
    const ctx = contextFor(kind, news, id, olds);
    return metered(
      async () => {
        try {
          await assertSameHost(ctx, kind, id, olds.hostId);
          const { changes: _c, deleteBeforeReplace: _d, ...plan } = planDiff(kindName, olds, news);
          const outs = await kind.update(ctx, id, olds, news, plan);
          // Asked after the update: a kind finishing an unfinished create (HetznerInstallimage cut before its reboot)
          // reaches the machine only through its update, and names it in its outputs.
          const named = typeof outs.hostId === "string" && outs.hostId !== "";
          const hostId = named
            ? undefined
            : (olds.hostId as string | undefined) || (await hostIdOf(ctx.host));
          return { outs: completeOuts(kind, news, outs, hostId) };
        } catch (err) {
          throw scrubError(err, ctx);
        }
      },
      (m) => ctx.log.debug(costLine("update", m)),
    );
  },

  async delete(kindName: string, id: string, oldProps: Record<string, unknown>): Promise<void> {
    const kind: AnyKind = kindOf(kindName);
    const props = upgradeState(kindName, oldProps);
    const ctx = contextFor(kind, props, id, props);
    return metered(
      async () => {
        try {
          await assertSameHost(ctx, kind, id, props.hostId);
          await kind.delete(ctx, id, props);
        } catch (err) {
          throw scrubError(err, ctx);
        }
      },
      (m) => ctx.log.debug(costLine("delete", m)),
    );
  },
};
