/**
 * RemoteFile under cut connections (issue 15, the part that runs on this machine): for create, update and delete,
 * the SSH path to a real sshd is dropped before, during and after each remote step in turn; the next run (as the
 * engine makes it) must converge: the declared content, owner and mode, the original kept exactly once and put
 * back on delete, the reload done, no temp file left behind.
 */
import { after, before } from "node:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  hostContext,
  BACKUP_ROOT,
  remoteFileKind,
  VERSION,
  type Context,
  type RemoteFileInputs,
  type RemoteFileOutputs,
} from "../../provider";
import { checked } from "../support/checked";
import { CutRelay, ALL_WAYS, describeCutMatrix, type CutScenario } from "../support/cut-matrix";
import { generateKey, startSshd, type KeyPair, type Sshd } from "../support/sshd";

let dir: string;
let sshd: Sshd;
let key: KeyPair;
let relay: CutRelay;
const file = (): string => path.join(dir, "app.conf");
const reloadLog = (): string => path.join(dir, "reloads.log");
const ORIGINAL = "the original\n";

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-cuts-"));
  key = await generateKey(dir, "client");
  sshd = await startSshd({ authorizedKeys: [key.publicKey] });
  relay = new CutRelay(sshd.host, sshd.port);
  await relay.start();
});

after(async () => {
  await relay?.stop();
  await sshd?.stop();
  fs.rmSync(path.join(BACKUP_ROOT, dir), { recursive: true, force: true });
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A context over a fresh pool (a new `pulumi up` process) through the relay. */
function freshContext(): Context {
  return hostContext(relay.freshHost(sshd.hostKey.fingerprint, key.privateKey));
}

function inputs(content: string): RemoteFileInputs {
  return checked<RemoteFileInputs>("RemoteFile", {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: sshd.hostKey.fingerprint },
    xenEstateVersion: VERSION,
    path: file(),
    content,
    mode: "640",
    reloadCommand: `echo reloaded >> ${reloadLog()}`,
  });
}

/** The host as it is before an operation: the original file, or the managed one as `state` left it. */
function resetHost(state: "original" | "managed"): void {
  fs.rmSync(path.join(BACKUP_ROOT, dir), { recursive: true, force: true });
  for (const f of fs.readdirSync(dir))
    if (f.startsWith("app.conf") || f.startsWith(".app.conf") || f === "reloads.log")
      fs.rmSync(path.join(dir, f));
  fs.writeFileSync(file(), ORIGINAL);
  if (state === "managed") {
    // What a finished create left: the original kept apart, the managed content in place.
    const backupDir = path.join(BACKUP_ROOT, dir);
    fs.mkdirSync(backupDir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(backupDir, "app.conf.original"), ORIGINAL);
    fs.writeFileSync(path.join(backupDir, ".xen-estate-managed"), "app.conf\n");
    fs.writeFileSync(file(), "version one\n", { mode: 0o640 });
  }
}

/** Puts the host in `state` before a run (a scenario's reset). */
const resetTo = (state: "original" | "managed") => (): Promise<void> => {
  resetHost(state);
  return Promise.resolve();
};

/** Why the original is not back in place after a delete, or undefined. */
function restored(): string | undefined {
  if (fs.readFileSync(file(), "utf8") !== ORIGINAL)
    return `content is ${JSON.stringify(fs.readFileSync(file(), "utf8"))}`;
  if (leftovers().length > 0) return `left ${leftovers().join(", ")}`;
  return undefined;
}

function leftovers(): string[] {
  return fs.readdirSync(dir).filter((f) => f.includes(".xen-estate."));
}

/** The state the engine holds after a finished create of "version one". */
function createdState(): RemoteFileOutputs {
  return {
    ...inputs("version one\n"),
    sha256: null,
    previousBackup: path.join(BACKUP_ROOT, dir, "app.conf.original"),
  };
}

const scenarios: CutScenario<RemoteFileOutputs>[] = [
  {
    operation: "create",
    reset: resetTo("original"),
    run: async (ctx, last) => {
      // A create that recorded what it made continues as an update (the engine keeps the half-made resource).
      if (last.partial)
        return remoteFileKind.update(ctx, "id", last.partial, inputs("version one\n"), {
          changed: [],
          replaces: [],
          classes: {},
        });
      let partial: Partial<RemoteFileOutputs> | undefined;
      try {
        return await remoteFileKind.create(ctx, inputs("version one\n"), (p) => (partial = p));
      } catch (err) {
        if (partial) last.partial = { ...inputs("version one\n"), ...partial } as RemoteFileOutputs;
        throw err;
      }
    },
    converged: () => Promise.resolve(expectManaged("version one\n")),
  },
  {
    operation: "update",
    reset: resetTo("managed"),
    run: (ctx) =>
      remoteFileKind.update(ctx, "id", createdState(), inputs("version two\n"), {
        changed: ["content"],
        replaces: [],
        classes: {},
      }),
    converged: () => Promise.resolve(expectManaged("version two\n")),
  },
  {
    operation: "delete",
    reset: resetTo("managed"),
    run: (ctx) => remoteFileKind.delete(ctx, "id", createdState()),
    converged: () => Promise.resolve(restored()),
  },
];

function expectManaged(content: string): string | undefined {
  const now = fs.readFileSync(file(), "utf8");
  if (now !== content) return `content is ${JSON.stringify(now)}`;
  if ((fs.statSync(file()).mode & 0o777) !== 0o640) return "mode is not 640";
  const original = path.join(BACKUP_ROOT, dir, "app.conf.original");
  if (!fs.existsSync(original) || fs.readFileSync(original, "utf8") !== ORIGINAL)
    return "the original was not kept";
  const managed = fs
    .readFileSync(path.join(BACKUP_ROOT, dir, ".xen-estate-managed"), "utf8")
    .split("\n")
    .filter(Boolean);
  if (managed.length !== 1) return `the managed list holds ${managed.length} entries`;
  if (!fs.existsSync(reloadLog())) return "the reload never ran";
  if (leftovers().length > 0) return `left ${leftovers().join(", ")}`;
  return undefined;
}

describeCutMatrix("RemoteFile", scenarios, {
  relay: () => relay,
  freshContext,
  ways: ALL_WAYS,
  steps: "every",
  timeoutMs: 30 * 60_000,
});
