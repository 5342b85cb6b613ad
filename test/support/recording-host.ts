/**
 * SIMULATOR: a stand-in for a dom0 that records every script a kind sends and answers each one plausibly, so a
 * unit test can collect "every script the kind would run" for create, read, update and delete without a host.
 *
 * It runs nothing. Its answers are canned by recognising the script (the write primitive's base64 upload, the
 * volume probe's markers, `xl list`, …) and are only as good as that recognition: they say "the file was written",
 * "the volume exists with this size", "the domain runs", never anything the inputs did not imply. What the scripts
 * really do is proven elsewhere: by the ssh suite (the same recorded scripts run by real bash over a real sshd, see
 * hostile-input.ssh.test.ts) and by the lab suite (real LVM, Xen and Varnish).
 */
import { Logger } from "../../provider/core/log";
import { UNKNOWN, containsUnknown } from "../../provider/core/validate";
import type { Context, ChangePlan } from "../../provider/framework/kind";
import { planDiff } from "../../provider/framework/plan";
import { kindOf } from "../../provider/framework/registry";
import { INSTALL_MARKER } from "../../provider/guest/paths";
import { VARNISH_VCL } from "../../provider/resources/varnish-frontend/plan";
import { vclDigest } from "../../provider/resources/varnish-frontend/scripts";
import {
  HOST_ID_SCRIPT,
  joinConnection,
  type Connection,
  type Credentials,
} from "../../provider/ssh/connection";
import { SshPool } from "../../provider/ssh/pool";
import type { RemoteHost, RunOptions, RunResult } from "../../provider/ssh/remote-host";
import { fixtureKeys } from "./fixture-keys";

/** One thing a kind asked the host to run. */
export interface Recorded {
  /** `script`/`refusable`: a bash script (RemoteHost wraps it); `exec`: one command line. */
  method: "script" | "refusable" | "exec";
  text: string;
  summary: string;
}

/** What the simulated host holds, as far as the answers need it. */
interface World {
  /** Nothing of the resource exists yet (create) or it all does (read, update, delete). */
  fresh: boolean;
  /** Whether the guest's domain runs. */
  running: boolean;
  /** The inputs (or outputs) of the operation in progress, for answers that echo them. */
  current: Record<string, unknown>;
  /** Reboots asked for (the boot id changes with each). */
  booted?: number;
  /** Who owns the guest config already on the host (update: the old resource), if not `current`'s owner. */
  owner?: unknown;
}

const MiB = 2 ** 20;
const EXTENT = 4 * MiB;
const HOST_KEY_BLOB = fixtureKeys.hostPublicKey.split(" ")[1]!;

/** The source device a migration's probe finds (its size and ext4), for a stand-in that holds one for real. */
export const SIMULATED_SOURCE = {
  // Small, so a sandbox that holds it for real (hostile-input.ssh.test.ts) copies and verifies it in moments.
  bytes: 64 * MiB,
  ext4: { uuid: "11111111-2222-4333-8444-555555555555", blocks: 16384 },
} as const;
/** The size of a migration's target as its probe finds it. */
export const SIMULATED_TARGET_BYTES = 10737418240;

/** A migration's source device, as its inputs name it. */
function sourceDevice(cur: Record<string, unknown>): string {
  const src = cur.source as Record<string, unknown> | undefined;
  return typeof src?.device === "string" ? src.device : "/dev/sda";
}

/** The canned answer to a script, from what it is recognisably for. */
function answer(script: string, w: World): string {
  const cur = w.current;
  // remote/rollback.ts: a change applied under the host's rollback timer (armed), confirmed over a new login
  // (the simulator stands in for that login too, see {@link simulateFreshLogins}).
  const armed = /^echo "armed ([0-9a-f]+)"$/m.exec(script);
  if (armed) return `armed ${armed[1]}`;
  if (/^echo confirmed$/m.test(script)) return "confirmed";
  if (/^xe_ssh_peer$/m.test(script)) {
    // The address this connection comes from: one the declared sources let in.
    const first = Array.isArray(cur.trustedSources) ? String(cur.trustedSources[0]) : "198.51.100.7";
    return first.split("/")[0]!;
  }
  // Dom0Firewall
  if (script.includes("nft list table")) return `revision ${String(cur.loaded)}`;
  // Dom0Access
  if (script.includes("useradd -m")) return w.fresh ? "created" : "exists";
  if (script.includes('echo "user present"')) return "user present";
  // Dom0Reboot: the host runs what the inputs declare (no boot owed).
  if (script.includes("systemctl reboot")) {
    w.booted = (w.booted ?? 0) + 1;
    return "scheduled";
  }
  if (script.includes("/proc/sys/kernel/random/boot_id")) {
    const mem = Number(cur.dom0MemMiB ?? 1024);
    return [
      `bootid xe-simulated-boot-${w.booted ?? 0}`,
      "boottime 1000",
      `xen ${typeof cur.xenVersion === "string" ? cur.xenVersion : "4.17"}.3`,
      `xencmdline dom0_mem=${mem}M,max:${mem}M`,
      `dom0mem ${mem}`,
      "kernel 6.1.0-xe-amd64",
      "newestkernel 6.1.0-xe-amd64",
      `bridge ${String(cur.uplink)}`,
    ].join("\n");
  }
  // Dom0Network: the uplink is the NIC of the declared MAC.
  if (/^cat \S*\/sys\/class\/net\/.*\/address'? 2>\/dev\/null \|\| echo absent$/m.test(script))
    return `${String(cur.mac)}\nbridge absent`;
  // Dom0XenBoot: a host with room for the declared dom0.
  if (/^else echo "memtotal/m.test(script))
    return `memtotal ${(Math.max(65536, Number(cur.dom0MemMiB ?? 0) + 4096) * 1024).toString()}`;
  // HetznerInstallimage: the declared drives, and an install that ran.
  if (script.includes("lsblk -J -b -d -o PATH,SIZE,SERIAL")) {
    const drives = Array.isArray(cur.drives) ? (cur.drives as Record<string, unknown>[]) : [];
    return JSON.stringify({
      blockdevices: drives.map((d) => ({
        path: d.device,
        size: d.sizeBytes ?? 512110190592,
        serial: d.serial ?? "XE-SIMULATED",
      })),
    });
  }
  if (script.includes("installimage -a -c")) return "installed";
  // LinodeMigration
  if (script.includes('echo "XE-SRC exists=1"'))
    return [
      "exists=1",
      `real=${sourceDevice(cur)}`,
      "type=block special file",
      "mounted=",
      "swap=",
      `size=${SIMULATED_SOURCE.bytes}`,
      "fs=ext4",
      `blocks=${SIMULATED_SOURCE.ext4.blocks}`,
      "blocksize=4096",
      "freeblocks=131072",
      `uuid=${SIMULATED_SOURCE.ext4.uuid}`,
      "state=clean",
    ]
      .map((l) => `XE-SRC ${l}`)
      .join("\n");
  if (script.includes('echo "XE-TGT exists=1"'))
    return [
      "exists=1",
      "type=block special file",
      `size=${SIMULATED_TARGET_BYTES}`,
      "holder=",
      "mounted=",
      "aes=1",
      "nameserver=192.0.2.53",
    ]
      .map((l) => `XE-TGT ${l}`)
      .join("\n");
  if (script.includes('echo "XE-PUB')) return `XE-PUB ssh-ed25519 ${HOST_KEY_BLOB} xen-estate-copy`;
  if (script.includes('< "$state/sender-input" |') || /^exec bash \S*\/receive\.sh'?$/.test(script))
    return 'XE-RESULT {"data": 1048576, "zero": 1048576, "skip": 0, "root": "00ff"}';
  if (script.includes('echo "XE-FIN'))
    return "XE-FIN fsck=clean\nXE-FIN fs=ext4\nXE-FIN uuid=11111111-2222-4333-8444-555555555555\nXE-FIN grown=10737418240";
  if (script.includes("XE-FIXED")) return "XE-FIXED /etc/hostname";
  // remote/files.ts
  if (script.includes(`base64 -d > "$tmp" <<'XEN_ESTATE_`)) return "changed";
  if (script.includes("state=removed"))
    return script.includes("cannot put back the original") ? "restored" : "removed";
  if (script.includes("echo present; cat --")) return "absent";
  if (script.includes('echo "file $h $s"')) {
    const n = script.split("\n").filter((l) => l.includes('echo "file $h $s"')).length;
    return Array.from({ length: n }, () => (w.fresh ? "absent" : "file 0 root root 644")).join("\n");
  }
  // remote/packages.ts
  if (script.includes(`command -v -- "$c"`)) return "yes";
  // ssh/connection.ts HOST_ID_SCRIPT
  if (script.includes("/etc/machine-id")) return "machine-id:xe-simulated";
  // LvmVolume
  if (script.includes("XE-LV")) {
    const size = Math.max(EXTENT, Math.ceil(Number(cur.sizeBytes ?? 10 * 2 ** 30) / EXTENT) * EXTENT);
    const fs =
      typeof cur.filesystem === "string" && cur.filesystem !== "none" ? [`XE-FS TYPE=${cur.filesystem}`] : [];
    const label = typeof cur.label === "string" ? [`XE-FS LABEL=${cur.label}`] : [];
    return [
      ...(script.includes("XE-ADOPTED") ? [`XE-ADOPTED ${cur.adopt === true ? 1 : 0}`] : []),
      `XE-LV ${size} ${EXTENT}`,
      ...fs,
      ...label,
      "XE-FS UUID=00000000-0000-4000-8000-000000000000",
    ].join("\n");
  }
  // guest engine
  if (script.includes('echo "config absent"')) {
    const owner = "owner" in w ? w.owner : cur.owner;
    // The script prints the first line the owner tag starts (sed … | head -n1).
    const line = typeof owner === "string" ? owner.split("\n")[0] : "";
    return w.fresh ? "config absent" : `config owner ${line}`;
  }
  if (script.includes('print "domid", $2, $5')) return w.running ? "domid 7 -b----" : "absent";
  if (/^\s*xl create -q /m.test(script)) {
    w.running = true;
    return "";
  }
  if (script.includes("xl shutdown -w")) {
    w.running = false;
    return "";
  }
  if (script.includes(INSTALL_MARKER)) return `hostkey ssh-ed25519 ${HOST_KEY_BLOB}\ninstalled`;
  if (/^rc=0; t=\$\(blkid/.test(script)) return "swap";
  if (script.includes('echo "autostart yes"')) return "autostart yes\nnat ok";
  // VarnishFrontend
  if (script.includes("vcl.show")) {
    const files = cur.files as Record<string, string> | undefined;
    const vcl = files && typeof files === "object" ? files[VARNISH_VCL] : undefined;
    return `service active\nactive boot\nactive-sha ${vclDigest(vcl ?? "")}`;
  }
  return "";
}

/** The simulated host: a {@link RemoteHost} look-alike that records and answers. */
export class RecordingHost {
  constructor(
    readonly conn: Context["conn"],
    readonly log: Logger,
    private readonly world: World,
    /** Where it records (a kind's second host records into its first host's list, its summaries marked). */
    readonly recorded: Recorded[] = [],
    private readonly label = "",
  ) {}

  get name(): string {
    return this.conn.host;
  }

  get isRoot(): boolean {
    return this.conn.user === "root";
  }

  private result(stdout: string): RunResult {
    return {
      stdout,
      stdoutBuffer: Buffer.from(stdout),
      stderr: "",
      exitCode: 0,
      signal: null,
      durationMs: 0,
    };
  }

  /** The host key the handshake would have verified (the fixture's). */
  hostKey(): Promise<{ type: string; blob: Buffer }> {
    return Promise.resolve({ type: "ssh-ed25519", blob: Buffer.from(HOST_KEY_BLOB, "base64") });
  }

  script(script: string, opts: Omit<RunOptions, "stdin"> = {}): Promise<RunResult> {
    if (script === HOST_ID_SCRIPT) {
      // Each connection of a kind reaches a machine of its own.
      this.recorded.push({ method: "script", text: script, summary: this.label + (opts.summary ?? "") });
      return Promise.resolve(
        this.result(`machine-id:xe-simulated${this.label ? `-${this.label.replace(/\W/g, "")}` : ""}`),
      );
    }
    this.recorded.push({ method: "script", text: script, summary: this.label + (opts.summary ?? "") });
    return Promise.resolve(this.result(answer(script, this.world)));
  }

  refusable(script: string, opts: Omit<RunOptions, "stdin"> = {}): Promise<string> {
    this.recorded.push({ method: "refusable", text: script, summary: this.label + (opts.summary ?? "") });
    return Promise.resolve(answer(script, this.world));
  }

  exec(command: string, opts: RunOptions = {}): Promise<RunResult> {
    this.recorded.push({ method: "exec", text: command, summary: this.label + (opts.summary ?? "") });
    // `bash -s` with a script on stdin (the relay's sender): bash runs the stdin, so it is a script like the others.
    if (typeof opts.stdin === "string" && /^(sudo -n )?bash -s$/.test(command))
      this.recorded.push({
        method: "script",
        text: opts.stdin,
        summary: `${this.label}${opts.summary ?? ""} (stdin)`,
      });
    return Promise.resolve(this.result(answer(command, this.world)));
  }
}

/** What one lifecycle operation sent, and how it ended. */
export interface OperationRecord {
  /** `create`, `read`, `update`, `update-running`, `delete`, or a kind-specific variant. */
  operation: string;
  recorded: Recorded[];
  /** Set when the operation threw (against the simulator, that is a finding). */
  error?: Error;
  /** Why the operation was not run (the engine would not call it for these inputs). */
  skipped?: string;
}

/** Outputs with the common inputs added back, as the runtime records them. */
function complete(inputs: Record<string, unknown>, outs: object): Record<string, unknown> {
  return {
    ...outs,
    connection: inputs.connection,
    credentials: inputs.credentials,
    xenEstateVersion: inputs.xenEstateVersion,
  };
}

const quietLog = new Logger("simulated");

const realPoolHost = SshPool.prototype.host; // eslint-disable-line @typescript-eslint/unbound-method

/**
 * SIMULATOR of the logins a kind opens itself, outside the runtime's pool: the confirmation of a change made under
 * the rollback timer (remote/rollback.ts), the wait for a rebooted or installed system. While an operation is
 * recorded, every new pool's hosts are simulated hosts recording into that operation (summaries marked "new
 * login:"), so those steps run and are judged like the rest. Operations are recorded one at a time.
 */
function simulateFreshLogins(world: World, recorded: Recorded[]): () => void {
  SshPool.prototype.host = function (conn: Context["conn"], log?: Logger): RemoteHost {
    return new RecordingHost(conn, log ?? quietLog, world, recorded, "new login: ") as unknown as RemoteHost;
  };
  return () => {
    SshPool.prototype.host = realPoolHost;
  };
}

/**
 * Runs create, read, update (from `olds`, or from its own create's outputs) and delete of a kind against the
 * simulator, with inputs `check` accepted. Returns what each operation sent and the outputs create made.
 */
export async function recordLifecycle(
  kindName: string,
  inputs: Record<string, unknown>,
  olds?: Record<string, unknown>,
): Promise<{ operations: OperationRecord[]; outs: Record<string, unknown> | null }> {
  const kind = kindOf(kindName);
  const conn = joinConnection(inputs.connection as Connection, inputs.credentials as Credentials | undefined);
  const operations: OperationRecord[] = [];
  if (containsUnknown(inputs) || inputs === (UNKNOWN as unknown)) {
    // The engine calls no lifecycle method with values not known yet (they are known at `up`).
    return { operations: [{ operation: "all", recorded: [], skipped: "inputs not known yet" }], outs: null };
  }
  const nested: Record<string, Context["conn"]> = {};
  for (const p of kind.nestedConnections ?? []) {
    const holder = inputs[p] as { connection?: Connection; credentials?: Credentials } | undefined;
    if (holder && typeof holder === "object" && holder.connection && typeof holder.connection === "object")
      nested[p] = joinConnection(holder.connection, holder.credentials);
  }
  const op = async (
    operation: string,
    world: World,
    body: (ctx: Context) => Promise<unknown>,
  ): Promise<unknown> => {
    const host = new RecordingHost(conn, quietLog, world);
    // The kind's other connections (a migration's `source`) record into the same list, marked by their input.
    const hosts: Record<string, RemoteHost> = {};
    for (const [p, c] of Object.entries(nested))
      hosts[p] = new RecordingHost(c, quietLog, world, host.recorded, `${p}: `) as unknown as RemoteHost;
    const ctx: Context = {
      host: host as unknown as RemoteHost,
      log: quietLog,
      conn,
      hosts,
      hostId: (h) =>
        h.script(HOST_ID_SCRIPT, { summary: "read the machine id" }).then((r) => r.stdout.trim()),
    };
    const record: OperationRecord = { operation, recorded: host.recorded };
    operations.push(record);
    const restore = simulateFreshLogins(world, host.recorded);
    try {
      return await body(ctx);
    } catch (err) {
      record.error = err instanceof Error ? err : new Error(String(err));
      return undefined;
    } finally {
      restore();
    }
  };
  const id = kind.id(inputs);
  let outs: Record<string, unknown> | null = null;
  await op("create", { fresh: true, running: false, current: inputs }, async (ctx) => {
    outs = complete(inputs, await kind.create(ctx, inputs, () => {}));
  });
  const made: Record<string, unknown> = outs ?? { ...inputs };
  await op("read", { fresh: false, running: true, current: made }, (ctx) => kind.read(ctx, id, made));
  const before = olds ?? made;
  let plan: ChangePlan | undefined;
  try {
    const p = planDiff(kindName, before, inputs);
    if (p.replaces.length > 0)
      operations.push({ operation: "update", recorded: [], skipped: `replaces ${p.replaces.join(", ")}` });
    else plan = p;
  } catch (err) {
    operations.push({
      operation: "update",
      recorded: [],
      skipped: `diff refused: ${(err as Error).message}`,
    });
  }
  if (plan) {
    const p = plan;
    // A stopped guest is installed and started by update; a running one is restarted or changed live.
    const stopped = await op(
      "update",
      { fresh: false, running: false, current: inputs, owner: before.owner },
      (ctx) => kind.update(ctx, id, before, inputs, p),
    ).then(() => operations[operations.length - 1]!);
    // Only a kind that asked whether a domain runs can do anything else when one does.
    if (stopped.recorded.some((r) => r.text.includes('print "domid", $2, $5')))
      await op(
        "update-running",
        { fresh: false, running: true, current: inputs, owner: before.owner },
        (ctx) => kind.update(ctx, id, before, inputs, p),
      );
  } else if (olds) {
    // The engine replaces instead: the update scripts still run for the resource these inputs made (as after a
    // refresh found drift), which is how an input that forces a replacement (a volume's name) reaches them.
    try {
      const p = planDiff(kindName, made, inputs);
      await op("update-in-place", { fresh: false, running: true, current: inputs }, (ctx) =>
        kind.update(ctx, id, made, inputs, p),
      );
    } catch (err) {
      operations.push({ operation: "update-in-place", recorded: [], skipped: (err as Error).message });
    }
  }
  await op("delete", { fresh: false, running: true, current: made }, (ctx) => kind.delete(ctx, id, made));
  if (kindName === "RemoteFile") {
    // State written by 0.1 names a dated backup as the original: delete puts that back instead.
    const legacy = {
      ...made,
      previousBackup: `/var/backups/xen-estate${String(made.path)}.20240101T000000Z`,
    };
    await op("delete-0.1-state", { fresh: false, running: true, current: legacy }, (ctx) =>
      kind.delete(ctx, id, legacy),
    );
    const original = { ...made, previousBackup: `/var/backups/xen-estate${String(made.path)}.original` };
    await op("delete-with-original", { fresh: false, running: true, current: original }, (ctx) =>
      kind.delete(ctx, id, original),
    );
  }
  return { operations, outs };
}
