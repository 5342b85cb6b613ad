/**
 * The lab lock (one emulated machine at a time on this machine), taken by qemu-run.sh with the real flock(1):
 * here the wrapper starts `sleep` instead of QEMU (a stand-in for the machine, which the lab suite boots for real),
 * on a lock file of the test's own.
 */
import assert from "node:assert/strict";
import { ChildProcess, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { lockHeldByAncestor, lockHolder } from "./lock";
import { repoPath } from "../support/repo";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe("the lab lock in qemu-run.sh", () => {
  let dir: string;
  let lock: string;
  const started: ChildProcess[] = [];

  /** qemu-run.sh for a machine called `name`, watching this process; `command` once it has the lock. */
  function wrapper(name: string, watch = process.pid): { pidFile: string; give: (cmd: string[]) => void } {
    const pidFile = path.join(dir, `${name}.pid`);
    const argsFile = path.join(dir, `${name}.args`);
    const child = spawn(
      "bash",
      [repoPath("test", "lab", "qemu-run.sh"), pidFile, String(watch), lock, argsFile],
      {
        detached: true,
        stdio: "ignore",
      },
    );
    started.push(child);
    return {
      pidFile,
      give: (cmd) => fs.writeFileSync(argsFile, cmd.map((a) => `${a}\0`).join("")),
    };
  }
  const locked = (w: { pidFile: string }): boolean => fs.existsSync(`${w.pidFile}.locked`);
  const running = (w: { pidFile: string }): boolean => fs.existsSync(w.pidFile);

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-ci-budget-lock-"));
    lock = path.join(dir, "lab.lock");
  });
  after(() => {
    for (const c of started) {
      try {
        process.kill(-c.pid!, "SIGKILL");
      } catch {
        // gone
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("a second machine waits while the first runs, and starts once the first is gone", async () => {
    const first = wrapper("first");
    await until("the first wrapper to take the lock", () => locked(first));
    first.give(["sleep", "60"]);
    await until("the first machine to run", () => running(first));
    const second = wrapper("second");
    await sleep(1500);
    assert.equal(locked(second), false, "the second waits for the lock");
    const holder = lockHolder(lock);
    assert.ok(holder, "/proc/locks names a holder");
    assert.match(
      holder.command,
      /sleep 60|qemu-run\.sh/,
      "the holder is named by what still has the lock open",
    );
    process.kill(-started[0]!.pid!, "SIGKILL");
    await until("the second wrapper to take the lock", () => locked(second), 20_000);
    second.give(["true"]);
    await until("the second machine to run", () => running(second));
  });

  test("a wrapper whose test process died while it waited starts nothing", async () => {
    const holder = wrapper("holder");
    await until("the holder to take the lock", () => locked(holder));
    holder.give(["sleep", "60"]);
    const shortLived = spawn("sleep", ["1"]);
    const orphan = wrapper("orphan", shortLived.pid);
    const exited = new Promise<number | null>((r) => started.at(-1)!.on("exit", (code) => r(code)));
    assert.equal(await exited, 1, "it gives up once the process it watches is gone");
    assert.equal(locked(orphan), false);
    assert.equal(running(orphan), false);
  });

  test("a lock an ancestor holds (`flock LOCK npm test`) is recognised, so the harness does not wait for itself", () => {
    const probe = `process.stdout.write(String(require(${JSON.stringify(repoPath("dist", "test", "lab", "lock.js"))}).lockHeldByAncestor(${JSON.stringify(path.join(dir, "other.lock"))})))`;
    const under = spawnSync("flock", [path.join(dir, "other.lock"), process.execPath, "-e", probe], {
      encoding: "utf8",
    });
    assert.equal(under.stdout, "true", under.stderr);
    const alone = spawnSync(process.execPath, ["-e", probe], { encoding: "utf8" });
    assert.equal(alone.stdout, "false", alone.stderr);
    assert.equal(lockHeldByAncestor(path.join(dir, "nobody.lock")), false);
  });
});
