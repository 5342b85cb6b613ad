/**
 * LvmVolume under cut connections (issue 15): for create (a formatted volume, a snapshot), a grow and delete, the
 * SSH path to a real sshd is dropped before, during and after each remote step in turn; the next run (as the engine
 * makes it) must converge: exactly one volume of the declared size, formatted once, no tag of an unfinished create
 * left on it; after delete, no volume, and its blocks zeroed before it went.
 *
 * LVM IS SIMULATED here: this kernel has no device-mapper, so lvcreate, lvs, lvchange, lvextend, lvremove, blkid and
 * mkfs are the stateful SIMULATOR of test/support/lvm-sim.ts (a table of volumes the tools change and answer from).
 * Real: the sshd, bash, the kind's scripts and the cut TCP path. What real LVM does with the same scripts is proven
 * by the lab (test/resources/lvm-volume.lab.test.ts).
 */
import { after, before } from "node:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  Checker,
  hostContext,
  lvmVolumeKind,
  resolveConnection,
  SshPool,
  VERSION,
  type Context,
  type LvmVolumeInputs,
  type LvmVolumeOutputs,
  type RemoteHost,
} from "../../provider";
import { CREATING_TAG } from "../../provider/resources/lvm-volume/scripts";
import { checked } from "../support/checked";
import { CutRelay, ALL_WAYS, describeCutMatrix, type CutScenario, type LastRun } from "../support/cut-matrix";
import { lvmSimulator, SIM_EXTENT, type LvmSimulator } from "../support/lvm-sim";
import { generateKey, startSshd, type KeyPair, type Sshd } from "../support/sshd";
import { withStubs } from "../support/stub-commands";

const MiB = 2 ** 20;

let dir: string;
let sshd: Sshd;
let key: KeyPair;
let relay: CutRelay;
let admin: RemoteHost;
let sim: LvmSimulator;
const pools: SshPool[] = [];

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xecut-lvm-"));
  key = await generateKey(dir, "client");
  sshd = await startSshd({ authorizedKeys: [key.publicKey] });
  relay = new CutRelay(sshd.host, sshd.port);
  await relay.start();
  const pool = new SshPool();
  pools.push(pool);
  admin = pool.host(
    resolveConnection(
      new Checker(),
      { host: sshd.host, port: sshd.port, hostKey: sshd.hostKey.fingerprint },
      { privateKey: key.privateKey },
    )!,
  );
});

after(async () => {
  for (const p of pools) await p.close();
  await relay?.stop();
  await sshd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A context over a fresh pool (a new `pulumi up` process) through the relay, seeing the simulated LVM. */
function freshContext(): Context {
  return hostContext(withStubs(relay.freshHost(sshd.hostKey.fingerprint, key.privateKey), sim.dir));
}

function inputs(extra: Record<string, unknown>): LvmVolumeInputs {
  return checked<LvmVolumeInputs>("LvmVolume", {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: sshd.hostKey.fingerprint },
    xenEstateVersion: VERSION,
    name: "web1-root",
    size: "64MiB",
    filesystem: "ext4",
    ...extra,
  });
}
const SNAPSHOT = { name: "web1-root-preboot", size: "32MiB", filesystem: "none", snapshotOf: "web1-root" };

/** vg0 holding web1-root (`sizeMiB`, formatted ext4 once), as a finished create of it leaves the host. */
function withVolume(sizeMiB: number): void {
  sim = lvmSimulator(admin, dir, []);
  fs.writeFileSync(path.join(sim.dir, "rows"), `web1-root\t-\t${sizeMiB * MiB}\t-\n`);
  fs.writeFileSync(path.join(sim.dir, "formatted"), "/dev/vg0/web1-root ext4\n");
}

/** The engine's state after a finished create of web1-root at `sizeMiB`. */
function createdState(sizeMiB: number): LvmVolumeOutputs {
  return {
    ...inputs({ size: `${sizeMiB}MiB` }),
    path: "/dev/vg0/web1-root",
    allocatedBytes: sizeMiB * MiB,
    extentBytes: SIM_EXTENT,
    uuid: "00000000-0000-4000-8000-000000000009",
    adopted: false,
  };
}

/** Why vg0 does not hold exactly the declared volume (and `others`), or undefined. */
function holdsExactly(
  want: { name: string; sizeMiB: number; origin: string | null; formatted: boolean },
  others: string[],
  outs: LvmVolumeOutputs | undefined,
): string | undefined {
  const vols = sim.volumes();
  const mine = vols.filter((v) => v.name === want.name);
  if (mine.length !== 1) return `vg0 holds ${mine.length} volumes named ${want.name}`;
  const v = mine[0]!;
  if (v.sizeBytes !== want.sizeMiB * MiB) return `${want.name} has ${v.sizeBytes} bytes`;
  if (v.origin !== want.origin) return `${want.name} is a snapshot of ${v.origin ?? "nothing"}`;
  if (v.tags.includes(CREATING_TAG)) return `${want.name} still carries ${CREATING_TAG}`;
  const rest = vols.filter((x) => x.name !== want.name).map((x) => x.name);
  if (rest.join(",") !== others.join(",")) return `vg0 also holds [${rest.join(", ")}]`;
  const formats = sim.formatted().filter((f) => f.startsWith(`/dev/vg0/${want.name} `)).length;
  if (formats !== (want.formatted ? 1 : 0)) return `${want.name} was formatted ${formats} times`;
  if (!outs) return "the last run returned no outputs";
  if (outs.allocatedBytes !== v.sizeBytes) return `the outputs say ${outs.allocatedBytes} bytes`;
  if (outs.adopted) return "the outputs say the volume was adopted";
  return undefined;
}

/** A create, as the engine makes it: one that recorded what it made continues as an update. */
function createScenario(
  operation: string,
  declared: () => LvmVolumeInputs,
  reset: () => void,
  want: Parameters<typeof holdsExactly>[0],
  others: string[],
): CutScenario<LvmVolumeOutputs> {
  let outs: LvmVolumeOutputs | undefined;
  return {
    operation,
    reset: () => {
      reset();
      outs = undefined;
      return Promise.resolve();
    },
    run: async (ctx: Context, last: LastRun<LvmVolumeOutputs>) => {
      if (last.partial) {
        outs = await lvmVolumeKind.update(ctx, "id", last.partial, declared(), {
          changed: [],
          replaces: [],
          classes: {},
        });
        return outs;
      }
      let partial: Partial<LvmVolumeOutputs> | undefined;
      try {
        outs = await lvmVolumeKind.create(ctx, declared(), (p) => (partial = p));
        return outs;
      } catch (err) {
        if (partial) last.partial = { ...declared(), ...partial } as LvmVolumeOutputs;
        throw err;
      }
    },
    converged: () => Promise.resolve(holdsExactly(want, others, outs)),
  };
}

const scenarios = (): CutScenario<LvmVolumeOutputs>[] => {
  let grown: LvmVolumeOutputs | undefined;
  return [
    createScenario(
      "create",
      () => inputs({}),
      () => (sim = lvmSimulator(admin, dir, [])),
      { name: "web1-root", sizeMiB: 64, origin: null, formatted: true },
      [],
    ),
    createScenario(
      "create (snapshot)",
      () => inputs(SNAPSHOT),
      () => withVolume(64),
      { name: "web1-root-preboot", sizeMiB: 32, origin: "web1-root", formatted: false },
      ["web1-root"],
    ),
    {
      operation: "update (grow)",
      reset: () => {
        withVolume(64);
        grown = undefined;
        return Promise.resolve();
      },
      run: async (ctx) => {
        grown = await lvmVolumeKind.update(ctx, "id", createdState(64), inputs({ size: "128MiB" }), {
          changed: ["size", "sizeBytes"],
          replaces: [],
          classes: {},
        });
      },
      converged: () => {
        const why = holdsExactly(
          { name: "web1-root", sizeMiB: 128, origin: null, formatted: true },
          [],
          grown,
        );
        if (why) return Promise.resolve(why);
        if (sim.argv("resize2fs").length === 0) return Promise.resolve("the filesystem was never grown");
        return Promise.resolve(undefined);
      },
    },
    {
      operation: "delete",
      reset: () => {
        withVolume(64);
        return Promise.resolve();
      },
      run: (ctx) => lvmVolumeKind.delete(ctx, "id", createdState(64)),
      converged: () => {
        if (sim.volumes().length > 0) return Promise.resolve(`vg0 still holds ${sim.rows().join(", ")}`);
        const zeroed = sim.argv("blkdiscard").some((a) => a.includes("--zeroout"));
        return Promise.resolve(zeroed ? undefined : "the volume was removed without being zeroed");
      },
    },
  ];
};

describeCutMatrix("LvmVolume (LVM simulated)", scenarios(), {
  relay: () => relay,
  freshContext,
  ways: ALL_WAYS,
  steps: "every",
  timeoutMs: 20 * 60_000,
});
