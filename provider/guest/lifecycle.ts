/**
 * The remote lifecycle shared by BridgedDomU and NatDomU: create, read, update and delete of a guest on a dom0.
 *
 * A guest's config and its domain name belong to exactly one resource (its owner tag): another resource's config is
 * never overwritten, taken over or removed, and a MAC, IP or disk another guest's config uses is refused. The host
 * lock is held only around the checks and edits of shared files; installs take their disk's own lock.
 */
import { RefusedError } from "../core/errors";
import { shellQuote } from "../core/shell";
import type { ChangePlan, Context } from "../framework/kind";
import { observeOwnedFiles, removeRemoteFile, statRemoteFiles, writeRemoteFile } from "../remote/files";
import { withHostLock } from "../remote/lock";
import type { GuestInputs, GuestOutputs } from "./args";
import { autostartScript, domainState, startDomain, stopDomain, waitForNetwork } from "./domain";
import { installGuest, reconfigureGuest, recordedInstall } from "./install";
import { natCleanupScript, natProbeScript, natRulesScript } from "./nat";
import { autostartPath, configPath, MANAGED, NAT_SCRIPT, NAT_TAG, OWNER_TAG, XEN_CONFIG_DIR } from "./paths";

/** Who owns the config at a guest's path, as the host says. */
type Ownership = { state: "absent" | "ours" } | { state: "other"; owner: string } | { state: "foreign" };

/** Prints what `/etc/xen/<name>.cfg` is: absent, not ours at all, or owned by whom. */
function ownershipScript(g: Pick<GuestInputs, "name">): string {
  const cfg = shellQuote(configPath(g.name));
  return [
    `if [ ! -e ${cfg} ]; then echo "config absent"; exit 0; fi`,
    `head -n1 -- ${cfg} | grep -qF ${shellQuote(MANAGED)} || { echo "config foreign"; exit 0; }`,
    `owner=$(sed -n ${shellQuote(`s/^${OWNER_TAG}//p`)} -- ${cfg} | head -n1)`,
    `echo "config owner $owner"`,
  ].join("\n");
}

async function ownership(ctx: Context, g: Pick<GuestInputs, "name" | "owner">): Promise<Ownership> {
  const out = (
    await ctx.host.script(ownershipScript(g), { summary: `who owns ${configPath(g.name)}` })
  ).stdout.trim();
  if (out === "config absent") return { state: "absent" };
  if (out === "config foreign") return { state: "foreign" };
  const m = /^config owner ?(.*)$/.exec(out);
  if (!m) throw new Error(`reading ${configPath(g.name)} on ${ctx.conn.host} gave no answer`);
  const owner = m[1]!.trim();
  // A config written before owners were recorded belongs to the resource whose state has no owner either.
  if (owner === (g.owner ?? "")) return { state: "ours" };
  return { state: "other", owner: owner || "a resource of another program or release (no owner recorded)" };
}

function refuseOwnership(g: Pick<GuestInputs, "name">, o: Ownership, host: string): never {
  if (o.state === "foreign")
    throw new RefusedError(
      `${configPath(g.name)} on ${host} was not written by xen-estate`,
      "Move it away or pick another name",
    );
  throw new RefusedError(
    `${configPath(g.name)} on ${host} belongs to ${o.state === "other" ? o.owner : "someone else"}: a guest's config and name belong to one resource`,
    "Remove that guest first (for a change between BridgedDomU and NatDomU: destroy the old one, then create the new one), or pick another name",
  );
}

/** Refuses when another guest on the host (running or configured) uses one of our MACs, IPs or disks. */
export function duplicateCheckScript(g: GuestInputs): string {
  const own = shellQuote(configPath(g.name));
  const checks: [string, string][] = g.vifs.flatMap((v): [string, string][] => [
    ["mac", v.mac],
    ["ip", v.ip],
  ]);
  return [
    `for cfg in ${XEN_CONFIG_DIR}/*.cfg; do`,
    `  [ -f "$cfg" ] && [ "$cfg" != ${own} ] || continue`,
    ...checks.map(
      ([k, v]) =>
        `  if grep -Eiq -- ${shellQuote(`(^|[^a-z])${k}=${v.replace(/\./g, "\\.")}([^0-9a-f.:]|$)`)} "$cfg"; then xe_refuse ${shellQuote(`${k.toUpperCase()} ${v} is already used by the guest config `)} "$cfg"; fi`,
    ),
    // The same disk in two guests corrupts it: compare the devices the configs name, resolved.
    `  for t in $(grep -o -- 'target=[^"'"'"',]*' "$cfg" | cut -d= -f2-); do`,
    ...g.disks.map(
      (d) =>
        `    if [ "$(readlink -f -- "$t" 2>/dev/null || echo "$t")" = "$(readlink -f -- ${shellQuote(d.path)} 2>/dev/null || echo ${shellQuote(d.path)})" ]; then xe_refuse ${shellQuote(`disk ${d.path} is already used by the guest config `)} "$cfg"; fi`,
    ),
    `    :`,
    `  done`,
    `done`,
    // Running domains whose config file is gone still hold their MACs.
    `if command -v xenstore-ls >/dev/null 2>&1; then`,
    `  self=$(xl domid ${shellQuote(g.name)} 2>/dev/null || echo none)`,
    `  if ! vifs=$(xenstore-ls -f /local/domain/0/backend/vif 2>&1); then case "$vifs" in *"No such file"*|*ENOENT*) vifs= ;; *) xe_say "cannot ask xenstore for the MACs in use: " "$vifs"; exit 1 ;; esac; fi`,
    ...g.vifs.map(
      (v) =>
        `  if printf '%s\\n' "$vifs" | grep -iF -- ${shellQuote(`/mac = "${v.mac}"`)} | grep -v -q -- "/$self/"; then xe_refuse ${shellQuote(`MAC ${v.mac} is already used by a running domain`)}; fi`,
    ),
    `fi`,
    ...(g.natNetwork
      ? [
          // One NAT network per host: its gateway address sits on every NAT vif.
          `for cfg in ${XEN_CONFIG_DIR}/*.cfg; do`,
          `  [ -f "$cfg" ] && [ "$cfg" != ${own} ] || continue`,
          `  other=$(sed -n ${shellQuote(`s/^${NAT_TAG}//p`)} -- "$cfg")`,
          `  if [ -n "$other" ] && [ "$other" != ${shellQuote(g.natNetwork)} ]; then xe_refuse "this host's NAT network is $other (guest config $cfg); NatDomU supports one NAT network per host"; fi`,
          `done`,
        ]
      : []),
  ].join("\n");
}

/** Writes every file the guest owns (config, NAT script and settings); returns the paths that changed. */
async function writeFiles(ctx: Context, g: GuestInputs): Promise<string[]> {
  const changed: string[] = [];
  for (const [path, content] of Object.entries(g.files)) {
    const isScript = path === NAT_SCRIPT;
    const r = await writeRemoteFile(ctx.host, path, content, {
      mode: isScript ? "755" : "644",
      // xl parses the config on a live dom0 before it replaces the old one.
      ...(path === configPath(g.name) ? { validate: "xl create -n -q %s >/dev/null" } : {}),
    });
    if (r.changed) changed.push(path);
  }
  return changed;
}

async function checkAddressesFree(ctx: Context, g: GuestInputs): Promise<void> {
  await ctx.host.refusable(withHostLock(duplicateCheckScript(g)), {
    summary: `check ${g.name}'s addresses and disks are free`,
  });
}

async function ensureNat(ctx: Context, g: GuestInputs): Promise<void> {
  if (g.natNetwork)
    await ctx.host.script(natRulesScript(g.natNetwork, "add"), { summary: `NAT rules for ${g.natNetwork}` });
}

/** Runs the create steps; reports progress so a failure after the config exists is recorded, not forgotten. */
export async function createGuest(
  ctx: Context,
  g: GuestInputs,
  progress: (p: Partial<GuestOutputs>) => void,
): Promise<GuestOutputs> {
  const own = await ownership(ctx, g);
  if (own.state !== "absent" && own.state !== "ours") refuseOwnership(g, own, ctx.conn.host);
  await checkAddressesFree(ctx, g);
  const existing = await domainState(ctx, g.name);
  // A running domain of this name is ours only when its config is (a create that stopped half way).
  if (existing !== null && own.state !== "ours")
    throw new RefusedError(
      `a domain named ${g.name} is already running on ${ctx.conn.host} (domid ${existing})`,
      "Pick another name, or remove that domain first",
    );
  await writeFiles(ctx, g);
  const install = recordedInstall(g);
  progress({ install, domid: null, running: false });
  await ctx.host.refusable(autostartScript(g), { summary: `autostart ${g.name}` });
  await ensureNat(ctx, g);
  let domid = existing;
  let sshHostKey: string | null = null;
  if (domid === null) {
    sshHostKey = g.install ? await installGuest(ctx, g) : null;
    // Recorded before the start: a create cut from here on continues as an update, which finds the guest installed
    // (or running) and does not install again, so the key would be lost with the failed create.
    progress({ install, domid: null, running: false, sshHostKey });
    if (g.running) {
      domid = await startDomain(ctx, g);
      await waitForNetwork(ctx, g);
    }
  }
  return { ...g, install, domid, sshHostKey };
}

export async function readGuest(ctx: Context, outs: GuestOutputs): Promise<GuestOutputs | null> {
  const paths = Object.keys(outs.files);
  const states = await statRemoteFiles(ctx.host, paths);
  const domid = await domainState(ctx, outs.name);
  const cfgIndex = paths.indexOf(configPath(outs.name));
  if (domid === null && cfgIndex >= 0 && !states[cfgIndex]) return null; // gone entirely
  const files = await observeOwnedFiles(ctx.host, outs.files, states);
  const r = await ctx.host.script(
    [
      `if [ -e ${shellQuote(autostartPath(outs.name))} ]; then echo "autostart yes"; else echo "autostart no"; fi`,
      ...(outs.natNetwork ? [natProbeScript(outs.natNetwork)] : []),
    ].join("\n"),
    { summary: `probe ${outs.name}'s autostart link${outs.natNetwork ? " and NAT" : ""}` },
  );
  const autostart = /^autostart yes$/m.test(r.stdout);
  const natActive = outs.natNetwork ? /^nat ok$/m.test(r.stdout) : null;
  return {
    ...outs,
    install: recordedInstall(outs),
    files,
    domid,
    running: domid !== null,
    autostart,
    natActive,
    sshHostKey: outs.sshHostKey ?? null,
  };
}

export async function updateGuest(
  ctx: Context,
  olds: GuestOutputs,
  news: GuestInputs,
  plan: ChangePlan,
): Promise<GuestOutputs> {
  const own = await ownership(ctx, { name: news.name, owner: olds.owner ?? null });
  if (own.state !== "absent" && own.state !== "ours") refuseOwnership(news, own, ctx.conn.host);
  await checkAddressesFree(ctx, news);
  const changedFiles = await writeFiles(ctx, news);
  await ctx.host.refusable(autostartScript(news), { summary: `autostart ${news.name}` });
  await ensureNat(ctx, news);
  const restart = plan.classes.restart ?? [];
  const live = plan.classes.live ?? [];
  const settingsChanged = (plan.classes.settings ?? []).length > 0 && news.install !== null;
  let domid = await domainState(ctx, news.name);
  let sshHostKey = olds.sshHostKey ?? null;
  if (domid !== null && (!news.running || restart.length > 0 || settingsChanged)) {
    if (news.running)
      ctx.log.info(
        `${[...restart, ...(settingsChanged ? ["installed settings"] : [])].join(", ")} changed: restarting ${news.name}`,
      );
    await stopDomain(ctx, news.name, news.shutdownTimeoutSeconds);
    domid = null;
  } else if (domid !== null && live.length > 0) {
    const q = shellQuote(news.name);
    if (live.includes("memoryMiB"))
      await ctx.host.script(`xl mem-set ${q} ${news.memoryMiB}m`, { summary: `xl mem-set ${news.name}` });
    if (live.includes("vcpus"))
      await ctx.host.script(`xl vcpu-set ${q} ${news.vcpus}`, { summary: `xl vcpu-set ${news.name}` });
  }
  if (domid === null) {
    if (news.install) {
      sshHostKey = (await installGuest(ctx, news)) ?? sshHostKey;
      if (settingsChanged) await reconfigureGuest(ctx, news);
    }
    if (news.running) {
      domid = await startDomain(ctx, news);
      await waitForNetwork(ctx, news);
    }
  }
  if (changedFiles.length > 0) ctx.log.info(`rewrote ${changedFiles.join(", ")}`);
  return {
    ...news,
    install: recordedInstall(news),
    owner: news.owner ?? olds.owner ?? null,
    domid,
    sshHostKey,
  };
}

export async function deleteGuest(ctx: Context, outs: GuestOutputs): Promise<void> {
  const own = await ownership(ctx, outs);
  if (own.state === "other" || own.state === "foreign") {
    // Someone else's guest has this name now: it is not ours to stop or remove.
    ctx.log.warn(
      `${configPath(outs.name)} now belongs to ${own.state === "other" ? own.owner : "someone else"}: leaving that guest alone`,
    );
    return;
  }
  await stopDomain(ctx, outs.name, outs.shutdownTimeoutSeconds);
  await ctx.host.refusable(autostartScript({ name: outs.name, autostart: false }), {
    summary: `remove ${autostartPath(outs.name)}`,
  });
  await removeRemoteFile(ctx.host, configPath(outs.name));
  if (outs.natNetwork) {
    // Shared NAT pieces go with the last NAT guest of that network on this host.
    const r = await ctx.host.script(natCleanupScript(outs.natNetwork), {
      summary: `NAT cleanup for ${outs.natNetwork}`,
    });
    if (r.stdout.trim()) ctx.log.info(r.stdout.trim());
  }
}

/**
 * Everything of a guest kind but its `name` and `check`: BridgedDomU and NatDomU differ only in how they
 * validate and render their network.
 */
export const guestLifecycle = {
  deleteBeforeReplace: true,
  outputOnly: ["domid", "sshHostKey"],
  id: (i: GuestInputs): string => `${i.connection.host}:${i.name}`,
  create: (ctx: Context, i: GuestInputs, progress: (p: Partial<GuestOutputs>) => void) =>
    createGuest(ctx, i, progress),
  read: (ctx: Context, _id: string, outs: GuestOutputs) => readGuest(ctx, outs),
  update: (ctx: Context, _id: string, olds: GuestOutputs, news: GuestInputs, plan: ChangePlan) =>
    updateGuest(ctx, olds, news, plan),
  delete: (ctx: Context, _id: string, outs: GuestOutputs) => deleteGuest(ctx, outs),
} as const;
