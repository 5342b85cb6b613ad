/**
 * The SSH executor: one pooled connection per login (and route) inside a provider process, retries with backoff
 * while dialing, host-key pinning before authentication, `sudo -n` for non-root users, a deadline per command and
 * errors that say what failed.
 *
 * Scripts run in one session as `bash -euo pipefail` fed on stdin. The script is wrapped in a function that is
 * called with stdin from /dev/null, so a command inside it that reads stdin cannot swallow the rest of the script.
 */
import * as net from "node:net";
import type { Duplex, Readable } from "node:stream";
import type { Client, ClientChannel, ConnectConfig } from "ssh2";
import {
  ConnectFailureKind,
  RefusedError,
  RemoteCommandError,
  SshConnectError,
  SudoPasswordRequiredError,
} from "../errors";
import { connectionKey, ResolvedConnection, secretsOf } from "../connection";
import { Logger, redact } from "../log";
import { fingerprintOf, parseHostKeyPin, pinMatches } from "./hostkey";
import { shellQuote } from "../shell";

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

export interface PoolOptions {
  /** Channels open at once per connection; OpenSSH allows 10 sessions by default (MaxSessions). @default 8 */
  maxChannelsPerConnection?: number;
  /** Logger for connection events. */
  log?: Logger;
}

interface PoolEntry {
  key: string;
  conn: ResolvedConnection;
  client: Client;
  sock: Duplex;
  active: number;
  waiting: (() => void)[];
  closed: boolean;
}

/** The exit code by which remote scripts say "refused: doing this would lose data or clash". */
export const REFUSED_EXIT = 3;

/** How many lines of a command's output are copied into the debug log before it is summarised. */
const LOGGED_LINES = 400;
const STDERR_TAIL_LINES = 20;

export class SshPool {
  /** Counters for tests and benchmarks. */
  readonly stats = { handshakes: 0, dialAttempts: 0, commands: 0 };
  private readonly entries = new Map<string, Promise<PoolEntry>>();
  private readonly maxChannels: number;
  private readonly log: Logger;
  private closing = false;

  constructor(opts: PoolOptions = {}) {
    this.maxChannels = opts.maxChannelsPerConnection ?? 8;
    this.log = opts.log ?? new Logger("ssh");
  }

  /** A handle to run commands on a host. Connects lazily, on the first command. */
  host(conn: ResolvedConnection, log?: Logger): RemoteHost {
    return new RemoteHost(this, conn, (log ?? this.log).with(secretsOf(conn)));
  }

  /** Closes every pooled connection. */
  async close(): Promise<void> {
    this.closing = true;
    const entries = await Promise.allSettled([...this.entries.values()]);
    this.entries.clear();
    for (const e of entries) if (e.status === "fulfilled") e.value.client.end();
    this.closing = false;
  }

  /** @internal Borrows a channel slot on the pooled connection for `conn`, dialing when needed. */
  async acquire(conn: ResolvedConnection, log: Logger): Promise<PoolEntry> {
    const key = connectionKey(conn);
    let pending = this.entries.get(key);
    if (pending) {
      const entry = await pending.catch(() => undefined);
      if (!entry || entry.closed) {
        if (this.entries.get(key) === pending) this.entries.delete(key);
        pending = undefined;
      }
    }
    if (!pending) {
      pending = this.dial(conn, log);
      this.entries.set(key, pending);
      pending.catch(() => {
        if (this.entries.get(key) === pending) this.entries.delete(key);
      });
    }
    const entry = await pending;
    if (entry.active >= this.maxChannels) await new Promise<void>((resolve) => entry.waiting.push(resolve));
    entry.active++;
    refSocket(entry.sock, true);
    return entry;
  }

  /** @internal */
  release(entry: PoolEntry): void {
    entry.active--;
    const next = entry.waiting.shift();
    if (next) next();
    else if (entry.active === 0) refSocket(entry.sock, false);
  }

  private async dial(conn: ResolvedConnection, log: Logger): Promise<PoolEntry> {
    const limit = conn.dialErrorLimit;
    let last: SshConnectError | undefined;
    let attempt = 0;
    while (attempt < limit && !this.closing) {
      attempt++;
      try {
        return await this.dialOnce(conn, log);
      } catch (err) {
        last =
          err instanceof SshConnectError
            ? err
            : new SshConnectError(conn.host, conn.port, "network", String(err), 1, { cause: err });
        if (!last.retryable || attempt === limit) break;
        const delay = Math.min(250 * 2 ** (attempt - 1), 5000);
        log.debug(
          `ssh ${conn.host}:${conn.port}: ${last.kind} (attempt ${attempt}/${limit}), retrying in ${delay} ms`,
        );
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    if (!last)
      throw new SshConnectError(conn.host, conn.port, "network", "the connection pool was closed", attempt);
    throw new SshConnectError(last.host, last.port, last.kind, last.detail, attempt, { cause: last });
  }

  private async dialOnce(conn: ResolvedConnection, log: Logger): Promise<PoolEntry> {
    this.stats.dialAttempts++;
    const { Client } = require("ssh2") as typeof import("ssh2");
    const timeoutMs = conn.perDialTimeout * 1000;
    let sock: Duplex;
    let jump: PoolEntry | undefined;
    if (conn.proxy) {
      try {
        jump = await this.acquire(conn.proxy, log);
      } catch (err) {
        // The jump host's own dial already retried; "proxy" failures are not retried again.
        throw new SshConnectError(conn.host, conn.port, "proxy", `jump host: ${(err as Error).message}`, 1, {
          cause: err,
        });
      }
      try {
        sock = await forwardOut(jump, conn, timeoutMs);
      } finally {
        this.release(jump);
      }
    } else {
      sock = await tcpConnect(conn, timeoutMs);
    }

    return await new Promise<PoolEntry>((resolve, reject) => {
      const client = new Client();
      let hostKeyProblem: string | undefined;
      let settled = false;
      const entry: PoolEntry = {
        key: connectionKey(conn),
        conn,
        client,
        sock,
        active: 0,
        waiting: [],
        closed: false,
      };
      const pin = conn.hostKey ? parseHostKeyPin(conn.hostKey) : undefined;
      const config: ConnectConfig = {
        sock: sock,
        username: conn.user,
        readyTimeout: timeoutMs,
        keepaliveInterval: 15_000,
        keepaliveCountMax: 4,
        tryKeyboard: !!conn.password,
        hostVerifier: (key: Buffer): boolean => {
          const fp = fingerprintOf(key);
          if (pin && !("error" in pin)) {
            if (pinMatches(pin, key)) return true;
            hostKeyProblem = `host key ${fp} does not match the pinned ${pin.kind === "fingerprint" ? `SHA256:${pin.sha256}` : fingerprintOf(pin.blob)}; refusing to authenticate`;
            return false;
          }
          if (conn.insecureIgnoreHostKey) {
            log.warn(
              `ssh ${conn.host}:${conn.port}: host key ${fp} accepted without verification (insecureIgnoreHostKey)`,
            );
            return true;
          }
          hostKeyProblem = `host key ${fp} is not pinned; set connection.hostKey (or insecureIgnoreHostKey for throwaway hosts)`;
          return false;
        },
      };
      if (conn.password) config.password = conn.password;
      if (conn.privateKey) config.privateKey = conn.privateKey;
      if (conn.privateKeyPassword) config.passphrase = conn.privateKeyPassword;
      const agent = conn.agentSocketPath ?? process.env.SSH_AUTH_SOCK;
      if (agent) config.agent = agent;
      if (!conn.password && !conn.privateKey && !agent) {
        const keyFile = process.env.XEN_ESTATE_SSH_KEY_FILE;
        if (keyFile) config.privateKey = require("node:fs").readFileSync(keyFile, "utf8");
      }
      if (conn.password) {
        client.on("keyboard-interactive", (_name, _instr, _lang, prompts, finish) =>
          finish(prompts.map(() => conn.password ?? "")),
        );
      }
      client.on("ready", () => {
        this.stats.handshakes++;
        settled = true;
        refSocket(sock, false);
        resolve(entry);
      });
      client.on("error", (err: Error & { level?: string; code?: string }) => {
        if (settled || err.level === "agent") {
          // An unusable agent is not fatal: ssh2 goes on with the other methods and reports the outcome.
          log.debug(
            `ssh ${conn.host}:${conn.port}: ${err.level === "agent" ? "agent" : "connection"} error: ${err.message}`,
          );
          return;
        }
        settled = true;
        client.end();
        reject(classify(conn, err, hostKeyProblem));
      });
      client.on("close", () => {
        entry.closed = true;
        for (const w of entry.waiting.splice(0)) w();
        if (!settled) {
          settled = true;
          reject(
            new SshConnectError(
              conn.host,
              conn.port,
              hostKeyProblem ? "host-key" : "closed",
              hostKeyProblem ?? "connection closed during handshake",
              1,
            ),
          );
        }
      });
      client.connect(config);
    });
  }
}

function refSocket(sock: Duplex, ref: boolean): void {
  const s = sock as Duplex & { ref?: () => void; unref?: () => void };
  if (ref) s.ref?.();
  else s.unref?.();
}

function classify(
  conn: ResolvedConnection,
  err: Error & { level?: string; code?: string },
  hostKeyProblem?: string,
): SshConnectError {
  let kind: ConnectFailureKind = "network";
  let detail = err.message;
  if (hostKeyProblem) {
    kind = "host-key";
    detail = hostKeyProblem;
  } else if (err.level === "client-authentication") {
    kind = "auth";
    detail = `authentication as ${conn.user} failed (methods tried: ${[conn.privateKey && "publickey", conn.password && "password", (conn.agentSocketPath ?? process.env.SSH_AUTH_SOCK) && "agent"].filter(Boolean).join(", ") || "none"})`;
  } else if (err.level === "client-timeout" || /timed out/i.test(err.message)) {
    kind = "timeout";
    detail = `no SSH handshake within ${conn.perDialTimeout} s`;
  } else if (err.code === "ECONNRESET" || /ECONNRESET/.test(err.message)) {
    kind = "closed";
  }
  return new SshConnectError(conn.host, conn.port, kind, redact(detail, secretsOf(conn)), 1, { cause: err });
}

function tcpConnect(conn: ResolvedConnection, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: conn.host, port: conn.port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(
        new SshConnectError(
          conn.host,
          conn.port,
          "timeout",
          `TCP connect took longer than ${conn.perDialTimeout} s`,
          1,
        ),
      );
    }, timeoutMs);
    sock.once("connect", () => {
      clearTimeout(timer);
      sock.setNoDelay(true);
      resolve(sock);
    });
    sock.once("error", (err: Error & { code?: string }) => {
      clearTimeout(timer);
      const kind: ConnectFailureKind =
        err.code === "ENOTFOUND" || err.code === "EAI_AGAIN"
          ? "dns"
          : err.code === "ECONNREFUSED"
            ? "refused"
            : err.code === "ETIMEDOUT" || err.code === "EHOSTUNREACH"
              ? "timeout"
              : "network";
      const detail =
        kind === "dns"
          ? `cannot resolve ${conn.host}`
          : kind === "refused"
            ? `nothing listens on port ${conn.port}`
            : err.message;
      reject(new SshConnectError(conn.host, conn.port, kind, detail, 1, { cause: err }));
    });
  });
}

function forwardOut(jump: PoolEntry, conn: ResolvedConnection, timeoutMs: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          new SshConnectError(
            conn.host,
            conn.port,
            "timeout",
            `jump host ${jump.conn.host} did not open a tunnel within ${conn.perDialTimeout} s`,
            1,
          ),
        ),
      timeoutMs,
    );
    jump.client.forwardOut("127.0.0.1", 0, conn.host, conn.port, (err, stream) => {
      clearTimeout(timer);
      if (err) {
        const refused = /refused|administratively prohibited|connect failed/i.test(err.message);
        reject(
          new SshConnectError(
            conn.host,
            conn.port,
            refused ? "refused" : "proxy",
            `via ${jump.conn.host}: ${err.message}`,
            1,
            { cause: err },
          ),
        );
      } else resolve(stream);
    });
  });
}

/** A host reached through the pool. Cheap to create; the connection is shared. */
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
   * Runs a bash script (`set -euo pipefail`) in one session. Non-root users run it through `sudo -n`.
   * Throws {@link RemoteCommandError} on a non-zero exit unless `allowFailure`.
   */
  script(script: string, opts: Omit<RunOptions, "stdin"> = {}): Promise<RunResult> {
    const wrapped = `__xen_estate_main() {\n${script}\n}\n__xen_estate_main </dev/null\n`;
    return this.run("bash -euo pipefail -s", {
      ...opts,
      stdin: wrapped,
      summary: opts.summary ?? firstLine(script),
    });
  }

  /**
   * Runs a script that exits with {@link REFUSED_EXIT} when the remote state makes the change unsafe (a volume
   * in use, a MAC already taken); that becomes a {@link RefusedError} carrying the script's last stderr line.
   * Returns stdout.
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
    return this.run(`bash -euo pipefail -c ${shellQuote(command)}`, {
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
    const entry = await this.pool.acquire(this.conn, log);
    this.pool.stats.commands++;
    const started = Date.now();
    try {
      const result = await runOnChannel(entry, full, opts, timeoutMs, log);
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

function runOnChannel(
  entry: PoolEntry,
  command: string,
  opts: RunOptions,
  timeoutMs: number,
  log: Logger,
): Promise<RunResult & { timedOut: boolean }> {
  const started = Date.now();
  const maxBuffer = opts.maxBuffer ?? 512 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    entry.client.exec(command, (err: Error | undefined, stream: ClientChannel) => {
      if (err) {
        reject(
          entry.closed
            ? new SshConnectError(entry.conn.host, entry.conn.port, "closed", err.message, 1, { cause: err })
            : err,
        );
        return;
      }
      const out: Buffer[] = [];
      let outBytes = 0;
      const errChunks: Buffer[] = [];
      let exitCode: number | null = null;
      let signal: string | null = null;
      let timedOut = false;
      let logged = 0;
      const lines = { out: "", err: "" };
      const logLine = (stream: "out" | "err", line: string): void => {
        if (stream === "err") opts.onStderrLine?.(line);
        if (logged < LOGGED_LINES)
          log.debug(`${entry.conn.host}${stream === "err" ? " (stderr)" : ""}: ${line}`);
        else if (logged === LOGGED_LINES) log.debug(`${entry.conn.host}: ... (further output not logged)`);
        logged++;
      };
      const split = (which: "out" | "err", chunk: Buffer): void => {
        if (which === "out" && logged > LOGGED_LINES) return;
        const text = lines[which] + chunk.toString("utf8");
        const parts = text.split("\n");
        lines[which] = parts.pop() ?? "";
        if (lines[which].length > 8192) lines[which] = "";
        for (const p of parts) logLine(which, p);
      };
      const timer = setTimeout(() => {
        timedOut = true;
        try {
          stream.signal("KILL");
        } catch {
          /* the channel may already be closing */
        }
        stream.close();
      }, timeoutMs + 5000);
      stream.on("data", (chunk: Buffer) => {
        opts.onStdout?.(chunk);
        if (outBytes < maxBuffer) {
          out.push(chunk);
          outBytes += chunk.length;
        }
        split("out", chunk);
      });
      stream.stderr.on("data", (chunk: Buffer) => {
        errChunks.push(chunk);
        split("err", chunk);
      });
      stream.on("exit", (code: number | null, sig?: string) => {
        exitCode = code ?? null;
        signal = sig ?? null;
      });
      stream.on("close", () => {
        clearTimeout(timer);
        if (lines.out) logLine("out", lines.out);
        if (lines.err) logLine("err", lines.err);
        const stdoutBuffer = Buffer.concat(out);
        if (exitCode === null && signal === null && !timedOut && entry.closed) {
          reject(
            new SshConnectError(
              entry.conn.host,
              entry.conn.port,
              "closed",
              "connection dropped while the command ran",
              1,
            ),
          );
          return;
        }
        resolve({
          stdout: stdoutBuffer.toString("utf8"),
          stdoutBuffer,
          stderr: Buffer.concat(errChunks).toString("utf8"),
          exitCode,
          signal,
          timedOut,
          durationMs: Date.now() - started,
        });
      });
      const input = opts.stdin;
      if (input === undefined) stream.end();
      else if (typeof input === "string" || Buffer.isBuffer(input)) stream.end(input);
      else input.pipe(stream);
    });
  });
}

function firstLine(text: string): string {
  const line = text.split("\n").find((l) => l.trim() !== "" && !l.trim().startsWith("#")) ?? "";
  const t = line.trim();
  return t.length > 100 ? `${t.slice(0, 97)}...` : t;
}

function tail(text: string, lines: number): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}
