/**
 * The contract every resource kind fulfils. A kind is plain data plus functions: its planning (`check`,
 * `diffDetail`, the declared replace and change lists) is pure and offline; its lifecycle
 * (`create`/`read`/`update`/`delete`) runs remote steps through the {@link Context}'s host.
 */
import type { Logger } from "../core/log";
import type { Checker } from "../core/validate";
import type { Connection, Credentials, ResolvedConnection } from "../ssh/connection";
import type { RemoteHost } from "../ssh/remote-host";

/** Inputs every resource carries besides its own. */
export interface CommonInputs {
  connection: Connection;
  credentials?: Credentials;
  xenEstateVersion: string;
}

/** Outputs every resource records besides its own. */
export interface CommonOutputs {
  /**
   * The identity of the machine the resource lives on (`machine-id:…`), recorded at create. An update, refresh or
   * delete that reaches another machine refuses instead of acting on it.
   */
  hostId?: string | null;
}

/** What a kind's provider methods get to work with. */
export interface Context {
  host: RemoteHost;
  log: Logger;
  conn: ResolvedConnection;
  /**
   * Hosts of the kind's other connections ({@link Kind.nestedConnections}), by the input that holds them (e.g.
   * `source`): pooled like `host`, connected on first use. Absent when that input has no connection.
   */
  hosts: Record<string, RemoteHost>;
  /** The identity of the machine behind a host (`machine-id:…`), read once per login per process. */
  hostId(host: RemoteHost): Promise<string>;
}

/** What an update changes, classified once in planning ({@link planDiff}) and handed to `update`. */
export interface ChangePlan {
  /** Every top-level input that differs. */
  changed: string[];
  /** Inputs whose change forces a replacement. */
  replaces: string[];
  /** Changed inputs of each declared class (see {@link Kind.changeClasses}). */
  classes: Record<string, string[]>;
}

/** Everything that makes one resource kind. */
export interface Kind<In extends object, Out extends In> {
  /** The type name: `LvmVolume`, `RemoteFile`… */
  readonly name: string;
  /**
   * Input properties whose change forces a replacement; dotted paths reach into objects. Anything else that
   * changes is an in-place update. How the host is reached (`connection.*`) is never in this list.
   */
  readonly replaceOn: readonly string[];
  /**
   * The boolean input that must be true before a replacement may go ahead (a replacement that destroys data
   * needs consent). Without it `diff` refuses, naming the property that would force it, so `preview` fails.
   */
  readonly replaceConsent?: string;
  /** The old resource must be deleted before its replacement is created (names unique on the host). */
  readonly deleteBeforeReplace?: boolean;
  /**
   * Top-level inputs that hold a second connection as `{ connection, credentials, … }` (e.g. a migration's
   * `source`). The framework treats each like the resource's own connection: the program splits it into a readable
   * `connection` and a secret `credentials` beside it, `check` validates it (failures under `<input>.connection.…`)
   * and the kind's own check sees the rest of the object, and the provider gets a pooled host for it in
   * {@link Context.hosts}. The kind's check returns the object without them; the framework puts them back.
   */
  readonly nestedConnections?: readonly string[];
  /** Output-only properties, which a plain diff of inputs must skip. */
  readonly outputOnly?: readonly string[];
  /**
   * Named classes of in-place change (`live`, `restart`…), each a list of inputs. Planning reports which inputs of
   * each class changed; `update` acts on that, and `diff` says so in `preview` (e.g. "restarts the guest").
   */
  readonly changeClasses?: Readonly<Record<string, readonly string[]>>;
  /** What `preview` says about a class of change when it happens, e.g. `{ restart: "restarts the guest" }`. */
  readonly changeNotes?: Readonly<Record<string, string>>;
  /**
   * The version of the state this kind writes (outputs carry it as `xenEstateSchema`). State without one was written
   * by 0.1.0, version 1. @default 1
   */
  readonly schemaVersion?: number;
  /**
   * Brings state written by an older release (schema `from`) to this release's shape, so an upgrade shows no change
   * that is not one: fields added since then get what the old state implies. Pure.
   */
  migrate?(state: Record<string, unknown>, from: number): Record<string, unknown>;
  /** Validates and normalises the kind's own inputs (not the connection), recording failures in `c`. Pure. */
  check(
    raw: Record<string, unknown>,
    c: Checker,
    olds: Partial<Out> | undefined,
  ): Omit<In, keyof CommonInputs> | undefined;
  /**
   * For a kind that changes how its own host is reached (sshd moved to another port or user, a reinstall with a new
   * host key): how to reach the host once the resource exists, from its recorded outputs, as overrides of its
   * `connection`. The runtime uses it for `read`, `update` (from the old outputs) and `delete`; `create` always uses
   * the declared connection. Undefined (or an empty object) means the declared connection still works.
   */
  reachedBy?(outs: Partial<Out>): Partial<Pick<Connection, "port" | "user" | "hostKey">> | undefined;
  /**
   * The properties as `diff` compares them, applied to the recorded outputs and the new inputs alike: for a kind
   * whose outputs record a value otherwise than it is declared (a secret file's content as its digest). Pure.
   * @default the properties as they are
   */
  diffView?(props: Record<string, unknown>): Record<string, unknown>;
  /** Extra pure planning: refuse an impossible change (throw {@link InputError}) or force more replacements. */
  diffDetail?(olds: Out, news: In): { replaces?: string[] } | void;
  /** A stable id for the thing made, from its inputs (e.g. `host:/dev/vg0/name`). */
  id(inputs: In): string;
  create(ctx: Context, inputs: In, progress: (partialOuts: Partial<Out>) => void): Promise<Out>;
  /** Observes the real object: outputs reflecting reality (drift shows as changed inputs), or null when gone. */
  read(ctx: Context, id: string, outs: Out): Promise<Out | null>;
  update(ctx: Context, id: string, olds: Out, news: In, plan: ChangePlan): Promise<Out>;
  delete(ctx: Context, id: string, outs: Out): Promise<void>;
}

// The runtime hands kinds the plain objects the engine sent; each kind's own check typed them.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyKind = Kind<any, any>;
