/**
 * HetznerInstallimage under cut connections (issue 15): its create (look at the rescue system's drives,
 * `installimage -a` with the generated host key in its post-install hook, the reboot, then the installed system
 * dialled with that key) has the provider's SSH path dropped at each remote step in turn; the next run, as the
 * engine makes it (a create that recorded the installed system's key continues as the provider runtime's update,
 * with its own context dialled with that key as `reachedBy` says and its checks of the machine around the kind's;
 * one that recorded nothing is made again), must converge: the box runs the installed system,
 * reached with the host key the last outputs record (the key that system really has), installimage's last run went
 * to its end with the declared config, nothing is half done (no reboot still to make, no hook left) and no private
 * host key is left in the rescue system's files or in the outputs.
 *
 * THE RESCUE SYSTEM IS SIMULATED (test/support/rescue-sim.ts): a real sshd in a network namespace of its own with
 * the rescue system's host key, whose sessions find simulated `installimage`, `lsblk` and `reboot` first on their
 * PATH; the simulated reboot restarts that sshd on the same address with the host key the hook installed and no
 * rescue tools (the "installed system"). Real: the sshd, bash, the kind's scripts, the host-key pins and the cut TCP
 * path (a {@link CutRelay} in front of the simulator's sshd, through which every run dials, the installed system's
 * too). It proves the resource's protocol under cuts, never installimage or a real machine's reboot.
 */
import { after, before } from "node:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  Checker,
  hetznerInstallimageKind,
  hostContext,
  resolveConnection,
  runtime,
  setSharedPool,
  SshPool,
  VERSION,
  type Context,
  type HetznerInstallimageInputs,
  type HetznerInstallimageOutputs,
} from "../../provider";
import { completeOuts } from "../../provider/framework/runtime";
import { WORK_DIR } from "../../provider/resources/hetzner-installimage/scripts";
import { HOST_ID_SCRIPT } from "../../provider/ssh/connection";
import { checked } from "../support/checked";
import { CutRelay, describeCutMatrix, type CutScenario, type LastRun } from "../support/cut-matrix";
import { RESCUE_DISKS, RESCUE_IMAGE, RESCUE_INSTALL, RescueSim } from "../support/rescue-sim";
import { generateKey, type KeyPair } from "../support/sshd";

const KIND = "HetznerInstallimage";
/** The resource's id, as the kind makes it from the connection. */
const ID = "127.0.0.1:installimage";
/** A private key as PEM or OpenSSH armour, or the base64 of the OpenSSH format's magic (`openssh-key-v1`). */
const PRIVATE_KEY = /PRIVATE KEY|b3BlbnNzaC1rZXktdjE/;

let dir: string;
let key: KeyPair;
let sim: RescueSim;
let relay: CutRelay;
/** What the engine holds of the resource between runs: the outputs a failed create recorded, if any. */
let recorded: HetznerInstallimageOutputs | undefined;
/** Each simulated `up`'s shared pool (closed at the end). */
const pools: SshPool[] = [];

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xecut-ii-"));
  key = await generateKey(dir, "client");
  sim = await RescueSim.start({
    disks: [...RESCUE_DISKS],
    images: [RESCUE_IMAGE],
    authorizedKeys: [key.publicKey],
  });
  relay = new CutRelay(sim.address, sim.sshd.port);
  await relay.start();
});

after(async () => {
  setSharedPool(undefined);
  for (const p of pools) await p.close();
  await relay?.stop();
  await sim?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * A context over fresh pools (a new `pulumi up` process) through the relay, pinned as the engine's would be: to the
 * installed system's key once the state records it (the kind's `reachedBy`), else to the rescue system's.
 */
function freshContext(): Context {
  // A new process has a new shared pool, so it reads the machine id again (the runtime's first step of a create).
  const shared = new SshPool();
  pools.push(shared);
  setSharedPool(shared);
  const pin =
    (recorded && hetznerInstallimageKind.reachedBy?.(recorded)?.hostKey) ?? sim.rescueHostKey.fingerprint;
  return hostContext(relay.freshHost(pin, key.privateKey));
}

function declared(): HetznerInstallimageInputs {
  return checked<HetznerInstallimageInputs>(KIND, {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: sim.rescueHostKey.fingerprint },
    credentials: { privateKey: key.privateKey },
    xenEstateVersion: VERSION,
    ...RESCUE_INSTALL,
  });
}

/** The machine id of the system that answers straight at the simulator's address (not through the relay) with `pin`. */
async function machineAnswering(pin: string): Promise<string> {
  const pool = new SshPool();
  try {
    const conn = resolveConnection(
      new Checker(),
      { host: sim.address, port: sim.sshd.port, hostKey: pin, dialErrorLimit: 1, perDialTimeout: 5 },
      { privateKey: key.privateKey },
    )!;
    return (await pool.host(conn).script(HOST_ID_SCRIPT, { summary: "read the machine id" })).stdout.trim();
  } finally {
    await pool.close();
  }
}

/** The rescue system's files the resource writes (its RAM, WORK_DIR): name → content. */
function rescueFiles(): Map<string, string> {
  const files = new Map<string, string>();
  if (!fs.existsSync(WORK_DIR)) return files;
  for (const f of fs.readdirSync(WORK_DIR)) files.set(f, fs.readFileSync(path.join(WORK_DIR, f), "utf8"));
  return files;
}

/** Why the box has not converged to the installed system the last outputs `outs` describe, or undefined. */
async function installedAsRecorded(
  outs: HetznerInstallimageOutputs | undefined,
): Promise<string | undefined> {
  if (sim.state !== "installed") return "the box still runs the rescue system";
  if (!sim.installComplete()) return "installimage's last run did not go to its end";
  if (sim.installedConfig() !== declared().config) return "installimage's last run had another config";
  if (!outs) return "the last run returned no outputs";
  const running = sim.sshd.hostKey;
  if (outs.installedHostKey !== running.publicKey.split(/\s+/).slice(0, 2).join(" "))
    return `the outputs record the host key ${outs.installedFingerprint}, the installed system has ${running.fingerprint}`;
  if (outs.installedFingerprint !== running.fingerprint)
    return `the outputs record the fingerprint ${outs.installedFingerprint}, not ${running.fingerprint}`;
  let machine: string;
  try {
    machine = await machineAnswering(outs.installedHostKey);
  } catch (err) {
    return `the installed system does not answer with the recorded key: ${(err as Error).message.split("\n")[0]}`;
  }
  if (outs.hostId !== machine)
    return `the outputs name the machine ${outs.hostId}, the installed system is ${machine}`;
  const left = rescueFiles();
  if (left.has("post-install.sh")) return `the post-install hook is left in ${WORK_DIR}`;
  for (const [f, content] of left)
    if (PRIVATE_KEY.test(content)) return `${WORK_DIR}/${f} holds a private key`;
  const { credentials: _secret, ...readable } = outs;
  if (PRIVATE_KEY.test(JSON.stringify(readable))) return "the outputs hold a private key";
  return undefined;
}

/** The create, as the engine makes it: one that recorded the installed system's key continues as an update. */
function createScenario(): CutScenario<HetznerInstallimageOutputs> {
  let outs: HetznerInstallimageOutputs | undefined;
  return {
    operation: "create",
    reset: async () => {
      await sim.bootRescue();
      recorded = undefined;
      outs = undefined;
    },
    run: async (ctx: Context, last: LastRun<HetznerInstallimageOutputs>) => {
      const i = declared();
      if (last.partial) {
        // The engine's update of a failed create, through the provider's runtime as `pulumi up` runs it: its own
        // context (a fresh pool, the connection pinned by reachedBy) and its checks before and after the kind's.
        const pool = new SshPool();
        setSharedPool(pool);
        try {
          const r = await runtime.update(KIND, ID, { ...last.partial }, { ...i });
          outs = r.outs as HetznerInstallimageOutputs;
        } finally {
          setSharedPool(undefined);
          await pool.close();
        }
        return outs;
      }
      let partial: Partial<HetznerInstallimageOutputs> | undefined;
      // The runtime's create reads the machine it starts on first (a step of its own, cut like the others).
      const startedOn = await ctx.hostId(ctx.host);
      try {
        outs = await hetznerInstallimageKind.create(ctx, i, (p) => (partial = p));
        return outs;
      } catch (err) {
        // What the runtime records of a failed create that reported progress: the outputs so far, completed with
        // the common inputs and the machine the create started on (the rescue system), unless they name one.
        if (partial)
          recorded = last.partial = completeOuts(
            hetznerInstallimageKind,
            { ...i },
            { ...i, ...partial },
            startedOn,
          ) as unknown as HetznerInstallimageOutputs;
        throw err;
      }
    },
    converged: () => installedAsRecorded(outs),
  };
}

describeCutMatrix("HetznerInstallimage (rescue system simulated)", [createScenario()], {
  relay: () => relay,
  freshContext,
  timeoutMs: 15 * 60_000,
});
