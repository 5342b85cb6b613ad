/**
 * One command on one channel of a pooled connection: stdin in, stdout and stderr collected (and streamed to the
 * caller), the exit status, and a local deadline on top of the remote one.
 *
 * Only stderr lines reach the debug log: scripts write their messages there. Stdout carries data (file contents,
 * probe results, disk images) and is never logged, so a file that holds a secret cannot leak through a log.
 */
import type { Readable } from "node:stream";
import type { ClientChannel } from "ssh2";
import { SshConnectError } from "../core/errors";
import type { Logger } from "../core/log";
import type { PoolEntry } from "./pool";

export interface ChannelOptions {
  /** Data for the command's stdin. */
  stdin?: string | Buffer | Readable;
  /** Receives stdout as it arrives (e.g. to report progress). */
  onStdout?: (chunk: Buffer) => void;
  /** Receives each stderr line as it arrives. */
  onStderrLine?: (line: string) => void;
  /** Keep at most this many bytes of stdout in the result. @default 512 MiB */
  maxBuffer?: number;
}

export interface ChannelResult {
  stdout: string;
  stdoutBuffer: Buffer;
  stderr: string;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  durationMs: number;
}

/**
 * The server refused to open a channel although the connection is up: it still counts a session the client has
 * already closed (OpenSSH frees it a moment later), or MaxSessions is below the pool's cap. Nothing ran.
 */
export class ChannelRefusedError extends Error {
  override readonly name = "ChannelRefusedError";
}

/** How many stderr lines of one command are copied into the debug log before it is summarised. */
const LOGGED_LINES = 400;
/** A stderr line longer than this is cut in the log (the full text stays in the result). */
const MAX_LOGGED_LINE = 8192;

/** Runs `command` on a new channel of `entry`; resolves when the channel closes. */
export function runOnChannel(
  entry: PoolEntry,
  command: string,
  opts: ChannelOptions,
  timeoutMs: number,
  log: Logger,
): Promise<ChannelResult> {
  const started = Date.now();
  const maxBuffer = opts.maxBuffer ?? 512 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    entry.client.exec(command, (err: Error | undefined, stream: ClientChannel) => {
      if (err) {
        reject(
          entry.closed
            ? new SshConnectError(entry.conn.host, entry.conn.port, "closed", err.message, 1, { cause: err })
            : /Channel open failure/i.test(err.message)
              ? new ChannelRefusedError(err.message, { cause: err })
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
      let partial = "";
      const stderrLine = (line: string): void => {
        opts.onStderrLine?.(line);
        if (logged < LOGGED_LINES)
          log.debug(`${entry.conn.host} (stderr): ${line.slice(0, MAX_LOGGED_LINE)}`);
        else if (logged === LOGGED_LINES) log.debug(`${entry.conn.host}: ... (further stderr not logged)`);
        logged++;
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
      });
      stream.stderr.on("data", (chunk: Buffer) => {
        errChunks.push(chunk);
        const parts = (partial + chunk.toString("utf8")).split("\n");
        partial = parts.pop() ?? "";
        if (partial.length > 64 * 1024) partial = "";
        for (const p of parts) stderrLine(p);
      });
      stream.on("exit", (code: number | null, sig?: string) => {
        exitCode = code ?? null;
        signal = sig ?? null;
      });
      stream.on("close", () => {
        clearTimeout(timer);
        if (partial) stderrLine(partial);
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
