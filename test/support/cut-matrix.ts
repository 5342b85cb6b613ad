/**
 * The cut-connection matrix: run one lifecycle operation of a kind with the SSH connection cut at one of its remote
 * steps, then run again as the engine would (a create that recorded what it made continues as an update; a failed
 * update or delete is retried), and check that the host converged to the declared state.
 *
 * The steps are enumerated from an uncut run (every `script`/`refusable`/`exec` call is a step), not sampled. Each
 * step is cut three ways:
 * - `before`: the TCP path is dropped before the step's command is sent; nothing of it runs;
 * - `during`: the path is dropped right after the command was sent; it may have run in part, fully or not at all
 *   (a step that ends sooner loses its answer all the same: the run never goes on past it);
 * - `after`: the command runs to its end and the path is dropped before its answer arrives.
 * The path is a real TCP relay in front of a real sshd ({@link CutRelay}); dropping it kills the remote session, and
 * it stays down (new connections are dropped at once) until the operation has failed, as a real outage would.
 *
 * Tiers: `npm run test:slow` cuts every step every way. The fast tier (`npm test`) of a costly matrix cuts each step
 * that changes the host `during` it (the cut that leaves the most undecided) and leaves out the steps that only look
 * ({@link onlyLooks}: a cut while the host is only read leaves it as a cut before the next step does); the table marks
 * those cells `·`. Cheap matrices ask for every step every way in both tiers.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { after, describe, test } from "node:test";
import {
  Checker,
  resolveConnection,
  shellQuote,
  SshPool,
  type Context,
  type RemoteHost,
} from "../../provider";
import { runTier } from "./tier";

/** A TCP relay to `target`, whose every connection can be dropped at once. */
export class CutRelay {
  private readonly sockets = new Set<net.Socket>();
  private server!: net.Server;
  private readonly pools: SshPool[] = [];
  private isDown = false;
  port = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  async start(): Promise<void> {
    this.server = net.createServer((client) => {
      if (this.isDown) {
        client.destroy();
        return;
      }
      const upstream = net.connect(this.targetPort, this.targetHost);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => undefined);
      }
      // An upstream that refuses or goes away takes its client with it, as a refused or closed TCP path does.
      upstream.on("close", () => client.destroy());
      client.on("close", () => upstream.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  /** Drops every connection through the relay, both ends, at once, and refuses new ones until {@link up}. */
  down(): void {
    this.isDown = true;
    for (const s of this.sockets) s.destroy();
  }

  /** Lets connections through again. */
  up(): void {
    this.isDown = false;
  }

  /**
   * A host over a fresh pool (what a new `pulumi up` process has) that dials the target through this relay, pinned to
   * `hostKey` and failing fast (one dial attempt of at most 5 s: a cut path is an error at once, not a wait; `over`
   * allows more, for a server that may be restarting when the next run dials).
   */
  freshHost(
    hostKey: string,
    privateKey: string,
    over: { user?: string; dialErrorLimit?: number } = {},
  ): RemoteHost {
    const conn = resolveConnection(
      new Checker(),
      { host: "127.0.0.1", port: this.port, hostKey, dialErrorLimit: 1, perDialTimeout: 5, ...over },
      { privateKey },
    )!;
    const pool = new SshPool();
    this.pools.push(pool);
    return pool.host(conn);
  }

  async stop(): Promise<void> {
    for (const p of this.pools.splice(0)) await p.close();
    this.down();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

export type CutWhen = "before" | "during" | "after";

/** A context whose host counts its steps and drops the relay at step `at` (1-based) as `when` says. */
export function cuttingContext(
  ctx: Context,
  relay: CutRelay,
  cut?: { at: number; when: CutWhen },
): { ctx: Context; steps: () => string[] } {
  const steps: string[] = [];
  const wrap =
    (method: "script" | "refusable" | "exec") =>
    async (text: string, opts: { summary?: string } = {}): Promise<unknown> => {
      steps.push(opts.summary ?? text.split("\n")[0]!);
      const n = steps.length;
      const real = (ctx.host[method] as (t: string, o?: object) => Promise<unknown>).bind(ctx.host);
      if (!cut || cut.at !== n) return real(text, opts);
      if (cut.when === "before") {
        relay.down();
        return real(text, opts);
      }
      if (cut.when === "during") {
        const p = real(text, opts);
        const timer = setTimeout(() => relay.down(), 30);
        try {
          await p;
        } finally {
          clearTimeout(timer);
        }
        // A step quicker than the timer still loses its answer: the run never goes on past the step it cut.
        relay.down();
        throw new Error(`connection lost during step ${n} (${steps[n - 1]}), before its answer`);
      }
      await real(text, opts);
      relay.down();
      throw new Error(`connection lost after step ${n} (${steps[n - 1]}) finished, before its answer`);
    };
  const host = new Proxy(ctx.host, {
    get(target, prop, receiver) {
      if (prop === "script" || prop === "refusable" || prop === "exec") return wrap(prop);
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
  return { ctx: { ...ctx, host }, steps: () => [...steps] };
}

/** One cell of the printed table, or a step this tier does not cut (`skipped`). */
export type CutResult =
  | {
      operation: string;
      step: number;
      summary: string;
      when: CutWhen;
      converged: boolean;
      detail?: string;
      skipped?: undefined;
    }
  | { operation: string; step: number; summary: string; skipped: true };

/** The matrix as a table, a line per step: `operation step summary before during after`. */
export function formatCutTable(kind: string, results: readonly CutResult[]): string {
  const rows = new Map<string, Record<CutWhen, string>>();
  for (const r of results) {
    const key = `${r.operation} ${String(r.step).padStart(2)} ${r.summary}`;
    const row = rows.get(key) ?? { before: "-", during: "-", after: "-" };
    if (r.skipped) row.before = row.during = row.after = "·";
    else row[r.when] = r.converged ? "yes" : "NO";
    rows.set(key, row);
  }
  const lines = [
    `cut-connection matrix for ${kind}: converged after the next up? (before / during / after the step; -: not cut that way, ·: the step only looks, cut in the slow tier)`,
  ];
  for (const [key, row] of rows)
    lines.push(`  ${key.padEnd(80)} ${row.before.padEnd(4)} ${row.during.padEnd(4)} ${row.after}`);
  return lines.join("\n");
}

/** What a run left for the next one, as the engine keeps it: the outputs a failed create recorded, if any. */
export interface LastRun<Out> {
  partial?: Out;
  failed: boolean;
}

/** One lifecycle operation of a kind, as the matrix drives it. */
export interface CutScenario<Out> {
  /** Names the operation in the table (`create`, `update (sites)`…). */
  operation: string;
  /** Puts the host in the state the operation starts from (before the uncut run and before every cut). */
  reset: () => Promise<void>;
  /** Runs the operation as the engine would on its first try, and on every try after a failure. */
  run: (ctx: Context, last: LastRun<Out>) => Promise<unknown>;
  /** Why the host has not converged to the declared state, or undefined when it has. */
  converged: () => Promise<string | undefined>;
}

/**
 * The matrix of one scenario: an uncut run enumerates the steps (and must converge), then each step is cut each of
 * `ways`, the next run made, and convergence checked. Pushes a row per cell into `results`; returns the failures.
 */
export async function runCutScenario<Out>(
  s: CutScenario<Out>,
  opts: {
    relay: CutRelay;
    freshContext: () => Context;
    ways: readonly CutWhen[];
    /** Which steps are cut: `every` one, or only the `changes` (steps that do more than look). @default "every" */
    steps?: CutSteps;
    results: CutResult[];
  },
): Promise<{ steps: string[]; cut: number; failures: string[] }> {
  await s.reset();
  const counting = cuttingContext(opts.freshContext(), opts.relay);
  await s.run(counting.ctx, { failed: false });
  const steps = counting.steps();
  const uncut = await s.converged();
  if (steps.length === 0) throw new Error(`${s.operation}: the uncut run made no remote step`);
  if (uncut) throw new Error(`${s.operation}: the uncut run does not converge: ${uncut}`);
  const failures: string[] = [];
  let cutSteps = 0;
  for (let at = 1; at <= steps.length; at++) {
    if (opts.steps === "changes" && onlyLooks(steps[at - 1]!)) {
      opts.results.push({ operation: s.operation, step: at, summary: steps[at - 1]!, skipped: true });
      continue;
    }
    cutSteps++;
    for (const when of opts.ways) {
      await s.reset();
      const last: LastRun<Out> = { failed: false };
      const cut = cuttingContext(opts.freshContext(), opts.relay, { at, when });
      try {
        await s.run(cut.ctx, last);
      } catch {
        last.failed = true;
      }
      opts.relay.up();
      let detail: string | undefined;
      try {
        await s.run(opts.freshContext(), last);
        detail = await s.converged();
      } catch (err) {
        detail = `the next run failed: ${(err as Error).message.split("\n")[0]}`;
      }
      opts.results.push({
        operation: s.operation,
        step: at,
        summary: steps[at - 1]!,
        when,
        converged: !detail,
        ...(detail ? { detail } : {}),
      });
      if (detail) failures.push(`${s.operation} step ${at} (${steps[at - 1]}) cut ${when}: ${detail}`);
    }
  }
  if (cutSteps === 0)
    throw new Error(`${s.operation}: no step of ${steps.join(", ")} changes the host; nothing was cut`);
  return { steps, cut: cutSteps, failures };
}

/** Which steps of an operation a matrix cuts: every one, or those that change the host. */
export type CutSteps = "every" | "changes";

/**
 * Whether a step's summary says it only looks at the host (reads, lists, waits, probes) and changes nothing there:
 * `look for varnishd`, `which VCL varnish runs`, `wait until every site serves`, `stat 1 file(s)`, `xl list`… A
 * summary that starts any other way counts as a change, so an unknown step is cut rather than skipped.
 */
export function onlyLooks(summary: string): boolean {
  return /^(look|looks|which|what|who|how|wait|read|stat|probe|is|xl list)\b/i.test(summary.trim());
}

/** Every way a step can be cut. */
export const ALL_WAYS: readonly CutWhen[] = ["before", "during", "after"];
/** How each step is cut: all three ways in the slow tier, `during` (the cut that leaves the most undecided) in the fast one. */
export const TIERED_WAYS: readonly CutWhen[] = runTier() === "slow" ? ALL_WAYS : ["during"];
/** Which steps are cut: every one in the slow tier, those that change the host in the fast one. */
export const TIERED_STEPS: CutSteps = runTier() === "slow" ? "every" : "changes";

/**
 * Declares the matrix of `kind` as a suite: one test per scenario (it converges on the next run whichever step the cut
 * hits, each way in `ways`); at its end the table of every cut and each scenario's wall time are printed.
 * `relay` and `freshContext` are read when a test runs (after the file's `before`).
 */
export function describeCutMatrix<Out>(
  kind: string,
  scenarios: readonly CutScenario<Out>[],
  o: {
    relay: () => CutRelay;
    freshContext: () => Context;
    /** @default TIERED_WAYS */
    ways?: readonly CutWhen[];
    /** @default TIERED_STEPS */
    steps?: CutSteps;
    /** The suite's deadline in ms. */
    timeoutMs: number;
  },
): void {
  const ways = o.ways ?? TIERED_WAYS;
  const which = o.steps ?? TIERED_STEPS;
  describe(
    `${kind} with the connection cut at ${which === "every" ? "every remote step" : "every remote step that changes the host"} (${ways.join(", ")})`,
    { timeout: o.timeoutMs },
    () => {
      const results: CutResult[] = [];
      const times: string[] = [];
      after(() => {
        if (results.length > 0) console.log(formatCutTable(kind, results));
        for (const t of times) console.log(t);
      });
      for (const s of scenarios)
        test(`${s.operation} converges on the next run, whichever step the cut hits`, async () => {
          const started = Date.now();
          const { steps, cut, failures } = await runCutScenario(s, {
            relay: o.relay(),
            freshContext: o.freshContext,
            ways,
            steps: which,
            results,
          });
          times.push(
            `${kind} ${s.operation}: ${cut} of ${steps.length} steps × ${ways.length} cuts in ${((Date.now() - started) / 1000).toFixed(1)} s`,
          );
          assert.deepEqual(failures, []);
        });
    },
  );
}

/**
 * Files as a host's sessions see them (null: absent), which of `dirs` are directories, and the temp files a write
 * left behind (the paths `temps`, a `find …` command, prints, joined by spaces), in one call of `run` (a script run
 * as root straight to the host's sshd, not through the relay).
 */
export async function lookAtHost(
  run: (script: string) => Promise<string>,
  files: readonly string[],
  temps: string,
  dirs: readonly string[] = [],
): Promise<{ files: Map<string, string | null>; dirs: Set<string>; temps: string }> {
  const out = await run(
    [
      ...files.map(
        (f) =>
          `if [ -f ${shellQuote(f)} ]; then echo "file $(base64 -w0 < ${shellQuote(f)})"; else echo "file -"; fi`,
      ),
      ...dirs.map((d) => `if [ -d ${shellQuote(d)} ]; then echo "dir yes"; else echo "dir no"; fi`),
      `echo "temps $(${temps} 2>/dev/null | tr '\\n' ' ')"`,
    ].join("\n"),
  );
  const lines = out.split("\n");
  const seen = new Map<string, string | null>();
  files.forEach((f, n) => {
    const v = lines[n]!.slice("file ".length);
    seen.set(f, v === "-" ? null : Buffer.from(v, "base64").toString("utf8"));
  });
  const isDir = new Set(dirs.filter((_, n) => lines[files.length + n] === "dir yes"));
  return {
    files: seen,
    dirs: isDir,
    temps: (lines[files.length + dirs.length] ?? "").slice("temps ".length).trim(),
  };
}
