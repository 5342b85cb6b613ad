/**
 * A host reached through the pool: bash scripts and command lines with deadlines, `sudo -n` for non-root users,
 * and errors that say what failed.
 *
 * Scripts run in one session as `bash --norc -euo pipefail` fed on stdin, so nothing of a script (values included)
 * ever appears in a process's argv. The script is wrapped in a function called with stdin from /dev/null, so a command
 * inside it that reads stdin cannot swallow the rest of the script. Every script can call `xe_refuse WORD…`: it
 * prints the words (joined, no separator) to stderr and exits with {@link REFUSED_EXIT}, which
 * {@link RemoteHost.refusable} turns into a {@link RefusedError}.
 */
import type { Readable, Writable } from "node:stream";
import { RefusedError, RemoteCommandError, SshConnectError, SudoPasswordRequiredError } from "../core/errors";
import type { Logger } from "../core/log";
import { shellQuote } from "../core/shell";
import type { ResolvedConnection } from "./connection";
import { ChannelRefusedError, runOnChannel, type ChannelResult } from "./channel";
import type { SshPool } from "./pool";
import { countRoundTrip } from "./meter";

/**
 * The exit code by which remote scripts say "refused: doing this would lose data or clash". No tool the scripts
 * run uses it (LVM's own codes are 1–5, coreutils' `timeout` 124–127, our lock wait 75, validation 65).
 */
export const REFUSED_EXIT = 97;

/**
 * The shell every script and command line runs in. `--norc`: Debian's and Ubuntu's bash read the system's and the
 * user's bashrc when sshd starts them, and would then do so inside these settings (`-u` made Debian's own
 * /etc/bash.bashrc fail on every run: "PS1: unbound variable"), so no startup file of the host runs in them.
 */
const BASH = "bash --norc -euo pipefail";

/** Defined in every script: `xe_refuse` (refuse with a message) and `xe_say` (a message line on stderr). */
const PRELUDE = [
  `xe_say() { printf '%s' "$@" >&2; printf '\\n' >&2; }`,
  `xe_refuse() { xe_say "$@"; exit ${REFUSED_EXIT}; }`,
].join("\n");

export interface RunOptions {
  /** Data for the command's stdin (only for {@link RemoteHost.exec}; scripts read /dev/null). */
  stdin?: string | Buffer | Readable;
  /** Deadline in milliseconds. @default the connection's `commandTimeout` */
  timeoutMs?: number;
  /** What to call the command in logs and errors. @default its first line */
  summary?: string;
  /** Return the result of a failing command instead of throwing {@link RemoteCommandError}. @default false */
  allowFailure?: boolean;
  /** Receives stdout as it arrives (e.g. to report progress). */
  onStdout?: (chunk: Buffer) => void;
  /** Stdout goes to this stream, with backpressure, instead of into the result (see ChannelOptions.stdout). */
  stdout?: Writable;
  /** Receives each stderr line as it arrives. */
  onStderrLine?: (line: string) => void;
  /** More strings to redact from logs and errors (e.g. a password passed to a command). */
  secrets?: readonly string[];
  /** Keep at most this many bytes of stdout in the result. @default 512 MiB */
  maxBuffer?: number;
}

export interface RunResult {
  stdout: string;
  stdoutBuffer: Buffer;
  stderr: string;
  exitCode: number | null;
  signal: string | null;
  durationMs: number;
}

const STDERR_TAIL_LINES = 20;
/** Attempts to open a channel the server refuses (see {@link ChannelRefusedError}). */
const CHANNEL_ATTEMPTS = 8;

export class RemoteHost {
  constructor(
    private readonly pool: SshPool,
    readonly conn: ResolvedConnection,
    readonly log: Logger,
  ) {}

  get name(): string {
    return this.conn.host;
  }

  get isRoot(): boolean {
    return this.conn.user === "root";
  }

  /**
   * The server's host key as the handshake verified it against the pin: `{ type, blob }`, the blob in SSH wire
   * format (what a known_hosts line holds in base64). Connects when not connected yet. Lets the provider hand a
   * pinned host key to another machine (e.g. a known_hosts file for a dom0 that dials this host itself) when the
   * pin is only a fingerprint.
   */
  async hostKey(): Promise<{ type: string; blob: Buffer }> {
    const entry = await this.pool.acquire(this.conn, this.log);
    try {
      const blob = entry.hostKey;
      const len = blob.length >= 4 ? blob.readUInt32BE(0) : 0;
      if (len <= 0 || 4 + len > blob.length)
        throw new Error(`the host key of ${this.conn.host} was not recorded during the handshake`);
      return { type: blob.subarray(4, 4 + len).toString("latin1"), blob: Buffer.from(blob) };
    } finally {
      this.pool.release(entry);
    }
  }

  /**
   * Runs a bash script (`set -euo pipefail`) in one session. Non-root users run it through `sudo -n`.
   * Throws {@link RemoteCommandError} on a non-zero exit unless `allowFailure`.
   */
  script(script: string, opts: Omit<RunOptions, "stdin"> = {}): Promise<RunResult> {
    const wrapped = `${PRELUDE}\n__xen_estate_main() {\n${script}\n}\n__xen_estate_main </dev/null\n`;
    return this.run(`${BASH} -s`, {
      ...opts,
      stdin: wrapped,
      summary: opts.summary ?? firstLine(script),
    });
  }

  /**
   * Runs a script that exits with {@link REFUSED_EXIT} (`xe_refuse`) when the remote state makes the change unsafe
   * (a volume in use, a MAC already taken); that becomes a {@link RefusedError} carrying the script's last stderr
   * line. Returns stdout.
   */
  async refusable(script: string, opts: Omit<RunOptions, "stdin"> = {}): Promise<string> {
    try {
      return (await this.script(script, opts)).stdout;
    } catch (err) {
      if (err instanceof RemoteCommandError && err.exitCode === REFUSED_EXIT) {
        const lines = err.stderrTail.trim().split("\n");
        throw new RefusedError(lines[lines.length - 1] ?? err.message);
      }
      throw err;
    }
  }

  /** Runs one command line (already quoted by the caller) with optional stdin data or stream. */
  exec(command: string, opts: RunOptions = {}): Promise<RunResult> {
    return this.run(`${BASH} -c ${shellQuote(command)}`, {
      ...opts,
      summary: opts.summary ?? firstLine(command),
    });
  }

  private async run(command: string, opts: RunOptions): Promise<RunResult> {
    const timeoutMs = opts.timeoutMs ?? this.conn.commandTimeout * 1000;
    const seconds = Math.max(1, Math.ceil(timeoutMs / 1000));
    // The remote side enforces the deadline too, so a dropped connection cannot leave the command running forever.
    const guarded = `timeout -k 5 ${seconds} ${command}`;
    const full = this.isRoot ? guarded : `sudo -n -- ${guarded}`;
    const log = opts.secrets ? this.log.with(opts.secrets) : this.log;
    const summary = log.redact(opts.summary ?? command);
    const started = Date.now();
    let entry = await this.pool.acquire(this.conn, log);
    this.pool.stats.commands++;
    countRoundTrip();
    try {
      let result: ChannelResult | undefined;
      // A refused channel ran nothing: wait a little (the server frees closed sessions late) and open it again.
      for (let attempt = 1; !result; attempt++) {
        try {
          result = await runOnChannel(entry, full, opts, timeoutMs, log);
        } catch (err) {
          if (!(err instanceof ChannelRefusedError) || attempt >= CHANNEL_ATTEMPTS) throw err;
          log.debug(`${this.conn.host}: the server refused a channel (${err.message}); opening it again`);
          this.pool.release(entry);
          await new Promise((r) => setTimeout(r, 100 * attempt));
          entry = await this.pool.acquire(this.conn, log);
        }
      }
      const failed = result.timedOut || result.exitCode !== 0;
      if (
        failed &&
        !this.isRoot &&
        result.exitCode === 1 &&
        /sudo: (a password is required|a terminal is required)/.test(result.stderr)
      )
        throw new SudoPasswordRequiredError(this.conn.host, this.conn.user);
      if (failed && !opts.allowFailure) {
        throw new RemoteCommandError({
          host: this.conn.host,
          command: summary,
          exitCode: result.exitCode,
          signal: result.signal,
          timedOut: result.timedOut || result.exitCode === 124,
          durationMs: result.durationMs,
          stderrTail: log.redact(tail(result.stderr, STDERR_TAIL_LINES)),
        });
      }
      return result;
    } catch (err) {
      if (err instanceof SshConnectError && err.kind === "closed") {
        throw new RemoteCommandError(
          {
            host: this.conn.host,
            command: summary,
            exitCode: null,
            signal: null,
            timedOut: false,
            durationMs: Date.now() - started,
            stderrTail: `connection lost: ${err.message}`,
          },
          { cause: err },
        );
      }
      throw err;
    } finally {
      this.pool.release(entry);
    }
  }
}

function firstLine(text: string): string {
  const line = text.split("\n").find((l) => l.trim() !== "" && !l.trim().startsWith("#")) ?? "";
  const t = line.trim();
  return t.length > 100 ? `${t.slice(0, 97)}...` : t;
}

function tail(text: string, lines: number): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}
