/**
 * Load on one host: `count` NAT guests, each with its volume and a Varnish site, created at once by the engine, then
 * changed at once (each guest's memory, each volume's size, every site's host name), then destroyed at once, on a
 * lab dom0 (test/lab/fixtures/nat-guests, busybox kit guests). After each phase the pieces the guests share must be
 * consistent: each NAT rule once, one vif script, one autostart link per guest and no other, one VCL naming exactly
 * the sites declared and answering for each; after destroy, none of it.
 *
 * Used by test/lab/load.lab.test.ts (ten guests, the assertions) and `npm run bench -- load` (one guest, then ten:
 * each phase's wall time against one guest's, with the same checks).
 */
import { createStack, repoRoot, resourceChanges, type PulumiStack, type RunResult } from "../engine/harness";
import type { Lab } from "./lab";

/** The engine's type of the program's guests (its other kinds are LvmVolume and VarnishFrontend). */
export const NAT_TYPE = "pulumi-nodejs:dynamic/xen-estate:NatDomU";

/** What each phase declares for every guest. */
export interface LoadShape {
  /** Each guest's memory, in MiB (ballooned live within {@link LOAD_MAX_MEMORY_MIB}). */
  memoryMiB: number;
  /** Each volume's size, in MiB. */
  diskMiB: number;
  /** Guest i's site answers for `nat<i>.<domain>`. */
  domain: string;
}

/**
 * The most memory a guest may balloon to (MiB); fixed, so a memory change is live, never a restart. The kit's Debian
 * kernel and initramfs need more than 80 MiB to be laid out at all (`xc_dom_chk_alloc_pages: segment module0 too
 * large`), so a guest starts at this and is ballooned down.
 */
export const LOAD_MAX_MEMORY_MIB = 160;
/** The lab dom0's memory for ten such guests beside its own 1 GiB (MiB). */
export const LOAD_LAB_MEMORY_MIB = 3072;
/** The declared estate of the create phase, and of the change phase. */
export const LOAD_CREATE: LoadShape = { memoryMiB: 160, diskMiB: 16, domain: "a.load.test" };
export const LOAD_CHANGE: LoadShape = { memoryMiB: 128, diskMiB: 24, domain: "b.load.test" };

/** One phase's run: the engine's result, its wall time and what it did to each kind. */
export interface LoadPhase {
  seconds: number;
  run: RunResult;
  /** `op type` → how many steps (`create NatDomU` → 10). */
  ops: Record<string, number>;
  /** Lines of the run's output where a resource waited for the host lock. */
  lockWaits: string[];
}

/** The guests' names, in order. */
export function guestNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `nat${i + 1}`);
}

function summarize(run: RunResult, seconds: number): LoadPhase {
  const ops: Record<string, number> = {};
  for (const s of resourceChanges(run)) {
    const key = `${s.op} ${s.type.split(":").pop()!}`;
    ops[key] = (ops[key] ?? 0) + 1;
  }
  const lockWaits = `${run.stdout}\n${run.stderr}`
    .split("\n")
    .filter((l) => /waited \d+ s for \/run\/lock|another run holds it/.test(l));
  return { seconds, run, ops, lockWaits };
}

/** A stack of `count` guests on `lab`'s dom0, declared as `shape` (not yet up). */
export async function loadStack(lab: Lab, count: number, shape: LoadShape): Promise<PulumiStack> {
  return createStack({
    programDir: `${repoRoot()}/test/lab/fixtures/nat-guests`,
    linkPackage: true,
    timeoutMs: 60 * 60_000,
    config: {
      ...lab.stackConfig(),
      count: { value: String(count) },
      memoryMiB: { value: String(shape.memoryMiB) },
      maxMemoryMiB: { value: String(LOAD_MAX_MEMORY_MIB) },
      diskSize: { value: `${shape.diskMiB}MiB` },
      siteDomain: { value: shape.domain },
    },
  });
}

/**
 * The engine's limit on resource operations at once: above the program's 21, so that every guest's operation runs
 * beside the others (the CLI's default is 4 per CPU: 8 on the lab's 2 cores, which would queue the last guests).
 */
const PARALLEL = ["--parallel", "64"];

/** Runs `up` with the stack declaring `shape`, timed. */
export async function upAs(stack: PulumiStack, shape: LoadShape): Promise<LoadPhase> {
  await stack.setConfig("memoryMiB", String(shape.memoryMiB));
  await stack.setConfig("diskSize", `${shape.diskMiB}MiB`);
  await stack.setConfig("siteDomain", shape.domain);
  const started = Date.now();
  const run = await stack.up({ args: PARALLEL });
  return summarize(run, (Date.now() - started) / 1000);
}

/** Runs `destroy`, timed. */
export async function destroyAll(stack: PulumiStack): Promise<LoadPhase> {
  const started = Date.now();
  const run = await stack.destroy({ args: PARALLEL });
  return summarize(run, (Date.now() - started) / 1000);
}

/**
 * What on the dom0 differs from `count` guests declared as `shape` (or from none, with `shape` null): one line per
 * problem, empty when the host is consistent. Every probe must succeed: a failed look is an error, not "absent".
 */
export async function loadProblems(lab: Lab, count: number, shape: LoadShape | null): Promise<string[]> {
  const names = shape ? guestNames(count) : [];
  const problems: string[] = [];
  // One look at everything shared, each part fenced by a marker line; a failed command fails the whole look.
  const look = await lab.ssh(
    [
      "set -euo pipefail",
      "echo '== domains'; xl list | awk 'NR>1 && $1 ~ /^nat[0-9]+$/ {print $1}' | sort",
      "echo '== targets'",
      "for d in $(xl list | awk 'NR>1 && $1 ~ /^nat[0-9]+$/ {print $1}'); do echo \"$d $(xenstore-read /local/domain/$(xl domid $d)/memory/target)\"; done",
      "echo '== volumes'; lvs --noheadings --units m --nosuffix -o lv_name,lv_size vg0 | awk '$1 ~ /^nat[0-9]+-disk$/ {print $1, $2}' | sort",
      // (`{ grep … || true; }`: no match is an answer; a failing iptables-save or ls still fails the look.)
      "ours() { { grep -- '--comment xen-estate-nat' || true; }; }",
      "echo '== masquerade'; iptables-save -t nat | ours | { grep -c -- '-j MASQUERADE' || true; }",
      "echo '== forward'; iptables-save -t filter | ours | { grep -c '^-A FORWARD' || true; }",
      "echo '== vif scripts'; ls -A /etc/xen/scripts | { grep -c xen-estate-nat || true; }",
      "echo '== autostart'; ls -A /etc/xen/auto | { grep '^nat' || true; }",
      // The VCL names each site's hosts once in its "# Site <n>: <hosts>" line.
      "echo '== vcl'; if [ -f /etc/varnish/xen-estate.vcl ]; then sed -n 's/^# Site [0-9]*: //p' /etc/varnish/xen-estate.vcl | sort; else echo absent; fi",
      "echo '== end'",
    ].join("\n"),
    { timeoutMs: 300_000 },
  );
  const parts = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of look.split("\n")) {
    const header = /^== (.+)$/.exec(line);
    if (header) parts.set(header[1]!, (current = []));
    else if (current && line.trim() !== "") current.push(line);
  }
  if (!parts.has("end")) throw new Error(`the dom0's look ended early:\n${look}`);
  const part = (name: string): string[] => {
    const lines = parts.get(name);
    if (!lines) throw new Error(`the dom0's look printed no ${name} part:\n${look}`);
    return lines;
  };
  const expect = (what: string, got: unknown, want: unknown): void => {
    if (JSON.stringify(got) !== JSON.stringify(want))
      problems.push(`${what}: ${JSON.stringify(got)}, declared ${JSON.stringify(want)}`);
  };
  const sorted = [...names].sort();
  expect("running guests", part("domains").sort(), sorted);
  if (shape) {
    expect(
      "memory targets (KiB)",
      part("targets").sort(),
      sorted.map((n) => `${n} ${shape.memoryMiB * 1024}`),
    );
    expect(
      "volumes (MiB)",
      part("volumes")
        .map((l) => l.replace(/\.00$/, ""))
        .sort(),
      sorted.map((n) => `${n}-disk ${shape.diskMiB}`).sort(),
    );
  } else expect("volumes", part("volumes"), []);
  // A NAT guest's pieces: one MASQUERADE for the network, two FORWARD rules, one vif script.
  expect("NAT MASQUERADE rules", part("masquerade"), [shape ? "1" : "0"]);
  expect("NAT FORWARD rules", part("forward"), [shape ? "2" : "0"]);
  expect("NAT vif scripts", part("vif scripts"), [shape ? "1" : "0"]);
  expect(
    "autostart links",
    part("autostart").sort(),
    sorted.map((n) => `${n}.cfg`),
  );
  expect(
    "sites in the VCL",
    part("vcl").sort(),
    shape ? sorted.map((n) => `${n}.${shape.domain}`) : ["absent"],
  );
  if (shape)
    for (const n of names) {
      const r = await lab.exec(
        `curl -sS --noproxy '*' --max-time 10 -H 'Host: ${n}.${shape.domain}' http://127.0.0.1/`,
        { timeoutMs: 60_000 },
      );
      if (r.exitCode !== 0 || !r.stdout.includes(`xen-estate-kit ok name=${n}`))
        problems.push(
          `${n}.${shape.domain} through Varnish: exit ${r.exitCode}, ${JSON.stringify(r.stdout.slice(0, 200))} ${r.stderr.trim()}`,
        );
    }
  return problems;
}

/** The steps a phase should have made, as {@link LoadPhase.ops} counts them. */
export function expectedOps(phase: "create" | "change" | "destroy", count: number): Record<string, number> {
  const op = { create: "create", change: "update", destroy: "delete" }[phase];
  return { [`${op} NatDomU`]: count, [`${op} LvmVolume`]: count, [`${op} VarnishFrontend`]: 1 };
}
