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
}

const current = new AsyncLocalStorage<Meter>();

/** Runs `f` with a fresh meter; `done` receives the meter when `f` settles, whether it resolved or threw. */
export async function metered<T>(f: () => Promise<T>, done: (m: Meter) => void): Promise<T> {
  const m: Meter = { roundTrips: 0, handshakes: 0 };
  try {
    return await current.run(m, f);
  } finally {
    done(m);
  }
}

/** Counts on the meter of the operation running now (none outside a metered operation). */
export function count(what: keyof Meter): void {
  const m = current.getStore();
  if (m) m[what]++;
}
