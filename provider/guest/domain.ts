/**
 * Domain control on the dom0 through `xl`: is it running, start it (and wait until it runs, or answers on the
 * network), shut it down with a deadline, autostart links. A failing `xl` is an error, never "not running".
 */
import { RemoteCommandError } from "../core/errors";
import { shellQuote } from "../core/shell";
import type { Context } from "../framework/kind";
import { withHostLock, XL_CREATE_LOCK } from "../remote/lock";
import type { RunResult } from "../ssh/remote-host";
import type { GuestInputs } from "./args";
import { autostartPath, configPath, XEN_CONFIG_DIR } from "./paths";

/**
 * Prints `domid <id> <state>` when the domain runs, `absent` when `xl list` answered without it. xl's errors fail
 * the script (a dom0 whose xenstored is down cannot tell).
 */
export function domainStateScript(name: string): string {
  return [
    xlList(name),
    `printf '%s\\n' "$out" | awk -v n=${shellQuote(name)} 'NR > 1 && $1 == n {print "domid", $2, $5; found=1} END {if (!found) print "absent"}'`,
  ].join("\n");
}

/** Sets `$out` to `xl list`'s output, or fails the script (saying why) when xl cannot answer. */
function xlList(name: string): string {
  return `if ! out=$(xl list 2>&1); then xe_say "xl list failed, so whether " ${shellQuote(name)} " runs is not known: " "$out"; exit 1; fi`;
}

/** The domain's id while it runs, or null when xl says it does not. */
export async function domainState(ctx: Context, name: string): Promise<number | null> {
  const r = await ctx.host.script(domainStateScript(name), { summary: `xl list ${name}` });
  const line = r.stdout.trim().split("\n").pop() ?? "";
  if (line === "absent") return null;
  const m = /^domid (\d+) (\S+)$/.exec(line);
  if (!m) throw new Error(`xl list ${name} on ${ctx.conn.host}: unexpected answer ${JSON.stringify(line)}`);
  return Number(m[1]);
}

/** How long an `xl create` waits for the other guests' starts on the host before it fails, in seconds. */
const XL_CREATE_WAIT_SECONDS = 900;

/**
 * `xl create` holding {@link XL_CREATE_LOCK} (one start at a time per host). xl leaves a process behind that
 * watches the domain for its whole life and carries out its `on_poweroff`, `on_reboot` and `on_crash`; it must not
 * inherit the lock's descriptor, or the lock would be held until the guest stops. Under systemd it runs in a scope
 * of its own, stopped only after xendomains: started from an SSH login it would live in that login's scope, which
 * systemd stops first when the dom0 shuts down, so the guests xendomains then powers off would never be reaped
 * (xendomains waits out its deadline for them) and a guest that reboots itself would stay down.
 */
export function createDomainScript(name: string): string {
  const create = `xl create -q ${shellQuote(configPath(name))} 7>&-`;
  return withHostLock(
    [
      `if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null; then`,
      `  systemd-run --quiet --scope --description=${shellQuote(`xl watching guest ${name}`)} --property=Before=xendomains.service ${create}`,
      `else`,
      `  ${create}`,
      `fi`,
    ].join("\n"),
    XL_CREATE_WAIT_SECONDS,
    XL_CREATE_LOCK,
    7,
  );
}

/** Starts the guest and waits until xl reports it running; returns its domain id. */
export async function startDomain(ctx: Context, g: GuestInputs): Promise<number> {
  ctx.log.info(`starting ${g.name}`);
  const create = (): Promise<RunResult> =>
    ctx.host.script(createDomainScript(g.name), {
      summary: `xl create ${g.name}`,
      timeoutMs: (XL_CREATE_WAIT_SECONDS + 600) * 1000,
    });
  try {
    await create();
  } catch (err) {
    // A hotplug script that outlives libxl's deadline (a loaded dom0, several guests starting at once) makes xl
    // give up and tear the half-built domain down again; one more attempt is safe and usually enough.
    if (!(err instanceof RemoteCommandError) || !/because of timeout/.test(err.stderrTail)) throw err;
    ctx.log.warn(`xl create ${g.name}: a hotplug script timed out (dom0 busy?); trying once more`);
    await create();
  }
  const deadline = Date.now() + 120_000;
  for (;;) {
    const r = await ctx.host.script(domainStateScript(g.name), { summary: `xl list ${g.name}` });
    const m = /^domid (\d+) (\S+)$/.exec(r.stdout.trim());
    const state = m?.[2];
    // r(unning), b(locked) and ------ (runnable, waiting for a CPU) all mean it is up.
    if (m && state && !/[cds]/.test(state)) return Number(m[1]);
    if (state && /[cd]/.test(state))
      throw new Error(
        `guest ${g.name} crashed or is dying right after start (state ${state}); see \`xl dmesg\` and /var/log/xen/`,
      );
    if (Date.now() > deadline)
      throw new Error(
        `guest ${g.name} did not reach the running state within 120 s (last state: ${state ?? "absent"})`,
      );
    await new Promise((r2) => setTimeout(r2, 1000));
  }
}

export async function waitForNetwork(ctx: Context, g: GuestInputs): Promise<void> {
  if (!g.waitForNetwork) return;
  const ip = g.vifs[0]?.ip;
  if (!ip) return;
  const { port, timeoutSeconds } = g.waitForNetwork;
  const what = `${g.name} (${ip})${port ? ` on port ${port}` : ""}`;
  ctx.log.progress(`waiting up to ${timeoutSeconds} s for ${what} to answer`);
  // The address and port are the inner shell's arguments, never part of its code.
  const probe = port
    ? `timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' xe-probe ${shellQuote(ip)} ${shellQuote(port)}`
    : `ping -c1 -W2 -- ${shellQuote(ip)} >/dev/null`;
  await ctx.host.script(
    [
      `end=$(( $(date +%s) + ${timeoutSeconds} ))`,
      `until ${probe} 2>/dev/null; do`,
      `  if [ "$(date +%s)" -ge "$end" ]; then xe_say ${shellQuote(`${what} did not answer within ${timeoutSeconds} s`)}; exit 1; fi`,
      `  sleep 2`,
      `done`,
    ].join("\n"),
    { summary: `wait for ${g.name} on the network`, timeoutMs: (timeoutSeconds + 30) * 1000 },
  );
}

export async function stopDomain(ctx: Context, name: string, timeoutSeconds: number): Promise<void> {
  const q = shellQuote(name);
  ctx.log.info(`shutting ${name} down (up to ${timeoutSeconds} s, then xl destroy)`);
  await ctx.host.script(
    [
      xlList(name),
      `printf '%s\\n' "$out" | awk -v n=${q} 'NR > 1 && $1 == n {f=1} END {exit !f}' || exit 0`,
      `if ! timeout ${timeoutSeconds} xl shutdown -w ${q} >&2; then`,
      `  xe_say ${shellQuote(`${name} did not shut down within ${timeoutSeconds} s: destroying it`)}`,
      `  xl destroy ${q} >&2 || true`,
      `fi`,
      // xl shutdown -w returns when the domain is gone, but give the toolstack a moment to clean up.
      `for _ in $(seq 1 30); do xl domid ${q} >/dev/null 2>&1 || exit 0; sleep 1; done`,
      `xl destroy ${q} >&2`,
    ].join("\n"),
    { summary: `stop ${name}`, timeoutMs: (timeoutSeconds + 60) * 1000 },
  );
}

/**
 * Links (or unlinks) the guest's config in /etc/xen/auto, which xendomains starts at boot. Only a symlink is ever
 * replaced or removed there: a regular file someone put in its place is left alone (and reported).
 */
export function autostartScript(g: Pick<GuestInputs, "name" | "autostart">): string {
  const link = shellQuote(autostartPath(g.name));
  const foreign = `xe_refuse ${shellQuote(`${autostartPath(g.name)} is not a link xen-estate made: refusing to replace or remove it`)}`;
  return [
    `if [ -e ${link} ] && [ ! -L ${link} ]; then ${foreign}; fi`,
    g.autostart
      ? `mkdir -p ${XEN_CONFIG_DIR}/auto && ln -sfn -- ${shellQuote(configPath(g.name))} ${link}`
      : `rm -f -- ${link}`,
  ].join("\n");
}
