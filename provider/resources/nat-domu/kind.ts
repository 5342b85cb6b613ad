/**
 * NatDomU's check: the guest engine's base plus a vif on the host-local NAT network, handled by the
 * `vif-xen-estate-nat` hotplug script this kind installs (and its settings file).
 */
import { broadcast, derivedMac, firstHost } from "../../core/network";
import { render } from "../../core/templates";
import { Checker, UNKNOWN } from "../../core/validate";
import { checkCidr, checkGuestBase, checkIp, checkMac } from "../../guest/check";
import { completeGuest, guestKind } from "../../guest/kind";
import { NAT_CONF, NAT_SCRIPT } from "../../guest/paths";

/** The vif hotplug script's name, as xl configs name it. */
export const NAT_VIF_SCRIPT = "vif-xen-estate-nat";

export const natDomUKind = guestKind("NatDomU", (raw, c: Checker, olds) => {
  const base = checkGuestBase(raw, c);
  const net = checkCidr(c, raw, "network", "10.0.0.0/24");
  const known = net && net !== (UNKNOWN as unknown);
  const ip = checkIp(c, raw, "ip", known ? net : undefined);
  if (ip && ip !== UNKNOWN && net && known) {
    const gateway = firstHost(net);
    if (ip === net.address || ip === broadcast(net) || ip === gateway)
      c.fail(
        "ip",
        ip,
        `must be a guest address: not the network (${net.address}), the dom0's gateway (${gateway}) or broadcast (${broadcast(net)})`,
      );
  }
  const checkedMac = checkMac(c, raw, "mac", false);
  if (!base || !ip || !net || !c.ok) return undefined;
  // A derived MAC stays what it was (0.1 derived it from the host too, and a new MAC would restart the guest); a
  // new guest's comes from its name, so how the host is reached never changes it.
  const oldMac = olds?.vifs?.[0]?.mac;
  const mac =
    checkedMac ??
    (typeof oldMac === "string" && olds?.name === base.name
      ? oldMac
      : base.name === UNKNOWN
        ? UNKNOWN
        : derivedMac(`nat/${base.name}`));
  const network = known ? `${net.address}/${net.prefix}` : UNKNOWN;
  const gateway = known ? firstHost(net) : UNKNOWN;
  return completeGuest(
    raw,
    c,
    base,
    {
      vifs: [{ mac, bridge: null, ip, script: NAT_VIF_SCRIPT }],
      guestNetwork: {
        address: ip,
        prefix: known ? net.prefix : (UNKNOWN as unknown as number),
        gateway,
        onLink: false,
      },
      natNetwork: network,
      // Checked inputs always declare the NAT in place; refresh reports what it finds.
      natActive: true,
    },
    () => ({
      [NAT_CONF]: render("nat-domu/xen-estate-nat.conf", { network, gateway }),
      [NAT_SCRIPT]: render("nat-domu/vif-xen-estate-nat", {}),
    }),
  );
});
