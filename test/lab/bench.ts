/**
 * Lab figures, printed as `bench <name> <value> <unit>` lines:
 *   lab_image_build      seconds to build the dom0 image (only when this run had to build it; else lab_image_cached 1)
 *   lab_boot_to_ssh      seconds from QEMU start to SSH answering
 *   lab_xl_create        seconds for `xl create` of the busybox kit guest (LV disk + vif on xenbr0)
 *   lab_guest_http       seconds from `xl create` returning to the guest answering HTTP from dom0
 *   lab_xl_destroy       seconds for `xl destroy` + `lvremove`
 *   lab_stop             seconds to stop the lab
 * Run by `npm run bench` (all figures) or `npm run bench -- lab`.
 *
 * The example's figures (`pulumi up` of the whole estate, SSH logins per host against one per resource, a no-op
 * `up`) are the walkthrough's (`npm run bench -- walkthrough`, ≈ 40 min: it boots the bare server and the source VPS,
 * see test/lab/walkthrough.ts), from the provider's cost line at the end of each resource operation
 * (provider/ssh/meter.ts) and the hosts' own sshd logs:
 *   walkthrough_up                  seconds for the `up` from a bare server to the whole estate
 *   walkthrough_up_handshakes.<host>   SSH logins the provider made to that host during it (dom0, source)
 *   walkthrough_up_handshakes_vs_one_per_resource   all of them against one login per remote resource (same run)
 *   walkthrough_up_round_trips.<Kind>.<id>   remote commands of each resource's create
 *   walkthrough_up_handshakes_of.<Kind>.<id> the logins it made (only those that made any)
 *   walkthrough_second_up           seconds for an `up` that finds nothing to change
 *   walkthrough_second_up_handshakes, walkthrough_second_up_round_trips   what it cost (goal: 0)
 *   walkthrough_preview_ssh_connections   logins the dom0's and the source's sshd accepted during a `preview`
 *                                   that plans a change (goal: 0)
 *   walkthrough_preview_operations  resource operations the provider ran during it (goal: 0)
 *   walkthrough_destroy             seconds for `destroy`
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { timed } from "./bare-server";
import { operationCosts, startWalkthroughLab, type OperationCost } from "./walkthrough";
import { Lab, buildImage } from "./lab";
import { destroyKitGuest, kitGuestConfig, waitForKitHttp } from "./kit";
import {
  LOAD_CHANGE,
  LOAD_CREATE,
  LOAD_LAB_MEMORY_MIB,
  destroyAll,
  loadProblems,
  loadStack,
  upAs,
  type LoadPhase,
  type LoadShape,
} from "./load";

/** Milliseconds as seconds with one decimal, as every figure here prints them. */
const secs = (ms: number): number => Math.round(ms / 100) / 10;

export interface LabBenchFigure {
  name: string;
  value: number;
  unit: string;
}

export async function runLabBench(
  print: (line: string) => void = (l) => console.log(l),
): Promise<LabBenchFigure[]> {
  const figures: LabBenchFigure[] = [];
  const emit = (name: string, value: number, unit: string): void => {
    figures.push({ name, value, unit });
    print(`bench ${name} ${value} ${unit}`);
  };

  let t = Date.now();
  const image = await buildImage("dom0", { log: () => undefined });
  if (image.builtNow) emit("lab_image_build", secs(Date.now() - t), "s");
  else emit("lab_image_cached", 1, "bool");

  t = Date.now();
  const lab = await Lab.start("dom0", { instance: `bench-${process.pid}`, log: () => undefined });
  try {
    emit("lab_boot_to_ssh", secs(lab.bootMs ?? Date.now() - t), "s");
    const guest = { name: "benchkit", ip: "10.99.0.20", lv: "benchkit", mac: "00:16:3e:99:00:20" };
    await lab.ssh(`lvcreate -q -y -L 32M -n ${guest.lv} vg0 >/dev/null && cat > /tmp/${guest.name}.cfg`, {
      input: kitGuestConfig(guest),
    });
    t = Date.now();
    await lab.ssh(`xl create -q /tmp/${guest.name}.cfg`, { timeoutMs: 300_000 });
    emit("lab_xl_create", secs(Date.now() - t), "s");
    t = Date.now();
    await waitForKitHttp(lab, guest.ip, 300_000);
    emit("lab_guest_http", secs(Date.now() - t), "s");
    t = Date.now();
    await destroyKitGuest(lab, guest.name, guest.lv);
    emit("lab_xl_destroy", secs(Date.now() - t), "s");
  } finally {
    t = Date.now();
    await lab.stop();
    emit("lab_stop", secs(Date.now() - t), "s");
  }
  return figures;
}

/** The walkthrough's figures; see the file's header. */
export async function runWalkthroughBench(
  print: (line: string) => void = (l) => console.log(l),
): Promise<void> {
  const emit = (name: string, value: number, unit: string): void => print(`bench ${name} ${value} ${unit}`);
  const timings: Record<string, number> = {};
  const w = await startWalkthroughLab({
    log: () => undefined,
    timed: (name, f) => timed(timings, () => undefined, name, f),
  });
  try {
    emit("walkthrough_lab_boot", timings.boot ?? 0, "s");
    /** Which machine a login went to: the source VPS by its address, anything else is the dom0's forwards. */
    const hostOf = (login: string): string =>
      login.split("@")[1]!.startsWith(`${w.src.address}:`) ? "source" : "dom0";
    const byHost = (costs: OperationCost[]): Record<string, number> => {
      const n: Record<string, number> = { dom0: 0, source: 0 };
      for (const c of costs) for (const [l, k] of Object.entries(c.logins)) n[hostOf(l)]! += k;
      return n;
    };
    const sum = (costs: OperationCost[], f: (c: OperationCost) => number): number =>
      costs.reduce((a, c) => a + f(c), 0);

    let t = Date.now();
    const up = await w.stack.up();
    emit("walkthrough_up", secs(Date.now() - t), "s");
    const costs = operationCosts(up);
    for (const [host, n] of Object.entries(byHost(costs)))
      emit(`walkthrough_up_handshakes.${host}`, n, "count");
    const remote = costs.filter((c) => c.op === "create").length;
    emit(
      "walkthrough_up_handshakes_vs_one_per_resource",
      Math.round((sum(costs, (c) => c.handshakes) / Math.max(1, remote)) * 1000) / 1000,
      "ratio",
    );
    for (const c of costs.filter((c) => c.op === "create")) {
      const name = `${c.kind}.${c.id.replace(/\s+/g, "_")}`;
      emit(`walkthrough_up_round_trips.${name}`, c.roundTrips, "count");
      if (c.handshakes > 0) emit(`walkthrough_up_handshakes_of.${name}`, c.handshakes, "count");
    }

    t = Date.now();
    const second = await w.stack.up();
    emit("walkthrough_second_up", secs(Date.now() - t), "s");
    const secondCosts = operationCosts(second);
    emit(
      "walkthrough_second_up_handshakes",
      sum(secondCosts, (c) => c.handshakes),
      "count",
    );
    emit(
      "walkthrough_second_up_round_trips",
      sum(secondCosts, (c) => c.roundTrips),
      "count",
    );

    // Counted by the servers themselves: the dom0's sshd (its journal; the count's own login is taken off) and the
    // source's (its log file).
    const dom0Logins = async (): Promise<number> =>
      Number(
        (
          await w.bare.asAdmin(
            "journalctl -u ssh.service --no-pager -o cat | grep -c 'Accepted publickey' || true",
          )
        ).trim(),
      );
    const sourceLogins = (): number =>
      (fs.readFileSync(path.join(w.src.stateDir, "sshd.log"), "utf8").match(/Accepted publickey/g) ?? [])
        .length;
    const d0 = await dom0Logins();
    const s0 = sourceLogins();
    // A preview that plans a change (the frontend's cache size), so every resource is checked and diffed.
    await w.stack.setConfig("frontend", JSON.stringify({ cacheSize: "96MiB" }));
    const preview = await w.stack.preview();
    emit("walkthrough_preview_operations", operationCosts(preview).length, "count");
    await w.stack.setConfig("frontend", JSON.stringify({ cacheSize: "64MiB" }));
    const d1 = await dom0Logins();
    emit("walkthrough_preview_ssh_connections", d1 - d0 - 1 + (sourceLogins() - s0), "count");

    t = Date.now();
    await w.bare.asAdmin("rm -f /root/.ssh/source-key /root/.ssh/guest-known-hosts");
    await w.stack.destroy();
    emit("walkthrough_destroy", secs(Date.now() - t), "s");
  } finally {
    await w.stop();
  }
}

if (require.main === module) {
  runLabBench().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}

/**
 * Load on one host (`npm run bench -- load`): the phases of test/lab/load.ts (create, change, destroy) with one
 * guest, then with ten, on one lab dom0; each phase's seconds and the ten's against the one's:
 *   load.<one|ten>.<create|change|destroy>.seconds   wall time of the phase's `up` or `destroy`
 *   load.ten.<phase>.vs-one                          ten guests' time over one guest's (10 would be no overlap)
 * The host is checked after every phase as the lab test checks it; a phase that leaves it inconsistent fails the
 * bench instead of printing a figure.
 */
export async function runLoadBench(print: (line: string) => void = (l) => console.log(l)): Promise<void> {
  const emit = (name: string, value: number, unit: string): void => print(`bench ${name} ${value} ${unit}`);
  const lab = await Lab.start("dom0", {
    instance: `bench-load-${process.pid}`,
    memoryMiB: LOAD_LAB_MEMORY_MIB,
    log: () => undefined,
  });
  try {
    const times: Record<string, Record<string, number>> = {};
    for (const [label, count] of [
      ["one", 1],
      ["ten", 10],
    ] as const) {
      const stack = await loadStack(lab, count, LOAD_CREATE);
      try {
        const phases: [string, () => Promise<LoadPhase>, LoadShape | null][] = [
          ["create", () => upAs(stack, LOAD_CREATE), LOAD_CREATE],
          ["change", () => upAs(stack, LOAD_CHANGE), LOAD_CHANGE],
          ["destroy", () => destroyAll(stack), null],
        ];
        for (const [phase, run, shape] of phases) {
          const p = await run();
          const problems = await loadProblems(lab, count, shape);
          if (problems.length > 0 || p.lockWaits.length > 0)
            throw new Error(`load ${label} ${phase}: ${[...problems, ...p.lockWaits].join("; ")}`);
          (times[label] ??= {})[phase] = p.seconds;
          emit(`load.${label}.${phase}.seconds`, Math.round(p.seconds * 10) / 10, "s");
        }
      } finally {
        await stack.remove();
      }
    }
    for (const phase of ["create", "change", "destroy"])
      emit(
        `load.ten.${phase}.vs-one`,
        Math.round((times.ten![phase]! / times.one![phase]!) * 100) / 100,
        "ratio",
      );
  } finally {
    await lab.stop();
  }
}
