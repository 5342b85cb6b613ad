/** Test helpers around the host's rollback timer (provider/remote/rollback.ts). */
import * as fs from "node:fs";
import * as path from "node:path";

/**
 * Stops the `setsid` sleepers a failed test left armed under `rollbackRoot` (a test's own rollback directory, as
 * the host sees /var/lib/xen-estate/rollback): each one's pid is in its change's `timer` file (`pid N`).
 */
export function stopRollbackSleepers(rollbackRoot: string): void {
  for (const d of fs.existsSync(rollbackRoot) ? fs.readdirSync(rollbackRoot) : []) {
    const timer = path.join(rollbackRoot, d, "timer");
    const pid = fs.existsSync(timer) ? /^pid (\d+)$/m.exec(fs.readFileSync(timer, "utf8"))?.[1] : undefined;
    if (pid)
      try {
        process.kill(Number(pid), "SIGTERM");
      } catch {
        /* already gone */
      }
  }
}

/**
 * Waits (up to 60 s) until no change under `rollbackRoot` is pending (each one restored or confirmed by the host by
 * then), then takes the directory away, so the next run starts with none.
 */
export async function settleRollbacks(rollbackRoot: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const pending = fs.existsSync(rollbackRoot)
      ? fs
          .readdirSync(rollbackRoot)
          .filter(
            (d) =>
              !fs.existsSync(path.join(rollbackRoot, d, "restored")) &&
              !fs.existsSync(path.join(rollbackRoot, d, "confirmed")),
          )
      : [];
    if (pending.length === 0 || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  fs.rmSync(rollbackRoot, { recursive: true, force: true });
}
