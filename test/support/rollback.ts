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
