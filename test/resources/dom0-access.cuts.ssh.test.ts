/**
 * Dom0Access (a Dom0Host concern) under cut connections (issue 15): a create (the admin user, its keys and sudo,
 * then sshd hardened under the host's rollback timer) has the provider's SSH path dropped at each remote step in
 * turn; the next run (as the engine makes it) must converge: the admin logs in through a new connection and sudo
 * works, root is refused, the drop-in, sudoers file and authorized_keys are the declared ones, and no rollback is
 * left pending. A cut that leaves the change unconfirmed is undone by the host itself (root may log in again), so
 * the next run starts as the first did.
 *
 * Real: the sshd binary running as a host's own (it reads /etc/ssh/sshd_config from an overlay of this machine's
 * /etc in a private mount namespace, its pid in a private /run, a reload is its SIGHUP), useradd, visudo, sudo,
 * the rollback timer (a `setsid` sleeper: this machine's PID 1 is not systemd) and the confirmation through a new
 * login. sshd keeps its port here (the relay in front of it is what the provider dials), so the cut path is the
 * only one; a port move under the timer is test/resources/dom0-access.ssh.test.ts's subject.
 */
import { after, before } from "node:test";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  Checker,
  dom0AccessKind,
  hostContext,
  resolveConnection,
  SSHD_DROP_IN,
  SshPool,
  VERSION,
  type Context,
  type Dom0AccessInputs,
  type Dom0AccessOutputs,
  type RemoteHost,
} from "../../provider";
import { authorizedKeysPath, sudoersPath } from "../../provider/resources/dom0-access/plan";
import { checked } from "../support/checked";
import { CutRelay, describeCutMatrix, type CutScenario } from "../support/cut-matrix";
import { settleRollbacks, stopRollbackSleepers } from "../support/rollback";
import { freePort, generateKey, runDirect, startHostOwnSshd, type KeyPair, type Sshd } from "../support/sshd";

const ADMIN = "xecutops";

let base: string;
let key: KeyPair;
let sshd: Sshd;
let port: number;
let relay: CutRelay;
const pools: SshPool[] = [];
const rollbacks = (): string => path.join(base, "var-lib", "rollback");

before(async () => {
  base = fs.mkdtempSync("/dev/shm/xecut-access-");
  key = await generateKey(base, "client");
  port = await freePort();
  sshd = await startHostOwnSshd(base, { authorizedKeys: [key.publicKey], port });
  relay = new CutRelay(sshd.host, sshd.port);
  await relay.start();
});

after(async () => {
  for (const p of pools) await p.close();
  await relay?.stop();
  await sshd?.stop();
  stopRollbackSleepers(rollbacks());
  fs.rmSync(base, { recursive: true, force: true });
});

/** A new login as `user` at `host:port` (straight to sshd, or the relay), over `pool`, failing fast. */
function login(pool: SshPool, user: string, host: string, p: number): RemoteHost {
  return pool.host(
    resolveConnection(
      new Checker(),
      { host, port: p, user, hostKey: sshd.hostKey.fingerprint, dialErrorLimit: 1, perDialTimeout: 5 },
      { privateKey: key.privateKey },
    )!,
  );
}

/** Runs `script` as `user` logged in straight to sshd (not through the relay), over a pool closed afterwards. */
function direct(user: string, script: string): Promise<string> {
  return runDirect(sshd, key.privateKey, user, script);
}

/**
 * A context over a fresh pool (a new `pulumi up` process) through the relay, as root (the declared connection). It
 * dials up to three times: a run cut right after sshd's reload finds it re-executing for a moment, which the
 * executor's retries (more by default) ride out.
 */
function freshContext(): Context {
  return hostContext(relay.freshHost(sshd.hostKey.fingerprint, key.privateKey, { dialErrorLimit: 3 }));
}

function inputs(): Dom0AccessInputs {
  return checked<Dom0AccessInputs>("Dom0Access", {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: sshd.hostKey.fingerprint },
    credentials: { privateKey: key.privateKey },
    xenEstateVersion: VERSION,
    distribution: "debian",
    release: "bookworm",
    adminUser: ADMIN,
    authorizedKeys: [key.publicKey],
    sshPort: port,
    connectPort: relay.port,
    confirmSeconds: 15,
    onDelete: "keep",
  });
}

/** Whether a brand-new login as `user` through the relay runs a command as root (the admin through sudo). */
async function logsIn(user: string): Promise<boolean> {
  const pool = new SshPool();
  try {
    const r = await login(pool, user, "127.0.0.1", relay.port).script("id -u", { summary: "log in" });
    return r.stdout.trim() === "0";
  } catch {
    return false;
  } finally {
    await pool.close();
  }
}

/** The server as it was before xen-estate: sshd on its port with root allowed, no admin, no files of ours. */
async function resetBare(): Promise<void> {
  await settleRollbacks(rollbacks());
  // sshd back as it was, by root while it may log in, else by the admin through sudo (root is refused then)...
  const unharden = [`printf 'Port %s\\n' ${port} > ${SSHD_DROP_IN}`, `kill -HUP "$(cat /run/sshd.pid)"`].join(
    "\n",
  );
  try {
    await direct("root", unharden);
  } catch {
    await direct(ADMIN, unharden);
  }
  for (let i = 0; i < 50 && !(await logsIn("root")); i++) await new Promise((r) => setTimeout(r, 100));
  // ...then the admin goes, by root (the admin's own sessions are closed by now).
  await direct(
    "root",
    [
      `rm -f -- ${sudoersPath(ADMIN)}`,
      `if id -u ${ADMIN} >/dev/null 2>&1; then userdel -r ${ADMIN} 2>/dev/null || userdel ${ADMIN}; fi`,
      `rm -rf -- /home/${ADMIN} /var/backups/xen-estate`,
    ].join("\n"),
  );
}

/** A file on the host as its sessions see it, or null. */
async function hostFile(file: string): Promise<string | null> {
  const out = await direct(
    ADMIN,
    `if [ -f ${file} ]; then echo present; cat -- ${file}; else echo absent; fi`,
  );
  return out.startsWith("present\n") ? out.slice("present\n".length) : null;
}

/** Why the host is not hardened as `i` declares, or undefined. */
async function convergedOn(
  i: Dom0AccessInputs,
  outs: Dom0AccessOutputs | undefined,
): Promise<string | undefined> {
  if (!outs) return "the last run returned no outputs";
  if (outs.applied?.user !== ADMIN || outs.applied.port !== relay.port)
    return `the outputs say the host is reached by ${JSON.stringify(outs.applied)}`;
  if (!(await logsIn(ADMIN))) return `a new login as ${ADMIN} (with sudo) fails`;
  if (await logsIn("root")) return "root still logs in";
  const want = { ...i.files, ...i.sshdFiles };
  for (const f of [SSHD_DROP_IN, sudoersPath(ADMIN), authorizedKeysPath(ADMIN)])
    if ((await hostFile(f)) !== want[f]) return `${f} is not the declared one`;
  const pending = fs.existsSync(rollbacks()) ? fs.readdirSync(rollbacks()) : [];
  if (pending.length > 0) return `rollbacks left: ${pending.join(", ")}`;
  return undefined;
}

const scenarios = (): CutScenario<Dom0AccessOutputs>[] => {
  let outs: Dom0AccessOutputs | undefined;
  return [
    {
      // A create records where the host is reached only when it returns: a failed one is made again as root.
      operation: "create",
      reset: async () => {
        outs = undefined;
        await resetBare();
      },
      run: async (ctx) => {
        outs = await dom0AccessKind.create(ctx, inputs(), () => {});
        return outs;
      },
      converged: () => convergedOn(inputs(), outs),
    },
  ];
};

describeCutMatrix("Dom0Access", scenarios(), {
  relay: () => relay,
  freshContext,
  timeoutMs: 30 * 60_000,
});
