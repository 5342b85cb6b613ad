/**
 * Debian packages on a host: whether a command is there, and apt-get run non-interactively, waiting for the dpkg
 * lock instead of failing on it, keeping config files the admin changed.
 */
import { RefusedError } from "../core/errors";
import { shellJoin, shellQuote } from "../core/shell";
import type { RemoteHost } from "../ssh/remote-host";

/** Whether every command is on the host's PATH. */
export async function haveCommands(host: RemoteHost, commands: readonly string[]): Promise<boolean> {
  const r = await host.script(
    `for c in ${shellJoin(commands)}; do command -v -- "$c" >/dev/null || { echo no; exit 0; }; done; echo yes`,
    { summary: `look for ${commands.join(", ")}` },
  );
  return r.stdout.trim() === "yes";
}

/** `apt-get install` of `packages`: non-interactive, waits up to 10 minutes for the dpkg lock. */
export function aptInstallScript(packages: readonly string[]): string {
  return [
    "export DEBIAN_FRONTEND=noninteractive",
    `apt-get -o DPkg::Lock::Timeout=600 install -y -q -o Dpkg::Options::=--force-confold -- ${packages.map(shellQuote).join(" ")} >&2`,
  ].join("\n");
}

/**
 * Makes sure `command` exists, installing `packages` with apt when it does not and `install` allows it; refuses
 * otherwise, saying how to fix it.
 */
export async function ensurePackage(
  host: RemoteHost,
  opts: { command: string; packages: readonly string[]; install: boolean; setting: string },
): Promise<void> {
  if (await haveCommands(host, [opts.command])) return;
  if (!opts.install)
    throw new RefusedError(
      `${opts.packages.join(", ")} is not installed on ${host.name}`,
      `Install it (apt-get install ${opts.packages.join(" ")}) or set ${opts.setting}: true`,
    );
  host.log.progress(`installing ${opts.packages.join(", ")} on ${host.name} (apt)`);
  await host.script(aptInstallScript(opts.packages), {
    summary: `apt-get install ${opts.packages.join(" ")}`,
    timeoutMs: 1_800_000,
  });
}
