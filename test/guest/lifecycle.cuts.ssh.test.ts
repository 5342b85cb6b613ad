/**
 * NatDomU and BridgedDomU (the guest lifecycle they share, provider/guest/lifecycle.ts) under cut connections
 * (issue 15): a NAT guest's create (config, NAT hotplug script and settings, autostart link, NAT rules, the image
 * installed onto its disk, started, answering on the network), its live update (memory), its restarting update (a
 * larger maximum memory) and its delete (the network's last guest: the NAT pieces go with it), and a bridged
 * guest's create have the provider's SSH path dropped at each remote step in turn; the next run (as the engine makes
 * it: a create that recorded what it made continues as an update) must converge: every file the declared one, one
 * autostart link to the config, exactly one domain of that name running the declared config and memory, each NAT
 * rule once and forwarding on, the disk installed once (the image's files, the guest's own settings, no marker of
 * an unfinished install) and mounted nowhere, no temp file or install mount point left. A delete must leave no
 * domain, config, link, rule or NAT file, and the disk's data untouched.
 *
 * Real: sshd, bash, flock, the files in an overlay of this machine's /etc (a private mount namespace with its own
 * /run), the backups, the host and disk locks, the guest's disk (a loop device with a real ext4 filesystem that the
 * install really mounts, unpacks the image onto and writes the settings into), iptables and `sysctl` (sshd runs in
 * a network namespace of this test: its NAT and FORWARD rules and its forwarding key, never this machine's), and
 * the network probe (`ping` of the guest's address in that namespace).
 *
 * XEN IS SIMULATED: this machine runs no Xen, so `xl` and `xenstore-ls` are a stateful SIMULATOR on the scripts'
 * PATH (a table of running domains with a copy of the config each was created from; a domain's addresses are put on
 * the namespace's loopback while it runs, so the real probe finds it; xenstore lists each running domain's disks and
 * MACs as its backends). It proves nothing about xl's parsing or Xen's behaviour: the lab's walkthrough starts,
 * stops and restarts the same guests on a real dom0 (test/examples/walkthrough.lab.test.ts), and cuts its
 * migration's copy.
 */
import { after, before } from "node:test";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import {
  bridgedDomUKind,
  hostContext,
  natDomUKind,
  shellQuote,
  VERSION,
  type Context,
  type GuestInputs,
  type GuestOutputs,
} from "../../provider";
import { planDiff } from "../../provider/framework/plan";
import { autostartPath, configPath, INSTALL_MARKER, NAT_CONF, NAT_SCRIPT } from "../../provider/guest/paths";
import { checked } from "../support/checked";
import { CutRelay, describeCutMatrix, type CutScenario, type LastRun } from "../support/cut-matrix";
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
const sh = async (cmd: string): Promise<string> => (await run("bash", ["-c", cmd])).stdout;

const id = (process.pid % 200) + 20;
const ns = `xecut-g-${process.pid}`;
const hostIf = `xecg${process.pid % 100000}`;
const inside = `10.237.${id}.2`;
const NAT_GUEST = { name: "app9", ip: "10.0.0.9" };
const BRIDGED_GUEST = { name: "web9", ip: "203.0.113.9", mac: "00:50:56:00:12:39" };

let base: string;
let key: KeyPair;
let sshd: Sshd;
let relay: CutRelay;
let stubs: string;
let loop: string;
let image: string;
const xen = (): string => path.join(base, "xen");

/** The simulated `xl` (see the file's comment): state in `xen()`, one change at a time under its lock. */
function xlSimulator(state: string): string {
  return [
    "#!/bin/bash",
    "# SIMULATOR of xl for test/guest/lifecycle.cuts.ssh.test.ts: a table of running domains, no Xen.",
    "set -u",
    `state=${shellQuote(state)}`,
    `doms="$state/domains"`,
    `exec 9>>"$state/lock"; flock 9`,
    `touch "$doms"; mkdir -p "$state/running"`,
    `cfgval() { sed -n "s/^$1 = \\"\\{0,1\\}\\([^\\"]*\\)\\"\\{0,1\\}\\$/\\1/p" "$2" | head -n1; }`,
    `row() { awk -F'\\t' -v n="$1" '$1 == n' "$doms"; }`,
    `addresses() { grep -o 'ip=[0-9.]*' "$1" | cut -d= -f2; }`,
    `gone() { echo "Can't get domid of domain name '$1', maybe this domain does not exist." >&2; exit 1; }`,
    `remove() {`,
    `  [ -n "$(row "$1")" ] || gone "$1"`,
    `  for a in $(addresses "$state/running/$1.cfg"); do ip addr del "$a/32" dev lo 2>/dev/null || true; done`,
    `  awk -F'\\t' -v n="$1" '$1 != n' "$doms" > "$doms.new"; mv -f "$doms.new" "$doms"`,
    `  rm -f "$state/running/$1.cfg"`,
    `}`,
    `set_column() { awk -F'\\t' -v OFS='\\t' -v n="$1" -v c="$2" -v v="$3" '$1 == n {$c = v} {print}' "$doms" > "$doms.new"; mv -f "$doms.new" "$doms"; }`,
    `case "\${1:-}" in`,
    `  list)`,
    `    printf 'Name                                        ID   Mem VCPUs\\tState\\tTime(s)\\n'`,
    `    printf '%-40s %5s %5s %5s     %s %9s\\n' Domain-0 0 1024 2 r----- 12.0`,
    `    while IFS=$'\\t' read -r n i m v; do printf '%-40s %5s %5s %5s     %s %9s\\n' "$n" "$i" "$m" "$v" -b---- 0.1; done < "$doms" ;;`,
    `  domid) r=$(row "$2"); [ -n "$r" ] || gone "$2"; cut -f2 <<< "$r" ;;`,
    `  domname) awk -F'\\t' -v i="$2" '$2 == i {print $1; f=1} END {exit !f}' "$doms" || { echo "Can't get domain name of domain id '$2', maybe this domain does not exist." >&2; exit 1; } ;;`,
    `  create)`,
    `    shift; dry=0`,
    `    while [ $# -gt 1 ]; do case "$1" in -n) dry=1 ;; -q) ;; *) echo "xl simulator: unexpected option $1" >&2; exit 1 ;; esac; shift; done`,
    `    cfg=$1`,
    `    [ -f "$cfg" ] || { echo "Failed to read config file: $cfg: No such file or directory" >&2; exit 1; }`,
    `    name=$(cfgval name "$cfg"); mem=$(cfgval memory "$cfg"); vcpus=$(cfgval vcpus "$cfg")`,
    `    [ -n "$name" ] && [ -n "$mem" ] || { echo "xl simulator: $cfg names no domain or no memory" >&2; exit 1; }`,
    `    [ "$dry" = 0 ] || exit 0`,
    `    [ -z "$(row "$name")" ] || { echo "libxl: error: domain with name $name already exists" >&2; exit 1; }`,
    `    for t in $(grep -o 'target=[^",]*' "$cfg" | cut -d= -f2-); do [ -b "$t" ] || { echo "libxl: error: disk $t is not a block device" >&2; exit 1; }; done`,
    `    i=$(cat "$state/next" 2>/dev/null || echo 1); echo $((i + 1)) > "$state/next"`,
    `    cp -- "$cfg" "$state/running/$name.cfg"`,
    `    for a in $(addresses "$cfg"); do ip addr add "$a/32" dev lo 2>/dev/null || true; done`,
    // The domain exists once it is in the table: the last step.
    `    printf '%s\\t%s\\t%s\\t%s\\n' "$name" "$i" "$mem" "\${vcpus:-1}" >> "$doms" ;;`,
    `  shutdown) [ "$2" = -w ] || { echo "xl simulator: unexpected: $*" >&2; exit 1; }; remove "$3" ;;`,
    `  destroy) remove "$2" ;;`,
    `  mem-set) [ -n "$(row "$2")" ] || gone "$2"; set_column "$2" 3 "\${3%m}" ;;`,
    `  vcpu-set) [ -n "$(row "$2")" ] || gone "$2"; set_column "$2" 4 "$3" ;;`,
    `  *) echo "xl simulator: unexpected: $*" >&2; exit 1 ;;`,
    `esac`,
    "",
  ].join("\n");
}

/** The simulated `xenstore-ls -f /local/domain/0/backend/<kind>`: each running domain's disks and MACs. */
function xenstoreSimulator(state: string): string {
  return [
    "#!/bin/bash",
    "# SIMULATOR of xenstore-ls for test/guest/lifecycle.cuts.ssh.test.ts.",
    "set -u",
    `state=${shellQuote(state)}`,
    `[ "$1" = -f ] || { echo "xenstore-ls simulator: unexpected: $*" >&2; exit 1; }`,
    `kind=\${2##*/}; out=`,
    `touch "$state/domains"`,
    `while IFS=$'\\t' read -r n i _; do`,
    `  f="$state/running/$n.cfg"; d=51712; v=0`,
    `  case "$kind" in`,
    `    vbd) for t in $(grep -o 'target=[^",]*' "$f" | cut -d= -f2-); do out+="/local/domain/0/backend/vbd/$i/$d/params = \\"$t\\""$'\\n'; d=$((d + 16)); done ;;`,
    `    vif) for m in $(grep -o 'mac=[^",]*' "$f" | cut -d= -f2); do out+="/local/domain/0/backend/vif/$i/$v/mac = \\"$m\\""$'\\n'; v=$((v + 1)); done ;;`,
    `  esac`,
    `done < "$state/domains"`,
    `[ -n "$out" ] || { echo "xenstore-ls: xs_directory ($2): No such file or directory" >&2; exit 1; }`,
    `printf '%s' "$out"`,
    "",
  ].join("\n");
}

before(async () => {
  base = fs.mkdtempSync("/dev/shm/xecut-guest-");
  for (const d of ["etc-upper", "etc-work", "var-lib", "backups", "stubs", "xen", "rootfs"])
    fs.mkdirSync(path.join(base, d), { mode: 0o755 });
  key = await generateKey(base, "client");
  await sh(removeVethNamespace({ ns, hostIf }));
  await sh(
    makeVethNamespace({ ns, hostIf, hostAddresses: [`10.237.${id}.1/24`], inside: `${inside}/24` }).join(
      " && ",
    ),
  );
  stubs = path.join(base, "stubs");
  fs.writeFileSync(path.join(stubs, "xl"), xlSimulator(xen()), { mode: 0o755 });
  fs.writeFileSync(path.join(stubs, "xenstore-ls"), xenstoreSimulator(xen()), { mode: 0o755 });
  // The guest's disk, and an image as users build them: a userland with SSH host keys and a machine id.
  await sh(`truncate -s 64M ${base}/disk.img`);
  loop = (await sh(`losetup -f --show ${base}/disk.img`)).trim();
  const root = path.join(base, "rootfs");
  await sh(
    [
      `mkdir -p ${root}/etc/ssh ${root}/sbin`,
      `echo 'ID=xecut' > ${root}/etc/os-release`,
      `echo 0123456789abcdef0123456789abcdef > ${root}/etc/machine-id`,
      `ssh-keygen -q -t ed25519 -N '' -f ${root}/etc/ssh/ssh_host_ed25519_key`,
      `printf '#!/bin/sh\\n' > ${root}/sbin/init && chmod +x ${root}/sbin/init`,
      `tar -C ${root} -czf ${base}/image.tar.gz .`,
    ].join(" && "),
  );
  image = path.join(base, "image.tar.gz");
  sshd = await startSshd({
    authorizedKeys: [key.publicKey],
    netns: ns,
    listen: inside,
    wrap: inMountNamespace([
      `mount -t overlay xecut-etc -o lowerdir=/etc,upperdir=${base}/etc-upper,workdir=${base}/etc-work /etc`,
      `mount -t tmpfs xecut-run /run`,
      `mkdir -p /run/sshd /run/lock`,
      `mkdir -p /var/lib/xen-estate`,
      `mount --bind ${base}/var-lib /var/lib/xen-estate`,
      `mount --bind ${base}/backups /var/backups`,
    ]),
  });
  relay = new CutRelay(sshd.host, sshd.port);
  await relay.start();
});

after(async () => {
  await relay?.stop();
  await sshd?.stop();
  await sh(removeVethNamespace({ ns, hostIf }));
  if (loop) await sh(`losetup -d ${loop} || true`);
  fs.rmSync(base, { recursive: true, force: true });
});

/** Runs `script` as root straight to sshd (not through the relay), in its mount and network namespaces. */
function direct(script: string): Promise<string> {
  return runDirect(sshd, key.privateKey, "root", script);
}

/** A context over a fresh pool (a new `pulumi up` process) through the relay, its scripts finding the simulator. */
function freshContext(): Context {
  return hostContext(withStubs(relay.freshHost(sshd.hostKey.fingerprint, key.privateKey), stubs));
}

function common(): Record<string, unknown> {
  return {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: sshd.hostKey.fingerprint },
    credentials: { privateKey: key.privateKey },
    xenEstateVersion: VERSION,
    memoryMiB: 128,
    boot: { bootloader: "pvgrub2" },
    disks: [{ path: loop, vdev: "xvda" }],
    install: { image, nameservers: ["192.0.2.53"], authorizedKeys: [key.publicKey] },
    waitForNetwork: { timeoutSeconds: 20 },
  };
}

function natGuest(extra: Record<string, unknown> = {}): GuestInputs {
  return checked<GuestInputs>("NatDomU", { ...common(), ...NAT_GUEST, ...extra });
}

function bridgedGuest(): GuestInputs {
  return checked<GuestInputs>("BridgedDomU", {
    ...common(),
    ...BRIDGED_GUEST,
    bridge: "xenbr0",
    prefix: 32,
    gateway: "203.0.113.1",
  });
}

const kindOf = (g: GuestInputs): typeof natDomUKind => (g.natNetwork ? natDomUKind : bridgedDomUKind);
const kindName = (g: GuestInputs): string => (g.natNetwork ? "NatDomU" : "BridgedDomU");

/** A fresh dom0: no domain, no guest file, no rule, forwarding off, an empty ext4 filesystem on the disk. */
async function resetHost(): Promise<void> {
  await direct(
    [
      `for a in $(ip -4 -o addr show dev lo | awk '{print $4}' | grep -v '^127\\.'); do ip addr del "$a" dev lo; done`,
      `for m in $(findmnt -rn -o TARGET -S ${shellQuote(loop)} || true); do umount -- "$m"; done`,
      `rm -rf /etc/xen /var/backups/xen-estate /run/xen-estate-install.* /run/lock/*`,
      // What Xen's packages leave: its config directory, the hotplug scripts' and the empty autostart one.
      `mkdir -p /etc/xen/scripts /etc/xen/auto`,
      `iptables -t nat -F POSTROUTING && iptables -F FORWARD && sysctl -qw net.ipv4.ip_forward=0`,
    ].join("\n"),
  );
  fs.rmSync(xen(), { recursive: true, force: true });
  fs.mkdirSync(xen());
  await sh(`wipefs -qa ${loop} && mkfs.ext4 -q -F ${loop}`);
}

/** A host as a finished create of `g` leaves it (made by an uncut create); returns the create's outputs. */
async function created(g: GuestInputs): Promise<GuestOutputs> {
  await resetHost();
  return kindOf(g).create(freshContext(), g, () => undefined);
}

/** The simulated domains: name → { domid, memory, the config it was created from }. */
function domains(): Map<string, { domid: number; memoryMiB: number; config: string }> {
  const rows = fs.existsSync(path.join(xen(), "domains"))
    ? fs.readFileSync(path.join(xen(), "domains"), "utf8").trim().split("\n").filter(Boolean)
    : [];
  const out = new Map<string, { domid: number; memoryMiB: number; config: string }>();
  for (const r of rows) {
    const [name, domid, mem] = r.split("\t");
    if (out.has(name!)) throw new Error(`the simulator runs two domains named ${name}`);
    out.set(name!, {
      domid: Number(domid),
      memoryMiB: Number(mem),
      config: fs.readFileSync(path.join(xen(), "running", `${name}.cfg`), "utf8"),
    });
  }
  return out;
}

/** The host as the guest's checks need it, in one call: files, links, rules, forwarding, the disk and leftovers. */
async function look(g: GuestInputs): Promise<Record<string, string>> {
  const files = [...Object.keys(g.files), NAT_SCRIPT, NAT_CONF].filter((f, i, all) => all.indexOf(f) === i);
  const out = await direct(
    [
      ...files.map(
        (f) =>
          `if [ -f ${shellQuote(f)} ]; then echo "file ${f} $(stat -c %a ${shellQuote(f)}) $(base64 -w0 < ${shellQuote(f)})"; else echo "file ${f} - -"; fi`,
      ),
      `echo "links $(find /etc/xen/auto -mindepth 1 -printf '%f>%l ' 2>/dev/null)"`,
      `echo "masquerade $(iptables -t nat -S POSTROUTING | grep -c -- '--comment xen-estate-nat')"`,
      `echo "forward $(iptables -S FORWARD | grep -c -- '--comment xen-estate-nat')"`,
      `echo "ip_forward $(sysctl -n net.ipv4.ip_forward)"`,
      `echo "temps $(find /etc/xen /run -name '.*.xen-estate.*' -o -name 'xen-estate-install.*' 2>/dev/null | tr '\\n' ' ')"`,
      `echo "mounted $( (findmnt -rn -o TARGET -S ${shellQuote(loop)} || true) | tr '\\n' ' ')"`,
      // The disk as the guest will see it: read-only, in the sshd's own mount namespace.
      `d=$(mktemp -d /run/xecut-disk.XXXXXX) && mount -o ro ${shellQuote(loop)} "$d"`,
      `echo "disk $(cd "$d" && ls -A | tr '\\n' ' ')"`,
      `echo "hostname $(cat "$d/etc/hostname" 2>/dev/null)"`,
      `echo "hostkey $(cut -d' ' -f2 "$d/etc/ssh/ssh_host_ed25519_key.pub" 2>/dev/null)"`,
      `umount "$d" && rmdir "$d"`,
    ].join("\n"),
  );
  const seen: Record<string, string> = {};
  for (const line of out.split("\n")) {
    const m = /^(file \S+|\S+) ?(.*)$/.exec(line);
    if (m) seen[m[1]!] = m[2]!.trim();
  }
  return seen;
}

/**
 * Why the host does not hold `g` exactly as declared (running or not, per `g.running`), or undefined. `outs` are the
 * last run's outputs; `notRestartedFrom` the domain id a live change must keep.
 */
async function convergedOn(
  g: GuestInputs,
  outs: GuestOutputs | undefined,
  notRestartedFrom?: number,
): Promise<string | undefined> {
  const host = await look(g);
  for (const [file, content] of Object.entries(g.files)) {
    const want = `${file === NAT_SCRIPT ? "755" : "644"} ${Buffer.from(content).toString("base64")}`;
    if (host[`file ${file}`] !== want)
      return `${file} is not the declared one (${host[`file ${file}`]?.slice(0, 40) ?? "?"}…)`;
  }
  if (!g.natNetwork && host[`file ${NAT_SCRIPT}`] !== "- -") return `a bridged guest left ${NAT_SCRIPT}`;
  const cfg = configPath(g.name);
  if (host.links !== `${path.basename(autostartPath(g.name))}>${cfg}`)
    return `/etc/xen/auto holds [${host.links}], not one link to ${cfg}`;
  const rules = g.natNetwork ? { masquerade: "1", forward: "2" } : { masquerade: "0", forward: "0" };
  if (host.masquerade !== rules.masquerade || host.forward !== rules.forward)
    return `NAT rules: ${host.masquerade} MASQUERADE and ${host.forward} FORWARD, not ${rules.masquerade} and ${rules.forward}`;
  if (g.natNetwork && host.ip_forward !== "1") return "forwarding is off";
  if (host.temps) return `left behind: ${host.temps}`;
  if (host.mounted) return `the disk is still mounted at ${host.mounted}`;
  const disk = host.disk!.split(" ");
  for (const f of ["etc", "sbin", "root"])
    if (!disk.includes(f)) return `the disk holds [${host.disk}], not the installed image`;
  if (disk.includes(INSTALL_MARKER)) return "the disk still carries the marker of an unfinished install";
  if (host.hostname !== g.name) return `the guest's hostname is ${host.hostname}`;
  const doms = domains();
  if (doms.size !== 1 || !doms.has(g.name)) return `the domains running are [${[...doms.keys()].join(", ")}]`;
  const dom = doms.get(g.name)!;
  if (dom.memoryMiB !== g.memoryMiB) return `${g.name} runs with ${dom.memoryMiB} MiB`;
  if (notRestartedFrom === undefined && dom.config !== g.files[cfg])
    return `${g.name} runs a config other than the declared one (not restarted after the change?)`;
  if (notRestartedFrom !== undefined && dom.domid !== notRestartedFrom)
    return `${g.name} was restarted (domid ${notRestartedFrom} → ${dom.domid}) for a live change`;
  if (!outs) return "the last run returned no outputs";
  if (outs.domid !== dom.domid) return `the outputs say domid ${outs.domid}, the host ${dom.domid}`;
  if (!outs.sshHostKey) return "the outputs carry no SSH host key of the guest";
  return undefined;
}

/** A create, as the engine makes it: one that recorded what it made continues as an update. */
function createScenario(operation: string, declared: () => GuestInputs): CutScenario<GuestOutputs> {
  let outs: GuestOutputs | undefined;
  return {
    operation,
    reset: async () => {
      await resetHost();
      outs = undefined;
    },
    run: async (ctx: Context, last: LastRun<GuestOutputs>) => {
      const g = declared();
      if (last.partial) {
        const plan = planDiff(kindName(g), { ...last.partial }, { ...g });
        outs = await kindOf(g).update(ctx, "id", last.partial, g, plan);
        return outs;
      }
      let partial: Partial<GuestOutputs> | undefined;
      try {
        outs = await kindOf(g).create(ctx, g, (p) => (partial = p));
        return outs;
      } catch (err) {
        if (partial) last.partial = { ...g, ...partial } as GuestOutputs;
        throw err;
      }
    },
    converged: () => convergedOn(declared(), outs),
  };
}

/** An update from a finished create of `from` to `to`; the engine retries a failed update with the same olds. */
function updateScenario(
  operation: string,
  from: () => GuestInputs,
  to: () => GuestInputs,
  live: boolean,
): CutScenario<GuestOutputs> {
  let olds: GuestOutputs | undefined;
  let outs: GuestOutputs | undefined;
  return {
    operation,
    reset: async () => {
      olds = await created(from());
      outs = undefined;
    },
    run: async (ctx: Context) => {
      const g = to();
      outs = await kindOf(g).update(ctx, "id", olds!, g, planDiff(kindName(g), { ...olds! }, { ...g }));
      return outs;
    },
    converged: () => convergedOn(to(), outs, live ? olds!.domid! : undefined),
  };
}

const scenarios: CutScenario<GuestOutputs>[] = [
  createScenario("NatDomU create", () => natGuest()),
  // Memory grows live up to the maximum the domain was started with; a new maximum takes a restart.
  updateScenario(
    "NatDomU update (memory, live)",
    () => natGuest({ maxMemoryMiB: 256 }),
    () => natGuest({ maxMemoryMiB: 256, memoryMiB: 192 }),
    true,
  ),
  updateScenario(
    "NatDomU update (maximum memory: a restart)",
    () => natGuest({ maxMemoryMiB: 256 }),
    () => natGuest({ maxMemoryMiB: 512 }),
    false,
  ),
  (() => {
    let olds: GuestOutputs | undefined;
    return {
      // The network's last guest: its NAT rules, hotplug script and settings go with it; its disk stays as it is.
      operation: "NatDomU delete",
      reset: async () => {
        olds = await created(natGuest());
      },
      run: (ctx: Context) => natDomUKind.delete(ctx, "id", olds!),
      converged: async () => {
        const host = await look(natGuest());
        const left = [configPath(NAT_GUEST.name), NAT_SCRIPT, NAT_CONF].filter(
          (f) => host[`file ${f}`] !== "- -",
        );
        if (left.length > 0) return `left behind: ${left.join(", ")}`;
        if (host.links) return `/etc/xen/auto still holds ${host.links}`;
        if (host.masquerade !== "0" || host.forward !== "0")
          return `NAT rules left: ${host.masquerade} MASQUERADE, ${host.forward} FORWARD`;
        if (domains().size > 0) return `domains still running: ${[...domains().keys()].join(", ")}`;
        if (host.temps) return `left behind: ${host.temps}`;
        if (host.mounted) return `the disk is still mounted at ${host.mounted}`;
        if (host.hostname !== NAT_GUEST.name || !host.hostkey)
          return `the disk's data changed: hostname ${host.hostname}, host key ${host.hostkey || "none"}`;
        return undefined;
      },
    };
  })(),
  createScenario("BridgedDomU create", () => bridgedGuest()),
];

describeCutMatrix("NatDomU and BridgedDomU (Xen simulated)", scenarios, {
  relay: () => relay,
  freshContext,
  timeoutMs: 30 * 60_000,
});
