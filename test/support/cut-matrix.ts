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
 * it stays down (new connections are dropped at once) until the operation has failed, as a real outage would. The
 * steps cut are the resource's own host's, or those of another connection of the kind (`ctx.hosts`, a scenario's
 * `which`) behind a relay of its own. A path the provider does not hold (one the host dials itself) is cut at
 * points the scenario places ({@link CutPoint}), such as after so many bytes through its relay.
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

/** A direction of a relayed connection: from the client to the target, or back. */
export type RelayDirection = "toTarget" | "fromTarget";

/**
 * A TCP relay to `target`, whose every connection can be dropped at once, or after a number of bytes forwarded (the
 * relay counts both directions over all its connections since {@link resetCounts}).
 */
export class CutRelay {
  private readonly sockets = new Set<net.Socket>();
  private server!: net.Server;
  private readonly pools: SshPool[] = [];
  private isDown = false;
  private limit?: { direction: RelayDirection; bytes: number };
  private hold?: { fromTarget: number; release: (held: Buffer) => number | undefined };
  private readonly watches: {
    direction: RelayDirection;
    bytes: number;
    resolve: (c: { toTarget: number; fromTarget: number }) => void;
  }[] = [];
  /** Bytes forwarded since {@link resetCounts}, per direction. */
  readonly counts = { toTarget: 0, fromTarget: 0 };
  /** How many connections a byte limit or a held tail has dropped since {@link resetCounts}. */
  countedCuts = 0;
  port = 0;
  /** Sees every chunk as it arrives, before it is counted or forwarded (to follow a protocol's framing). */
  onData?: (direction: RelayDirection, chunk: Buffer) => void;

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
      // Set when this connection is cut after a count: its client gets what was counted, then an orderly end.
      let ending = false;
      const cut = (rest: Buffer): void => {
        if (ending) return;
        ending = true;
        this.countedCuts++;
        this.isDown = true;
        upstream.destroy();
        client.end(rest);
        // The client's end of the path is gone too, whether or not its peer closes.
        setTimeout(() => client.destroy(), 1000).unref();
      };
      // An upstream that refuses or goes away takes its client with it, as a refused or closed TCP path does.
      upstream.on("close", () => {
        if (!ending) client.destroy();
      });
      client.on("close", () => upstream.destroy());
      this.forward(client, upstream, "toTarget", () => ending, cut);
      this.forward(upstream, client, "fromTarget", () => ending, cut);
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  /** Copies `from` to `to`, counting, minding `to`'s buffer, and cutting where {@link dropAfter} or {@link dropBeforeEnd} says. */
  private forward(
    from: net.Socket,
    to: net.Socket,
    direction: RelayDirection,
    ending: () => boolean,
    cut: (rest: Buffer) => void,
  ): void {
    const held: Buffer[] = [];
    let settle: NodeJS.Timeout | undefined;
    from.on("data", (chunk: Buffer) => {
      if (ending()) return;
      this.onData?.(direction, chunk);
      const hold = this.hold;
      if (
        direction === "fromTarget" &&
        hold &&
        (held.length > 0 || this.counts.fromTarget >= hold.fromTarget)
      ) {
        // The rest is kept back until `release` finds the end it waits for; a little later (nothing more came), the
        // bytes it lets through pass and the path drops.
        held.push(chunk);
        clearTimeout(settle);
        const all = Buffer.concat(held);
        const pass = hold.release(all);
        if (pass !== undefined)
          settle = setTimeout(() => {
            this.count(direction, pass);
            cut(all.subarray(0, pass));
          }, 200);
        return;
      }
      const limit = this.limit;
      let part = chunk;
      if (limit?.direction === direction && this.counts[direction] + chunk.length >= limit.bytes)
        part = chunk.subarray(0, Math.max(0, limit.bytes - this.counts[direction]));
      this.count(direction, part.length);
      if (part !== chunk) {
        // What the other direction has in flight no longer matters: the path is gone after these bytes.
        if (direction === "fromTarget") cut(part);
        else {
          to.end(part);
          cut(Buffer.alloc(0));
        }
        return;
      }
      if (!to.write(part)) {
        from.pause();
        to.once("drain", () => from.resume());
      }
    });
    from.on("end", () => {
      if (!ending() && held.length === 0) to.end();
    });
  }

  private count(direction: RelayDirection, n: number): void {
    this.counts[direction] += n;
    for (const w of [...this.watches])
      if (w.direction === direction && this.counts[direction] >= w.bytes) {
        this.watches.splice(this.watches.indexOf(w), 1);
        w.resolve({ ...this.counts });
      }
  }

  /** Sets both counts to zero and disarms {@link dropAfter} and {@link dropBeforeEnd}. */
  resetCounts(): void {
    this.counts.toTarget = this.counts.fromTarget = 0;
    this.countedCuts = 0;
    this.limit = undefined;
    this.hold = undefined;
  }

  /**
   * Forwards `bytes` more bytes in `direction` (counted from now on; a connection under way is cut in the middle of
   * a read), then drops the connection: the client gets exactly the counted bytes and an orderly end, the target's
   * side is reset, and new connections are refused until {@link up}.
   */
  dropAfter(bytes: number, direction: RelayDirection = "fromTarget"): void {
    this.limit = { direction, bytes: this.counts[direction] + bytes };
  }

  /**
   * Once `fromTarget` bytes came from the target, keeps what follows back until `release(held)` returns how many of
   * the held bytes may pass (undefined: not yet; it is asked again as more arrive), then, 200 ms later if nothing more
   * came, passes that many and drops the connection as {@link dropAfter} does.
   */
  dropBeforeEnd(o: { fromTarget: number; release: (held: Buffer) => number | undefined }): void {
    this.hold = o;
  }

  /** The counts at the moment `direction`'s count reaches `bytes` (both counted since {@link resetCounts}). */
  countsAt(bytes: number, direction: RelayDirection): Promise<{ toTarget: number; fromTarget: number }> {
    return new Promise((resolve) => this.watches.push({ direction, bytes, resolve }));
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

/**
 * A context whose host counts its steps and drops the relay at step `at` (1-based) as `when` says. `which` names the
 * host whose steps are counted and cut: `host` (the default: the resource's own, `ctx.host`) or one of `ctx.hosts`
 * (`source`: a kind's second connection); the other hosts of the context pass through uncounted.
 */
export function cuttingContext(
  ctx: Context,
  relay: CutRelay,
  cut?: { at: number; when: CutWhen },
  which: string = "host",
): { ctx: Context; steps: () => string[] } {
  const target = which === "host" ? ctx.host : ctx.hosts[which];
  if (!target) throw new Error(`cuttingContext: the context has no host ${which}`);
  const steps: string[] = [];
  const wrap =
    (method: "script" | "refusable" | "exec") =>
    async (text: string, opts: { summary?: string } = {}): Promise<unknown> => {
      steps.push(opts.summary ?? text.split("\n")[0]!);
      const n = steps.length;
      const real = (target[method] as (t: string, o?: object) => Promise<unknown>).bind(target);
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
  const counted = new Proxy(target, {
    get(t, prop, receiver) {
      if (prop === "script" || prop === "refusable" || prop === "exec") return wrap(prop);
      return Reflect.get(t, prop, receiver) as unknown;
    },
  });
  return {
    ctx: which === "host" ? { ...ctx, host: counted } : { ...ctx, hosts: { ...ctx.hosts, [which]: counted } },
    steps: () => [...steps],
  };
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
  /**
   * The host whose steps are cut: `host` (the resource's own connection) or a name in `ctx.hosts`; the relay in
   * front of it is `relay`. @default "host", the matrix's relay
   */
  which?: string;
  relay?: () => CutRelay;
  /**
   * Cuts the scenario places itself instead of at the host's steps (a path the provider does not hold, such as one
   * the host dials on its own): each is armed before a run, which must then fail, and the next run must converge.
   * `arm` is called after the uncut run (whatever it measured is known by then).
   */
  points?: readonly CutPoint[];
}

/** A cut a scenario places itself: where in the table it goes and how it is armed. */
export interface CutPoint {
  /** Names the point in the table's summary column. */
  summary: string;
  /** Arms the cut before the cut run. */
  arm: () => void;
  /** Disarms it once the cut run is over, before the next run (what the cut run left can be looked at here). */
  disarm: () => void;
  /**
   * Why the cut run (and the next one) did not do what this point means to prove (it was not cut where it says, it
   * did not fail as it should, the resumed run sent too much…), or undefined. Called after the next run converged;
   * `cutError` is the cut run's error (undefined: it returned). Without a check, the cut run must have failed.
   */
  check?: (cutError: Error | undefined) => Promise<string | undefined>;
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
  const relay = s.relay?.() ?? opts.relay;
  await s.reset();
  const counting = cuttingContext(opts.freshContext(), relay, undefined, s.which);
  await s.run(counting.ctx, { failed: false });
  const steps = counting.steps();
  const uncut = await s.converged();
  if (steps.length === 0 && !s.points) throw new Error(`${s.operation}: the uncut run made no remote step`);
  if (uncut) throw new Error(`${s.operation}: the uncut run does not converge: ${uncut}`);
  const failures: string[] = [];
  const record = (step: number, summary: string, when: CutWhen, detail: string | undefined): void => {
    opts.results.push({
      operation: s.operation,
      step,
      summary,
      when,
      converged: !detail,
      ...(detail ? { detail } : {}),
    });
    if (detail) failures.push(`${s.operation} step ${step} (${summary}) cut ${when}: ${detail}`);
  };
  /** Runs the operation again as the engine would after the cut run, and says why the host has not converged. */
  const next = async (last: LastRun<Out>): Promise<string | undefined> => {
    relay.up();
    try {
      await s.run(opts.freshContext(), last);
      return await s.converged();
    } catch (err) {
      return `the next run failed: ${(err as Error).message.split("\n")[0]}`;
    }
  };
  if (s.points) {
    let n = 0;
    for (const point of s.points) {
      n++;
      await s.reset();
      const last: LastRun<Out> = { failed: false };
      let cutError: Error | undefined;
      point.arm();
      try {
        await s.run(opts.freshContext(), last);
      } catch (err) {
        last.failed = true;
        cutError = err as Error;
      } finally {
        point.disarm();
      }
      let detail = cutError || point.check ? undefined : "the cut run did not fail: nothing was cut";
      detail ??= await next(last);
      detail ??= await point.check?.(cutError);
      record(n, point.summary, "during", detail);
    }
    return { steps, cut: s.points.length, failures };
  }
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
      const cut = cuttingContext(opts.freshContext(), relay, { at, when }, s.which);
      try {
        await s.run(cut.ctx, last);
      } catch {
        last.failed = true;
      }
      // A run that made other steps than the uncut one never cut the step this cell names.
      const made = cut.steps();
      let detail =
        made[at - 1] === steps[at - 1]
          ? undefined
          : `the cut run's step ${at} was ${made[at - 1] ?? "never made"}, not the uncut run's: this step was not cut`;
      detail ??= await next(last);
      record(at, steps[at - 1]!, when, detail);
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
          const seconds = ((Date.now() - started) / 1000).toFixed(1);
          times.push(
            s.points
              ? `${kind} ${s.operation}: ${cut} cut points in ${seconds} s`
              : `${kind} ${s.operation}: ${cut} of ${steps.length} steps × ${ways.length} cuts in ${seconds} s`,
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
