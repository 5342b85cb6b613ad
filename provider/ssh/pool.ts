/**
 * The connection pool: one SSH connection per login inside a provider process, dialled lazily with retries and
 * backoff, shared by every resource that logs in the same way, with a cap on the channels open at once.
 *
 * A connection is shared only by requests that would have dialled exactly the same login: same route, same
 * host-key pin and insecure flag, same credentials ({@link poolKey}). A resource pinned to another key, or with
 * other credentials, always gets its own handshake, so its pin and its authentication are checked.
 */
import type { Client } from "ssh2";
import { appendFileSync } from "node:fs";
import type { Duplex } from "node:stream";
import { SshConnectError } from "../core/errors";
import { Logger } from "../core/log";
import { poolKey, ResolvedConnection, secretsOf } from "./connection";
import { forwardOut, handshake, tcpConnect } from "./dial";
import { countHandshake } from "./meter";
import { RemoteHost } from "./remote-host";

export interface PoolOptions {
  /** Channels open at once per connection; OpenSSH allows 10 sessions by default (MaxSessions). @default 8 */
  maxChannelsPerConnection?: number;
  /** Logger for connection events. */
  log?: Logger;
}

/** One pooled connection. */
export interface PoolEntry {
  key: string;
  conn: ResolvedConnection;
  client: Client;
  sock: Duplex;
  /** The server's raw host key, verified against the connection's pin during the handshake. */
  hostKey: Buffer;
  /** Channel slots taken (never more than the pool's cap). */
  active: number;
  /** Acquirers waiting for a slot: called with true when handed one, false when the connection closed. */
  waiting: ((granted: boolean) => void)[];
  closed: boolean;
}

export class SshPool {
  /** Counters for tests and benchmarks. */
  readonly stats = { handshakes: 0, dialAttempts: 0, commands: 0, maxActive: 0 };
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

  /**
   * @internal Takes a channel slot on the pooled connection for `conn`, dialing when there is none (or the pooled
   * one has closed). Concurrent acquirers that find the same connection closed share one new dial.
   */
  async acquire(conn: ResolvedConnection, log: Logger): Promise<PoolEntry> {
    const key = poolKey(conn);
    for (;;) {
      let pending = this.entries.get(key);
      if (!pending) {
        pending = this.dial(conn, log);
        this.entries.set(key, pending);
      }
      let entry: PoolEntry;
      try {
        entry = await pending;
      } catch (err) {
        if (this.entries.get(key) === pending) this.entries.delete(key);
        throw err;
      }
      if (entry.closed) {
        // Only the first to notice replaces it; the others find the replacement on their next turn.
        if (this.entries.get(key) === pending) this.entries.delete(key);
        continue;
      }
      if (entry.active < this.maxChannels) {
        this.take(entry);
        return entry;
      }
      // The slot is handed over by release (counted there), so nobody can slip in between.
      if (await new Promise<boolean>((resolve) => entry.waiting.push(resolve))) return entry;
    }
  }

  /** @internal Gives a channel slot back: straight to the next waiter, if any. */
  release(entry: PoolEntry): void {
    const next = entry.waiting.shift();
    if (next && !entry.closed) {
      next(true);
      return;
    }
    entry.active--;
    if (entry.active === 0) refSocket(entry.sock, false);
  }

  private take(entry: PoolEntry): void {
    entry.active++;
    if (entry.active > this.stats.maxActive) this.stats.maxActive = entry.active;
    refSocket(entry.sock, true);
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
    recordDial(conn);
    const timeoutMs = conn.perDialTimeout * 1000;
    let sock: Duplex;
    if (conn.proxy) {
      let jump: PoolEntry;
      try {
        jump = await this.acquire(conn.proxy, log);
      } catch (err) {
        // The jump host's own dial already retried; "proxy" failures are not retried again.
        throw new SshConnectError(conn.host, conn.port, "proxy", `jump host: ${(err as Error).message}`, 1, {
          cause: err,
        });
      }
      try {
        sock = await forwardOut(jump.client, jump.conn.host, conn, timeoutMs);
      } finally {
        this.release(jump);
      }
    } else {
      sock = await tcpConnect(conn, timeoutMs);
    }
    const entry: Omit<PoolEntry, "client"> & { client?: Client } = {
      key: poolKey(conn),
      conn,
      sock,
      hostKey: Buffer.alloc(0),
      active: 0,
      waiting: [],
      closed: false,
    };
    const { client, hostKey } = await handshake(sock, conn, log, () => {
      entry.closed = true;
      for (const w of entry.waiting.splice(0)) w(false);
    });
    entry.client = client;
    entry.hostKey = hostKey;
    this.stats.handshakes++;
    countHandshake(`${conn.user}@${conn.host}:${conn.port}`);
    refSocket(sock, false);
    return entry as PoolEntry;
  }
}

/**
 * With `XEN_ESTATE_DIAL_LOG=<file>` in the provider's environment, every dial attempt (before its TCP connect or
 * tunnel) appends one line `dial <user>@<host>:<port>` to the file: how a test proves that a run (a `preview`)
 * opened no connection, counted where connections start rather than where they would arrive. No credential is
 * written. A file that cannot be written fails the dial: a missing record must not read as "no dial".
 */
export const DIAL_LOG_ENV = "XEN_ESTATE_DIAL_LOG";

function recordDial(conn: ResolvedConnection): void {
  const file = process.env[DIAL_LOG_ENV];
  if (!file) return;
  appendFileSync(file, `dial ${conn.user}@${conn.host}:${conn.port}\n`);
}

function refSocket(sock: Duplex, ref: boolean): void {
  const s = sock as Duplex & { ref?: () => void; unref?: () => void };
  if (ref) s.ref?.();
  else s.unref?.();
}
