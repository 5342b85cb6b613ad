/**
 * Test harness for running Pulumi programs with the real Pulumi engine.
 *
 * Each stack gets its own temporary directory holding a local file backend, PULUMI_HOME and the
 * stack's config file, so tests never touch ~/.pulumi, the user's backend or the program
 * directory. The CLI comes from test/engine/build.sh (a suitable `pulumi` on PATH, else the
 * cached offline build); the project's node_modules/.bin (Node 22) is put first on PATH.
 *
 *   const stack = await createStack({ programDir: "test/engine/fixtures/smoke" });
 *   try {
 *     const up = await stack.up();
 *     assert.equal(up.code, 0, up.stderr);
 *     console.log(resourceChanges(up));
 *   } finally {
 *     await stack.remove();
 *   }
 */
import { repoRoot } from "../support/repo";
import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, symlinkSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, readlink, rename, rm, symlink } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";

export interface PulumiStackOptions {
  /** Directory holding Pulumi.yaml (relative paths are taken from the repo root). */
  programDir: string;
  /** Stack name; default a unique "t-<time>-<random>" so tests of one program can run at once. */
  stackName?: string;
  /** Stack config set before the first command. Keys without a namespace get the project's. */
  config?: Record<string, { value: string; secret?: boolean }>;
  /** Extra environment for every pulumi command (and so for the program and providers). */
  env?: Record<string, string>;
  /**
   * Make `require("xen-estate")` work in the dynamic-provider process for a program inside this
   * repo: creates <programDir>/node_modules/xen-estate -> <repo> (git-ignored) when missing.
   * The provider process resolves bare names only from node_modules directories above its
   * working directory (package self-reference does not apply there); an installed package
   * needs nothing, as it sits in the project's node_modules.
   */
  linkPackage?: boolean;
  /** Deadline for each pulumi command in ms; default 10 minutes. */
  timeoutMs?: number;
  /**
   * A command every pulumi command runs under, e.g. {@link LOOPBACK_ONLY} (a network namespace with loopback only):
   * the CLI, the language host, the program and the provider processes all run inside it.
   */
  wrapper?: string[];
}

/**
 * Runs a command in a new network namespace whose only interface is loopback (brought up: the engine talks to its
 * plugins over gRPC on 127.0.0.1). Nothing run inside can reach another host. Needs root (or user namespaces).
 */
export const LOOPBACK_ONLY = [
  "unshare",
  "--net",
  "--",
  "bash",
  "-c",
  'ip link set lo up && exec "$@"',
  "loopback-only",
];

export interface RunResult {
  /** The command line after `pulumi`. */
  args: string[];
  /** Exit code; -1 when killed at the deadline. */
  code: number;
  stdout: string;
  stderr: string;
  /**
   * stdout parsed as JSON when the command ran with --json: for `preview --json` one document
   * ({ config, steps, changeSummary, diagnostics?, duration }); for `up`/`refresh`/`destroy
   * --json` the CLI prints one engine event a line, so this is that array (the same events as
   * `events`, less the default providers' steps).
   */
  json?: unknown;
  /** Engine events from --event-log (one JSON object a line; needs PULUMI_DEBUG_COMMANDS=true). */
  events: EngineEvent[];
  /** The summary event's resourceChanges, e.g. { create: 1 } or { same: 1 }. */
  changeSummary?: Record<string, number>;
  timedOut: boolean;
  durationMs: number;
}

export interface Step {
  urn: string;
  type: string;
  op: string;
  /** Property keys that differ, when the engine reported them. */
  diffs?: string[];
}

/** Metadata of a step event (resourcePreEvent / resOutputsEvent). */
export interface StepEventMetadata {
  op: string;
  urn: string;
  type: string;
  provider?: string;
  diffs?: string[];
  detailedDiff?: Record<string, { kind: string; inputDiff?: boolean }> | null;
  old?: { inputs?: Record<string, unknown>; outputs?: Record<string, unknown> } | null;
  new?: { inputs?: Record<string, unknown>; outputs?: Record<string, unknown> } | null;
  [key: string]: unknown;
}

/** One line of `--event-log` (only the fields the helpers use are typed). */
export interface EngineEvent {
  sequence?: number;
  timestamp?: number;
  cancelEvent?: Record<string, unknown>;
  stdoutEvent?: { message: string; color?: string };
  diagnosticEvent?: { urn?: string; message?: string; severity?: string; [key: string]: unknown };
  preludeEvent?: { config?: Record<string, string> };
  summaryEvent?: {
    maybeCorrupt?: boolean;
    durationSeconds?: number;
    resourceChanges?: Record<string, number>;
    [key: string]: unknown;
  };
  resourcePreEvent?: { metadata: StepEventMetadata; planning?: boolean };
  resOutputsEvent?: { metadata: StepEventMetadata; planning?: boolean };
  resOpFailedEvent?: { metadata: StepEventMetadata; status?: number; steps?: number };
  [key: string]: unknown;
}

/** A resource in `pulumi stack export` output. */
export interface StateResource {
  urn: string;
  type: string;
  custom?: boolean;
  id?: string;
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
  parent?: string;
  provider?: string;
  [key: string]: unknown;
}

/** `pulumi stack export` output. */
export interface StackExport {
  version: number;
  deployment: { manifest?: Record<string, unknown>; resources?: StateResource[]; [key: string]: unknown };
}

export interface PulumiStack {
  readonly name: string;
  readonly programDir: string;
  /** The temporary directory holding backend state, PULUMI_HOME and the stack config. */
  readonly workDir: string;
  /** `pulumi up --yes --skip-preview`. Throws on a non-zero exit unless expectFailure. */
  up(opts?: { expectFailure?: boolean; args?: string[] }): Promise<RunResult>;
  /** `pulumi preview` (--diff adds detailed diffs to stdout). */
  preview(opts?: { diff?: boolean; expectFailure?: boolean; args?: string[] }): Promise<RunResult>;
  refresh(opts?: { expectFailure?: boolean; args?: string[] }): Promise<RunResult>;
  destroy(opts?: { expectFailure?: boolean; args?: string[] }): Promise<RunResult>;
  /** `pulumi stack export`, parsed (secrets stay encrypted unless showSecrets). */
  exportState(opts?: { showSecrets?: boolean }): Promise<StackExport>;
  /** `pulumi stack output --json`, parsed. */
  outputs(opts?: { showSecrets?: boolean }): Promise<Record<string, unknown>>;
  setConfig(key: string, value: string, secret?: boolean): Promise<void>;
  /** Runs any pulumi command with this stack's environment (no --stack/--cwd added). */
  run(args: string[], opts?: { expectFailure?: boolean }): Promise<RunResult>;
  /** `pulumi stack rm --force --yes` (resources left in state are forgotten) and temp cleanup. */
  remove(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;
const TEST_PASSPHRASE = "xen-estate-test-passphrase";

/** process.env without undefined values (and, with dropPulumi, without PULUMI_* settings). */
function inheritedEnv(dropPulumi = false): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !(dropPulumi && k.startsWith("PULUMI_"))) env[k] = v;
  }
  return env;
}

let binDirPromise: Promise<string> | undefined;

export { repoRoot };

/**
 * A copy of the program in `fixture` (a directory of the repository holding Pulumi.yaml and index.js) outside the
 * repository, with a node_modules as a user's project has one. Inside the repo, Node's package self-reference would
 * hand the program this checkout whatever node_modules holds; outside it, `xen-estate` resolves through node_modules
 * like an installed package, in the program and in the provider process alike, so a test can swap in another
 * version (replace `node_modules/xen-estate`). The caller removes the directory.
 */
export function externalProgram(fixture: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "xe-program-"));
  for (const f of ["Pulumi.yaml", "index.js"])
    copyFileSync(path.join(repoRoot(), fixture, f), path.join(dir, f));
  mkdirSync(path.join(dir, "node_modules"));
  symlinkSync(path.join(repoRoot(), "node_modules", "@pulumi"), path.join(dir, "node_modules", "@pulumi"));
  symlinkSync(repoRoot(), path.join(dir, "node_modules", "xen-estate"));
  return dir;
}

/** The directory holding `pulumi` (and its plugins), building the CLI when needed. */

export function pulumiBinDir(): Promise<string> {
  binDirPromise ??= (async () => {
    const script = path.join(repoRoot(), "test", "engine", "build.sh");
    const res = await spawnCollect("bash", [script], {
      env: { ...inheritedEnv(), XEN_ESTATE_BUILD_QUIET: "1" },
      cwd: repoRoot(),
      timeoutMs: 60 * 60 * 1000,
    });
    const dir = res.stdout.trim().split("\n").pop() ?? "";
    if (res.code !== 0 || !dir || !existsSync(path.join(dir, "pulumi"))) {
      throw new Error(`test/engine/build.sh failed (code ${res.code}):\n${res.stderr}`);
    }
    return dir;
  })();
  return binDirPromise;
}

interface SpawnResult {
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
}

function spawnCollect(
  cmd: string,
  args: string[],
  opts: { env: Record<string, string>; cwd: string; timeoutMs: number },
): Promise<SpawnResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    // detached: the child leads its own process group, so a deadline kills the language host,
    // the program and provider plugins too.
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const killGroup = (signal: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal);
      } catch {
        // already gone
      }
    };
    const deadline = setTimeout(() => {
      timedOut = true;
      killGroup("SIGTERM");
      killTimer = setTimeout(() => killGroup("SIGKILL"), 10_000);
    }, opts.timeoutMs);
    child.on("error", (e) => {
      clearTimeout(deadline);
      if (killTimer) clearTimeout(killTimer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(deadline);
      if (killTimer) clearTimeout(killTimer);
      resolve({
        code: timedOut ? -1 : (code ?? (signal ? 128 : 1)),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        timedOut,
        durationMs: Date.now() - started,
      });
    });
  });
}

async function readEvents(file: string): Promise<EngineEvent[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    return [];
  }
  const events: EngineEvent[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      events.push(JSON.parse(line) as EngineEvent);
    } catch {
      // a torn last line when the process was killed
    }
  }
  return events;
}

function parseJson(stdout: string): unknown {
  const text = stdout.trim();
  if (!text) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // `up/refresh/destroy --json` print JSON lines.
    try {
      return text
        .split("\n")
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l) as unknown);
    } catch {
      return undefined;
    }
  }
}

async function linkSelf(programDir: string, root: string): Promise<void> {
  const link = path.join(programDir, "node_modules", "xen-estate");
  const target = path.relative(path.dirname(link), root) || ".";
  try {
    if ((await readlink(link)) === target) return;
    throw new Error(`${link} exists and does not point to ${root}`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  await mkdir(path.dirname(link), { recursive: true });
  try {
    await symlink(target, link, "dir");
  } catch (e) {
    // another test made it meanwhile
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
}

/** Creates a stack (in a fresh temporary backend) for the program in opts.programDir. */
export async function createStack(opts: PulumiStackOptions): Promise<PulumiStack> {
  const root = repoRoot();
  const programDir = path.resolve(root, opts.programDir);
  if (!existsSync(path.join(programDir, "Pulumi.yaml"))) {
    throw new Error(`no Pulumi.yaml in ${programDir}`);
  }
  if (opts.linkPackage) {
    await linkSelf(programDir, root);
    // The dynamic-provider process resolves `xen-estate` from the node_modules above the @pulumi/pulumi it runs
    // from: the repository's, unless the program has its own.
    if (!existsSync(path.join(programDir, "node_modules", "@pulumi", "pulumi"))) await linkSelf(root, root);
  }
  const name = opts.stackName ?? `t-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const bin = await pulumiBinDir();
  const workDir = await mkdtemp(path.join(os.tmpdir(), "xen-estate-pulumi-"));
  const stateDir = path.join(workDir, "state");
  const homeDir = path.join(workDir, "home");
  await mkdir(stateDir, { recursive: true });
  await mkdir(homeDir, { recursive: true });
  // The stack's config lives in the temp dir, never in the program directory.
  const configFile = path.join(workDir, `Pulumi.${name}.yaml`);

  // The caller's Pulumi settings must not leak into tests.
  const env = inheritedEnv(true);
  Object.assign(env, {
    PATH: [bin, path.join(root, "node_modules", ".bin"), process.env.PATH ?? ""].join(path.delimiter),
    PULUMI_HOME: homeDir,
    PULUMI_BACKEND_URL: `file://${stateDir}`,
    PULUMI_CONFIG_PASSPHRASE: TEST_PASSPHRASE,
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    PULUMI_SKIP_CONFIRMATIONS: "true",
    PULUMI_DIY_BACKEND_NO_LEGACY_WARNING: "true",
    // Makes the hidden `--event-log FILE` flag of up/preview/refresh/destroy available.
    PULUMI_DEBUG_COMMANDS: "true",
    NO_COLOR: "1",
  });
  Object.assign(env, opts.env ?? {});

  let eventSeq = 0;
  const run = async (
    args: string[],
    runOpts: { expectFailure?: boolean; eventLog?: boolean } = {},
  ): Promise<RunResult> => {
    const fullArgs = [...args];
    let eventFile: string | undefined;
    if (runOpts.eventLog) {
      eventFile = path.join(workDir, `events-${++eventSeq}.jsonl`);
      fullArgs.push("--event-log", eventFile);
    }
    const [cmd, ...cmdArgs] = [...(opts.wrapper ?? []), path.join(bin, "pulumi"), ...fullArgs];
    const res = await spawnCollect(cmd!, cmdArgs, {
      env,
      cwd: programDir,
      timeoutMs,
    });
    const events = eventFile ? await readEvents(eventFile) : [];
    const summary = events.find((e) => e.summaryEvent)?.summaryEvent;
    const result: RunResult = {
      args: fullArgs,
      code: res.code,
      stdout: res.stdout,
      stderr: res.stderr,
      json: fullArgs.includes("--json") ? parseJson(res.stdout) : undefined,
      events,
      changeSummary: summary?.resourceChanges ?? undefined,
      timedOut: res.timedOut,
      durationMs: res.durationMs,
    };
    const failed = res.code !== 0;
    if (failed !== Boolean(runOpts.expectFailure)) {
      const e = new Error(
        `pulumi ${fullArgs.join(" ")} ${failed ? `failed (code ${res.code}${res.timedOut ? ", timed out" : ""})` : "succeeded but failure was expected"}\n` +
          `--- stdout ---\n${res.stdout}\n--- stderr ---\n${res.stderr}`,
      );
      (e as Error & { result?: RunResult }).result = result;
      throw e;
    }
    return result;
  };

  const stackArgs = ["--stack", name, "--non-interactive"];
  const cfgArgs = ["--config-file", configFile];

  const stack: PulumiStack = {
    name,
    programDir,
    workDir,
    up: (o = {}) =>
      run(["up", ...stackArgs, ...cfgArgs, "--yes", "--skip-preview", "--json", ...(o.args ?? [])], {
        expectFailure: o.expectFailure,
        eventLog: true,
      }),
    preview: (o = {}) =>
      run(["preview", ...stackArgs, ...cfgArgs, ...(o.diff ? ["--diff"] : ["--json"]), ...(o.args ?? [])], {
        expectFailure: o.expectFailure,
        eventLog: true,
      }),
    refresh: (o = {}) =>
      run(["refresh", ...stackArgs, ...cfgArgs, "--yes", "--skip-preview", "--json", ...(o.args ?? [])], {
        expectFailure: o.expectFailure,
        eventLog: true,
      }),
    destroy: (o = {}) =>
      run(["destroy", ...stackArgs, ...cfgArgs, "--yes", "--skip-preview", "--json", ...(o.args ?? [])], {
        expectFailure: o.expectFailure,
        eventLog: true,
      }),
    exportState: async (o = {}) => {
      const res = await run(["stack", "export", ...stackArgs, ...(o.showSecrets ? ["--show-secrets"] : [])]);
      return JSON.parse(res.stdout) as StackExport;
    },
    outputs: async (o = {}) => {
      const res = await run([
        "stack",
        "output",
        ...stackArgs,
        "--json",
        ...(o.showSecrets ? ["--show-secrets"] : []),
      ]);
      return (parseJson(res.stdout) as Record<string, unknown> | undefined) ?? {};
    },
    setConfig: async (key, value, secret = false) => {
      // The value goes on the command line (visible to ps): fine for test values only.
      await run([
        "config",
        "set",
        ...stackArgs,
        ...cfgArgs,
        secret ? "--secret" : "--plaintext",
        "--",
        key,
        value,
      ]);
    },
    run: (args, o = {}) => run(args, { expectFailure: o.expectFailure }),
    remove: async () => {
      try {
        await run(["stack", "rm", ...stackArgs, "--force", "--yes"], { expectFailure: false });
      } finally {
        await rm(workDir, { recursive: true, force: true });
      }
    },
  };

  // `stack init` has no --config-file: it writes Pulumi.<stack>.yaml (the passphrase salt) next
  // to Pulumi.yaml. Move it into the temp dir at once; every later command gets --config-file.
  await run(["stack", "init", name, "--non-interactive", "--secrets-provider", "passphrase"]);
  for (const ext of ["yaml", "yml"]) {
    const written = path.join(programDir, `Pulumi.${name}.${ext}`);
    if (existsSync(written)) {
      await rename(written, configFile).catch(async () => {
        await copyFile(written, configFile);
        await rm(written, { force: true });
      });
    }
  }
  for (const [key, { value, secret }] of Object.entries(opts.config ?? {})) {
    await stack.setConfig(key, value, secret);
  }
  return stack;
}

/**
 * Every step the engine took or planned, from resourcePreEvent (one per resource per step),
 * in order, including "same" steps. Pass a RunResult or its events.
 */
export function steps(result: RunResult | EngineEvent[]): Step[] {
  const events = Array.isArray(result) ? result : result.events;
  const out: Step[] = [];
  for (const e of events) {
    const md = e.resourcePreEvent?.metadata;
    if (!md) continue;
    const step: Step = { urn: md.urn, type: md.type, op: md.op };
    if (Array.isArray(md.diffs) && md.diffs.length > 0) step.diffs = md.diffs;
    out.push(step);
  }
  return out;
}

/** True for the engine's default provider resources (urn ...::pulumi:providers:<pkg>::default[_x_y_z]). */
export function isDefaultProvider(urn: string): boolean {
  return /::pulumi:providers:[^:]+::default(_[^:]*)?$/.test(urn);
}

/**
 * The steps that change something: everything but "same" steps, the root stack's own steps and
 * the default providers' steps.
 */
export function resourceChanges(result: RunResult | EngineEvent[]): Step[] {
  return steps(result).filter(
    (s) => s.op !== "same" && s.type !== "pulumi:pulumi:Stack" && !isDefaultProvider(s.urn),
  );
}

/** The type prefix of xen-estate's resources (dynamic providers): `pulumi-nodejs:dynamic/xen-estate:<Kind>`. */
export const KIND_TYPE_PREFIX = "pulumi-nodejs:dynamic/xen-estate:";

/** xen-estate's steps among {@link resourceChanges}, each as `<Kind> <op>`, sorted. */
export function kindOps(result: RunResult | EngineEvent[]): string[] {
  return resourceChanges(result)
    .filter((s) => s.type.startsWith(KIND_TYPE_PREFIX))
    .map((s) => `${s.type.slice(KIND_TYPE_PREFIX.length)} ${s.op}`)
    .sort();
}

/**
 * When each resource of this type was being created, as [start, end] engine timestamps (seconds): from its
 * resourcePreEvent to its resOutputsEvent, one span per URN. Overlapping spans mean creates ran side by side.
 */
export function createSpans(events: EngineEvent[], type: string): [number, number][] {
  const spans = new Map<string, [number, number]>();
  for (const e of events) {
    const pre = e.resourcePreEvent?.metadata;
    const m = pre ?? e.resOutputsEvent?.metadata;
    if (!m || m.type !== type || m.op !== "create" || e.timestamp === undefined) continue;
    const span = spans.get(m.urn) ?? [e.timestamp, e.timestamp];
    if (pre) span[0] = e.timestamp;
    else span[1] = e.timestamp;
    spans.set(m.urn, span);
  }
  return [...spans.values()];
}

/**
 * The `limit` longest resource steps of a run that changed something, longest first, as "Type op N s" (engine
 * timestamps from each step's resourcePreEvent to its resOutputsEvent or resOpFailedEvent): where a long `up` went.
 */
export function slowestSteps(result: RunResult | EngineEvent[], limit = 6): string[] {
  const events = Array.isArray(result) ? result : result.events;
  const open = new Map<string, { label: string; at: number }>();
  const done: { label: string; seconds: number }[] = [];
  for (const e of events) {
    if (e.timestamp === undefined) continue;
    const pre = e.resourcePreEvent?.metadata;
    if (pre && !e.resourcePreEvent?.planning && pre.op !== "same" && !isDefaultProvider(pre.urn)) {
      open.set(pre.urn, {
        label: `${pre.type.split(":").pop()} ${pre.urn.split("::").pop()} ${pre.op}`,
        at: e.timestamp,
      });
      continue;
    }
    const end = (e.resOutputsEvent ?? e.resOpFailedEvent)?.metadata;
    const began = end && open.get(end.urn);
    if (!began) continue;
    open.delete(end.urn);
    done.push({ label: began.label, seconds: e.timestamp - began.at });
  }
  return done
    .sort((a, b) => b.seconds - a.seconds)
    .slice(0, limit)
    .map((d) => `${d.label} ${Math.round(d.seconds)} s`);
}

/** Engine diagnostics (diagnosticEvent), optionally only those of one severity ("error", "warning", "info"...). */
export function diagnostics(
  result: RunResult | EngineEvent[],
  severity?: string,
): { message: string; severity: string; urn?: string }[] {
  const events = Array.isArray(result) ? result : result.events;
  const out: { message: string; severity: string; urn?: string }[] = [];
  for (const e of events) {
    const d = e.diagnosticEvent;
    if (!d || (severity !== undefined && d.severity !== severity)) continue;
    out.push({ message: d.message ?? "", severity: d.severity ?? "", ...(d.urn ? { urn: d.urn } : {}) });
  }
  return out;
}
