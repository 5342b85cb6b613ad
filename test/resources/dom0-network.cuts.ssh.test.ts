/**
 * Dom0Network (a Dom0Host concern) under cut connections (issue 15): a create (the bridge's netplan file, the
 * sysctls and the modules file, the sysctls applied), the same create on Debian (the interfaces file), an update
 * (another address, IPv6, proxy ARP on, bridge netfilter off) and the update back (IPv6 forwarding and proxy ARP
 * turned off live, not only in the file) have the provider's SSH path dropped at each remote
 * step in turn; the next run (as the engine makes it) must converge: every file the declared one with its mode (the
 * netplan file 600), each original kept once as the installer left it and no original for a file it did not have,
 * each file listed once as managed, no temp file left (in /etc, nor netplan's scratch root), and the namespace's
 * live sysctls (forwarding, proxy ARP, bridge netfilter) the declared ones. The links stay as they were: the bridge
 * takes over the uplink at the next boot (Dom0Reboot's matrix), so no bridge exists and the uplink keeps its
 * address. A delete with `onDelete: "restore"` must leave the installer's network file back, the sysctl and modules
 * files moved to the backups, and none of them listed as managed.
 *
 * Real: sshd, bash, the files in an overlay of this machine's /etc (a private mount namespace, as a host's own sshd
 * sees it), the backups, the host lock, `netplan` (the new file is checked by the real netplan generate, in a scratch
 * root under this test's TMPDIR), and the network: sshd runs in a network namespace of this test whose uplink (one
 * end of a veth pair, with the NIC's MAC) is the interface the kind looks at, and `sysctl -p` sets that namespace's
 * own forwarding and bridge-netfilter keys (per namespace in this kernel; this machine's own are never written).
 * Simulated (test/support/stub-commands.ts's way, on the PATH of the scripts): `modprobe` (this machine has no kmod,
 * and loading a module would change its kernel: br_netfilter is built in here, so the stand-in only checks that its
 * sysctls exist) and, for the Debian create, `ifquery` (ifupdown is not installed here: the stand-in lists the
 * file's `auto` interfaces and proves nothing about its syntax; the lab's dom0 parses it for real).
 */
import { after, before } from "node:test";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import {
  BACKUP_ROOT,
  dom0NetworkKind,
  hostContext,
  shellQuote,
  VERSION,
  type Context,
  type Dom0NetworkInputs,
  type Dom0NetworkOutputs,
} from "../../provider";
import { INTERFACES, MODULES, SYSCTL } from "../../provider/resources/dom0-network/plan";
import { planDiff } from "../../provider/framework/plan";
import { ORIGINAL_SUFFIX, sha256 } from "../../provider/remote/files";
import { checked } from "../support/checked";
import { CutRelay, describeCutMatrix, type CutScenario } from "../support/cut-matrix";
import { makeVethNamespace, removeVethNamespace } from "../support/netns";
import { withStubs } from "../support/stub-commands";
import {
  generateKey,
  inMountNamespace,
  runDirect,
  startSshd,
  type KeyPair,
  type Sshd,
} from "../support/sshd";

const run = promisify(execFile);
const sh = (cmd: string): Promise<{ stdout: string }> => run("bash", ["-c", cmd]);

const id = (process.pid % 200) + 20;
const ns = `xecut-n-${process.pid}`;
const hostIf = `xecn${process.pid % 100000}`;
const gateway = `10.235.${id}.1`;
const inside = `10.235.${id}.2`;
const UPLINK = "enp1s0";
const MAC = `52:54:00:35:${id.toString(16).padStart(2, "0")}:02`;
const NETPLAN = "/etc/netplan/01-netcfg.yaml";

/** The network files as the installer left them: netplan's (Ubuntu) and ifupdown's (Debian). */
const NETPLAN_ORIGINAL = [
  "### installimage",
  "network:",
  "  version: 2",
  "  renderer: networkd",
  "  ethernets:",
  `    ${UPLINK}:`,
  "      addresses:",
  `        - ${inside}/24`,
  "      routes:",
  "        - to: default",
  `          via: ${gateway}`,
  "",
].join("\n");
const INTERFACES_ORIGINAL = [
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
/** The keys a fresh network namespace starts with (what a host has before its sysctl files are applied). */
const FRESH_SYSCTLS: Record<string, string> = {
  "net.ipv4.ip_forward": "0",
  "net.ipv6.conf.all.forwarding": "0",
  "net.ipv4.conf.all.proxy_arp": "0",
  "net.bridge.bridge-nf-call-iptables": "1",
  "net.bridge.bridge-nf-call-ip6tables": "1",
  "net.bridge.bridge-nf-call-arptables": "1",
};

let base: string;
let key: KeyPair;
let sshd: Sshd;
let relay: CutRelay;
let stubs: string;
const tmp = (): string => path.join(base, "tmp");

before(async () => {
  base = fs.mkdtempSync("/dev/shm/xecut-network-");
  for (const d of ["etc-upper", "etc-work", "var-lib", "backups", "lock", "tmp", "stubs"])
    fs.mkdirSync(path.join(base, d), { mode: 0o755 });
  key = await generateKey(base, "client");
  await sh(removeVethNamespace({ ns, hostIf }));
  await sh(
    [
      ...makeVethNamespace({
        ns,
        hostIf,
        hostAddresses: [`${gateway}/24`],
        inside: `${inside}/24`,
        peer: UPLINK,
      }),
      `ip -n ${ns} link set ${UPLINK} address ${MAC}`,
    ].join(" && "),
  );
  stubs = path.join(base, "stubs");
  const stub = (name: string, body: string[]): void =>
    fs.writeFileSync(path.join(stubs, name), ["#!/bin/bash", ...body, ""].join("\n"), { mode: 0o755 });
  stub("modprobe", [
    `[ "$*" = br_netfilter ] || { echo "modprobe stub: unexpected: $*" >&2; exit 1; }`,
    // Built into this kernel: "loaded" when its keys exist, as modprobe of a loaded module succeeds.
    `[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || { echo "modprobe: FATAL: Module br_netfilter not found" >&2; exit 1; }`,
  ]);
  stub("ifquery", [
    `case "$#:$1:$2" in 2:--interfaces=?*:--list) ;; *) echo "ifquery stub: unexpected: $*" >&2; exit 1 ;; esac`,
    `awk '$1 == "auto" { for (i = 2; i <= NF; i++) print $i }' "\${1#--interfaces=}"`,
  ]);
  sshd = await startSshd({
    authorizedKeys: [key.publicKey],
    netns: ns,
    listen: inside,
    // netplan's check makes its scratch root with mktemp -d: in this test's directory, not this machine's /tmp.
    extraConfig: [`SetEnv TMPDIR=${tmp()}`],
    wrap: inMountNamespace([
      `mount -t overlay xecut-etc -o lowerdir=/etc,upperdir=${base}/etc-upper,workdir=${base}/etc-work /etc`,
      `mkdir -p /var/lib/xen-estate`,
      `mount --bind ${base}/var-lib /var/lib/xen-estate`,
      `mount --bind ${base}/backups /var/backups`,
      `mount --bind ${base}/lock /run/lock`,
    ]),
  });
  relay = new CutRelay(sshd.host, sshd.port);
  await relay.start();
});

after(async () => {
  await relay?.stop();
  await sshd?.stop();
  await sh(removeVethNamespace({ ns, hostIf }));
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

/** Runs a command in the namespace (where `sysctl` and `ip` see the namespace's own state). */
const inNs = (cmd: string): Promise<{ stdout: string }> => sh(`ip netns exec ${ns} ${cmd}`);

function inputs(o: {
  distribution: "debian" | "ubuntu";
  address: { address: string; gateway: string };
  ipv6?: { address: string; gateway: string };
  proxyArp: boolean;
  bridgeNetfilter: boolean;
}): Dom0NetworkInputs {
  return checked<Dom0NetworkInputs>("Dom0Network", {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: sshd.hostKey.fingerprint },
    credentials: { privateKey: key.privateKey },
    xenEstateVersion: VERSION,
    distribution: o.distribution,
    uplink: UPLINK,
    mac: MAC,
    bridge: "xenbr0",
    address: o.address,
    ...(o.ipv6 ? { ipv6: o.ipv6 } : {}),
    proxyArp: o.proxyArp,
    bridgeNetfilter: o.bridgeNetfilter,
    onDelete: "restore",
  });
}
const FIRST = (distribution: "debian" | "ubuntu" = "ubuntu"): Dom0NetworkInputs =>
  inputs({
    distribution,
    address: { address: `${inside}/24`, gateway },
    proxyArp: false,
    bridgeNetfilter: true,
  });
/** Hetzner's way: a /32 with the gateway on the link, IPv6, proxy ARP for routed guests, no bridge netfilter. */
const SECOND = (): Dom0NetworkInputs =>
  inputs({
    distribution: "ubuntu",
    address: { address: `${inside}/32`, gateway },
    ipv6: { address: `2001:db8:235:${id}::2/64`, gateway: "fe80::1" },
    proxyArp: true,
    bridgeNetfilter: false,
  });

/** The network file `i` owns (netplan's on Ubuntu, ifupdown's on Debian) and the installer's content of it. */
function networkFile(i: Dom0NetworkInputs): { file: string; original: string } {
  return i.network === "netplan"
    ? { file: i.netplanFile, original: NETPLAN_ORIGINAL }
    : { file: INTERFACES, original: INTERFACES_ORIGINAL };
}

/**
 * The server as the installer left it: its netplan and interfaces files, nothing of ours, no temp file; the
 * namespace's sysctls as a fresh namespace has them and its links as they were made (no bridge, the uplink with its
 * address).
 */
async function resetBare(): Promise<void> {
  await direct(
    [
      `rm -rf -- ${BACKUP_ROOT} ${SYSCTL} ${MODULES}`,
      `find /etc -maxdepth 3 -name '.*.xen-estate.*' -delete`,
      `find ${shellQuote(tmp())} -mindepth 1 -delete`,
      `mkdir -p /etc/network /etc/netplan`,
      `printf '%s' ${shellQuote(NETPLAN_ORIGINAL)} > ${NETPLAN}`,
      `chmod 600 ${NETPLAN}`,
      `printf '%s' ${shellQuote(INTERFACES_ORIGINAL)} > ${INTERFACES}`,
    ].join("\n"),
  );
  await inNs(
    `sysctl -q -w ${Object.entries(FRESH_SYSCTLS)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ")}`,
  );
}

/** The host after a finished create of `i` (made by an uncut create): its outputs, as the engine keeps them. */
async function resetCreated(i: Dom0NetworkInputs): Promise<Dom0NetworkOutputs> {
  await resetBare();
  return dom0NetworkKind.create(freshContext(), i, () => {});
}

interface Seen {
  /** Content, or null when absent. */
  content: string | null;
  /** `owner:group mode`. */
  stat: string;
}

/**
 * Files as the host's sessions see them, the `.original` files and the managed lists under the backup root, the
 * temp files left in /etc and the scratch roots left in TMPDIR, in one SSH call.
 */
async function look(files: readonly string[]): Promise<{
  files: Map<string, Seen>;
  originals: string[];
  managed: string[];
  temps: string;
}> {
  const out = await direct(
    [
      ...files.map(
        (f) =>
          `if [ -f ${shellQuote(f)} ]; then echo "file $(stat -c '%U:%G_%a' -- ${shellQuote(f)}) $(base64 -w0 < ${shellQuote(f)})"; else echo "file - -"; fi`,
      ),
      `echo "originals $(find ${BACKUP_ROOT} -name '*${ORIGINAL_SUFFIX}' 2>/dev/null | sort | tr '\\n' ' ')"`,
      `echo "managed $(find ${BACKUP_ROOT} -name .xen-estate-managed 2>/dev/null | sort | while read -r m; do sed "s|^|\${m%/.xen-estate-managed}/|" "$m"; done | tr '\\n' ' ')"`,
      `echo "temps $({ find /etc -maxdepth 3 -name '.*.xen-estate.*'; find ${shellQuote(tmp())} -mindepth 1 -maxdepth 1; } 2>/dev/null | tr '\\n' ' ')"`,
    ].join("\n"),
  );
  const lines = out.split("\n");
  const seen = new Map<string, Seen>();
  files.forEach((f, n) => {
    const [, stat, b64] = lines[n]!.split(" ");
    seen.set(f, {
      content: b64 === "-" ? null : Buffer.from(b64!, "base64").toString("utf8"),
      stat: stat!.replace("_", " "),
    });
  });
  const words = (prefix: string): string[] =>
    (lines.find((l) => l.startsWith(`${prefix} `)) ?? "")
      .slice(prefix.length + 1)
      .split(" ")
      .filter(Boolean);
  return {
    files: seen,
    originals: words("originals"),
    managed: words("managed"),
    temps: words("temps").join(" "),
  };
}

const original = (file: string): string => `${BACKUP_ROOT}${file}${ORIGINAL_SUFFIX}`;
const managedEntry = (file: string): string => `${BACKUP_ROOT}${file}`;

/** The `key = value` lines of a sysctl file. */
function sysctlsOf(conf: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of conf.split("\n")) {
    const kv = /^\s*([a-z0-9_.-]+)\s*=\s*(\S+)\s*$/.exec(line);
    if (kv) m.set(kv[1]!, kv[2]!);
  }
  return m;
}

/**
 * Why the namespace's live sysctls are not those of `conf`, or undefined. A key the file leaves out must have the
 * value a fresh boot gives it (nothing else here sets it): an update that turned proxy ARP or IPv6 forwarding off
 * must not leave it on.
 */
async function sysctlProblem(conf: string): Promise<string | undefined> {
  const want = sysctlsOf(conf);
  if (want.size === 0) return "the declared sysctl file sets nothing";
  for (const [k, v] of Object.entries(FRESH_SYSCTLS)) if (!want.has(k)) want.set(k, v);
  const keys = [...want.keys()];
  const live = (await inNs(`sysctl -n ${keys.join(" ")}`)).stdout.trim().split("\n");
  const wrong = keys.flatMap((k, n) => (live[n]?.trim() === want.get(k) ? [] : [`${k}=${live[n]?.trim()}`]));
  return wrong.length > 0 ? `live sysctls not as declared: ${wrong.join(", ")}` : undefined;
}

/** Why the namespace's links are not as they were made (Dom0Network changes none of them), or undefined. */
async function linksProblem(): Promise<string | undefined> {
  const bridges = JSON.parse((await sh(`ip -n ${ns} -j link show type bridge`)).stdout || "[]") as unknown[];
  if (bridges.length > 0) return `a bridge was made: ${JSON.stringify(bridges)}`;
  const addrs = JSON.parse((await sh(`ip -n ${ns} -j -4 addr show dev ${UPLINK}`)).stdout) as {
    addr_info: { local: string; prefixlen: number }[];
  }[];
  const held = addrs.flatMap((a) => a.addr_info.map((x) => `${x.local}/${x.prefixlen}`));
  return held.join(" ") === `${inside}/24` ? undefined : `${UPLINK} holds [${held.join(", ")}]`;
}

/** Why the host does not hold what `i` declares, or undefined. */
async function convergedOn(
  i: Dom0NetworkInputs,
  outs: Dom0NetworkOutputs | undefined,
): Promise<string | undefined> {
  if (!outs) return "the last run returned no outputs";
  const net = networkFile(i);
  const other =
    net.file === INTERFACES
      ? { file: NETPLAN, original: NETPLAN_ORIGINAL }
      : { file: INTERFACES, original: INTERFACES_ORIGINAL };
  const host = await look([...Object.keys(i.files), other.file]);
  for (const [file, content] of Object.entries(i.files)) {
    const seen = host.files.get(file)!;
    if (seen.content !== content) return `${file} is not the declared one`;
    const mode = file === net.file && i.network === "netplan" ? "600" : "644";
    if (seen.stat !== `root:root ${mode}`) return `${file} is ${seen.stat}, not root:root ${mode}`;
  }
  if (host.files.get(other.file)!.content !== other.original) return `${other.file} (not ours) was changed`;
  if (outs.networkDigest !== sha256(i.files[net.file]!).slice(0, 16))
    return `networkDigest ${outs.networkDigest} is not the digest of ${net.file}`;
  if (host.temps !== "") return `temp files left: ${host.temps}`;
  // The network file had an original: kept once, as the installer wrote it. The others had none.
  if (host.originals.join(" ") !== original(net.file))
    return `originals kept: [${host.originals.join(", ")}]`;
  const kept = await direct(`cat -- ${shellQuote(original(net.file))}`);
  if (kept !== net.original) return `${net.file}'s original is not kept as it was`;
  const managed = [...host.managed].sort();
  const want = Object.keys(i.files).map(managedEntry).sort();
  if (managed.join(" ") !== want.join(" "))
    return `managed: [${managed.join(", ")}], not [${want.join(", ")}]`;
  return (await sysctlProblem(i.files[SYSCTL]!)) ?? (await linksProblem());
}

/** Why the host is not back as the installer left it after a restoring delete of `i`, or undefined. */
async function convergedDeleted(i: Dom0NetworkInputs): Promise<string | undefined> {
  const net = networkFile(i);
  const host = await look([net.file, SYSCTL, MODULES]);
  const seen = host.files.get(net.file)!;
  if (seen.content !== net.original) return `${net.file} is not the installer's`;
  if (seen.stat !== "root:root 600") return `${net.file} is ${seen.stat}, not as the installer left it`;
  for (const f of [SYSCTL, MODULES]) if (host.files.get(f)!.content !== null) return `${f} is still there`;
  if (host.originals.length > 0) return `originals left: [${host.originals.join(", ")}]`;
  if (host.managed.length > 0) return `still listed as managed: [${host.managed.join(", ")}]`;
  if (host.temps !== "") return `temp files left: ${host.temps}`;
  // What xen-estate made goes to the backups, not away.
  for (const f of [SYSCTL, MODULES]) {
    const backups = await direct(
      `for b in ${shellQuote(`${BACKUP_ROOT}${f}.`)}2*; do [ -f "$b" ] && sha256sum < "$b" | cut -d' ' -f1; done; true`,
    );
    if (!backups.split("\n").includes(sha256(i.files[f]!))) return `${f} was not moved to the backups`;
  }
  return linksProblem();
}

const scenarios = (): CutScenario<Dom0NetworkOutputs>[] => {
  let outs: Dom0NetworkOutputs | undefined;
  let olds: Dom0NetworkOutputs;
  const create = (distribution: "debian" | "ubuntu"): CutScenario<Dom0NetworkOutputs> => ({
    // A create records nothing until it returns: a failed one is made again.
    operation: `create (${distribution})`,
    reset: async () => {
      outs = undefined;
      await resetBare();
    },
    run: async (ctx) => {
      outs = await dom0NetworkKind.create(ctx, FIRST(distribution), () => {});
      return outs;
    },
    converged: () => convergedOn(FIRST(distribution), outs),
  });
  // A failed update is tried again with the same olds and news.
  const update = (
    operation: string,
    from: () => Dom0NetworkInputs,
    to: () => Dom0NetworkInputs,
  ): CutScenario<Dom0NetworkOutputs> => ({
    operation,
    reset: async () => {
      outs = undefined;
      olds = await resetCreated(from());
    },
    run: async (ctx) => {
      outs = await dom0NetworkKind.update(
        ctx,
        "127.0.0.1:network",
        olds,
        to(),
        planDiff("Dom0Network", { ...olds }, { ...to() }),
      );
      return outs;
    },
    converged: () => convergedOn(to(), outs),
  });
  return [
    create("ubuntu"),
    create("debian"),
    // And back: IPv6 and proxy ARP dropped, so their forwarding keys must go off live, not only in the file.
    update("update (/32 on-link, IPv6, proxy ARP, no bridge netfilter)", FIRST, SECOND),
    update("update back (one address, no IPv6, no proxy ARP, bridge netfilter)", SECOND, FIRST),
    {
      // onDelete "restore": the installer's netplan file goes back, the files xen-estate made go to the backups.
      operation: "delete (restore)",
      reset: async () => {
        olds = await resetCreated(FIRST());
      },
      run: (ctx) => dom0NetworkKind.delete(ctx, "127.0.0.1:network", olds),
      converged: () => convergedDeleted(FIRST()),
    },
  ];
};

describeCutMatrix("Dom0Network", scenarios(), {
  relay: () => relay,
  freshContext,
  timeoutMs: 20 * 60_000,
});
