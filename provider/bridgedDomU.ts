/**
 * BridgedDomU: a guest with its own public IP on the dom0's bridge.
 *
 * On Hetzner (and most providers that route additional IPs to a server) a bridged guest must use the MAC the
 * provider assigned to that IP (Robot: "Request separate MAC"). A frame from an unknown MAC on the switch gets the
 * whole server locked, so `mac` is required and never invented.
 */
import * as pulumi from "@pulumi/pulumi";
import { MODULE, providerFor, registerKind, resourceInputs } from "./dynamic";
import {
  checkGuestBase,
  checkIp,
  checkMac,
  claimAddresses,
  configPath,
  GuestArgsBase,
  GuestInputs,
  GuestOutputs,
  guestLifecycle,
  renderGuestConfig,
} from "./guest";
import { contains, networkOf } from "./network";
import { Checker, containsUnknown, UNKNOWN, isIPv4 } from "./validate";

export interface BridgedDomUArgs extends GuestArgsBase {
  /** The guest's public IPv4 address. */
  readonly ip: pulumi.Input<string>;
  /** The MAC the provider assigned to `ip` (Hetzner Robot: "Request separate MAC"). Required: see above. */
  readonly mac: pulumi.Input<string>;
  /** Bridge in dom0 the vif joins. @default "xenbr0" */
  readonly bridge?: pulumi.Input<string>;
  /** Prefix length of the guest's address. @default 32 (a single additional IP) */
  readonly prefix?: pulumi.Input<number>;
  /**
   * The guest's default gateway, written into an installed guest. For a single additional IP on Hetzner this is the
   * host's gateway, reached on-link. Required with `install`.
   */
  readonly gateway?: pulumi.Input<string>;
}

export const bridgedDomUKind = registerKind<GuestInputs, GuestOutputs>({
  name: "BridgedDomU",
  ...guestLifecycle,

  check(raw, c: Checker) {
    const base = checkGuestBase(raw, c);
    const ip = checkIp(c, raw, "ip");
    const mac = checkMac(c, raw, "mac", true);
    const bridge = c.string(raw, "bridge", {
      default: "xenbr0",
      pattern: /^[A-Za-z0-9_.-]{1,15}$/,
      rule: "must be a Linux interface name (at most 15 letters, digits and `_.-`)",
    });
    const prefix = c.integer(raw, "prefix", { min: 1, max: 32, default: 32 }) ?? 32;
    const gateway = c.string(raw, "gateway");
    if (gateway !== undefined && !isIPv4(gateway)) c.fail("gateway", gateway, "must be an IPv4 address");
    if (base?.install && gateway === undefined)
      c.fail(
        "gateway",
        gateway,
        "is required to install a guest",
        "Use the address the provider gives as the gateway of this IP",
      );
    if (!base || !ip || !mac || !bridge) return undefined;
    const gw = gateway ?? ip;
    // A gateway outside the guest's own prefix (always so for a /32) is reached on-link.
    const onLink = !contains(networkOf(ip, prefix), gw);
    const g: Omit<GuestInputs, "connection" | "credentials" | "xenEstateVersion" | "files"> = {
      ...base,
      vifs: [{ mac, bridge, ip, script: null }],
      guestNetwork: { address: ip, prefix, gateway: gw, onLink },
      natNetwork: null,
    };
    // A file that depends on a value not known yet is itself not known yet (preview).
    if (containsUnknown(g)) return { ...g, files: UNKNOWN as unknown as Record<string, string> };
    return { ...g, files: { [configPath(g.name)]: renderGuestConfig(g as GuestInputs) } };
  },
});

/** A Xen guest with its own public IP and the provider-assigned MAC on the dom0's bridge. */
export class BridgedDomU extends pulumi.dynamic.Resource {
  declare readonly name: pulumi.Output<string>;
  /** Domain id while running, else null. */
  declare readonly domid: pulumi.Output<number | null>;
  /** Fingerprint (`SHA256:…`) of the SSH host key the install gave the guest; pin it to reach the guest. */
  declare readonly sshHostKey: pulumi.Output<string | null>;
  declare readonly running: pulumi.Output<boolean>;
  /** Files the guest owns on the dom0 (path → content). */
  declare readonly files: pulumi.Output<Record<string, string>>;

  constructor(name: string, args: BridgedDomUArgs, opts?: pulumi.CustomResourceOptions) {
    claimOnConstruction(name, args);
    super(
      providerFor("BridgedDomU"),
      name,
      resourceInputs({ ...args }, bridgedDomUKind.outputOnly),
      opts,
      MODULE,
      "BridgedDomU",
    );
  }
}

/** Refuses a MAC or IP another guest of this program already uses on the same host. */
export function claimOnConstruction(
  resourceName: string,
  args: { connection: unknown; ip?: unknown; mac?: unknown },
): void {
  pulumi
    .all([
      pulumi.output(args.connection as pulumi.Input<{ host: string }>),
      pulumi.output(args.ip),
      pulumi.output(args.mac),
    ])
    .apply(([conn, ip, mac]) => {
      const addresses: { kind: "MAC" | "IP"; value: string }[] = [];
      if (typeof mac === "string") addresses.push({ kind: "MAC", value: mac });
      if (typeof ip === "string") addresses.push({ kind: "IP", value: ip });
      claimAddresses(resourceName, conn.host, addresses);
    });
}
