/**
 * Dom0Packages (a Dom0Host concern) under cut connections (issue 15): a create (the package sources and apt's
 * settings, `apt-get update`, a dist-upgrade, the packages) and an update (another mirror, security mirror and proxy,
 * one more package) have the provider's SSH path dropped at each remote step in turn; the next run (as the engine
 * makes it) must converge: sources.list and apt's settings the declared ones, apt's package lists fetched from those
 * sources, every declared package installed once (those new in the update from the new sources), the dist-upgrade
 * made from the declared sources at create and not again at the update, the kernel and Xen it reports those under
 * /boot, the original sources.list kept once as it was before the first write, no temp file left. A delete with
 * `onDelete: "restore"` must leave the original sources.list back, the settings file xen-estate made gone, and every
 * package still installed (destroy removes none).
 *
 * Real: sshd, bash, the files in an overlay of this machine's /etc (a private mount namespace, as a host's own
 * sshd sees it: test/support/sshd.ts), the backups, the host lock. /boot is a directory of this test, bound over
 * /boot in that namespace by a session of the sshd before the first run (startHostOwnSshd binds no /boot; the
 * stubs refuse to run unless /boot is that directory). Simulated (test/support/stub-commands.ts's way, on the PATH
 * of the scripts): `apt-get` (a real update, upgrade or install would change this machine), which records what it
 * was asked in this test's directory: the sources and apt settings each `update` fetched the lists from, each
 * dist-upgrade and the lists it used, each package installed and the lists it came from, and Xen's image put under
 * /boot when `xen-system-amd64` is installed, as the real package's hypervisor does. `dpkg-query` is not stubbed:
 * only `read` asks it, and the matrix drives create, update and delete.
 */
import { after, before } from "node:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { BACKUP_ROOT, hostContext, shellQuote, VERSION, type Context } from "../../provider";
import {
  dom0PackagesKind,
  type Dom0PackagesInputs,
  type Dom0PackagesOutputs,
} from "../../provider/resources/dom0-packages";
import { APT_CONF, DEBIAN_SOURCES } from "../../provider/resources/dom0-packages/plan";
import { planDiff } from "../../provider/framework/plan";
import { ORIGINAL_SUFFIX } from "../../provider/remote/files";
import { checked } from "../support/checked";
import { CutRelay, describeCutMatrix, lookAtHost, type CutScenario } from "../support/cut-matrix";
import { withStubs } from "../support/stub-commands";
import { freePort, generateKey, runDirect, startHostOwnSshd, type KeyPair, type Sshd } from "../support/sshd";

/** The sources the installer wrote (Hetzner's installimage points at its own mirror). */
const SOURCES_ORIGINAL = [
  "deb http://mirror.hetzner.com/debian/packages bookworm main contrib non-free non-free-firmware",
  "deb http://mirror.hetzner.com/debian/security bookworm-security main contrib non-free non-free-firmware",
  "deb http://mirror.hetzner.com/debian/packages bookworm-updates main contrib non-free non-free-firmware",
  "",
].join("\n");
/** The kernel the installer put under /boot, and the image the Xen package adds. */
const KERNEL = "6.1.0-28-amd64";
const XEN_IMAGE = "xen-4.17-amd64.gz";
/** The mark of this test's /boot: the stubs write under /boot only where it is. */
const SANDBOX_MARK = ".xecut-boot-sandbox";

/** What `apt-get` was asked, as the stub records it. */
const APT_OPTIONS = [
  "-q -y",
  "-o DPkg::Lock::Timeout=600",
  "-o APT::Status-Fd=2",
  "-o Dpkg::Options::=--force-confdef",
  "-o Dpkg::Options::=--force-confold",
].join(" ");
const APT_WORDS = APT_OPTIONS.split(" ").length;

let base: string;
let key: KeyPair;
let sshd: Sshd;
let relay: CutRelay;
let stubs: string;
/** The simulated apt: the lists' sources (`lists`), the packages installed (`installed`: `PKG<TAB>LISTS-SHA`), the
 * dist-upgrades (`upgrades`: a `LISTS-SHA` line each). */
const aptState = (file: "lists" | "installed" | "upgrades"): string => path.join(base, "apt", file);
const boot = (): string => path.join(base, "boot");

const sha256 = (s: string): string => createHash("sha256").update(s).digest("hex");
/** What the stub's `apt-get update` records: the sources and apt's settings it fetched the lists with. */
const listsFrom = (sources: string, aptConf: string): string => `${sources}--\n${aptConf}`;

before(async () => {
  base = fs.mkdtempSync("/dev/shm/xecut-packages-");
  key = await generateKey(base, "client");
  sshd = await startHostOwnSshd(base, { authorizedKeys: [key.publicKey], port: await freePort() });
  relay = new CutRelay(sshd.host, sshd.port);
  await relay.start();
  fs.mkdirSync(path.join(base, "apt"));
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
  const reject = (what: string): string => `{ echo "apt-get stub: ${what}" >&2; exit 1; }`;
  stub("apt-get", [
    `[ -f /boot/${SANDBOX_MARK} ] || ${reject("/boot is not the test's: refusing")}`,
    `[ "\${DEBIAN_FRONTEND:-}" = noninteractive ] || ${reject("DEBIAN_FRONTEND is not noninteractive: apt would ask")}`,
    `[ $# -gt ${APT_WORDS} ] && [ "\${*:1:${APT_WORDS}}" = ${shellQuote(APT_OPTIONS)} ] || ${reject(`unexpected: $*`)}`,
    `shift ${APT_WORDS}`,
    `lists=$(sha256sum < ${aptState("lists")} | cut -d' ' -f1)`,
    `case "$*" in`,
    // The lists come from the sources and settings as they are now.
    `  update) { cat /etc/apt/sources.list; echo --; cat ${APT_CONF} 2>/dev/null || true; } > ${aptState("lists")}.new`,
    `          mv -f ${aptState("lists")}.new ${aptState("lists")} ;;`,
    `  dist-upgrade) echo "$lists" >> ${aptState("upgrades")} ;;`,
    `  "install -- "?*)`,
    `    shift 2`,
    `    for p in "$@"; do`,
    `      [[ "$p" =~ ^[a-z0-9][a-z0-9+.-]*$ ]] || ${reject(`not a package name: $p`)}`,
    // Installed already: apt says so and leaves it.
    `      cut -f1 ${aptState("installed")} | grep -qxF -- "$p" || printf '%s\\t%s\\n' "$p" "$lists" >> ${aptState("installed")}`,
    `      [ "$p" != xen-system-amd64 ] || : > /boot/${XEN_IMAGE}`,
    `    done ;;`,
    `  *) ${reject(`unexpected: $*`)} ;;`,
    `esac`,
  ]);
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

function inputs(o: {
  mirror: string;
  securityMirror: string;
  proxy?: string;
  packages: string[];
}): Dom0PackagesInputs {
  return checked<Dom0PackagesInputs>("Dom0Packages", {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: sshd.hostKey.fingerprint },
    credentials: { privateKey: key.privateKey },
    xenEstateVersion: VERSION,
    distribution: "debian",
    release: "bookworm",
    upgrade: true,
    onDelete: "restore",
    ...o,
  });
}
const FIRST_PACKAGES = ["xen-system-amd64", "bridge-utils", "nftables"];
const SECOND_PACKAGES = [...FIRST_PACKAGES, "smartmontools"];
const FIRST = (): Dom0PackagesInputs =>
  inputs({
    mirror: "http://deb.debian.org/debian",
    securityMirror: "http://deb.debian.org/debian-security",
    packages: FIRST_PACKAGES,
  });
const SECOND = (): Dom0PackagesInputs =>
  inputs({
    mirror: "http://mirror.hetzner.com/debian/packages",
    securityMirror: "http://mirror.hetzner.com/debian/security",
    proxy: "http://apt-cache.example.org:3142",
    packages: SECOND_PACKAGES,
  });

/** The server as the installer left it: its own sources.list, lists fetched from it, its kernel, nothing of ours. */
async function resetBare(): Promise<void> {
  await direct(
    [
      `rm -rf -- ${BACKUP_ROOT}`,
      `rm -f -- ${APT_CONF}`,
      `mkdir -p /etc/apt`,
      `printf '%s' ${shellQuote(SOURCES_ORIGINAL)} > ${DEBIAN_SOURCES}`,
      `rm -f /boot/xen-* /boot/vmlinuz-*`,
      `: > /boot/vmlinuz-${KERNEL}`,
    ].join("\n"),
  );
  fs.writeFileSync(aptState("lists"), listsFrom(SOURCES_ORIGINAL, ""));
  fs.writeFileSync(aptState("installed"), "");
  fs.writeFileSync(aptState("upgrades"), "");
}

/** Files as the host's sessions see them (null: absent), and the temp files left beside ours, in one SSH call. */
function look(files: readonly string[]): ReturnType<typeof lookAtHost> {
  return lookAtHost(direct, files, `find /etc/apt -maxdepth 2 -name '.*.xen-estate.*'`);
}

const original = (file: string): string => `${BACKUP_ROOT}${file}${ORIGINAL_SUFFIX}`;

/** The stub's record of installed packages: package → the sha256 of the lists it came from (each line once). */
function installed(): { from: Map<string, string>; lines: number } {
  const lines = fs.readFileSync(aptState("installed"), "utf8").split("\n").filter(Boolean);
  return { from: new Map(lines.map((l) => l.split("\t") as [string, string])), lines: lines.length };
}

/**
 * Why the host does not hold what `i` declares, or undefined. `earlier` are the packages installed before this
 * operation and the lists they came from; `upgradesBefore`, the dist-upgrades made before it (null: the operation
 * upgrades, from the declared sources).
 */
async function convergedOn(
  i: Dom0PackagesInputs,
  outs: Dom0PackagesOutputs | undefined,
  earlier: Map<string, string>,
  upgradesBefore: string | null,
): Promise<string | undefined> {
  if (!outs) return "the last run returned no outputs";
  const host = await look([...Object.keys(i.files), original(DEBIAN_SOURCES), original(APT_CONF)]);
  const at = (f: string): string | null => host.files.get(f) ?? null;
  for (const [file, content] of Object.entries(i.files))
    if (at(file) !== content) return `${file} is not the declared one`;
  const lists = fs.readFileSync(aptState("lists"), "utf8");
  if (lists !== listsFrom(i.files[DEBIAN_SOURCES]!, i.files[APT_CONF]!))
    return "apt's lists were not fetched from the declared sources and settings";
  const got = installed();
  if (got.lines !== got.from.size) return "a package is recorded installed twice";
  const want = new Map(i.packages.map((p) => [p, earlier.get(p) ?? sha256(lists)]));
  const show = (m: Map<string, string>): string =>
    JSON.stringify([...m].map(([p, l]) => `${p}@${l.slice(0, 8)}`).sort());
  if (show(got.from) !== show(want))
    return `installed ${show(got.from)}, not ${show(want)} (package@lists it came from)`;
  const upgrades = fs.readFileSync(aptState("upgrades"), "utf8");
  if (upgradesBefore === null) {
    const made = upgrades.split("\n").filter(Boolean);
    if (made.length === 0) return "no dist-upgrade was made";
    if (made.some((l) => l !== sha256(lists)))
      return "a dist-upgrade used other lists than the declared sources'";
  } else if (upgrades !== upgradesBefore) return "a dist-upgrade was made again";
  if (outs.kernel !== KERNEL || outs.xen !== XEN_IMAGE)
    return `it reports kernel ${outs.kernel} and Xen ${outs.xen}, not ${KERNEL} and ${XEN_IMAGE}`;
  if (host.temps !== "") return `temp files left: ${host.temps}`;
  if (at(original(DEBIAN_SOURCES)) !== SOURCES_ORIGINAL)
    return "sources.list's original is not kept as it was";
  if (at(original(APT_CONF)) !== null) return `${APT_CONF} had no original, yet one is kept`;
  return undefined;
}

const scenarios = (): CutScenario<unknown>[] => {
  let outs: Dom0PackagesOutputs | undefined;
  let olds: Dom0PackagesOutputs;
  let created: { installed: string; upgrades: string };
  /** The host and the engine's state after a finished create of FIRST. */
  const resetCreated = async (): Promise<void> => {
    outs = undefined;
    await resetBare();
    olds = await dom0PackagesKind.create(freshContext(), FIRST(), () => {});
    created = {
      installed: fs.readFileSync(aptState("installed"), "utf8"),
      upgrades: fs.readFileSync(aptState("upgrades"), "utf8"),
    };
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
        outs = await dom0PackagesKind.create(ctx, FIRST(), () => {});
        return outs;
      },
      converged: () => convergedOn(FIRST(), outs, new Map(), null),
    },
    {
      // A failed update is tried again with the same olds and news.
      operation: "update (mirrors, proxy, packages)",
      reset: resetCreated,
      run: async (ctx) => {
        outs = await dom0PackagesKind.update(
          ctx,
          "127.0.0.1:packages",
          olds,
          SECOND(),
          planDiff("Dom0Packages", { ...olds }, { ...SECOND() }),
        );
        return outs;
      },
      converged: () => {
        const before = new Map(
          created.installed
            .split("\n")
            .filter(Boolean)
            .map((l) => l.split("\t") as [string, string]),
        );
        return convergedOn(SECOND(), outs, before, created.upgrades);
      },
    },
    {
      // onDelete "restore": the original sources go back, the settings file xen-estate made goes to the backups.
      operation: "delete (restore)",
      reset: resetCreated,
      run: (ctx) => dom0PackagesKind.delete(ctx, "127.0.0.1:packages", olds),
      converged: async () => {
        const host = await look([DEBIAN_SOURCES, APT_CONF]);
        if (host.files.get(DEBIAN_SOURCES) !== SOURCES_ORIGINAL)
          return `${DEBIAN_SOURCES} is not the original`;
        if (host.files.get(APT_CONF) !== null) return `${APT_CONF} is still there`;
        if (fs.readFileSync(aptState("installed"), "utf8") !== created.installed)
          return "the installed packages changed: destroy removes none";
        if (fs.readFileSync(aptState("upgrades"), "utf8") !== created.upgrades)
          return "destroy ran a dist-upgrade";
        return host.temps === "" ? undefined : `temp files left: ${host.temps}`;
      },
    },
  ];
};

describeCutMatrix("Dom0Packages", scenarios(), {
  relay: () => relay,
  freshContext,
  timeoutMs: 20 * 60_000,
});
