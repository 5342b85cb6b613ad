/**
 * The program side of every kind: the resource class a program constructs.
 *
 * {@link providerFor} returns a provider object whose methods do nothing but `require("xen-estate")` and delegate to
 * the runtime. Pulumi serializes that closure; because it captures only the kind's name, the code that runs in the
 * provider process is the installed package, not a frozen copy, and the serialized text never changes between
 * releases. {@link resourceInputs} splits the connection into a public part and a secret `credentials` part and
 * adds the provider version, so upgrades show as diffs. {@link defineResource} makes the class.
 */
import * as pulumi from "@pulumi/pulumi";
import { MODULE, VERSION } from "../core/package";
import { splitConnection, type ConnectionArgs } from "../ssh/connection";

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
  const { connection, ...rest } = args;
  const split = pulumi.output(connection).apply((c) => splitConnection((c ?? {}) as Record<string, unknown>));
  const inputs: Record<string, unknown> = {
    ...rest,
    connection: pulumi.unsecret(split.apply((s) => s.connection)),
    credentials: pulumi.secret(split.apply((s) => s.credentials)),
    xenEstateVersion: VERSION,
  };
  for (const k of [...outputOnly, "hostId", "xenEstateSchema"]) inputs[k] = undefined;
  return inputs;
}

/** What the program side needs to know of a kind. */
export interface ResourceSpec<Args> {
  /** The kind's name, which is also the resource type's name. */
  readonly name: string;
  readonly outputOnly?: readonly string[];
  /** Runs in the program before the resource is registered (e.g. to refuse an address used twice). */
  readonly onConstruct?: (resourceName: string, args: Args) => void;
  /** Extra inputs computed in the program from the arguments (e.g. whether a value was marked secret). */
  readonly programInputs?: (args: Args, resourceName: string) => Record<string, unknown>;
}

/** The class of a resource kind, typed by its arguments. */
export type ResourceClass<Args> = new (
  name: string,
  args: Args,
  opts?: pulumi.CustomResourceOptions,
) => pulumi.dynamic.Resource;

/**
 * Makes the resource class for a kind: `class LvmVolume extends defineResource<LvmVolumeArgs>(spec) { declare … }`.
 * The type token is `pulumi-nodejs:dynamic/xen-estate:<name>`.
 */
export function defineResource<Args extends { connection: pulumi.Input<ConnectionArgs> }>(
  spec: ResourceSpec<Args>,
): ResourceClass<Args> {
  return class extends pulumi.dynamic.Resource {
    constructor(name: string, args: Args, opts?: pulumi.CustomResourceOptions) {
      spec.onConstruct?.(name, args);
      const inputs = resourceInputs(
        { ...(args as unknown as Record<string, unknown>), ...spec.programInputs?.(args, name) } as {
          connection: pulumi.Input<ConnectionArgs>;
        } & Record<string, unknown>,
        spec.outputOnly,
      );
      super(providerFor(spec.name), name, inputs, opts, MODULE, spec.name);
    }
  };
}
