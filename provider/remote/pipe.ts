/**
 * One host's stdout into another host's stdin, through the provider: the relay for data that cannot go straight
 * from one host to the other (a host the other cannot reach). Backpressure holds end to end: when the receiving
 * channel's window is full, the sending command is slowed down; nothing piles up in the provider's memory.
 */
import { PassThrough } from "node:stream";
import type { RemoteHost, RunResult } from "../ssh/remote-host";

export interface PipeEnd {
  host: RemoteHost;
  /** One command line (already quoted), run with `bash -c`. */
  command: string;
  /** What to call it in logs and errors. */
  summary: string;
  /** Data for the sending end's stdin (the receiving end's stdin is the stream). */
  stdin?: string | Buffer;
}

export interface PipeResult {
  from: RunResult;
  to: RunResult;
  /** Bytes that went through the provider. */
  bytes: number;
}

/**
 * Runs `from` and `to` at once with `from`'s stdout as `to`'s stdin. When either fails the other is ended too (the
 * receiver sees the stream end early and says so); the first failure is thrown.
 */
export async function pipeBetween(
  from: PipeEnd,
  to: PipeEnd,
  opts: { timeoutMs: number; onStderrLine?: (line: string) => void; highWaterMark?: number },
): Promise<PipeResult> {
  const carried = new PassThrough({ highWaterMark: opts.highWaterMark ?? 4 * 2 ** 20 });
  let bytes = 0;
  const common = {
    timeoutMs: opts.timeoutMs,
    ...(opts.onStderrLine ? { onStderrLine: opts.onStderrLine } : {}),
  };
  const receiving = to.host.exec(to.command, { ...common, summary: to.summary, stdin: carried });
  const sending = from.host
    .exec(from.command, {
      ...common,
      summary: from.summary,
      stdout: carried,
      onStdout: (c: Buffer) => (bytes += c.length),
      ...(from.stdin !== undefined ? { stdin: from.stdin } : {}),
    })
    .catch((err: unknown) => {
      // The receiver must not wait for data that will never come.
      carried.end();
      throw err;
    });
  const [f, t] = await Promise.allSettled([sending, receiving]);
  if (f.status === "rejected") throw f.reason;
  if (t.status === "rejected") throw t.reason;
  return { from: f.value, to: t.value, bytes };
}
