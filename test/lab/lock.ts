/**
 * The machine-wide lab lock: only one emulated machine (QEMU) at a time on a machine, because two on 2 cores make
 * both too slow for their deadlines. qemu-run.sh takes it (flock) before QEMU starts and holds it while QEMU runs;
 * Lab.start waits for it and says who holds it. No heavy imports: test/lab/lab.unit.test.ts loads this in a child.
 */
import * as fs from "node:fs";

/** The machine-wide lab lock (flock): one emulated machine at a time. `XEN_ESTATE_LAB_LOCK` overrides the path. */
export function labLockFile(): string {
  return process.env.XEN_ESTATE_LAB_LOCK ?? "/tmp/xen-estate-lab.lock";
}

function cmdline(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).join(" ");
  } catch {
    return undefined;
  }
}

/**
 * Who holds the flock on `file`, if anyone: `pid` is the process that took it (from /proc/locks; alive for
 * `flock FILE command`, whose flock process waits for the command), `command` names that process, or, when it has
 * exited and left the lock to the descriptor it passed on (qemu-run.sh's `flock 9`, inherited by QEMU), a process
 * that still has the file open.
 */
export function lockHolder(file: string): { pid: number; alive: boolean; command: string } | undefined {
  let st: fs.Stats;
  let locks: string;
  try {
    st = fs.statSync(file);
    locks = fs.readFileSync("/proc/locks", "utf8");
  } catch {
    return undefined;
  }
  // "3: FLOCK  ADVISORY  WRITE 28340 fe:00:9978801 0 EOF"; waiters are listed as "3: -> FLOCK …".
  const major = ((st.dev >> 8) & 0xfff).toString(16).padStart(2, "0");
  const minor = ((st.dev & 0xff) | ((st.dev >> 12) & 0xfff00)).toString(16).padStart(2, "0");
  const id = `${major}:${minor}:${st.ino}`;
  const waiters = new Set<number>();
  let pid: number | undefined;
  for (const line of locks.split("\n")) {
    const m = /^\d+:\s+(->\s+)?FLOCK\s+\S+\s+WRITE\s+(\d+)\s+(\S+)\s/.exec(line);
    if (!m || m[3] !== id) continue;
    if (m[1]) waiters.add(Number(m[2]));
    else pid = Number(m[2]);
  }
  if (pid === undefined) return undefined;
  const own = cmdline(pid);
  if (own !== undefined) return { pid, alive: true, command: own };
  // The locking process is gone: name one that still has the file open, QEMU first.
  const openers: { pid: number; command: string }[] = [];
  for (const d of fs.readdirSync("/proc")) {
    const p = Number(d);
    if (!p || p === process.pid || waiters.has(p)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${p}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const t = fs.statSync(`/proc/${p}/fd/${fd}`);
        if (t.ino === st.ino && t.dev === st.dev) {
          openers.push({ pid: p, command: cmdline(p) ?? "?" });
          break;
        }
      } catch {
        // closed meanwhile
      }
    }
  }
  const named = openers.find((o) => o.command.includes("qemu-system")) ?? openers[0];
  return { pid, alive: false, command: named ? `${named.command} (pid ${named.pid})` : "?" };
}

/** This process and its ancestors, nearest first. */
function ancestry(): number[] {
  const pids: number[] = [];
  let pid = process.pid;
  while (pid > 1 && pids.length < 64) {
    pids.push(pid);
    try {
      // "pid (comm) state ppid …"; comm may hold spaces and parentheses, so split after the last ')'.
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      pid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    } catch {
      break;
    }
  }
  return pids;
}

/** True when this process or an ancestor holds the lab lock (`flock /tmp/xen-estate-lab.lock npm test`). */
export function lockHeldByAncestor(file = labLockFile()): boolean {
  const holder = lockHolder(file);
  return holder !== undefined && holder.alive && ancestry().includes(holder.pid);
}
