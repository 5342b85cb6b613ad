/**
 * Dom0XenBoot (a Dom0Host concern) under cut connections (issue 15): a create (GRUB's Xen settings, xl.conf,
 * xendomains, /etc/xen/auto, grub.cfg regenerated) and an update (another dom0 memory and vCPUs, Xen and dom0
 * kernel arguments, bridge and shutdown wait) have the provider's SSH path dropped at each remote step in turn; the
 * next run (as the engine makes it) must converge: every file the declared one, grub.cfg regenerated from them (the
 * Xen entry the default, booting Xen with the declared command line and dom0's kernel with the declared arguments,
 * gzio loaded once after what the installer preloads), the command line it reports the declared one, each original
 * kept once as it was before the first write, no temp file left. A delete with `onDelete: "restore"` must leave the
 * originals back, the file xen-estate made gone, and grub.cfg regenerated from the originals (the very file the
 * same update-grub made from them before xen-estate wrote anything).
 *
 * Real: sshd, bash, the files in an overlay of this machine's /etc (a private mount namespace, as a host's own
 * sshd sees it: test/support/sshd.ts; /etc/default/grub and the Xen package's grub.d/xen.cfg are written there
 * as the installer and the package leave them), the backups, the host lock, the host's memory (/proc/meminfo: this
 * machine runs no Xen). /boot is a directory of this test, bound over /boot in that namespace by a session of the
 * sshd before the first run (startHostOwnSshd binds no /boot; the stubs refuse to run unless /boot is that
 * directory). Simulated (test/support/stub-commands.ts's way, on the PATH of the scripts): `update-grub` and
 * `grub-mkconfig` (the real ones, installed on this machine, would probe its disks and write its /boot). The stand-in
 * does what grub-mkconfig does with these settings, cut down: it sources /etc/default/grub and
 * /etc/default/grub.d/*.cfg as shell, then writes grub.cfg (through grub.cfg.new and a rename) with the preloaded
 * modules, the default entry, a Linux entry and the Xen entry 20_linux_xen makes from the command lines.
 */
import { after, before } from "node:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { BACKUP_ROOT, hostContext, shellQuote, VERSION, type Context } from "../../provider";
import {
  dom0XenBootKind,
  type Dom0XenBootInputs,
  type Dom0XenBootOutputs,
} from "../../provider/resources/dom0-xen-boot";
import { GRUB_XEN, XENDOMAINS, XL_CONF } from "../../provider/resources/dom0-xen-boot/plan";
import { planDiff } from "../../provider/framework/plan";
import { ORIGINAL_SUFFIX } from "../../provider/remote/files";
import { checked } from "../support/checked";
import { CutRelay, describeCutMatrix, lookAtHost, type CutScenario } from "../support/cut-matrix";
import { withStubs } from "../support/stub-commands";
import { freePort, generateKey, runDirect, startHostOwnSshd, type KeyPair, type Sshd } from "../support/sshd";

/** GRUB's settings as the installer wrote them (it preloads a module of its own). */
const GRUB_DEFAULTS = [
  "GRUB_DEFAULT=0",
  "GRUB_TIMEOUT=5",
  "GRUB_DISTRIBUTOR=Debian",
  'GRUB_CMDLINE_LINUX_DEFAULT="quiet"',
  'GRUB_CMDLINE_LINUX="consoleblank=0"',
  'GRUB_PRELOAD_MODULES="part_gpt"',
  "",
].join("\n");
/** The Xen package's drop-in (xen-hypervisor-common's /etc/default/grub.d/xen.cfg, without its gettext). */
const XEN_GRUB_CFG = [
  'if [ "$XEN_OVERRIDE_GRUB_DEFAULT" = "" ]; then',
  '  echo "WARNING: GRUB_DEFAULT changed to boot into Xen by default!"',
  "  XEN_OVERRIDE_GRUB_DEFAULT=1",
  "fi",
  'if [ "$XEN_OVERRIDE_GRUB_DEFAULT" = "1" ]; then',
  '  GRUB_DEFAULT="$GRUB_DISTRIBUTOR GNU/Linux, with Xen hypervisor"',
  "fi",
  "",
].join("\n");
const XL_CONF_ORIGINAL = [
  "## Global XL config file ##",
  '#autoballoon="auto"',
  '#vif.default.bridge="xenbr0"',
  "",
].join("\n");
const XENDOMAINS_ORIGINAL = [
  "XENDOMAINS_MIGRATE=",
  "XENDOMAINS_SAVE=/var/lib/xen/save",
  "XENDOMAINS_RESTORE=true",
  "XENDOMAINS_AUTO=/etc/xen/auto",
  "XENDOMAINS_STOP_MAXWAIT=300",
  "",
].join("\n");
const XEN_ENTRY = "Debian GNU/Linux, with Xen hypervisor";
const GRUB_CFG = "/boot/grub/grub.cfg";
/** The mark of this test's /boot: the stubs write under /boot only where it is. */
const SANDBOX_MARK = ".xecut-boot-sandbox";

let base: string;
let key: KeyPair;
let sshd: Sshd;
let relay: CutRelay;
let stubs: string;
/** grub.cfg as update-grub made it from the installer's and the package's settings, before xen-estate wrote any. */
let grubCfgOriginal: string;
const boot = (): string => path.join(base, "boot");

before(async () => {
  base = fs.mkdtempSync("/dev/shm/xecut-xen-boot-");
  key = await generateKey(base, "client");
  sshd = await startHostOwnSshd(base, { authorizedKeys: [key.publicKey], port: await freePort() });
  relay = new CutRelay(sshd.host, sshd.port);
  await relay.start();
  fs.mkdirSync(boot());
  fs.writeFileSync(path.join(boot(), SANDBOX_MARK), "");
  // The sessions' namespace is private: this mount is the sshd's and its sessions', never this machine's.
  await direct(`mount --bind ${shellQuote(boot())} /boot && [ -f /boot/${SANDBOX_MARK} ]`);
  if (fs.existsSync(`/boot/${SANDBOX_MARK}`))
    throw new Error("the bind of /boot reached this machine's /boot");
  stubs = path.join(base, "stubs");
  fs.mkdirSync(stubs);
  const stub = (name: string, body: string[]): void =>
    fs.writeFileSync(path.join(stubs, name), ["#!/bin/bash", "set -e", ...body, ""].join("\n"), {
      mode: 0o755,
    });
  const guard = (name: string): string =>
    `[ -f /boot/${SANDBOX_MARK} ] || { echo "${name} stub: /boot is not the test's: refusing" >&2; exit 1; }`;
  // Debian's update-grub is `exec grub-mkconfig -o /boot/grub/grub.cfg "$@"`; this one takes no arguments.
  stub("update-grub", [
    guard("update-grub"),
    `[ $# -eq 0 ] || { echo "update-grub stub: unexpected: $*" >&2; exit 1; }`,
    `exec "$(dirname -- "$0")/grub-mkconfig" -o ${GRUB_CFG}`,
  ]);
  stub("grub-mkconfig", [
    guard("grub-mkconfig"),
    `[ "$*" = "-o ${GRUB_CFG}" ] || { echo "grub-mkconfig stub: unexpected: $*" >&2; exit 1; }`,
    `. /etc/default/grub`,
    `for f in /etc/default/grub.d/*.cfg; do [ ! -e "$f" ] || . "$f"; done`,
    `k=$(ls -1 /boot/vmlinuz-* | sort -V | tail -n1)`,
    `x=$(ls -1 /boot/xen-*.gz | sort -V | tail -n1)`,
    `mkdir -p /boot/grub`,
    `{`,
    `  echo "# generated by grub-mkconfig from /etc/default/grub and /etc/default/grub.d"`,
    `  for m in \${GRUB_PRELOAD_MODULES:-}; do echo "insmod $m"; done`,
    `  echo "set default=\\"\${GRUB_DEFAULT:-0}\\""`,
    `  echo "menuentry '\${GRUB_DISTRIBUTOR} GNU/Linux' {"`,
    `  echo "  linux $k root=UUID=3f1c0d2e-0000-4000-8000-000000000001 ro \${GRUB_CMDLINE_LINUX:-} \${GRUB_CMDLINE_LINUX_DEFAULT:-}"`,
    `  echo "}"`,
    `  echo "menuentry '\${GRUB_DISTRIBUTOR} GNU/Linux, with Xen hypervisor' {"`,
    `  echo "  multiboot2 $x placeholder \${GRUB_CMDLINE_XEN:-} \${GRUB_CMDLINE_XEN_DEFAULT:-}"`,
    `  echo "  module2 $k placeholder root=UUID=3f1c0d2e-0000-4000-8000-000000000001 ro \${GRUB_CMDLINE_LINUX_XEN_REPLACE:-\${GRUB_CMDLINE_LINUX:-} \${GRUB_CMDLINE_LINUX_DEFAULT:-}}"`,
    `  echo "}"`,
    `} > ${GRUB_CFG}.new`,
    `mv -f -- ${GRUB_CFG}.new ${GRUB_CFG}`,
  ]);
  // The installer's grub.cfg, made by the same update-grub from the settings as they are before xen-estate.
  await resetBare(true);
  grubCfgOriginal = await direct(`cat ${GRUB_CFG}`);
});

after(async () => {
  await relay?.stop();
  await sshd?.stop();
  fs.rmSync(base, { recursive: true, force: true });
});

/** Runs `script` as root straight to sshd (not through the relay). */
function direct(script: string): Promise<string> {
  return runDirect(sshd, key.privateKey, "root", script);
}

/** A context over a fresh pool (a new `pulumi up` process) through the relay, its scripts finding the stubs. */
function freshContext(): Context {
  return hostContext(withStubs(relay.freshHost(sshd.hostKey.fingerprint, key.privateKey), stubs));
}

interface Boot {
  memMiB: number;
  vcpus: number;
  xenArgs?: string;
  kernelArgs: string;
  bridge: string;
  stopSeconds: number;
}
const FIRST: Boot = {
  memMiB: 1024,
  vcpus: 2,
  kernelArgs: "console=hvc0",
  bridge: "xenbr0",
  stopSeconds: 300,
};
const SECOND: Boot = {
  memMiB: 2048,
  vcpus: 4,
  xenArgs: "console=com1 com1=115200,8n1",
  kernelArgs: "console=hvc0 earlyprintk=xen",
  bridge: "br-guests",
  stopSeconds: 600,
};

function inputs(b: Boot): Dom0XenBootInputs {
  return checked<Dom0XenBootInputs>("Dom0XenBoot", {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: sshd.hostKey.fingerprint },
    credentials: { privateKey: key.privateKey },
    xenEstateVersion: VERSION,
    dom0MemMiB: b.memMiB,
    dom0Vcpus: b.vcpus,
    ...(b.xenArgs ? { xenArgs: b.xenArgs } : {}),
    dom0KernelArgs: b.kernelArgs,
    bridge: b.bridge,
    stopSeconds: b.stopSeconds,
    onDelete: "restore",
  });
}

/** Xen's command line as `b` declares it: dom0's memory fixed, its vCPUs, the extra words. */
const commandLineOf = (b: Boot): string =>
  [
    `dom0_mem=${b.memMiB}M,max:${b.memMiB}M`,
    `dom0_max_vcpus=${b.vcpus}`,
    ...(b.xenArgs ? [b.xenArgs] : []),
  ].join(" ");

/**
 * The server as the installer and the Xen package left it: GRUB's settings and the package's drop-in, its xl.conf
 * and xendomains, a kernel and Xen's image under /boot, nothing of ours (and, when `regenerate`, grub.cfg made from
 * those settings; otherwise the one made before the first run is put back).
 */
async function resetBare(regenerate = false): Promise<void> {
  await direct(
    [
      `rm -rf -- ${BACKUP_ROOT} /etc/xen/auto`,
      `rm -f -- ${GRUB_XEN}`,
      `mkdir -p /etc/default/grub.d /etc/xen`,
      `printf '%s' ${shellQuote(GRUB_DEFAULTS)} > /etc/default/grub`,
      `printf '%s' ${shellQuote(XEN_GRUB_CFG)} > /etc/default/grub.d/xen.cfg`,
      `printf '%s' ${shellQuote(XL_CONF_ORIGINAL)} > ${XL_CONF}`,
      `printf '%s' ${shellQuote(XENDOMAINS_ORIGINAL)} > ${XENDOMAINS}`,
      `rm -rf /boot/grub /boot/xen-* /boot/vmlinuz-*`,
      `: > /boot/vmlinuz-6.1.0-28-amd64`,
      `: > /boot/xen-4.17-amd64.gz`,
      regenerate
        ? `PATH=${shellQuote(stubs)}:"$PATH" update-grub >/dev/null 2>&1`
        : `mkdir -p /boot/grub && printf '%s' ${shellQuote(grubCfgOriginal)} > ${GRUB_CFG}`,
    ].join("\n"),
  );
}

/** Files as the host's sessions see them (null: absent), whether /etc/xen/auto is a directory, and the temp files
 * left beside ours, in one SSH call. */
async function look(
  files: readonly string[],
): Promise<{ files: Map<string, string | null>; auto: boolean; temps: string }> {
  const host = await lookAtHost(
    direct,
    files,
    "find /etc/default /etc/xen -maxdepth 2 -name '.*.xen-estate.*'",
    ["/etc/xen/auto"],
  );
  return { files: host.files, auto: host.dirs.has("/etc/xen/auto"), temps: host.temps };
}

const original = (file: string): string => `${BACKUP_ROOT}${file}${ORIGINAL_SUFFIX}`;

/** Why grub.cfg does not boot Xen as `b` declares it, or undefined. */
function grubProblem(cfg: string, b: Boot): string | undefined {
  const lines = cfg.split("\n");
  const insmods = lines.filter((l) => l.startsWith("insmod "));
  if (insmods.join("|") !== "insmod part_gpt|insmod gzio")
    return `grub.cfg preloads ${JSON.stringify(insmods)}, not part_gpt then gzio once`;
  const defaults = lines.filter((l) => l.startsWith("set default="));
  if (defaults.join("|") !== `set default="${XEN_ENTRY}"`)
    return `grub.cfg's default: ${JSON.stringify(defaults)}`;
  const entries = lines.filter((l) => l.startsWith(`menuentry '${XEN_ENTRY}'`));
  if (entries.length !== 1) return `grub.cfg has ${entries.length} Xen entries`;
  // Words as GRUB splits them (20_linux_xen leaves two spaces where GRUB_CMDLINE_XEN is empty).
  const words = (l: string): string => l.trim().split(/\s+/).join(" ");
  const xen = lines.map(words).filter((l) => l.startsWith("multiboot2 "));
  const want = `multiboot2 /boot/xen-4.17-amd64.gz placeholder ${commandLineOf(b)}`;
  if (xen.length !== 1 || xen[0] !== want) return `grub.cfg boots Xen with ${JSON.stringify(xen)}`;
  const dom0 = lines.map(words).filter((l) => l.startsWith("module2 "));
  if (dom0.length !== 1 || !dom0[0]!.endsWith(` ro ${b.kernelArgs}`))
    return `grub.cfg boots dom0's kernel with ${JSON.stringify(dom0)}`;
  return undefined;
}

/** Why the host does not hold what `i` (made of `b`) declares, or undefined. */
async function convergedOn(b: Boot, outs: Dom0XenBootOutputs | undefined): Promise<string | undefined> {
  if (!outs) return "the last run returned no outputs";
  const i = inputs(b);
  const originals: Record<string, string> = {
    [XL_CONF]: XL_CONF_ORIGINAL,
    [XENDOMAINS]: XENDOMAINS_ORIGINAL,
  };
  const host = await look([
    ...Object.keys(i.files),
    GRUB_CFG,
    ...Object.keys(originals).map(original),
    original(GRUB_XEN),
  ]);
  const at = (f: string): string | null => host.files.get(f) ?? null;
  for (const [file, content] of Object.entries(i.files))
    if (at(file) !== content) return `${file} is not the declared one`;
  if (!at(GRUB_XEN)!.includes(`GRUB_CMDLINE_XEN_DEFAULT="${commandLineOf(b)}"`))
    return `${GRUB_XEN} does not declare Xen's command line ${commandLineOf(b)}`;
  const grub = grubProblem(at(GRUB_CFG) ?? "", b);
  if (grub) return grub;
  if (outs.commandLine !== commandLineOf(b)) return `it reports the command line ${outs.commandLine}`;
  if (!host.auto) return "/etc/xen/auto is not made";
  if (host.temps !== "") return `temp files left: ${host.temps}`;
  for (const [file, content] of Object.entries(originals))
    if (at(original(file)) !== content) return `${file}'s original is not kept as it was`;
  if (at(original(GRUB_XEN)) !== null) return `${GRUB_XEN} had no original, yet one is kept`;
  return undefined;
}

const scenarios = (): CutScenario<unknown>[] => {
  let outs: Dom0XenBootOutputs | undefined;
  let olds: Dom0XenBootOutputs;
  /** The host and the engine's state after a finished create of FIRST. */
  const resetCreated = async (): Promise<void> => {
    outs = undefined;
    await resetBare();
    olds = await dom0XenBootKind.create(freshContext(), inputs(FIRST), () => {});
  };
  return [
    {
      // A create records nothing until it returns: a failed one is made again.
      operation: "create",
      reset: async () => {
        outs = undefined;
        await resetBare();
      },
      run: async (ctx) => {
        outs = await dom0XenBootKind.create(ctx, inputs(FIRST), () => {});
        return outs;
      },
      converged: () => convergedOn(FIRST, outs),
    },
    {
      // A failed update is tried again with the same olds and news.
      operation: "update (memory, vCPUs, arguments, bridge)",
      reset: resetCreated,
      run: async (ctx) => {
        outs = await dom0XenBootKind.update(
          ctx,
          "127.0.0.1:xen-boot",
          olds,
          inputs(SECOND),
          planDiff("Dom0XenBoot", { ...olds }, { ...inputs(SECOND) }),
        );
        return outs;
      },
      converged: () => convergedOn(SECOND, outs),
    },
    {
      // onDelete "restore": the originals go back, the file xen-estate made goes to the backups, GRUB is made again.
      operation: "delete (restore)",
      reset: resetCreated,
      run: (ctx) => dom0XenBootKind.delete(ctx, "127.0.0.1:xen-boot", olds),
      converged: async () => {
        const host = await look([XL_CONF, XENDOMAINS, GRUB_XEN, GRUB_CFG]);
        if (host.files.get(XL_CONF) !== XL_CONF_ORIGINAL) return `${XL_CONF} is not the original`;
        if (host.files.get(XENDOMAINS) !== XENDOMAINS_ORIGINAL) return `${XENDOMAINS} is not the original`;
        if (host.files.get(GRUB_XEN) !== null) return `${GRUB_XEN} is still there`;
        if (host.files.get(GRUB_CFG) !== grubCfgOriginal)
          return "grub.cfg is not made again from the original settings";
        return host.temps === "" ? undefined : `temp files left: ${host.temps}`;
      },
    },
  ];
};

describeCutMatrix("Dom0XenBoot", scenarios(), {
  relay: () => relay,
  freshContext,
  timeoutMs: 20 * 60_000,
});
