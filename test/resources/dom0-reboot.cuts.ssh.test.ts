/**
 * Dom0Reboot (a Dom0Host concern) under cut connections (issue 15): a create (the first reboot into Xen and the
 * bridge, owed once Dom0Packages installed Xen, Dom0XenBoot wrote its boot settings and Dom0Network the bridge) and
 * an update (dom0's memory and the network changed: a /32 with its gateway on the link, IPv6) have the provider's
 * SSH path dropped at each remote step in turn; the next run (as the engine makes it, see {@link nextUpReaches})
 * must converge on one reboot, not two: the host booted once since the reset and has no reboot left scheduled, it
 * runs Xen with the declared dom0_mem, the bridge carries the uplink with the NIC's MAC and holds the declared
 * addresses and routes, the forwarding and bridge-netfilter sysctls are the declared ones, SSH answers from that
 * boot, and the outputs name it with nothing pending. Delete makes no remote step (the host keeps running as it
 * is): it has no matrix.
 *
 * Real: sshd, bash, the kind's probe and reboot scripts as they are, the files in an overlay of this machine's /etc
 * (a private mount namespace), Dom0Network's own create and update before the reboot (its `look at`, its files,
 * `sysctl -p`); the network: a namespace of this test whose uplink is one end of a veth pair with the NIC's MAC,
 * where the bridge, its addresses and routes (the interfaces file's own post-up lines run as written) and the
 * sysctls are kernel state that the provider's SSH path (and the relay that cuts it) goes through; the uptime (each
 * boot starts a time namespace, so /proc/uptime counts from that boot); the end of every process of the old boot
 * (each boot is a PID namespace: the reboot kills all of it, a `sleep 2; reboot` still pending included).
 *
 * SIMULATED, because this machine can neither reboot nor run Xen: the reboot and the boot. `reboot` is a stand-in on
 * the host's own PATH (/usr/local/sbin, so that the fresh connections the kind opens while it waits find the
 * stand-ins too) that asks this test for a reboot; a call while one is under way does nothing more, as on a real
 * host. This test then cuts the power (SIGKILL: the boot's PID namespace ends at once), waits
 * {@link DOWNTIME_MS}, and boots: a fresh network namespace (the network state after a reset: no bridge, no
 * address, default sysctls), the host's own /etc/sysctl.d files applied (as systemd-sysctl; net.* keys only, which
 * are the namespace's own), `ifup -a` by {@link ifupAll} (a SIMULATOR of ifupdown for the stanzas and options
 * xen-estate's interfaces file uses; it refuses anything else), a new boot id (a file bound over
 * /proc/sys/kernel/random/boot_id), Xen when the bootloader would boot it (Dom0XenBoot's
 * /etc/default/grub.d/xen-estate.cfg and a /boot/xen-*.gz are there: /proc/xen/capabilities then says control_d, and
 * the `xl` stand-in answers `xl info` and `xl list 0` with that command line and its dom0_mem), then sshd. /proc in
 * the host's sessions is a tmpfs (this machine's has no /proc/xen and none can be made there) linking to the boot's
 * own procfs, /proc/sys bound from it (sysctl wants its real path); its pid directories are absent, so `ps` does not
 * work there. `modprobe` and `ifquery` are stand-ins too, for Dom0Network before the reboot (as in
 * test/resources/dom0-network.cuts.ssh.test.ts). What a real reboot does (GRUB, Xen, ifupdown bringing the bridge up
 * with the NIC's MAC, SSH back after it) is proven by the lab's walkthrough (test/examples/walkthrough.lab.test.ts).
 */
import { after, before } from "node:test";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import {
  Checker,
  dom0NetworkKind,
  dom0RebootKind,
  hostContext,
  render,
  resolveConnection,
  shellQuote,
  SshPool,
  VERSION,
  type Context,
  type Dom0NetworkInputs,
  type Dom0NetworkOutputs,
  type Dom0RebootInputs,
  type Dom0RebootOutputs,
} from "../../provider";
import { SYSCTL } from "../../provider/resources/dom0-network/plan";
import { GRUB_XEN } from "../../provider/resources/dom0-xen-boot/plan";
import { planDiff } from "../../provider/framework/plan";
import { sha256 } from "../../provider/remote/files";
import { checked } from "../support/checked";
import { CutRelay, describeCutMatrix, type CutScenario } from "../support/cut-matrix";
import { removeVethNamespace } from "../support/netns";
import { generateKey, runDirect, SESSION_ENV, tcpOpens, type KeyPair } from "../support/sshd";

const run = promisify(execFile);
const sh = (cmd: string): Promise<{ stdout: string }> => run("bash", ["-c", cmd]);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const id = (process.pid % 200) + 20;
const ns = `xecut-r-${process.pid}`;
const hostIf = `xecr${process.pid % 100000}`;
const gateway = `10.236.${id}.1`;
const inside = `10.236.${id}.2`;
const UPLINK = "enp1s0";
const BRIDGE = "xenbr0";
const MAC = `52:54:00:36:${id.toString(16).padStart(2, "0")}:02`;
/** How long the simulated host stays off between its shutdown and its boot. */
const DOWNTIME_MS = 2000;

/** /etc/network/interfaces as installimage leaves it: the uplink holds the address. */
const INSTALLER_INTERFACES = [
  "### installimage",
  "source /etc/network/interfaces.d/*",
  "",
  "auto lo",
  "iface lo inet loopback",
  "",
  `auto ${UPLINK}`,
  `iface ${UPLINK} inet static`,
  `\taddress ${inside}/24`,
  `\tgateway ${gateway}`,
  "",
].join("\n");

let base: string;
let key: KeyPair;
let hostKey: KeyPair;
let relay: CutRelay;
const dir = (...p: string[]): string => path.join(base, ...p);
const shutdownMarker = (): string => dir("power", "shutdown");

// ---------------------------------------------------------------------------------------------------------------
// The simulated host: its power, its boots.

interface Boot {
  bootId: string;
  why: "power on" | "reboot";
  /** Xen's command line, or null for a boot without Xen. */
  xenCommandLine: string | null;
  /** This boot's init (sshd), as this machine numbers it. */
  initPid: number;
}

/** The running boot's process (`unshare`, whose child is the boot's init), or undefined while the host is off. */
let running: { child: ChildProcess; exited: Promise<unknown> } | undefined;
const boots: Boot[] = [];
let chain: Promise<void> = Promise.resolve();
let failure: Error | undefined;
let rebooting = false;
let watcher: NodeJS.Timeout | undefined;

/** Runs `f` after whatever the simulated host does now; a failure is kept for {@link settled}. */
function queue(f: () => Promise<void>): Promise<void> {
  chain = chain.then(f).catch((err: unknown) => {
    failure ??= err as Error;
  });
  return chain;
}

/** Waits until the simulated host is done with what it does (a reboot, a power cycle); throws what failed there. */
async function settled(): Promise<void> {
  await chain;
  if (failure) throw failure;
}

/** Whether `pid` still runs (a zombie no longer does). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/**
 * Cuts the power: the boot's `unshare` is killed, the kernel kills its child (the boot's init, `--kill-child`) and
 * with it every process of the boot's PID namespace at once (sessions, a pending `sleep 2; reboot`); the boot's
 * mounts go with its mount namespace.
 */
async function powerOff(): Promise<void> {
  const boot = boots.at(-1);
  if (running) {
    running.child.kill("SIGKILL");
    await running.exited;
    running = undefined;
    const deadline = Date.now() + 30_000;
    while (boot && alive(boot.initPid)) {
      if (Date.now() > deadline) throw new Error(`the boot's init ${boot.initPid} did not end`);
      await sleep(50);
    }
  }
  // No process of the old boot is left to ask for another reboot.
  fs.rmSync(shutdownMarker(), { recursive: true, force: true });
}

/** A file of the host's /etc (the overlay's upper layer over this machine's /etc), read while the host is off. */
function hostEtc(rel: string): string | null {
  const upper = dir("etc-upper", rel);
  if (fs.existsSync(upper)) {
    const st = fs.lstatSync(upper);
    return st.isFile() ? fs.readFileSync(upper, "utf8") : null; // a whiteout: deleted in the overlay
  }
  return fs.existsSync(`/etc/${rel}`) && fs.statSync(`/etc/${rel}`).isFile()
    ? fs.readFileSync(`/etc/${rel}`, "utf8")
    : null;
}

/** Boots the host: the network as it comes up at boot, a new boot id, Xen when the bootloader finds it, sshd. */
async function powerOn(why: Boot["why"]): Promise<void> {
  const bootDir = dir("power", `boot-${boots.length + 1}`);
  fs.mkdirSync(bootDir);
  const bootId = randomUUID();
  fs.writeFileSync(path.join(bootDir, "boot_id"), `${bootId}\n`);
  // The hardware after a reset: a fresh network namespace with the NIC (its MAC burnt in), nothing configured.
  const boot = [
    removeVethNamespace({ ns, hostIf }),
    "set -e",
    `ip netns add ${ns}`,
    `ip link add ${hostIf} type veth peer name ${UPLINK} netns ${ns}`,
    `ip addr add ${gateway}/24 dev ${hostIf}`,
    `ip link set ${hostIf} up`,
    `ip -n ${ns} link set ${UPLINK} address ${MAC}`,
  ];
  // systemd-sysctl: the host's own sysctl files (those written on it: this machine's are not the host's).
  const sysctlDir = dir("etc-upper", "sysctl.d");
  for (const f of fs.existsSync(sysctlDir) ? fs.readdirSync(sysctlDir).sort() : []) {
    const file = path.join(sysctlDir, f);
    if (!f.endsWith(".conf") || !fs.lstatSync(file).isFile()) continue;
    const keys = fs
      .readFileSync(file, "utf8")
      .split("\n")
      .filter((l) => /^\s*[a-z]/.test(l))
      .map((l) => l.split("=")[0]!.trim());
    const foreign = keys.filter((k) => !k.startsWith("net."));
    if (foreign.length > 0)
      throw new Error(
        `the simulated boot applies net.* keys only (per namespace); ${f} sets ${foreign.join(", ")}`,
      );
    boot.push(`ip netns exec ${ns} sysctl -q -p ${shellQuote(file)}`);
  }
  const interfaces = hostEtc("network/interfaces");
  if (interfaces === null) throw new Error("the host has no /etc/network/interfaces: it would boot offline");
  boot.push(...ifupAll(interfaces));
  await sh(boot.join("\n"));
  // The bootloader: the Xen entry when Dom0XenBoot's settings and a Xen image are there.
  const grub = hostEtc(GRUB_XEN.slice("/etc/".length));
  const xenImage = fs.readdirSync(dir("boot")).some((f) => /^xen-.*\.gz$/.test(f));
  let xenCommandLine: string | null = null;
  if (grub !== null && xenImage) {
    xenCommandLine = /^GRUB_CMDLINE_XEN_DEFAULT="([^"]*)"$/m.exec(grub)?.[1] ?? "";
    const mem = /(?:^|\s)dom0_mem=(\d+)M/.exec(xenCommandLine)?.[1];
    fs.writeFileSync(path.join(bootDir, "xen-commandline"), `${xenCommandLine}\n`);
    // xl reports dom0's allocation a little under dom0_mem; all of the machine's memory without it.
    fs.writeFileSync(path.join(bootDir, "dom0-mem"), `${mem ? Number(mem) - 4 : 3968}\n`);
  }
  const uptime = Math.floor(Number(fs.readFileSync("/proc/uptime", "utf8").split(" ")[0]));
  const log = fs.openSync(path.join(bootDir, "sshd.log"), "a");
  const child = spawn(
    "ip",
    [
      "netns",
      "exec",
      ns,
      ...bootWrap(bootDir, uptime),
      "/usr/sbin/sshd",
      "-D",
      "-e",
      "-f",
      dir("sshd_config"),
    ],
    { stdio: ["ignore", log, log] },
  );
  fs.closeSync(log);
  const exited = new Promise((r) => child.once("exit", r));
  running = { child, exited };
  // A boot on a busy machine takes its time: the kind waits for it (timeoutSeconds), and so does this.
  const deadline = Date.now() + 120_000;
  let up = false;
  while (!up) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline)
      throw new Error(
        `the simulated boot ${bootId} brought no sshd up: ${fs.readFileSync(path.join(bootDir, "sshd.log"), "utf8")}`,
      );
    up = await tcpOpens(inside, 22, undefined, 1000);
    if (!up) await sleep(200);
  }
  const initPid = Number(fs.readFileSync(path.join(bootDir, "init-pid"), "utf8"));
  boots.push({ bootId, why, xenCommandLine, initPid });
}

/**
 * The words that start a boot's init (then sshd, as its PID 1): new mount, PID and time namespaces (uptime counts
 * from now), the host's /etc, /var/lib/xen-estate, /var/backups, /boot and /usr/local (the stand-ins), a fresh
 * /run, and a /proc with this boot's id and, under Xen, /proc/xen.
 */
function bootWrap(bootDir: string, uptime: number): string[] {
  const b = (p: string): string => shellQuote(path.join(bootDir, p));
  const script = [
    "set -e",
    // This machine's pid of the init (its /proc is still this machine's here): the power switch.
    `read -r pid _ < /proc/self/stat; echo "$pid" > ${b("init-pid")}`,
    `mount -t overlay xecut-etc -o lowerdir=/etc,upperdir=${dir("etc-upper")},workdir=${dir("etc-work")} /etc`,
    `mount -t tmpfs xecut-run /run`,
    `mkdir -p /run/sshd /run/lock /run/xe-proc /run/xe-boot /var/lib/xen-estate`,
    `mount --bind ${dir("var-lib")} /var/lib/xen-estate`,
    `mount --bind ${dir("backups")} /var/backups`,
    `mount --bind ${dir("boot")} /boot`,
    `mount --bind ${dir("usr-local")} /usr/local`,
    `mount -t proc xecut-proc /run/xe-proc`,
    `mount -t tmpfs xecut-host-proc /proc`,
    `shopt -s extglob`,
    `ln -s /run/xe-proc/!([0-9]*|sys) /proc/`,
    // Bound, not linked: sysctl refuses a path that does not resolve under /proc/sys.
    `mkdir /proc/sys`,
    `mount --bind /run/xe-proc/sys /proc/sys`,
    `mount --bind ${b("boot_id")} /proc/sys/kernel/random/boot_id`,
    `if [ -f ${b("xen-commandline")} ]; then`,
    `  mkdir /proc/xen; echo control_d > /proc/xen/capabilities`,
    `  cp ${b("xen-commandline")} ${b("dom0-mem")} /run/xe-boot/`,
    `fi`,
    `exec "$@"`,
  ].join("\n");
  return [
    "unshare",
    "-m",
    "-p",
    "-f",
    "--kill-child",
    "--propagation",
    "private",
    "--time",
    "--boottime",
    `-${uptime}`,
    "bash",
    "-c",
    script,
    "xecut-boot",
  ];
}

/** The options of an interfaces stanza the simulated ifupdown knows. */
const IFUPDOWN_OPTIONS = new Set([
  "address",
  "gateway",
  "post-up",
  "pre-down",
  "bridge_ports",
  "bridge_stp",
  "bridge_fd",
  "bridge_maxwait",
  "hwaddress",
]);

/**
 * `ifup -a` at boot, SIMULATED (ifupdown is not installed here): brings up each `auto` interface's stanzas in
 * order with `ip` in the namespace: loopback; static IPv4 and IPv6 (address, gateway); a bridge (`bridge_ports`,
 * `bridge_stp`, `bridge_fd`, `hwaddress ether`) with its ports enslaved; the `post-up` lines run as written (`pre-down`
 * is for ifdown). Any other method, option or a sourced file refuses: nothing it does not know passes as done.
 * Returns the commands, for the boot to run.
 */
function ifupAll(interfaces: string): string[] {
  const stanzas: { name: string; family: string; method: string; options: [string, string][] }[] = [];
  const auto: string[] = [];
  for (const raw of interfaces.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const word = line.split(/\s+/)[0]!;
    const rest = line.slice(word.length).trim();
    if (word === "auto") auto.push(...rest.split(/\s+/));
    else if (word === "iface") {
      const [name, family, method] = rest.split(/\s+/);
      stanzas.push({ name: name!, family: family!, method: method!, options: [] });
    } else if (word === "source") {
      const d = rest.replace(/\/\*$/, "");
      const rel = d.slice("/etc/".length);
      const upper = dir("etc-upper", rel);
      const sourced = [
        ...(fs.existsSync(upper) ? fs.readdirSync(upper) : []),
        ...(fs.existsSync(d) ? fs.readdirSync(d) : []),
      ];
      if (!rest.endsWith("/*") || !d.startsWith("/etc/") || sourced.length > 0)
        throw new Error(`the simulated ifupdown does not read sourced files (source ${rest})`);
    } else {
      const s = stanzas.at(-1);
      if (!s || !IFUPDOWN_OPTIONS.has(word))
        throw new Error(`the simulated ifupdown does not know \`${line}\``);
      s.options.push([word, rest]);
    }
  }
  const cmds: string[] = [];
  const ipn = (args: string): string => `ip -n ${ns} ${args}`;
  for (const name of auto)
    for (const s of stanzas.filter((x) => x.name === name)) {
      const opt = (k: string): string[] => s.options.filter(([o]) => o === k).map(([, v]) => v);
      const six = s.family === "inet6";
      if (s.method === "loopback" && !six) {
        cmds.push(ipn(`link set ${name} up`));
        continue;
      }
      if (s.method !== "static" || (s.family !== "inet" && !six))
        throw new Error(`the simulated ifupdown does not bring up \`iface ${name} ${s.family} ${s.method}\``);
      const ports = opt("bridge_ports").join(" ").split(/\s+/).filter(Boolean);
      if (ports.length > 0) {
        const stp = opt("bridge_stp")[0] === "on" ? 1 : 0;
        const fd = Number(opt("bridge_fd")[0] ?? "15") * 100;
        cmds.push(ipn(`link add ${name} type bridge stp_state ${stp} forward_delay ${fd}`));
      }
      for (const hw of opt("hwaddress")) {
        const m = /^ether\s+(\S+)$/.exec(hw);
        if (!m) throw new Error(`the simulated ifupdown does not know \`hwaddress ${hw}\``);
        cmds.push(ipn(`link set ${name} address ${m[1]}`));
      }
      for (const p of ports) cmds.push(ipn(`link set ${p} master ${name}`), ipn(`link set ${p} up`));
      cmds.push(ipn(`link set ${name} up`));
      for (const a of opt("address"))
        cmds.push(ipn(`${six ? "-6 " : ""}addr add ${a} dev ${name}${six ? " nodad" : ""}`));
      for (const g of opt("gateway"))
        cmds.push(ipn(`${six ? "-6 " : ""}route add default via ${g} dev ${name}`));
      for (const c of opt("post-up")) cmds.push(`ip netns exec ${ns} sh -c ${shellQuote(c)}`);
    }
  return cmds;
}

/** Watches for the `reboot` stand-in's request and reboots the host: power off, a pause, a boot. */
function watchForReboots(): void {
  watcher = setInterval(() => {
    if (rebooting || !fs.existsSync(shutdownMarker())) return;
    rebooting = true;
    void queue(async () => {
      // A power cycle that came first ended the boot that asked.
      if (!fs.existsSync(shutdownMarker())) return;
      await powerOff();
      await sleep(DOWNTIME_MS);
      await powerOn("reboot");
    }).finally(() => {
      rebooting = false;
    });
  }, 100);
}

/** Turns the host off, runs `whileOff` (its disk may be written then: nothing has it mounted), and boots it. */
async function powerCycle(whileOff: () => void): Promise<void> {
  await queue(async () => {
    await powerOff();
    whileOff();
    await powerOn("power on");
  });
  await settled();
}

/**
 * Why a reboot is still to come: one under way (or the host off), or a process of this boot that will ask for one
 * (the kind's `sleep 2; reboot`, the stand-in running); undefined when the host runs with none to come.
 */
function rebootPending(): string | undefined {
  if (rebooting || fs.existsSync(shutdownMarker())) return "a reboot is under way";
  const boot = boots.at(-1);
  if (!running || !boot || !alive(boot.initPid)) return "the host is off";
  const pidns = fs.readlinkSync(`/proc/${boot.initPid}/ns/pid`);
  for (const p of fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      if (fs.readlinkSync(`/proc/${p}/ns/pid`) !== pidns) continue;
      const cmdline = fs.readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0").join(" ");
      if (/(^|[\s;/])reboot(\s|$)/.test(cmdline))
        return `a reboot is still scheduled on the host (${cmdline.trim()})`;
    } catch {
      /* ended meanwhile */
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------

before(async () => {
  base = fs.mkdtempSync("/dev/shm/xecut-reboot-");
  for (const d of ["etc-upper", "etc-work", "var-lib", "backups", "boot", "power", "usr-local/sbin"])
    fs.mkdirSync(dir(d), { recursive: true, mode: 0o755 });
  key = await generateKey(base, "client");
  hostKey = await generateKey(base, "host_ed25519");
  // The running kernel's image, installed before this boot (nothing newer to boot into).
  fs.writeFileSync(dir("boot", `vmlinuz-${os.release()}`), "");
  fs.utimesSync(dir("boot", `vmlinuz-${os.release()}`), new Date(2026, 0, 1), new Date(2026, 0, 1));
  const stub = (name: string, body: string[]): void =>
    fs.writeFileSync(
      dir("usr-local", "sbin", name),
      ["#!/bin/bash", `# SIMULATOR (${path.basename(__filename)}): stands in for ${name}.`, ...body, ""].join(
        "\n",
      ),
      { mode: 0o755 },
    );
  stub("reboot", [
    `[ $# = 0 ] || { echo "reboot stub: unexpected: $*" >&2; exit 1; }`,
    // The first call starts the shutdown; a call while it is under way does nothing more, as on a real host.
    `mkdir ${shellQuote(shutdownMarker())} 2>/dev/null || exit 0`,
    `cat /proc/sys/kernel/random/boot_id > ${shellQuote(path.join(shutdownMarker(), "from-boot"))}`,
  ]);
  stub("xl", [
    `[ -r /proc/xen/capabilities ] || { echo "xl: this host does not run under Xen" >&2; exit 1; }`,
    `case "$*" in`,
    `  info) printf '%-23s: %s\\n' host "$(hostname)" release "$(uname -r)" xen_major 4 xen_minor 17 xen_extra .5 xen_commandline "$(cat /run/xe-boot/xen-commandline)" ;;`,
    `  "list 0") printf 'Name                                        ID   Mem VCPUs\\tState\\tTime(s)\\nDomain-0                                     0  %s     2     r-----      42.0\\n' "$(cat /run/xe-boot/dom0-mem)" ;;`,
    `  *) echo "xl stub: unexpected: $*" >&2; exit 1 ;;`,
    `esac`,
  ]);
  stub("modprobe", [
    `[ "$*" = br_netfilter ] || { echo "modprobe stub: unexpected: $*" >&2; exit 1; }`,
    `[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || { echo "modprobe: FATAL: Module br_netfilter not found" >&2; exit 1; }`,
  ]);
  stub("ifquery", [
    `case "$#:$1:$2" in 2:--interfaces=?*:--list) ;; *) echo "ifquery stub: unexpected: $*" >&2; exit 1 ;; esac`,
    `awk '$1 == "auto" { for (i = 2; i <= NF; i++) print $i }' "\${1#--interfaces=}"`,
  ]);
  fs.writeFileSync(dir("authorized_keys"), `${key.publicKey}\n`, { mode: 0o644 });
  fs.writeFileSync(
    dir("sshd_config"),
    [
      "Port 22",
      `ListenAddress ${inside}`,
      `HostKey ${hostKey.file}`,
      "PidFile /run/sshd.pid",
      `AuthorizedKeysFile ${dir("authorized_keys")}`,
      "StrictModes no",
      "UsePAM no",
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "LogLevel VERBOSE",
      "MaxStartups 100:30:200",
      SESSION_ENV,
      "",
    ].join("\n"),
  );
  await powerCycle(() => writeInstallerState());
  relay = new CutRelay(inside, 22);
  await relay.start();
  watchForReboots();
});

after(async () => {
  if (watcher) clearInterval(watcher);
  await chain;
  await relay?.stop();
  await powerOff().catch(() => undefined);
  await sh(removeVethNamespace({ ns, hostIf }));
  fs.rmSync(base, { recursive: true, force: true });
});

/** The host's disk as installimage leaves it (written while it is off): its interfaces file, nothing of ours. */
function writeInstallerState(): void {
  for (const d of ["etc-upper", "etc-work", "var-lib", "backups"])
    for (const f of fs.readdirSync(dir(d))) fs.rmSync(dir(d, f), { recursive: true, force: true });
  fs.mkdirSync(dir("etc-upper", "network"));
  fs.writeFileSync(dir("etc-upper", "network", "interfaces"), INSTALLER_INTERFACES);
  for (const f of fs.readdirSync(dir("boot"))) if (f.startsWith("xen-")) fs.rmSync(dir("boot", f));
}

/** Runs `script` as root straight to sshd (not through the relay). */
function direct(script: string): Promise<string> {
  return runDirect({ host: inside, port: 22, hostKey }, key.privateKey, "root", script);
}

/** Runs `f` with a context straight to sshd (not through the relay), over a pool closed afterwards. */
async function withDirect<T>(f: (ctx: Context) => Promise<T>): Promise<T> {
  const pool = new SshPool();
  try {
    const conn = resolveConnection(
      new Checker(),
      { host: inside, port: 22, hostKey: hostKey.fingerprint, dialErrorLimit: 6, perDialTimeout: 5 },
      { privateKey: key.privateKey },
    )!;
    return await f(hostContext(pool.host(conn)));
  } finally {
    await pool.close();
  }
}

/** A context over a fresh pool (a new `pulumi up` process) through the relay. The stand-ins are on the host's PATH. */
function freshContext(): Context {
  return hostContext(relay.freshHost(hostKey.fingerprint, key.privateKey));
}

/**
 * When the next `pulumi up` after a failed one reaches the host: seconds later (a new engine and provider process:
 * 3 s here, more than the 2 s the kind's reboot waits after its command returned), and once a reboot the failed run
 * left scheduled has happened and the host answers again (a run that dials a host still rebooting fails to connect:
 * a real reboot takes minutes; the run after it is the next one that does anything). Not modelled: a retry quick
 * enough to send its own commands in those 2 s, whose session the reboot would end under it.
 */
async function nextUpReaches(): Promise<void> {
  await sleep(3000);
  const deadline = Date.now() + 300_000;
  while (rebootPending() !== undefined) {
    if (Date.now() > deadline) throw new Error(`the host did not come back: ${rebootPending()}`);
    await sleep(200);
  }
  await settled();
}

function networkInputs(o: {
  address: { address: string; gateway: string };
  ipv6?: { address: string; gateway: string };
  proxyArp: boolean;
}): Dom0NetworkInputs {
  return checked<Dom0NetworkInputs>("Dom0Network", {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: hostKey.fingerprint },
    credentials: { privateKey: key.privateKey },
    xenEstateVersion: VERSION,
    distribution: "debian",
    uplink: UPLINK,
    mac: MAC,
    bridge: BRIDGE,
    address: o.address,
    ...(o.ipv6 ? { ipv6: o.ipv6 } : {}),
    proxyArp: o.proxyArp,
    bridgeNetfilter: true,
  });
}
const NET_FIRST = (): Dom0NetworkInputs =>
  networkInputs({ address: { address: `${inside}/24`, gateway }, proxyArp: false });
/** Hetzner's way: a /32 with the gateway on the link, and IPv6. */
const NET_SECOND = (): Dom0NetworkInputs =>
  networkInputs({
    address: { address: `${inside}/32`, gateway },
    ipv6: { address: `2001:db8:236:${id}::2/64`, gateway: "fe80::1" },
    proxyArp: true,
  });

/** Dom0XenBoot's GRUB settings for Xen with `dom0MemMiB` (its template, as it renders it). */
const grubXen = (dom0MemMiB: number): string =>
  render("dom0-xen-boot/grub-xen.cfg", {
    xenCommandLine: `dom0_mem=${dom0MemMiB}M,max:${dom0MemMiB}M dom0_max_vcpus=2 dom0_vcpus_pin`,
  });

function rebootInputs(dom0MemMiB: number, network: Dom0NetworkOutputs): Dom0RebootInputs {
  return checked<Dom0RebootInputs>("Dom0Reboot", {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: hostKey.fingerprint },
    credentials: { privateKey: key.privateKey },
    xenEstateVersion: VERSION,
    triggers: { network: network.networkDigest, xen: sha256(grubXen(dom0MemMiB)).slice(0, 16) },
    xenVersion: "4.17",
    dom0MemMiB,
    bridge: BRIDGE,
    uplink: UPLINK,
    // A simulated boot on a busy machine is slow too.
    timeoutSeconds: 300,
  });
}

/**
 * The host as the concerns before Dom0Reboot leave it on a server installimage set up: booted (without Xen, the
 * uplink holding the address), then Xen installed (Dom0Packages), its boot settings written with `dom0MemMiB`
 * (Dom0XenBoot) and the bridge declared (Dom0Network's create, for real). Returns Dom0Network's outputs.
 */
async function resetOwed(dom0MemMiB: number): Promise<Dom0NetworkOutputs> {
  await powerCycle(writeInstallerState);
  fs.writeFileSync(dir("boot", "xen-4.17-amd64.gz"), "");
  await direct(
    `mkdir -p ${path.dirname(GRUB_XEN)} && printf '%s' ${shellQuote(grubXen(dom0MemMiB))} > ${GRUB_XEN}`,
  );
  return withDirect((ctx) => dom0NetworkKind.create(ctx, NET_FIRST(), () => {}));
}

/** JSON of an `ip -j` command in the namespace. */
async function ipJson<T>(args: string): Promise<T[]> {
  return JSON.parse((await sh(`ip -n ${ns} -j ${args}`)).stdout || "[]") as T[];
}

/** Why the namespace's network is not what `n` declares, brought up at boot, or undefined. */
async function networkProblem(n: Dom0NetworkInputs): Promise<string | undefined> {
  const [bridge] = await ipJson<{ address: string; flags: string[]; linkinfo?: { info_kind: string } }>(
    `-d link show dev ${BRIDGE}`,
  ).catch(() => []);
  if (!bridge || bridge.linkinfo?.info_kind !== "bridge") return `there is no bridge ${BRIDGE}`;
  if (bridge.address !== n.mac) return `${BRIDGE} sends with ${bridge.address}, not the NIC's ${n.mac}`;
  if (!bridge.flags.includes("UP")) return `${BRIDGE} is down`;
  const ports = (await ipJson<{ ifname: string }>(`link show master ${BRIDGE}`)).map((p) => p.ifname);
  if (ports.join(" ") !== UPLINK) return `${BRIDGE} carries [${ports.join(", ")}], not ${UPLINK}`;
  const addrs = async (family: "-4" | "-6", dev: string): Promise<string[]> =>
    (
      await ipJson<{ addr_info: { local: string; prefixlen: number; scope: string }[] }>(
        `${family} addr show dev ${dev}`,
      )
    )
      .flatMap((a) => a.addr_info)
      .filter((a) => a.scope === "global")
      .map((a) => `${a.local}/${a.prefixlen}`);
  const address = n.address === "dhcp" ? undefined : n.address;
  if (!address) return "the declared address is dhcp: not what this test declares";
  const v4 = await addrs("-4", BRIDGE);
  if (v4.join(" ") !== address.address) return `${BRIDGE} holds [${v4.join(", ")}], not ${address.address}`;
  const onUplink = [...(await addrs("-4", UPLINK)), ...(await addrs("-6", UPLINK))];
  if (onUplink.length > 0) return `${UPLINK} still holds [${onUplink.join(", ")}]`;
  const defaults = await ipJson<{ gateway?: string; dev: string }>(`-4 route show default`);
  if (defaults.length !== 1 || defaults[0]!.gateway !== address.gateway || defaults[0]!.dev !== BRIDGE)
    return `the default routes are ${JSON.stringify(defaults)}`;
  if (address.address.endsWith("/32")) {
    const onLink = await ipJson<{ dev: string; scope: string }>(`-4 route show ${address.gateway}`);
    if (!onLink.some((r) => r.dev === BRIDGE && r.scope === "link"))
      return `no on-link route to ${address.gateway}: ${JSON.stringify(onLink)}`;
  }
  const v6 = await addrs("-6", BRIDGE);
  if (v6.join(" ") !== (n.ipv6?.address ?? "")) return `${BRIDGE} holds IPv6 [${v6.join(", ")}]`;
  if (n.ipv6) {
    const d6 = await ipJson<{ gateway?: string; dev: string }>(`-6 route show default`);
    if (!d6.some((r) => r.gateway === n.ipv6!.gateway && r.dev === BRIDGE))
      return `the IPv6 default routes are ${JSON.stringify(d6)}`;
  }
  return undefined;
}

/** Why the namespace's live sysctls are not those of `conf`, or undefined. */
async function sysctlProblem(conf: string): Promise<string | undefined> {
  const want = [...conf.matchAll(/^\s*([a-z0-9_.-]+)\s*=\s*(\S+)\s*$/gm)].map((m) => [m[1]!, m[2]!] as const);
  if (want.length === 0) return "the declared sysctl file sets nothing";
  const live = (await sh(`ip netns exec ${ns} sysctl -n ${want.map(([k]) => k).join(" ")}`)).stdout
    .trim()
    .split("\n");
  const wrong = want.flatMap(([k, v], n) => (live[n]?.trim() === v ? [] : [`${k}=${live[n]?.trim()}`]));
  return wrong.length > 0 ? `live sysctls not as declared: ${wrong.join(", ")}` : undefined;
}

/** Why the host is not what `r` and `n` declare after one reboot since boot number `mark`, or undefined. */
async function convergedOn(
  r: Dom0RebootInputs,
  n: Dom0NetworkInputs,
  outs: Dom0RebootOutputs | undefined,
  mark: number,
): Promise<string | undefined> {
  try {
    await settled();
  } catch (err) {
    return `the simulated host failed: ${(err as Error).message}`;
  }
  if (!outs) return "the last run returned no outputs";
  const reboots = boots.slice(mark).filter((b) => b.why === "reboot").length;
  if (reboots !== 1) return `the host rebooted ${reboots} times, not once`;
  const pending = rebootPending();
  if (pending) return pending;
  const now = boots.at(-1)!;
  const mem = `dom0_mem=${r.dom0MemMiB}M,max:${r.dom0MemMiB}M`;
  if (!(now.xenCommandLine ?? "").split(/\s+/).includes(mem))
    return now.xenCommandLine === null
      ? "the host booted without Xen"
      : `Xen booted with ${now.xenCommandLine}`;
  const answered = (await direct("cat /proc/sys/kernel/random/boot_id")).trim();
  if (answered !== now.bootId) return `SSH answers from boot ${answered}, not ${now.bootId}`;
  if (outs.running?.bootId !== now.bootId)
    return `the outputs name boot ${outs.running?.bootId}, not ${now.bootId}`;
  if (outs.pending.length > 0) return `the outputs show reasons pending: ${outs.pending.join("; ")}`;
  return (await networkProblem(n)) ?? (await sysctlProblem(n.files[SYSCTL]!));
}

const scenarios = (): CutScenario<Dom0RebootOutputs>[] => {
  let outs: Dom0RebootOutputs | undefined;
  let olds: Dom0RebootOutputs;
  let network: Dom0NetworkOutputs;
  let mark = 0;
  return [
    {
      // A create records nothing until it returns: a failed one is made again.
      operation: "create (into Xen and the bridge)",
      reset: async () => {
        outs = undefined;
        network = await resetOwed(1024);
        mark = boots.length;
      },
      run: async (ctx, last) => {
        if (last.failed) await nextUpReaches();
        outs = await dom0RebootKind.create(ctx, rebootInputs(1024, network), () => {});
        return outs;
      },
      converged: () => convergedOn(rebootInputs(1024, network), NET_FIRST(), outs, mark),
    },
    {
      // A failed update is tried again with the same olds and news.
      operation: "update (dom0 memory, /32 on-link, IPv6)",
      reset: async () => {
        outs = undefined;
        const first = await resetOwed(1024);
        olds = await withDirect((ctx) => dom0RebootKind.create(ctx, rebootInputs(1024, first), () => {}));
        await settled();
        network = await withDirect((ctx) =>
          dom0NetworkKind.update(
            ctx,
            "127.0.0.1:network",
            first,
            NET_SECOND(),
            planDiff("Dom0Network", { ...first }, { ...NET_SECOND() }),
          ),
        );
        await direct(`printf '%s' ${shellQuote(grubXen(2048))} > ${GRUB_XEN}`);
        mark = boots.length;
      },
      run: async (ctx, last) => {
        if (last.failed) await nextUpReaches();
        const news = rebootInputs(2048, network);
        outs = await dom0RebootKind.update(
          ctx,
          "127.0.0.1:boot",
          olds,
          news,
          planDiff("Dom0Reboot", { ...olds }, { ...news }),
        );
        return outs;
      },
      converged: () => convergedOn(rebootInputs(2048, network), NET_SECOND(), outs, mark),
    },
  ];
};

describeCutMatrix("Dom0Reboot", scenarios(), {
  relay: () => relay,
  freshContext,
  timeoutMs: 30 * 60_000,
});
