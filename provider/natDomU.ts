/**
 * NatDomU: a guest on a host-local network behind the dom0's NAT.
 *
 * Every NAT vif gets the network's gateway address (its first host address) and a /32 route to its guest, set up
 * by the `vif-xen-estate-nat` hotplug script this resource installs. That works for every address in the network,
 * unlike the old vif-nat's "last octet + 127" router addresses, which break for guests above .128.
 */
import * as pulumi from "@pulumi/pulumi";
import { MODULE, providerFor, registerKind, resourceInputs, VERSION } from "./dynamic";
import {
  checkCidr,
  checkGuestBase,
  checkIp,
  checkMac,
  configPath,
  GuestArgsBase,
  GuestInputs,
  GuestOutputs,
  guestLifecycle,
  NAT_CONF,
  NAT_SCRIPT,
  renderGuestConfig,
} from "./guest";
import { claimOnConstruction } from "./bridgedDomU";
import { broadcast, derivedMac, firstHost } from "./network";
import { render } from "./templates";
import { Checker, containsUnknown, UNKNOWN } from "./validate";

export interface NatDomUArgs extends GuestArgsBase {
  /** The guest's address in `network`; not the network, gateway (first) or broadcast address. */
  readonly ip: pulumi.Input<string>;
  /** The host-local network; one per dom0. The dom0 is its first address. @default "10.0.0.0/24" */
  readonly network?: pulumi.Input<string>;
  /** The guest's MAC. @default derived from the host and guest name, in Xen's 00:16:3e range */
  readonly mac?: pulumi.Input<string>;
}

export const natDomUKind = registerKind<GuestInputs, GuestOutputs>({
  name: "NatDomU",
  ...guestLifecycle,

  check(raw, c: Checker) {
    const base = checkGuestBase(raw, c);
    const net = checkCidr(c, raw, "network", "10.0.0.0/24");
    const ip = checkIp(c, raw, "ip", net);
    if (ip && net) {
      const gateway = firstHost(net);
      if (ip === net.address || ip === broadcast(net) || ip === gateway)
        c.fail(
          "ip",
          ip,
          `must be a guest address: not the network (${net.address}), the dom0's gateway (${gateway}) or broadcast (${broadcast(net)})`,
        );
    }
    const conn = raw.connection as { host?: string } | undefined;
    const mac = checkMac(c, raw, "mac", false) ?? derivedMac(`${conn?.host ?? ""}/${String(raw.name)}`);
    if (!base || !ip || !net || !c.ok) return undefined;
    const network = `${net.address}/${net.prefix}`;
    const gateway = firstHost(net);
    const g: Omit<GuestInputs, "connection" | "credentials" | "xenEstateVersion" | "files"> = {
      ...base,
      vifs: [{ mac, bridge: null, ip, script: "vif-xen-estate-nat" }],
      guestNetwork: { address: ip, prefix: net.prefix, gateway, onLink: false },
      natNetwork: network,
    };
    // A file that depends on a value not known yet is itself not known yet (preview).
    if (containsUnknown(g)) return { ...g, files: UNKNOWN as unknown as Record<string, string> };
    return {
      ...g,
      files: {
        [NAT_CONF]: render("xen-estate-nat.conf", { version: VERSION, network, gateway }),
        [NAT_SCRIPT]: render("vif-xen-estate-nat", { version: VERSION }),
        [configPath(g.name)]: renderGuestConfig(g as GuestInputs),
      },
    };
  },
});

/** A Xen guest on a host-local network behind the dom0's NAT. */
export class NatDomU extends pulumi.dynamic.Resource {
  declare readonly name: pulumi.Output<string>;
  /** Domain id while running, else null. */
  declare readonly domid: pulumi.Output<number | null>;
  /** Fingerprint (`SHA256:…`) of the SSH host key the install gave the guest; pin it to reach the guest. */
  declare readonly sshHostKey: pulumi.Output<string | null>;
  declare readonly running: pulumi.Output<boolean>;
  declare readonly natNetwork: pulumi.Output<string>;
  /** Files the guest owns on the dom0 (path → content). */
  declare readonly files: pulumi.Output<Record<string, string>>;

  constructor(name: string, args: NatDomUArgs, opts?: pulumi.CustomResourceOptions) {
    claimOnConstruction(name, args);
    super(
      providerFor("NatDomU"),
      name,
      resourceInputs({ ...args }, natDomUKind.outputOnly),
      opts,
      MODULE,
      "NatDomU",
    );
  }
}
