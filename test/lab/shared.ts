/**
 * Lab machines shared by test files. A lab test file says once, at its top level, which machine it needs:
 *
 *   const machine = labMachine("dom0");                       // the shared dom0
 *   const machine = labMachine("dom0", { source: true });     // the same, plus a fresh source VPS at 10.0.2.101:22
 *   const machine = labMachine("dom0", { memoryMiB: 3072 });  // a dom0 of another size: a boot of its own
 *   const machine = labMachine("bare", { fresh: true });      // a machine for this file alone (it changes it for good)
 *
 *   describe("…", () => {
 *     let lab: Lab;
 *     before(async () => { lab = await machine.acquire(); });
 *     after(async () => { …remove what the file made…; await machine.release(); });
 *   });
 *
 * test/run-tests.mjs reads these declarations before it runs anything (test/support/plan.ts), boots one machine per
 * distinct need, runs every file that needs it on it, one after another, and stops it at the end
 * (`XEN_ESTATE_LAB_SHARED` tells a file which running machine is its own). Run alone
 * (`node --test dist/test/resources/lvm-volume.lab.test.js`) a file boots its own machine and stops it.
 *
 * `acquire` records the machine's state (guests, volumes, block devices, mounts, links, addresses, routes, firewall
 * rules, the files xen-estate writes, services, packages: `STATE_SCRIPT`), `release` records it again and fails the
 * file with the difference when the file did not leave the machine as it found it. Then the runner boots a fresh
 * machine for the next file instead of handing it a dirty one. A test that fails prints the machine's console tail.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { afterEach } from "node:test";
import { LAB_HOSTS, Lab, LabHostName, defaultMemoryMiB } from "./lab";
import { SourceVps, sourceSlot } from "./source";

/** What a lab test file needs. Files whose needs have the same `needKey` share one boot. */
export interface LabNeed {
  host: LabHostName;
  /** QEMU RAM in MiB. @default 2048 for dom0, 1024 for bare (Lab.start's) */
  memoryMiB: number;
  /** A fresh source VPS for this file, reachable from the dom0 at 10.0.2.101:22 (`machine.source`). @default false */
  source: boolean;
  /** A machine for this file alone: it changes the machine beyond undoing (installs Xen, reboots it). @default false */
  fresh: boolean;
}

export type LabNeedOptions = Partial<Omit<LabNeed, "host">>;

/** Where a dom0 finds the source VPS of a `source: true` file. */
export const SOURCE_GUEST_ADDRESS = "10.0.2.101";

/** The machine a shared run hands a file (JSON in XEN_ESTATE_LAB_SHARED). */
export interface SharedMachine {
  key: string;
  instance: string;
  /** The source VPS slot the machine's forward points at (SourceVps.start({ slot })). */
  sourceSlot?: number;
}

/** What `release` tells the runner (JSON written to XEN_ESTATE_LAB_REPORT). */
export interface ReleaseReport {
  clean: boolean;
  leftovers: string;
}

/** Same key, same machine (files that need a fresh one never share it, whatever their key). */
export function needKey(need: LabNeed): string {
  return `${need.host}-${need.memoryMiB}MiB${need.fresh ? "-fresh" : ""}`;
}

/** Every labMachine() call this process has made (test/support/plan.ts reads them for each file it loads). */
const declared: LabNeed[] = [];

export function takeDeclaredNeeds(): LabNeed[] {
  return declared.splice(0);
}

/** Declares the lab machine this file needs; see the file header. Call it once, at the file's top level. */
export function labMachine(host: LabHostName, opts: LabNeedOptions = {}): LabMachine {
  if (!LAB_HOSTS.includes(host)) throw new Error(`unknown lab host ${host}; hosts: ${LAB_HOSTS.join(", ")}`);
  const need: LabNeed = {
    host,
    memoryMiB: opts.memoryMiB ?? defaultMemoryMiB(host),
    source: opts.source ?? false,
    fresh: opts.fresh ?? false,
  };
  declared.push(need);
  const machine = new LabMachine(need);
  afterEach((t) => {
    // afterEach runs for tests, whose context says whether they passed.
    if (!("passed" in t) || t.passed) return;
    machine.noteFailure(t.name);
  });
  return machine;
}

export class LabMachine {
  private lab?: Lab;
  private own = false;
  private before?: string;
  private failures = 0;
  /** The file's source VPS (`source: true`), after acquire. */
  source?: SourceVps;

  constructor(readonly need: LabNeed) {}

  /** The running machine handed over by test/run-tests.mjs, if this process runs under it. */
  static shared(): SharedMachine | undefined {
    const s = process.env.XEN_ESTATE_LAB_SHARED;
    return s ? (JSON.parse(s) as SharedMachine) : undefined;
  }

  /** Boots the machine (alone) or takes the shared one (under the runner), and records its state. */
  async acquire(): Promise<Lab> {
    const shared = LabMachine.shared();
    if (shared) {
      const key = needKey(this.need);
      if (shared.key !== key)
        throw new Error(
          `this file declares ${key} but the runner handed it ${shared.key}: the declaration must be at the file's top level`,
        );
      const lab = Lab.attach(shared.instance);
      if (!lab?.isRunning()) throw new Error(`the shared lab machine ${shared.instance} is not running`);
      this.lab = lab;
      if (this.need.source) {
        if (shared.sourceSlot === undefined) throw new Error("the shared machine has no source VPS forward");
        this.source = await SourceVps.start({ slot: shared.sourceSlot });
      }
    } else {
      if (this.need.source) this.source = await SourceVps.start();
      this.lab = await Lab.start(this.need.host, {
        memoryMiB: this.need.memoryMiB,
        log: (l) => console.log(`# ${l}`),
        forwards: this.source ? [this.source.dom0Forward(SOURCE_GUEST_ADDRESS)] : [],
      });
      this.own = true;
    }
    this.before = await machineState(this.lab);
    return this.lab;
  }

  /** A test of this file failed: show the machine's console tail once (the command's stderr is in the error). */
  noteFailure(test: string): void {
    this.failures++;
    if (this.failures > 1 || !this.lab) return;
    process.stderr.write(
      `# lab ${this.lab.instance}: "${test}" failed; the machine's console, last 40 lines (${this.lab.consoleLog}):\n` +
        `${this.lab
          .consoleTail(40)
          .split("\n")
          .map((l) => `#   ${l}`)
          .join("\n")}\n`,
    );
  }

  /**
   * Fails unless the machine is as `acquire` found it; stops the source VPS, and the machine when it is this file's
   * own (keeping its console log when something failed). Call it last in the file's `after`.
   */
  async release(): Promise<void> {
    let leftovers =
      this.lab && this.before === undefined ? "its state was never recorded (acquire failed)" : "";
    try {
      if (this.lab && this.before !== undefined) {
        if (!this.lab.isRunning())
          leftovers = `the machine is no longer running\n${this.lab.consoleTail(20)}`;
        else leftovers = diffMachineState(this.before, await machineState(this.lab));
      }
    } catch (e) {
      leftovers = `could not read the machine's state: ${e instanceof Error ? e.message : String(e)}`;
    }
    await this.source?.stop();
    const report = process.env.XEN_ESTATE_LAB_REPORT;
    const told: ReleaseReport = { clean: leftovers === "", leftovers };
    if (report) fs.writeFileSync(report, JSON.stringify(told));
    if (this.own && this.lab) {
      const kept = await stopAndProve(this.lab, { keepConsoleLog: this.failures > 0 || leftovers !== "" });
      if (kept) console.log(`# console log kept: ${kept}`);
    }
    if (leftovers)
      assert.fail(`the ${this.need.host} machine was not left as this file found it:\n${leftovers}`);
  }
}

/** Stops a machine and proves it is gone: QEMU has exited and the overlays are removed. Returns a kept console log. */
export async function stopAndProve(
  lab: Lab,
  opts: { keepConsoleLog?: boolean } = {},
): Promise<string | undefined> {
  const pid = lab.qemuPid;
  const kept = await lab.stop(opts);
  assert.equal(fs.existsSync(`/proc/${pid}`), false, "QEMU is gone after stop()");
  assert.equal(fs.existsSync(lab.stateDir), false, "the overlays are removed");
  return kept;
}

/** Boots a machine for the runner to share among the files that need it. */
export async function bootShared(
  need: LabNeed,
  key: string,
  log: (line: string) => void,
): Promise<{ lab: Lab; shared: SharedMachine }> {
  const slot = need.source ? sourceSlot() : undefined;
  const instance = `shared-${need.host}-${process.pid}`;
  const lab = await Lab.start(need.host, {
    instance,
    memoryMiB: need.memoryMiB,
    log,
    forwards: slot
      ? [{ guestAddress: SOURCE_GUEST_ADDRESS, guestPort: 22, target: `${slot.address}:22` }]
      : [],
  });
  const shared: SharedMachine = { key, instance };
  if (slot) shared.sourceSlot = slot.slot;
  return { lab, shared };
}

/**
 * Prints what a test file may change on a lab machine and must put back, one `## section` header before each
 * section's lines (sorted). Tools a machine lacks (no `xl` on the bare server) print a marker; any other failure
 * fails the script, so a probe that could not look never reads as "nothing there". Left out on purpose: lock files
 * in /run/lock (they stay by design), apt's package lists (`apt-get update` changes nothing that is installed),
 * timer-started services (apt-daily and the like come and go), IPv6 addresses (the user network's RAs).
 */
export const STATE_SCRIPT = String.raw`
set -euo pipefail
export LC_ALL=C LVM_SUPPRESS_FD_WARNINGS=1
s() { printf '## %s\n' "$1"; }
have() { command -v "$1" >/dev/null 2>&1; }
# Right after a boot systemd may still be starting units and too busy to answer systemctl within its 25 s: wait until
# the boot is done (running or degraded) first, a readiness check rather than a retry.
timeout 600 systemctl is-system-running --wait >/dev/null 2>&1 || true
s guests
if have xl; then xl list | awk 'NR > 1 { print $1 }' | sort; else echo "(no xl)"; fi
s "logical volumes"
if have lvs; then lvs --noheadings --units b --nosuffix -o vg_name,lv_name,lv_size | awk '{$1=$1; print}' | sort; else echo "(no lvm)"; fi
s "volume groups and physical volumes"
if have pvs; then pvs --noheadings -o pv_name,vg_name | awk '{$1=$1; print}' | sort; fi
s "block devices"
lsblk -rno NAME,TYPE,SIZE,FSTYPE,LABEL | sort
s mounts
findmnt -rno TARGET,SOURCE,FSTYPE | awk '$1 !~ /^\/run\/user\//' | sort
s "loop devices"
losetup -ln -O NAME,BACK-FILE | sort
s "network links"
ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort
s "IPv4 addresses"
ip -o -4 addr show | awk '{ print $2, $4 }' | sort
s "IPv4 routes"
ip -4 route show | sort
s "iptables"
if have iptables-save; then
  # Rules and chains only: a table that merely got loaded (default ACCEPT chains, no rule) is not a leftover.
  for t in iptables-save ip6tables-save; do
    $t | sed -E '/^#/d; s/\[[0-9]+:[0-9]+\]//; s/ +$//' | grep -Ev '^(\*[a-z]+|COMMIT|:(INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) ACCEPT)$' || true
  done
fi
s "nftables"
if have nft; then nft -s list ruleset; fi
s "files in /etc"
# LVM archives its metadata before every change by itself (/etc/lvm/archive, /etc/lvm/backup): bookkeeping, not a
# leftover; the volumes themselves are listed above.
# /etc/xen/auto is Xen's autostart directory: made by the first guest that autostarts and kept, like xendomains' own.
find /etc -xdev \( -path /etc/lvm/archive -o -path /etc/lvm/backup \) -prune -o ! -path /etc/xen/auto -print | sort
s "contents of configuration xen-estate writes"
for d in /etc/xen /etc/varnish /etc/systemd/system /etc/network /etc/default /etc/sysctl.d /etc/modules-load.d /etc/apt /root/.ssh; do
  if [ -e "$d" ]; then find "$d" -xdev -type f -print0 | sort -z | xargs -0r sha256sum; fi
done
s "xen-estate's data, backups and scratch"
# Not /var/backups/xen-estate: the dated backups of a destroyed resource's files are kept on purpose.
for d in /var/lib/xen-estate; do
  if [ -e "$d" ]; then find "$d" -xdev -printf '%p %s\n' | sort; fi
done
find /run -maxdepth 1 -name 'xen-estate*' | sort
find /tmp /var/tmp -mindepth 1 -maxdepth 1 ! -name 'systemd-private-*' | sort
s "running services"
timers=$(systemctl list-timers --all --no-legend --plain | awk '{ print $NF }')
running=$(systemctl list-units --type=service --state=running --no-legend --plain)
awk -v timers="$timers" 'BEGIN { n = split(timers, t, "\n"); for (i = 1; i <= n; i++) skip[t[i]] = 1 }
  !($1 in skip) && $1 !~ /^user@/ { print $1 }' <<<"$running" | sort
s "enabled units"
# What enabling leaves: links in /etc/systemd/system (list-unit-files asks PID 1 to read every unit file, which on a
# busy emulated machine outlasts systemctl's 25 s bus timeout).
find /etc/systemd/system -xdev -type l -printf '%P -> %l\n' | sort
s packages
dpkg -l | awk '/^[a-z][a-z] / { print $1, $2, $3 }' | sort
`;

/** The machine's state as STATE_SCRIPT prints it. */
export function machineState(lab: Lab): Promise<string> {
  return lab.ssh("bash -s", { input: STATE_SCRIPT, timeoutMs: 900_000 });
}

/** Lines only in `before` (-) or only in `after` (+), per section; "" when the two states are the same. */
export function diffMachineState(before: string, after: string): string {
  const sections = (text: string): Map<string, string[]> => {
    const m = new Map<string, string[]>();
    let cur = "";
    for (const line of text.split("\n")) {
      if (line.startsWith("## ")) {
        cur = line.slice(3);
        m.set(cur, []);
      } else if (line.trim() !== "") {
        if (!m.has(cur)) m.set(cur, []);
        m.get(cur)!.push(line);
      }
    }
    return m;
  };
  const a = sections(before);
  const b = sections(after);
  const out: string[] = [];
  for (const name of new Set([...a.keys(), ...b.keys()])) {
    const was = a.get(name) ?? [];
    const now = b.get(name) ?? [];
    const count = (xs: string[]): Map<string, number> => {
      const c = new Map<string, number>();
      for (const x of xs) c.set(x, (c.get(x) ?? 0) + 1);
      return c;
    };
    const cw = count(was);
    const cn = count(now);
    const lines: string[] = [];
    for (const [l, n] of cw) for (let i = 0; i < n - (cn.get(l) ?? 0); i++) lines.push(`  - ${l}`);
    for (const [l, n] of cn) for (let i = 0; i < n - (cw.get(l) ?? 0); i++) lines.push(`  + ${l}`);
    if (!a.has(name) || !b.has(name)) lines.push(`  (section ${a.has(name) ? "gone" : "new"})`);
    if (lines.length > 0) out.push(`${name}:`, ...lines);
  }
  return out.join("\n");
}
