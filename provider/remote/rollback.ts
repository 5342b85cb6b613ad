/**
 * Changes that could cut the SSH path in use (sshd's port or users, the firewall), applied the way `iptables-apply`
 * and Juniper's `commit confirmed` do it: the host itself puts the previous state back unless the provider proves,
 * within a deadline, that it can still log in.
 *
 * 1. Over the connection in use: the previous content of every file is saved in a rollback directory on the host,
 *    a restore script is written there, and a timer is armed on the host (a transient systemd timer, or a `setsid`
 *    sleeper where systemd is not PID 1) that runs it after `confirmSeconds`. Only then are the new files written
 *    (atomically, validated, with dated backups) and `activate` run (reload sshd, load the rules).
 * 2. The provider dials a NEW connection the way the host is to be reached from now on (the pooled one may survive
 *    a change that blocks new logins: established traffic, sshd's running sessions) and, through it, confirms:
 *    the restore script sees the confirmation and does nothing.
 * 3. No confirmation by the deadline (the new port is blocked, the key is refused, the firewall drops us): the host
 *    restores the previous files and runs `activate` again by itself. The provider waits for that, checks over the
 *    old path that the host did restore, and fails saying what was rolled back.
 *
 * Confirmation and restore take the same lock, so they cannot both happen: whichever comes first wins and the
 * other sees it.
 */
import { randomBytes } from "node:crypto";
import { RefusedError } from "../core/errors";
import { shellQuote } from "../core/shell";
import type { ResolvedConnection } from "../ssh/connection";
import type { RemoteHost } from "../ssh/remote-host";
import { SshPool } from "../ssh/pool";
import { sha256, writeFileScript } from "./files";

/** Where rollback directories live on the host. */
export const ROLLBACK_ROOT = "/var/lib/xen-estate/rollback";

export interface GuardedFile {
  path: string;
  content: string;
  /** Octal mode. @default "644" */
  mode?: string;
  /** Validation command for the new content (`%s` = the temp file), as in writeRemoteFile. */
  validate?: string;
  /** Create the parent directory. @default false */
  mkdirs?: boolean;
}

export interface GuardedChange {
  /** Names the rollback directory, lock and timer: lower-case letters, digits and `-`. */
  label: string;
  files: readonly GuardedFile[];
  /**
   * Shell run once the new files are in place: checks that the new settings are in effect as declared, then makes
   * the service use them (reload sshd, load the rule file). A failure restores the previous files at once.
   */
  activate: string;
  /**
   * Shell the host runs after it put the previous files back, on its own (no provider there to read an error): it
   * must work from the previous files and check nothing about the new ones (a check of the new port there would
   * fail and leave the service on the settings that cut the path). @default activate (when it works from either
   * set of files, as loading a rule file or removing the table when it is gone does)
   */
  reactivate?: string;
  /** Seconds the host waits for the confirmation before it restores. */
  confirmSeconds: number;
  /** Activate (under the timer) even when every file already holds its content. @default false */
  force?: boolean;
  /** Refuse before anything changes: a script that exits through `xe_refuse` when the change is known to lock out. */
  precheck?: string;
}

export interface GuardedResult {
  /** Whether any file changed (nothing was armed or activated when none did). */
  changed: boolean;
  /** Files whose content changed. */
  changedFiles: string[];
}

const LABEL = /^[a-z0-9][a-z0-9-]{0,40}$/;

/**
 * Prints the address the SSH client of this session connects from, as the host sees it (after any NAT on the
 * way): the peer of the TCP socket held by the nearest sshd ancestor of this shell. Works as root and under sudo
 * (which drops `$SSH_CLIENT`). Prints nothing when the shell does not run under sshd.
 */
export const SSH_PEER_FUNCTION = [
  `xe_ssh_peer() {`,
  `  local pid=$$ line peer`,
  `  while [ "$pid" -gt 1 ] 2>/dev/null; do`,
  `    line=$(ss -Htnp state established 2>/dev/null | grep -F "pid=$pid," | head -n1 || true)`,
  `    if [ -n "$line" ]; then`,
  `      peer=$(printf '%s\\n' "$line" | awk '{print $4}')`,
  `      peer=\${peer%:*}; peer=\${peer#[}; peer=\${peer%]}; peer=\${peer#::ffff:}`,
  `      printf '%s\\n' "$peer"; return 0`,
  `    fi`,
  `    pid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 1)`,
  `  done`,
  `}`,
].join("\n");

function lockFile(label: string): string {
  return `/run/lock/xen-estate-rollback-${label}.lock`;
}

/** The script that saves the old files, arms the host's restore timer, writes the new files and activates them. */
export function armAndApplyScript(change: GuardedChange, token: string): string {
  if (!LABEL.test(change.label)) throw new Error(`bad rollback label ${JSON.stringify(change.label)}`);
  if (!/^[0-9a-f]{8,32}$/.test(token)) throw new Error("bad rollback token");
  const dir = `${ROLLBACK_ROOT}/${change.label}-${token}`;
  const d = shellQuote(dir);
  const unit = `xen-estate-rollback-${change.label}-${token}`;
  const lock = shellQuote(lockFile(change.label));
  const secs = Math.max(5, Math.floor(change.confirmSeconds));
  const restore = [
    "#!/bin/bash",
    "# Written by xen-estate: puts the previous files back unless the change was confirmed.",
    "set -u",
    `exec 8>>${lock}`,
    "flock 8",
    // Confirmed changes have their directory removed: nothing to do then, whatever else is on disk.
    `[ -d ${d} ] || exit 0`,
    `[ -e ${d}/confirmed ] && exit 0`,
    `[ -e ${d}/restored ] && exit 0`,
    ...change.files.map((f, i) => {
      const q = shellQuote(f.path);
      return `if [ -e ${d}/${i}.prev ]; then cp -p -- ${d}/${i}.prev ${q}.xen-estate-restore && mv -f -- ${q}.xen-estate-restore ${q}; else rm -f -- ${q}; fi`;
    }),
    `( ${change.reactivate ?? change.activate}\n) >${d}/restore.log 2>&1 || echo "activate failed: $?" >>${d}/restore.log`,
    `touch ${d}/restored`,
    `logger -t xen-estate ${shellQuote(`rolled back ${change.label}: no confirmation within ${secs} s`)} 2>/dev/null || true`,
  ].join("\n");
  const files = change.files.filter((f) => f.path.startsWith("/"));
  if (files.length !== change.files.length) throw new Error("guarded files need absolute paths");
  return [
    `exec 8>>${lock}`,
    `flock -w 60 8 || xe_refuse ${shellQuote(`another change of ${change.label} holds ${lockFile(change.label)}`)}`,
    // A change armed earlier and neither confirmed nor restored yet: its timer still runs; do not stack another.
    `for old in ${shellQuote(`${ROLLBACK_ROOT}/${change.label}-`)}*; do`,
    `  [ -d "$old" ] || continue`,
    `  if [ -e "$old/confirmed" ] || [ -e "$old/restored" ]; then rm -rf -- "$old"; continue; fi`,
    // Its timer restores it shortly (a run cut after it armed): say how long, so the caller waits and comes back.
    `  left=$(( $(cat -- "$old/deadline" 2>/dev/null || echo 0) - $(date +%s) ))`,
    `  echo "pending $old $left"; exit 0`,
    `done`,
    ...(change.precheck ? [change.precheck] : []),
    // Nothing to do when every file already holds its content.
    `same=1`,
    ...change.files.map(
      (f) =>
        `if ! [ -f ${shellQuote(f.path)} ] || [ "$(sha256sum < ${shellQuote(f.path)} | cut -d' ' -f1)" != ${shellQuote(sha256(f.content))} ]; then same=0; echo "differs ${shellQuote(f.path)}"; fi`,
    ),
    ...(change.force ? [] : [`if [ "$same" = 1 ]; then echo unchanged; exit 0; fi`]),
    `mkdir -p -m 700 ${d}`,
    ...change.files.map((f, i) => {
      const q = shellQuote(f.path);
      return `if [ -L ${q} ] || { [ -e ${q} ] && [ ! -f ${q} ]; }; then xe_refuse ${shellQuote(`${f.path} is not a regular file: refusing to replace it`)}; elif [ -f ${q} ]; then cp -p -- ${q} ${d}/${i}.prev; fi`;
    }),
    `base64 -d > ${d}/restore.sh <<'XEN_ESTATE_RESTORE'`,
    Buffer.from(restore)
      .toString("base64")
      .replace(/(.{76})/g, "$1\n"),
    "XEN_ESTATE_RESTORE",
    `chmod 700 ${d}/restore.sh`,
    `echo $(( $(date +%s) + ${secs} )) > ${d}/deadline`,
    `if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null; then`,
    `  systemd-run --quiet --unit=${shellQuote(unit)} --on-active=${secs}s --timer-property=AccuracySec=1s /bin/bash ${d}/restore.sh`,
    `  echo "systemd ${unit}" > ${d}/timer`,
    `else`,
    // fd 8 (the lock) must not be inherited: the sleeper would hold the lock for its whole life.
    `  setsid nohup bash -c ${shellQuote(`sleep ${secs}; exec /bin/bash ${dir}/restore.sh`)} </dev/null >/dev/null 2>&1 8>&- &`,
    `  echo "pid $!" > ${d}/timer`,
    `fi`,
    `xe_say ${shellQuote(`armed: the host restores the previous ${change.label} in ${secs} s unless the change is confirmed`)}`,
    // From here a failure restores at once (no need to wait for the timer).
    `restore_now() { exec 8>&-; /bin/bash ${d}/restore.sh; }`,
    `trap 'rc=$?; if [ $rc -ne 0 ]; then restore_now; fi' EXIT`,
    ...change.files.map((f) =>
      writeFileScript(f.path, f.content, {
        lock: false,
        mode: f.mode ?? "644",
        ...(f.validate ? { validate: f.validate } : {}),
        ...(f.mkdirs ? { mkdirs: true } : {}),
      })
        // Each write is its own subshell: its `exit` and traps stay inside.
        .replace(/^/, "(\n")
        .concat("\n) >&2"),
    ),
    `( ${change.activate}\n) >&2`,
    `trap - EXIT`,
    `echo "armed ${token}"`,
  ].join("\n");
}

/** The confirmation, run over the new connection: prints `confirmed`, or `restored` when the host already rolled back. */
export function confirmScript(label: string, token: string): string {
  const d = shellQuote(`${ROLLBACK_ROOT}/${label}-${token}`);
  return [
    `exec 8>>${shellQuote(lockFile(label))}`,
    `flock -w 60 8 || { xe_say 'could not take the rollback lock'; exit 1; }`,
    `[ -d ${d} ] || { xe_say ${shellQuote(`no pending change ${label}-${token} on this host`)}; exit 1; }`,
    `if [ -e ${d}/restored ]; then echo restored; exit 0; fi`,
    `touch ${d}/confirmed`,
    `read -r kind what < ${d}/timer || true`,
    `case "$kind" in`,
    `  systemd) systemctl stop "$what.timer" >/dev/null 2>&1 || true ;;`,
    // The sleeper's shell first: killing its sleep first would let it run the restore at once.
    `  pid) kill "$what" 2>/dev/null || true ;;`,
    `esac`,
    `rm -rf -- ${d}`,
    `echo confirmed`,
  ].join("\n");
}

/** Prints `restored`, `pending` or `gone` for a change: what the host did with it. */
export function rollbackStateScript(label: string, token: string): string {
  const d = shellQuote(`${ROLLBACK_ROOT}/${label}-${token}`);
  return `if [ -e ${d}/restored ]; then echo restored; cat ${d}/restore.log >&2 2>/dev/null || true; elif [ -d ${d} ]; then echo pending; else echo gone; fi`;
}

export interface ApplyWithRollbackOptions {
  /** How the provider reaches the host once the change is in effect (new port, new user). */
  reconnect: ResolvedConnection;
  /** How it reached the host before (to check that a rollback really happened). @default host.conn */
  previous?: ResolvedConnection;
  /** Why confirming failed, for the message (e.g. "sshd on port 2222 as ops"). */
  describe: string;
  /** Called with status lines (armed, waiting, confirmed). */
  progress?: (line: string) => void;
}

/**
 * Applies `change` under the host's rollback timer and confirms it through a new connection (see the module
 * comment). Resolves with what changed; throws {@link RefusedError} when the host rolled back.
 */
export async function applyWithRollback(
  host: RemoteHost,
  change: GuardedChange,
  opts: ApplyWithRollbackOptions,
): Promise<GuardedResult> {
  const token = randomBytes(8).toString("hex");
  const say = opts.progress ?? ((l: string) => host.log.progress(l));
  const out = await armWhenNoneIsPending(host, change, token, say);
  const changedFiles = [...out.matchAll(/^differs (.*)$/gm)].map((m) => unquote(m[1]!));
  if (/^unchanged$/m.test(out)) return { changed: false, changedFiles: [] };
  if (!new RegExp(`^armed ${token}$`, "m").test(out))
    throw new Error(`applying ${change.label} on ${host.name} gave no answer`);
  say(`${change.label} applied; confirming through a new connection (${opts.describe})`);
  const deadline = Date.now() + Math.max(3, change.confirmSeconds - 3) * 1000;
  let lastError: unknown;
  while (Date.now() < deadline) {
    const pool = new SshPool();
    try {
      const conn: ResolvedConnection = {
        ...opts.reconnect,
        dialErrorLimit: 1,
        perDialTimeout: Math.max(2, Math.min(10, Math.floor((deadline - Date.now()) / 1000))),
      };
      const fresh = pool.host(conn, host.log);
      const r = await fresh.script(confirmScript(change.label, token), {
        summary: `confirm ${change.label}`,
        timeoutMs: 60_000,
      });
      const answer = r.stdout.trim().split("\n").pop();
      if (answer === "confirmed") {
        say(`${change.label} confirmed`);
        return { changed: true, changedFiles };
      }
      if (answer === "restored") {
        lastError = new Error("the host had already restored the previous state when the confirmation came");
        break;
      }
      lastError = new Error(`confirmation answered ${JSON.stringify(answer)}`);
    } catch (err) {
      lastError = err;
    } finally {
      await pool.close();
    }
    await new Promise((r) => setTimeout(r, 1500));
  }
  // Not confirmed: the host restores by itself once its timer runs out. Wait for that and look.
  const why = lastError instanceof Error ? lastError.message.split("\n")[0] : String(lastError);
  say(`${change.label}: could not log in again (${why}); waiting for the host to restore the previous state`);
  const restoredBy = Date.now() + (change.confirmSeconds + 90) * 1000;
  let state = "unknown";
  let restoreLog = "";
  while (Date.now() < restoredBy) {
    const pool = new SshPool();
    try {
      const old = pool.host({ ...(opts.previous ?? host.conn), dialErrorLimit: 1 }, host.log);
      const r = await old.script(rollbackStateScript(change.label, token), {
        summary: `did ${change.label} roll back`,
        timeoutMs: 30_000,
      });
      state = r.stdout.trim();
      if (state === "restored") restoreLog = r.stderr;
      if (state === "restored" || state === "gone") break;
    } catch {
      state = "unreachable";
    } finally {
      await pool.close();
    }
    await new Promise((r) => setTimeout(r, 3000));
  }
  const failed = /^activate failed: .*$/m.exec(restoreLog);
  if (state === "restored" && failed)
    throw new Error(
      `the new ${change.label} settings cut the SSH path (${opts.describe}: ${why}); the host put the previous files back after ${change.confirmSeconds} s but making the service use them failed (${failed[0]}): ${restoreLog.replace(/\s+/g, " ").trim().slice(0, 400)}`,
    );
  if (state === "restored")
    throw new RefusedError(
      `the new ${change.label} settings cut the SSH path (${opts.describe}: ${why}); the host restored the previous ones by itself after ${change.confirmSeconds} s`,
      "Nothing changed on the host. Check the port, the trusted sources and the admin's keys",
    );
  throw new Error(
    `the new ${change.label} settings could not be confirmed (${opts.describe}: ${why}) and the host's rollback could not be seen (${state}); it restores ${ROLLBACK_ROOT}/${change.label}-${token} by itself`,
  );
}

/**
 * Runs the arm-and-apply script; while an earlier change of the same label is still armed (a run whose connection
 * was cut after it armed), waits for the host's timer to restore it, up to that timer's deadline and half a minute
 * more, then applies. Refuses when it is still pending by then (a timer that no longer runs).
 */
async function armWhenNoneIsPending(
  host: RemoteHost,
  change: GuardedChange,
  token: string,
  say: (line: string) => void,
): Promise<string> {
  let waitUntil: number | undefined;
  for (;;) {
    const out = await host.refusable(armAndApplyScript(change, token), {
      summary: `apply ${change.label} under a ${change.confirmSeconds} s rollback timer`,
    });
    const pending = /^pending (\S+) (-?\d+)$/m.exec(out);
    if (!pending) return out;
    const left = Math.max(0, Number(pending[2]));
    waitUntil ??= Date.now() + (left > 0 ? left : change.confirmSeconds) * 1000 + 30_000;
    if (Date.now() > waitUntil)
      throw new RefusedError(
        `an earlier change of ${change.label} still waits for its confirmation (${pending[1]}) and its timer did not restore it`,
        "The host's restore timer no longer runs (a reboot?): look at that directory, then remove it",
      );
    say(
      `an earlier change of ${change.label} is still armed (a run cut after it armed): waiting ${left} s for the host to restore it`,
    );
    await new Promise((r) => setTimeout(r, Math.min(Math.max(left, 1), 10) * 1000 + 500));
  }
}

function unquote(s: string): string {
  return s.startsWith("'") && s.endsWith("'") ? s.slice(1, -1).replace(/'\\''/g, "'") : s;
}
