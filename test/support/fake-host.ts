/**
 * A SIMULATOR of a remote host, for unit tests of a kind's decisions (which scripts it runs, in which order, and
 * what it concludes from their answers) without SSH. It records every script and answers it with the first
 * responder whose pattern matches; a script nothing answers fails the test. What the scripts do on a real host is
 * proven by the ssh and lab suites, never by this.
 */
import { Logger, RefusedError, REFUSED_EXIT, RemoteCommandError } from "../../provider";
import type { Context, RunResult } from "../../provider";
import { vclDigest } from "../../provider/resources/varnish-frontend/scripts";

export interface Responder {
  /** Matches the script (or the summary given with it). */
  match: RegExp;
  /** stdout to answer; a number is an exit code (non-zero fails the call, 97 is a refusal). */
  answer: string | number | ((script: string) => string | number);
}

export interface FakeHost {
  ctx: Context;
  /** Every script run, in order. */
  scripts: string[];
  /** The summaries given with each script. */
  summaries: string[];
  /** Log lines written through the context's logger. */
  logs: string[];
}

/** A context whose host answers scripts with `responders`, in order of precedence. */
export function fakeHost(responders: Responder[], hostName = "dom0"): FakeHost {
  const scripts: string[] = [];
  const summaries: string[] = [];
  const logs: string[] = [];
  const answer = (script: string, summary: string): RunResult => {
    scripts.push(script);
    summaries.push(summary);
    const r = responders.find((x) => x.match.test(script) || x.match.test(summary));
    if (!r) throw new Error(`the fake host has no answer for: ${summary}\n${script.slice(0, 400)}`);
    const a = typeof r.answer === "function" ? r.answer(script) : r.answer;
    if (typeof a === "number" && a !== 0) {
      throw new RemoteCommandError({
        host: hostName,
        command: summary,
        exitCode: a,
        signal: null,
        timedOut: false,
        durationMs: 1,
        stderrTail: `exit ${a}`,
      });
    }
    const stdout = typeof a === "number" ? "" : a;
    return {
      stdout,
      stdoutBuffer: Buffer.from(stdout),
      stderr: "",
      exitCode: 0,
      signal: null,
      durationMs: 1,
    };
  };
  const log = new Logger("fake");
  for (const m of ["debug", "info", "warn", "error", "progress"] as const)
    (log as unknown as Record<string, (s: string) => void>)[m] = (s: string) => logs.push(`${m}: ${s}`);
  const host = {
    name: hostName,
    isRoot: true,
    log,
    conn: {
      host: hostName,
      port: 22,
      user: "root",
      dialErrorLimit: 1,
      perDialTimeout: 1,
      commandTimeout: 60,
      insecureIgnoreHostKey: true,
    },
    script: (script: string, opts: { summary?: string } = {}) =>
      Promise.resolve().then(() => answer(script, opts.summary ?? "")),
    exec: (command: string, opts: { summary?: string } = {}) =>
      Promise.resolve().then(() => answer(command, opts.summary ?? "")),
    refusable: async (script: string, opts: { summary?: string } = {}) => {
      try {
        return (await host.script(script, opts)).stdout;
      } catch (err) {
        if (err instanceof RemoteCommandError && err.exitCode === REFUSED_EXIT)
          throw new RefusedError("refused");
        throw err;
      }
    },
  };
  const ctx = { host, log, conn: host.conn } as unknown as Context;
  return { ctx, scripts, summaries, logs };
}

/**
 * A simulated dom0 with Varnish for VarnishFrontend's decisions: every step succeeds, writes answer `write` (e.g.
 * "unchanged"), and varnishd reports running the VCL whose source is `runningVcl`.
 */
export function fakeVarnishHost(runningVcl: string, write = "unchanged\n"): FakeHost {
  return fakeHost([
    { match: /look for varnishd/, answer: "yes\n" },
    { match: /write \//, answer: write },
    { match: /reload systemd's units/, answer: "" },
    { match: /restart varnish/, answer: "" },
    { match: /load and use the new VCL/, answer: "" },
    { match: /wait for varnish/, answer: "" },
    { match: /start varnish's access log daemon/, answer: "" },
    { match: /wait until every site serves/, answer: "" },
    {
      match: /which VCL varnish runs/,
      answer: `service active\nactive xen_estate_1\nactive-sha ${vclDigest(runningVcl)}\n`,
    },
  ]);
}
