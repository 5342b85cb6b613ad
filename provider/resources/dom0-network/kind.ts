/**
 * Dom0Network's planning and lifecycle: the bridge (`xenbr0`) carrying the uplink, sending with the NIC's MAC (a
 * frame from another MAC gets a Hetzner server locked), holding the server's address (a /32 with an on-link
 * gateway, or DHCP), IPv6 where given; ifupdown on Debian, netplan on Ubuntu; forwarding, proxy ARP and the
 * bridge-netfilter sysctls, with br_netfilter loaded first.
 *
 * The SSH session is never at stake here: the sysctls apply at once (they cut nothing), while the bridge itself
 * takes over the uplink at the next boot, which Dom0Reboot does and then verifies. `networkDigest` changes with
 * the interfaces file, which tells Dom0Reboot a boot is owed.
 */
import { Checker, containsUnknown, isIPv4, isIPv6, UNKNOWN } from "../../core/validate";
import { RefusedError } from "../../core/errors";
import { macProblem } from "../../core/network";
import { shellQuote } from "../../core/shell";
import {
  checkOnDelete,
  checkOs,
  deleteOwnedFiles,
  observeFiles,
  writeOwnedFiles,
  type OnDelete,
} from "../../dom0/concern";
import type { Distribution } from "../../dom0/os";
import type { CommonInputs, Context, Kind } from "../../framework/kind";
import { renderedFiles } from "../../framework/plan";
import { sha256 } from "../../remote/files";
import {
  INTERFACES,
  INTERFACES_VALIDATE,
  netplanValidate,
  probeScript,
  renderNetworkFiles,
  sysctlScript,
  sysctlsTurnedOff,
  type NetworkPlan,
} from "./plan";

export interface Dom0NetworkInputs extends CommonInputs, NetworkPlan {
  distribution: Distribution;
  release: string;
  onDelete: OnDelete;
  files: Record<string, string>;
}

export interface Dom0NetworkOutputs extends Dom0NetworkInputs {
  /** Digest of the network configuration the next boot reads. */
  networkDigest: string;
}

const IFNAME = /^[a-z][a-z0-9_.-]{0,14}$/;

function checkAddressWithPrefix(
  c: Checker,
  obj: Record<string, unknown>,
  key: string,
  v6: boolean,
): string | undefined {
  const v = c.string(obj, key, { required: true, max: 64 });
  if (!v || v === UNKNOWN) return v;
  // Exactly one `/`: the whole value goes into /etc/network/interfaces and netplan, where anything after a second
  // one (`/64/$(…)`, a newline and an `up` line) would be read as commands by ifupdown's shell.
  const m = /^([^/]+)\/(\d{1,3})$/.exec(v);
  const [ip, prefix] = m ? [m[1]!, m[2]!] : [undefined, undefined];
  const ok =
    ip &&
    prefix !== undefined &&
    (v6 ? isIPv6(ip) : isIPv4(ip)) &&
    /^\d{1,3}$/.test(prefix) &&
    Number(prefix) <= (v6 ? 128 : 32);
  if (!ok)
    return c.fail(
      key,
      v,
      v6
        ? "must be an IPv6 address with its prefix, such as 2001:db8::2/64"
        : "must be an IPv4 address with its prefix, such as 203.0.113.5/32",
    );
  return v;
}

export const dom0NetworkKind: Kind<Dom0NetworkInputs, Dom0NetworkOutputs> = {
  name: "Dom0Network",
  replaceOn: [],
  outputOnly: ["networkDigest"],
  changeClasses: { reboot: ["uplink", "mac", "bridge", "address", "ipv6"] },
  changeNotes: { reboot: "takes effect at the next boot (Dom0Reboot reboots the host)" },

  check(raw, c: Checker) {
    const os = checkOs(c, raw);
    const uplink = c.string(raw, "uplink", {
      required: true,
      pattern: IFNAME,
      rule: "must be an interface name such as eth0 or enp0s31f6",
    });
    const bridge = c.string(raw, "bridge", {
      default: "xenbr0",
      pattern: IFNAME,
      rule: "must be an interface name (at most 15 characters)",
    });
    if (uplink && bridge && uplink === bridge) c.fail("bridge", bridge, "must not be the uplink's name");
    const macRaw = c.string(raw, "mac", { required: true, max: 17 });
    const mac = macRaw && macRaw !== UNKNOWN ? macRaw.toLowerCase() : macRaw;
    if (mac && mac !== UNKNOWN) {
      const problem = macProblem(mac);
      if (problem) c.fail("mac", macRaw, problem, "Give the NIC's own MAC (ip link show)");
    }
    let address: NetworkPlan["address"] | undefined;
    if (raw.address === "dhcp" || raw.address === undefined || raw.address === null) address = "dhcp";
    else if (raw.address === UNKNOWN) address = UNKNOWN as unknown as "dhcp";
    else {
      const a = c.object(raw, "address");
      if (a && a !== UNKNOWN) {
        const ac = c.at("address");
        const addr = checkAddressWithPrefix(ac, a, "address", false);
        const gateway = ac.string(a, "gateway", { required: true, max: 15 });
        if (gateway && gateway !== UNKNOWN && !isIPv4(gateway))
          ac.fail("gateway", gateway, "must be an IPv4 address");
        if (addr && gateway) address = { address: addr, gateway };
      } else if (typeof raw.address === "string")
        c.fail("address", raw.address, 'must be "dhcp" or { address, gateway }');
    }
    let ipv6: NetworkPlan["ipv6"] = null;
    const six = c.object(raw, "ipv6");
    if (six === UNKNOWN) ipv6 = UNKNOWN as unknown as NetworkPlan["ipv6"];
    else if (six) {
      const sc = c.at("ipv6");
      const a6 = checkAddressWithPrefix(sc, six, "address", true);
      const g6 = sc.string(six, "gateway", { required: true, max: 45 });
      if (g6 && g6 !== UNKNOWN && !isIPv6(g6))
        sc.fail("gateway", g6, "must be an IPv6 address such as fe80::1");
      if (a6 && g6) ipv6 = { address: a6, gateway: g6 };
    }
    const proxyArp = c.boolean(raw, "proxyArp", false);
    const bridgeNetfilter = c.boolean(raw, "bridgeNetfilter", true);
    const netplanFile = c.string(raw, "netplanFile", {
      default: "/etc/netplan/01-netcfg.yaml",
      pattern: /^\/etc\/netplan\/[A-Za-z0-9_.-]+\.yaml$/,
      rule: "must be a .yaml file in /etc/netplan",
    });
    const onDelete = checkOnDelete(c, raw);
    if (!os || !uplink || !bridge || !mac || !address || !netplanFile || !c.ok) return undefined;
    const plan: NetworkPlan = {
      network: os.facts.network,
      netplanFile,
      uplink,
      mac,
      bridge,
      address,
      ipv6,
      proxyArp,
      bridgeNetfilter,
    };
    return {
      distribution: os.distribution,
      release: os.release,
      ...plan,
      onDelete,
      files: renderedFiles(plan, renderNetworkFiles),
    };
  },

  id: (i) => `${i.connection.host}:network`,

  async create(ctx, i) {
    return apply(ctx, i);
  },

  async read(ctx, _id, outs) {
    return { ...outs, files: await observeFiles(ctx, outs.files) };
  },

  async update(ctx, _id, olds, news) {
    return apply(ctx, news, sysctlsTurnedOff(olds, news));
  },

  async delete(ctx, _id, outs) {
    await deleteOwnedFiles(
      ctx,
      "the bridge and network settings (in effect until the next boot either way)",
      Object.keys(outs.files),
      outs.onDelete,
    );
  },
};

function digest(i: Dom0NetworkInputs): string {
  const net = i.network === "netplan" ? i.files[i.netplanFile] : i.files[INTERFACES];
  return sha256(net ?? "").slice(0, 16);
}

/** Writes the files and applies the sysctls; `turnedOff`: optional keys the last `up` had on and this one leaves out. */
async function apply(
  ctx: Context,
  i: Dom0NetworkInputs,
  turnedOff: readonly string[] = [],
): Promise<Dom0NetworkOutputs> {
  if (containsUnknown(i)) throw new Error("Dom0Network inputs are not known");
  // The uplink must be the NIC the declared MAC belongs to: a wrong name or MAC would leave the host offline after
  // the reboot. Known only on the host.
  const r = await ctx.host.script(
    `cat ${shellQuote(`/sys/class/net/${i.uplink}/address`)} 2>/dev/null || echo absent\n${probeScript(i.bridge)}`,
    {
      summary: `look at ${i.uplink}`,
    },
  );
  const seen = r.stdout.split("\n")[0]!.trim();
  if (seen === "absent")
    throw new RefusedError(
      `\`uplink\` ${JSON.stringify(i.uplink)} is no interface on ${ctx.conn.host}`,
      "Name the NIC that carries the server's address (ip link show)",
    );
  const bridgeMembers = /^bridge (.*)$/m.exec(r.stdout)?.[1] ?? "";
  // Once the bridge runs, the uplink's own address is the bridge's: compare against the bridge then.
  if (seen !== i.mac && !bridgeMembers.split(" ").includes(i.uplink))
    throw new RefusedError(
      `\`mac\` ${i.mac} is not ${i.uplink}'s MAC (${seen})`,
      "The bridge must send with the NIC's own MAC: give that one",
    );
  await writeOwnedFiles(ctx, i.files, {
    [INTERFACES]: { validate: INTERFACES_VALIDATE },
    [i.netplanFile]: { mode: "600", validate: netplanValidate(i.netplanFile) },
  });
  await ctx.host.script(sysctlScript(turnedOff), { summary: "apply the sysctls" });
  return { ...i, networkDigest: digest(i) };
}
