/**
 * Dom0Firewall's planning and lifecycle: the host's own nftables table (`inet xen_estate`): HTTP and HTTPS (and
 * any declared port) open, SSH only from the trusted sources, established traffic allowed, forwarding untouched
 * (NAT and bridged guests keep working), and Xen's hotplug rules never flushed. A systemd unit loads it at boot,
 * before the network.
 *
 * It never locks the operator out: `check` refuses an empty trusted list, unparseable sources and a port clash;
 * the apply step asks the host which address this connection comes from and refuses rules that leave it out; and
 * the rules go live under the host's rollback timer, confirmed through a new connection.
 */
import { Checker, containsUnknown, UNKNOWN } from "../../core/validate";
import { RefusedError } from "../../core/errors";
import { parseNetwork, type Network } from "../../dom0/addresses";
import {
  checkOnDelete,
  deleteOwnedFiles,
  observeFiles,
  refuseInput,
  writeOwnedFiles,
  type OnDelete,
} from "../../dom0/concern";
import type { CommonInputs, Context, Kind } from "../../framework/kind";
import { renderedFiles } from "../../framework/plan";
import { ensurePackage } from "../../remote/packages";
import { applyWithRollback, SSH_PEER_FUNCTION } from "../../remote/rollback";
import {
  ACTIVATE_SCRIPT,
  peerProblem,
  PROBE_SCRIPT,
  renderRules,
  renderUnit,
  ruleRevision,
  RULES_FILE,
  UNIT_FILE,
  type FirewallPlan,
} from "./plan";

export interface Dom0FirewallInputs extends CommonInputs {
  sshPort: number;
  trustedSources: string[];
  openTcp: number[];
  openUdp: number[];
  confirmSeconds: number;
  onDelete: OnDelete;
  /** The rule file and its boot unit, path → content. */
  files: Record<string, string>;
  /** The revision of the rules loaded in the kernel; refresh shows another (or "absent") when they were flushed. */
  loaded: string;
}

export type Dom0FirewallOutputs = Dom0FirewallInputs;

function ports(c: Checker, raw: Record<string, unknown>, key: string, def: number[]): number[] {
  const list = c.array(raw, key);
  // One port not known yet (preview) leaves the whole list unknown: dropping it would show rules without it.
  if (list === UNKNOWN || list?.some((p) => containsUnknown(p))) return UNKNOWN as unknown as number[];
  const out: number[] = [];
  (list ?? def).forEach((p, i) => {
    const n = typeof p === "string" && /^\d+$/.test(p) ? Number(p) : p;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > 65535)
      c.fail(`${key}[${i}]`, p, "must be a port number from 1 to 65535");
    else out.push(n);
  });
  return out;
}

export function checkTrusted(c: Checker, raw: Record<string, unknown>): Network[] | undefined {
  const list = c.array(raw, "trustedSources");
  // One source not known yet (preview) leaves the whole list unknown: dropping it would show rules without it.
  if (list === UNKNOWN || list?.some((s) => containsUnknown(s))) return UNKNOWN as unknown as Network[];
  if (Array.isArray(list) && list.length === 0) {
    c.fail(
      "trustedSources",
      list,
      "must name at least one source: with none, nobody could log in over SSH",
      'Use ["0.0.0.0/0", "::/0"] to allow SSH from anywhere',
    );
    return undefined;
  }
  const nets: Network[] = [];
  for (const [i, s] of (list ?? ["0.0.0.0/0", "::/0"]).entries()) {
    if (typeof s !== "string") {
      c.fail(`trustedSources[${i}]`, s, "must be an address or a network such as 198.51.100.0/24");
      continue;
    }
    const n = parseNetwork(s.trim());
    if ("error" in n) c.fail(`trustedSources[${i}]`, s, n.error);
    else nets.push(n);
  }
  return nets;
}

export const dom0FirewallKind: Kind<Dom0FirewallInputs, Dom0FirewallOutputs> = {
  name: "Dom0Firewall",
  replaceOn: [],

  check(raw, c: Checker) {
    const sshPort = c.integer(raw, "sshPort", { min: 1, max: 65535, default: 22 });
    const trusted = checkTrusted(c, raw);
    const openTcp = ports(c, raw, "openTcp", [80, 443]);
    const openUdp = ports(c, raw, "openUdp", []);
    if (
      sshPort !== undefined &&
      Array.isArray(openTcp) &&
      openTcp.includes(sshPort) &&
      Array.isArray(trusted)
    ) {
      const anywhere = trusted.some((n) => n.prefix === 0);
      if (!anywhere)
        c.fail(
          "openTcp",
          openTcp,
          `must not open sshd's port ${sshPort} to everyone while SSH is limited to trustedSources`,
          "Move sshd to a port of its own, or drop it from openTcp",
        );
    }
    const confirmSeconds =
      c.integer(raw, "confirmSeconds", { min: 15, max: 3600, default: 90, unit: "seconds" }) ?? 90;
    const onDelete = checkOnDelete(c, raw);
    if (sshPort === undefined || !trusted || !c.ok) return undefined;
    const plan = { sshPort, trustedSources: trusted, openTcp, openUdp };
    return {
      sshPort,
      trustedSources:
        trusted === (UNKNOWN as unknown) ? (UNKNOWN as unknown as string[]) : trusted.map((n) => n.text),
      openTcp,
      openUdp,
      confirmSeconds,
      onDelete,
      files: renderedFiles(plan, (p: FirewallPlan) => ({
        [RULES_FILE]: renderRules(p),
        [UNIT_FILE]: renderUnit(),
      })),
      loaded: containsUnknown(plan) ? UNKNOWN : ruleRevision(plan),
    };
  },

  id: (i) => `${i.connection.host}:firewall`,

  async create(ctx, i) {
    return apply(ctx, i);
  },

  async read(ctx, _id, outs) {
    const files = await observeFiles(ctx, outs.files);
    const r = await ctx.host.script(PROBE_SCRIPT, { summary: "which firewall rules are loaded" });
    const rev = /^revision (\S+)$/m.exec(r.stdout)?.[1];
    const loaded = rev ?? (/^table absent$/m.test(r.stdout) ? "absent" : "unknown");
    return { ...outs, files, loaded };
  },

  async update(ctx, _id, _olds, news) {
    return apply(ctx, news);
  },

  async delete(ctx, _id, outs) {
    if (outs.onDelete !== "restore") {
      await deleteOwnedFiles(ctx, "the firewall", Object.keys(outs.files), "keep");
      return;
    }
    // Removing our table opens the host up (the state before xen-estate); it cannot cut an SSH path.
    await deleteOwnedFiles(ctx, "the firewall", Object.keys(outs.files), "restore");
    await ctx.host.script(
      `systemctl disable xen-estate-firewall.service 2>/dev/null || true\n${ACTIVATE_SCRIPT}`,
      {
        summary: "unload the firewall",
      },
    );
  },
};

function plan(i: Dom0FirewallInputs): FirewallPlan {
  return {
    sshPort: i.sshPort,
    // Checked already; parsed again from the recorded text (state holds the text, not the parsed network).
    trustedSources: i.trustedSources.map((s, n) => {
      const net = parseNetwork(s);
      if ("error" in net) refuseInput(`trustedSources[${n}]`, s, net.error);
      return net;
    }),
    openTcp: i.openTcp,
    openUdp: i.openUdp,
  };
}

async function apply(ctx: Context, i: Dom0FirewallInputs): Promise<Dom0FirewallOutputs> {
  await ensurePackage(ctx.host, {
    command: "nft",
    packages: ["nftables"],
    install: true,
    setting: "installPackages",
  });
  const p = plan(i);
  // The address this connection comes from, as the host sees it: known only here, not in check.
  const r = await ctx.host.script(`${SSH_PEER_FUNCTION}\nxe_ssh_peer`, {
    summary: "which address this connection comes from",
  });
  const peer = r.stdout.trim();
  if (!peer)
    throw new Error(
      `cannot tell which address the SSH connection to ${ctx.conn.host} comes from (ss found no socket)`,
    );
  const problem = peerProblem(p, peer);
  if (problem)
    throw new RefusedError(
      `\`trustedSources\` ${problem}`,
      `Add ${peer} (or its network) to trustedSources; nothing was changed`,
    );
  const rules = i.files[RULES_FILE]!;
  await applyWithRollback(
    ctx.host,
    {
      label: "firewall",
      files: [{ path: RULES_FILE, content: rules, mode: "600", mkdirs: true, validate: "nft -c -f %s" }],
      activate: ACTIVATE_SCRIPT,
      confirmSeconds: i.confirmSeconds,
    },
    { reconnect: ctx.conn, describe: `a new SSH login from ${peer} through the new rules` },
  );
  // Loaded now (or already): make sure the running table is ours even when the file was unchanged.
  const probe = await ctx.host.script(PROBE_SCRIPT, { summary: "which firewall rules are loaded" });
  const loaded = /^revision (\S+)$/m.exec(probe.stdout)?.[1] ?? "absent";
  if (loaded !== i.loaded) {
    ctx.log.info(`the loaded rules (${loaded}) are not the file's (${i.loaded}): loading the file again`);
    await applyWithRollback(
      ctx.host,
      {
        label: "firewall",
        files: [],
        activate: ACTIVATE_SCRIPT,
        confirmSeconds: i.confirmSeconds,
        force: true,
      },
      { reconnect: ctx.conn, describe: `a new SSH login from ${peer} through the reloaded rules` },
    );
  }
  await writeOwnedFiles(ctx, { [UNIT_FILE]: i.files[UNIT_FILE]! });
  await ctx.host.script(
    "if [ -d /run/systemd/system ]; then systemctl daemon-reload; systemctl enable --quiet xen-estate-firewall.service; fi",
    { summary: "enable the firewall at boot" },
  );
  return { ...i };
}
