/**
 * What one resource operation cost over SSH: remote round trips (commands run) and SSH handshakes (logins), counted
 * for the async context the operation runs in, so operations running side by side on one shared pool are told apart.
 * The runtime logs the figures (debug) at the end of each operation; benchmarks read them from the engine's event log.
 */
import { AsyncLocalStorage } from "node:async_hooks";

export interface Meter {
  /** Commands run on a remote host (each is one round trip: a channel opened, run, closed). */
  roundTrips: number;
  /** SSH handshakes completed (a new login; pooled connections are reused without one). */
  handshakes: number;
  /** The handshakes by login, `user@host:port`. */
  logins: Record<string, number>;
}

const current = new AsyncLocalStorage<Meter>();

/** Runs `f` with a fresh meter; `done` receives the meter when `f` settles, whether it resolved or threw. */
export async function metered<T>(f: () => Promise<T>, done: (m: Meter) => void): Promise<T> {
  const m: Meter = { roundTrips: 0, handshakes: 0, logins: {} };
  try {
    return await current.run(m, f);
  } finally {
    done(m);
  }
}

/** Counts a remote round trip on the meter of the operation running now (none outside a metered operation). */
export function countRoundTrip(): void {
  const m = current.getStore();
  if (m) m.roundTrips++;
}

/** Counts a completed SSH handshake as `login` (`user@host:port`) on the meter of the operation running now. */
export function countHandshake(login: string): void {
  const m = current.getStore();
  if (!m) return;
  m.handshakes++;
  m.logins[login] = (m.logins[login] ?? 0) + 1;
}

/** The meter as one line: `12 remote round trips, 2 SSH handshakes (root@h:22 1, ops@h:2222 1)`. */
export function describeMeter(m: Meter): string {
  const logins = Object.entries(m.logins).map(([l, n]) => `${l} ${n}`);
  return `${m.roundTrips} remote round trips, ${m.handshakes} SSH handshakes${logins.length ? ` (${logins.join(", ")})` : ""}`;
}
