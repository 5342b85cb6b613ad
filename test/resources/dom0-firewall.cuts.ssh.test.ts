/**
 * Dom0Firewall (a Dom0Host concern) under cut connections (issue 15): for create, an update and delete (restore),
 * the SSH path to a real sshd is dropped before, during and after each remote step in turn; the next run (as the
 * engine makes it) must converge: exactly one `inet xen_estate` table, with the declared rules' revision, loaded in
 * the kernel; the rule file and the boot unit as declared; no rollback left pending; and the SSH path still open
 * (a new login through the rules works, SSH from an untrusted address is dropped). After delete: no table, no file,
 * SSH open.
 *
 * Real: sshd, bash, nftables (in a network namespace of this test: `nft` there acts on the namespace only), the
 * rollback timer (a `setsid` sleeper: this machine's PID 1 is not systemd, so the boot unit is written but not
 * enabled) and the confirmation through a new login. The sshd runs in a private mount namespace whose /etc is an
 * overlay (writes land in this test's directory) and whose /var/lib/xen-estate, /var/backups and /run/lock are
 * this test's directories. The confirmation's own new connection is not cut here: a confirmation that cannot log
 * in is test/remote/rollback.ssh.test.ts's subject.
 */
import { after, before } from "node:test";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import {
  Checker,
  dom0FirewallKind,
  hostContext,
  resolveConnection,
  SshPool,
  VERSION,
  type Context,
  type Dom0FirewallInputs,
  type RemoteHost,
} from "../../provider";
import { RULES_FILE, UNIT_FILE } from "../../provider/resources/dom0-firewall/plan";
import { checked } from "../support/checked";
import { CutRelay, describeCutMatrix, type CutScenario } from "../support/cut-matrix";
import { generateKey, inMountNamespace, startSshd, tcpOpens, type KeyPair, type Sshd } from "../support/sshd";
import { makeVethNamespace, removeVethNamespace } from "../support/netns";
import { settleRollbacks, stopRollbackSleepers } from "../support/rollback";

const run = promisify(execFile);
const sh = (cmd: string): Promise<{ stdout: string }> => run("bash", ["-c", cmd]);

const id = (process.pid % 200) + 20;
const ns = `xecut-f-${process.pid}`;
const hostIf = `xecf${process.pid % 100000}`;
const trusted = `10.233.${id}.1`;
const untrusted = `10.233.${id}.3`;
const inside = `10.233.${id}.2`;

let base: string;
let key: KeyPair;
let sshd: Sshd;
let relay: CutRelay;
const pools: SshPool[] = [];
let admin: RemoteHost;
const rollbacks = (): string => path.join(base, "var-lib", "rollback");

before(async () => {
  base = fs.mkdtempSync("/dev/shm/xecut-fw-");
  for (const d of ["etc-upper", "etc-work", "var-lib", "backups", "lock"])
    fs.mkdirSync(path.join(base, d), { mode: 0o755 });
  key = await generateKey(base, "client");
  await sh(removeVethNamespace({ ns, hostIf }));
  await sh(
    makeVethNamespace({
      ns,
      hostIf,
      hostAddresses: [`${trusted}/24`, `${untrusted}/24`],
      inside: `${inside}/24`,
    }).join(" && "),
  );
  const mounts = [
    `mount -t overlay xecut-etc -o lowerdir=/etc,upperdir=${base}/etc-upper,workdir=${base}/etc-work /etc`,
    `mount --bind ${base}/var-lib /var/lib/xen-estate`,
    `mount --bind ${base}/backups /var/backups`,
    `mount --bind ${base}/lock /run/lock`,
  ];
  sshd = await startSshd({
    authorizedKeys: [key.publicKey],
    netns: ns,
    listen: inside,
    wrap: inMountNamespace(mounts),
  });
  // The relay dials from the veth's primary address, the trusted one, as the provider's machine would.
  relay = new CutRelay(sshd.host, sshd.port);
  await relay.start();
  // Looks at the host from inside its mount namespace (its /etc is an overlay: never touched from outside).
  const pool = new SshPool();
  pools.push(pool);
  admin = pool.host(
    resolveConnection(
      new Checker(),
      { host: sshd.host, port: sshd.port, hostKey: sshd.hostKey.fingerprint },
      { privateKey: key.privateKey },
    )!,
  );
});

/** A file on the host as its sessions see it, or null. */
async function hostFile(file: string): Promise<string | null> {
  const r = await admin.script(`if [ -f ${file} ]; then echo present; cat -- ${file}; else echo absent; fi`);
  return r.stdout.startsWith("present\n") ? r.stdout.slice("present\n".length) : null;
}

after(async () => {
  for (const p of pools) await p.close();
  await relay?.stop();
  await sshd?.stop();
  // A rollback sleeper left by a failed cell.
  stopRollbackSleepers(rollbacks());
  await sh(`ip netns del ${ns} 2>/dev/null; ip link del ${hostIf} 2>/dev/null; true`);
  fs.rmSync(base, { recursive: true, force: true });
});

/** A context over a fresh pool (a new `pulumi up` process) through the relay. */
function freshContext(): Context {
  return hostContext(relay.freshHost(sshd.hostKey.fingerprint, key.privateKey));
}

function connection() {
  return resolveConnection(
    new Checker(),
    {
      host: "127.0.0.1",
      port: relay.port,
      hostKey: sshd.hostKey.fingerprint,
      dialErrorLimit: 1,
      perDialTimeout: 5,
    },
    { privateKey: key.privateKey },
  )!;
}

function inputs(openTcp: number[]): Dom0FirewallInputs {
  return checked<Dom0FirewallInputs>("Dom0Firewall", {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: sshd.hostKey.fingerprint },
    xenEstateVersion: VERSION,
    trustedSources: [`${trusted}/32`],
    openTcp,
    confirmSeconds: 15,
    onDelete: "restore",
  });
}

/** Runs a command in the namespace (where `nft` sees the namespace's tables). */
const inNs = (cmd: string): Promise<{ stdout: string }> => sh(`ip netns exec ${ns} ${cmd}`);

/** Whether a TCP connection from `from` to the sshd is accepted within 2 s (a dropped SYN times out). */
const sshOpens = (from: string): Promise<boolean> => tcpOpens(inside, sshd.port, from, 2000);

/** The host with no firewall of ours: no table, no file. */
async function resetBare(): Promise<void> {
  await settleRollbacks(rollbacks());
  await admin.script(
    `nft delete table inet xen_estate 2>/dev/null || true; rm -f -- ${RULES_FILE} ${UNIT_FILE}; rm -rf -- /var/backups/xen-estate`,
  );
}

/** The host and the engine's state after a finished create with `openTcp` (made by an uncut create). */
async function resetCreated(openTcp: number[]): Promise<Dom0FirewallInputs> {
  await resetBare();
  const pool = new SshPool();
  try {
    return await dom0FirewallKind.create(hostContext(pool.host(connection())), inputs(openTcp), () => {});
  } finally {
    await pool.close();
  }
}

/** Why the host does not run `i`'s firewall, or undefined. */
async function convergedOn(i: Dom0FirewallInputs): Promise<string | undefined> {
  const tables = (await inNs("nft list tables")).stdout.trim().split("\n").filter(Boolean);
  const ours = tables.filter((t) => t === "table inet xen_estate");
  if (ours.length !== 1 || tables.length !== 1) return `the tables are [${tables.join(", ")}]`;
  const listed = (await inNs("nft list table inet xen_estate")).stdout;
  const rev = /comment "xen-estate ([0-9a-f]+)"/.exec(listed)?.[1];
  if (rev !== i.loaded) return `the loaded revision is ${rev ?? "none"}, not ${i.loaded}`;
  for (const port of i.openTcp)
    if (!new RegExp(`tcp dport ${port} accept`).test(listed)) return `port ${port} is not open`;
  for (const f of [RULES_FILE, UNIT_FILE])
    if ((await hostFile(f)) !== i.files[f]) return `${f} is not the declared one`;
  const leftovers = (await admin.script(`ls -A -- ${path.dirname(RULES_FILE)} /etc/systemd/system`)).stdout
    .split("\n")
    .filter((f) => f.includes(".xen-estate"));
  if (leftovers.length > 0) return `left ${leftovers.join(", ")}`;
  const pending = fs.existsSync(rollbacks()) ? fs.readdirSync(rollbacks()) : [];
  if (pending.length > 0) return `rollbacks left: ${pending.join(", ")}`;
  return sshPathProblem(true);
}

/** Why SSH is not as it should be: open from the trusted address (a new login works), and, when `limited`, not
 * from another one. */
async function sshPathProblem(limited: boolean): Promise<string | undefined> {
  const pool = new SshPool();
  try {
    const r = await pool.host(connection()).script("echo in");
    if (r.stdout.trim() !== "in") return "a new login gave no answer";
  } catch (err) {
    return `a new login through the relay fails: ${(err as Error).message.split("\n")[0]}`;
  } finally {
    await pool.close();
  }
  if ((await sshOpens(untrusted)) === limited)
    return limited ? "SSH from an untrusted address is let in" : "SSH from another address is still dropped";
  return undefined;
}

async function convergedDeleted(): Promise<string | undefined> {
  const tables = (await inNs("nft list tables")).stdout.trim();
  if (tables) return `tables left: ${tables}`;
  for (const f of [RULES_FILE, UNIT_FILE]) if ((await hostFile(f)) !== null) return `${f} is left`;
  const pending = fs.existsSync(rollbacks()) ? fs.readdirSync(rollbacks()) : [];
  if (pending.length > 0) return `rollbacks left: ${pending.join(", ")}`;
  return sshPathProblem(false);
}

const scenarios = (): CutScenario<Dom0FirewallInputs>[] => {
  let olds: Dom0FirewallInputs;
  return [
    {
      // A create records nothing before it returns: a failed one is simply made again.
      operation: "create",
      reset: resetBare,
      run: (ctx) => dom0FirewallKind.create(ctx, inputs([80, 443]), () => {}),
      converged: () => convergedOn(inputs([80, 443])),
    },
    {
      operation: "update (ports)",
      reset: async () => {
        olds = await resetCreated([80, 443]);
      },
      run: (ctx) =>
        dom0FirewallKind.update(ctx, "id", olds, inputs([80, 443, 8443]), {
          changed: ["openTcp", "files", "loaded"],
          replaces: [],
          classes: {},
        }),
      converged: () => convergedOn(inputs([80, 443, 8443])),
    },
    {
      operation: "delete (restore)",
      reset: async () => {
        olds = await resetCreated([80, 443]);
      },
      run: (ctx) => dom0FirewallKind.delete(ctx, "id", olds),
      converged: convergedDeleted,
    },
  ];
};

describeCutMatrix("Dom0Firewall", scenarios(), {
  relay: () => relay,
  freshContext,
  timeoutMs: 60 * 60_000,
});
