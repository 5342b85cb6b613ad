/**
 * BridgedDomU's check: the guest engine's base plus a vif on the dom0's bridge with the provider's MAC and the
 * guest's own public address.
 */
import { contains, networkOf } from "../../core/network";
import { Checker, isIPv4, UNKNOWN } from "../../core/validate";
import { checkGuestBase, checkIp, checkMac } from "../../guest/check";
import { completeGuest, guestKind } from "../../guest/kind";

const BRIDGE = /^[A-Za-z0-9_.-]{1,15}$/;

export const bridgedDomUKind = guestKind("BridgedDomU", (raw, c: Checker) => {
  const base = checkGuestBase(raw, c);
  const ip = checkIp(c, raw, "ip");
  const mac = checkMac(c, raw, "mac", true);
  const bridge = c.string(raw, "bridge", {
    default: "xenbr0",
    max: 15,
    pattern: BRIDGE,
    rule: "must be a Linux interface name (at most 15 letters, digits and `_.-`)",
  });
  const prefix = c.integer(raw, "prefix", { min: 1, max: 32, default: 32 }) ?? 32;
  const gateway = c.string(raw, "gateway", { max: 15 });
  if (gateway !== undefined && gateway !== UNKNOWN && !isIPv4(gateway))
    c.fail("gateway", gateway, "must be an IPv4 address");
  if (base?.install && gateway === undefined)
    c.fail(
      "gateway",
      gateway,
      "is required to install a guest",
      "Use the address the provider gives as the gateway of this IP",
    );
  if (!base || !ip || !mac || !bridge || !c.ok) return undefined;
  const gw = gateway ?? ip;
  // A gateway outside the guest's own prefix (always so for a /32) is reached on-link.
  const onLink =
    ip === UNKNOWN || gw === UNKNOWN ? (UNKNOWN as unknown as boolean) : !contains(networkOf(ip, prefix), gw);
  return completeGuest(raw, c, base, {
    vifs: [{ mac, bridge, ip, script: null }],
    guestNetwork: { address: ip, prefix, gateway: gw, onLink },
    natNetwork: null,
    natActive: null,
  });
});
