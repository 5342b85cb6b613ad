/**
 * applyWithRollback against real servers: a real sshd whose own config is changed (a new port that works is
 * confirmed; a change that refuses new logins is undone by the host itself), and real nftables rules in a network
 * namespace (rules that trust the provider's address go live; rules that leave it out cut new logins and are
 * rolled back, while rules other tools added, as Xen's hotplug scripts do, survive every reload).
 *
 * The "host" is this machine (its sshd runs our scripts), so the guarded files are temp files; the firewall test's
 * sshd runs inside the namespace, so `nft` there acts on the namespace only. No systemd here: the host's timer is
 * the `setsid` sleeper.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import {
  applyWithRollback,
  armAndApplyScript,
  BACKUP_ROOT,
  Checker,
  parseNetwork,
  RefusedError,
  renderRules,
  resolveConnection,
  ROLLBACK_ROOT,
  SSH_PEER_FUNCTION,
  SshPool,
  type Network,
  type ResolvedConnection,
} from "../../provider";
import { freePort, generateKey, startSshd, tcpOpens, type KeyPair, type Sshd } from "../support/sshd";
import { makeVethNamespace, removeVethNamespace } from "../support/netns";

const run = promisify(execFile);
let dir: string;
let key: KeyPair;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-rollback-"));
  key = await generateKey(dir, "client");
});

after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(path.join(BACKUP_ROOT, dir), { recursive: true, force: true });
});

function connect(host: string, port: number, hostKey: string): ResolvedConnection {
  return resolveConnection(
    new Checker(),
    { host, port, hostKey, dialErrorLimit: 2 },
    { privateKey: key.privateKey },
  )!;
}

/** Removes this test's rollback directories (only its own labels: the root is the machine's). */
function dropRollbacks(label: string): void {
  if (!fs.existsSync(ROLLBACK_ROOT)) return;
  for (const d of fs.readdirSync(ROLLBACK_ROOT))
    if (d.startsWith(`${label}-`)) fs.rmSync(path.join(ROLLBACK_ROOT, d), { recursive: true, force: true });
}

describe("an sshd change under the host's rollback timer", { timeout: 180_000 }, () => {
  let sshd: Sshd;
  let config: string;
  let original: string;

  before(async () => {
    sshd = await startSshd({ authorizedKeys: [key.publicKey] });
    config = path.join(sshd.dir, "sshd_config");
    original = fs.readFileSync(config, "utf8");
  });
  after(async () => {
    await sshd?.stop();
  });

  const hup = (): string => `kill -HUP "$(cat ${path.join(sshd.dir, "sshd.pid")})"; sleep 1`;

  test("a new port that answers is confirmed through a new connection and stays", async () => {
    const newPort = await freePort();
    const pool = new SshPool();
    try {
      const host = pool.host(connect(sshd.host, sshd.port, sshd.hostKey.fingerprint));
      const next = original.replace(/^Port \d+$/m, `Port ${newPort}`);
      const r = await applyWithRollback(
        host,
        {
          label: `t-sshd-ok-${process.pid}`,
          files: [{ path: config, content: next }],
          activate: hup(),
          confirmSeconds: 20,
        },
        { reconnect: connect(sshd.host, newPort, sshd.hostKey.fingerprint), describe: `port ${newPort}` },
      );
      assert.deepEqual(r, { changed: true, changedFiles: [config] });
      assert.equal(fs.readFileSync(config, "utf8"), next);
      assert.equal(await tcpOpens(sshd.host, newPort, undefined), true, "sshd listens on the new port");
      // Nothing is left armed: after the deadline the file is still the new one.
      await new Promise((r) => setTimeout(r, 21_000));
      assert.equal(fs.readFileSync(config, "utf8"), next);
      // Put the original back for the next test (same way: it confirms on the old port).
      await applyWithRollback(
        host,
        {
          label: `t-sshd-ok-${process.pid}`,
          files: [{ path: config, content: original }],
          activate: hup(),
          confirmSeconds: 20,
        },
        { reconnect: connect(sshd.host, sshd.port, sshd.hostKey.fingerprint), describe: "back" },
      );
    } finally {
      await pool.close();
    }
  });

  test("a change that refuses new logins is undone by the host itself, and the update fails saying so", async () => {
    const pool = new SshPool();
    const label = `t-sshd-lock-${process.pid}`;
    try {
      const host = pool.host(connect(sshd.host, sshd.port, sshd.hostKey.fingerprint));
      // The port stays, but no user may log in any more: the pooled session survives, new logins fail.
      const locked = `${original}DenyUsers *\n`;
      const started = Date.now();
      await assert.rejects(
        applyWithRollback(
          host,
          { label, files: [{ path: config, content: locked }], activate: hup(), confirmSeconds: 12 },
          {
            reconnect: connect(sshd.host, sshd.port, sshd.hostKey.fingerprint),
            describe: "root on the same port",
          },
        ),
        (err: Error) =>
          err instanceof RefusedError &&
          /cut the SSH path.*restored the previous ones by itself after 12 s/.test(err.message),
      );
      assert.ok(Date.now() - started >= 12_000, "the host waited for its deadline");
      assert.equal(fs.readFileSync(config, "utf8"), original, "the old config is back");
      // And a brand-new login works again.
      const again = new SshPool();
      try {
        const r = await again.host(connect(sshd.host, sshd.port, sshd.hostKey.fingerprint)).script("echo in");
        assert.equal(r.stdout.trim(), "in");
      } finally {
        await again.close();
      }
    } finally {
      await pool.close();
      dropRollbacks(label);
    }
  });

  test("the host's own restore runs the change's reactivation, and its failure is reported with what it printed", async () => {
    const pool = new SshPool();
    const label = `t-sshd-react-${process.pid}`;
    try {
      const host = pool.host(connect(sshd.host, sshd.port, sshd.hostKey.fingerprint));
      await assert.rejects(
        applyWithRollback(
          host,
          {
            label,
            files: [{ path: config, content: `${original}DenyUsers *\n` }],
            activate: hup(),
            // Reloads (so the old path opens again) and then fails, as a reload that complains would.
            reactivate: `${hup()}; echo "reload complained" >&2; exit 3`,
            confirmSeconds: 12,
          },
          { reconnect: connect(sshd.host, sshd.port, sshd.hostKey.fingerprint), describe: "root" },
        ),
        (err: Error) =>
          !(err instanceof RefusedError) &&
          /put the previous files back after 12 s but making the service use them failed \(activate failed: 3\).*reload complained/.test(
            err.message,
          ),
      );
      assert.equal(fs.readFileSync(config, "utf8"), original, "the old config is back");
    } finally {
      await pool.close();
      dropRollbacks(label);
    }
  });

  test("a change whose activation fails is undone at once, without waiting for the timer", async () => {
    const pool = new SshPool();
    const label = `t-sshd-fail-${process.pid}`;
    try {
      const host = pool.host(connect(sshd.host, sshd.port, sshd.hostKey.fingerprint));
      const started = Date.now();
      await assert.rejects(
        applyWithRollback(
          host,
          {
            label,
            files: [{ path: config, content: `${original}# broken\n` }],
            activate: `echo "sshd -t says no" >&2; exit 1`,
            confirmSeconds: 60,
          },
          { reconnect: connect(sshd.host, sshd.port, sshd.hostKey.fingerprint), describe: "n/a" },
        ),
        /sshd -t says no/,
      );
      assert.ok(Date.now() - started < 30_000, "no wait for the 60 s timer");
      assert.equal(fs.readFileSync(config, "utf8"), original);
    } finally {
      await pool.close();
      dropRollbacks(label);
    }
  });

  test("the host tells which address the SSH client comes from, as root and under sudo alike", async () => {
    const pool = new SshPool();
    try {
      const host = pool.host(connect(sshd.host, sshd.port, sshd.hostKey.fingerprint));
      const r = await host.script(`${SSH_PEER_FUNCTION}\nxe_ssh_peer`);
      assert.equal(r.stdout.trim(), "127.0.0.1");
    } finally {
      await pool.close();
    }
  });
});

describe("a change armed by a run whose answer was lost", { timeout: 120_000 }, () => {
  let sshd: Sshd;
  before(async () => {
    sshd = await startSshd({ authorizedKeys: [key.publicKey] });
  });
  after(async () => {
    await sshd?.stop();
  });

  test("is waited for until the host restores it, then the next change applies and is confirmed", async () => {
    // Found by the cut-connection matrix (test/resources/dom0-firewall.cuts.ssh.test.ts): the next up refused.
    const label = `t-lost-${process.pid}`;
    const file = path.join(dir, "lost.conf");
    fs.writeFileSync(file, "before\n");
    const pool = new SshPool();
    try {
      const conn = connect(sshd.host, sshd.port, sshd.hostKey.fingerprint);
      const host = pool.host(conn);
      const change = (content: string) => ({
        label,
        files: [{ path: file, content }],
        activate: "true",
        confirmSeconds: 6,
      });
      // The first run armed and applied, and its answer never came back: nobody confirms it.
      await host.refusable(armAndApplyScript(change("lost\n"), "0123456789abcdef"));
      assert.equal(fs.readFileSync(file, "utf8"), "lost\n");
      const started = Date.now();
      const r = await applyWithRollback(host, change("next\n"), { reconnect: conn, describe: "again" });
      assert.deepEqual(r, { changed: true, changedFiles: [file] });
      assert.ok(Date.now() - started >= 3000, "it waited for the host's timer");
      // Long after both deadlines, the confirmed change stays and nothing is left armed.
      await new Promise((res) => setTimeout(res, 7000));
      assert.equal(fs.readFileSync(file, "utf8"), "next\n");
      assert.deepEqual(
        fs
          .readdirSync(ROLLBACK_ROOT)
          .filter(
            (d) => d.startsWith(`${label}-`) && !fs.existsSync(path.join(ROLLBACK_ROOT, d, "restored")),
          ),
        [],
      );
    } finally {
      await pool.close();
      dropRollbacks(label);
    }
  });
});

describe("firewall rules in a network namespace, under the rollback timer", { timeout: 180_000 }, () => {
  const id = process.pid % 200;
  const ns = `xedh-fw-${process.pid}`;
  const hostIf = `xedh${process.pid % 100000}`;
  const trusted = `10.231.${id}.1`;
  const untrusted = `10.231.${id}.3`;
  const inside = `10.231.${id}.2`;
  let sshd: Sshd;
  let http: ReturnType<typeof spawn> | undefined;
  const rulesFile = (): string => path.join(dir, "firewall.nft");
  const sh = (cmd: string): Promise<{ stdout: string }> => run("bash", ["-c", cmd]);

  before(async () => {
    await sh(removeVethNamespace({ ns, hostIf }));
    await sh(
      [
        ...makeVethNamespace({
          ns,
          hostIf,
          hostAddresses: [`${trusted}/24`, `${untrusted}/24`],
          inside: `${inside}/24`,
        }),
        // What Xen's vif-bridge would have added: a rule of another tool, which our reloads must never flush.
        `ip netns exec ${ns} iptables -A FORWARD -s 10.99.0.5 -j ACCEPT`,
      ].join(" && "),
    );
    sshd = await startSshd({ authorizedKeys: [key.publicKey], netns: ns, listen: inside, port: 2222 });
    http = spawn("ip", ["netns", "exec", ns, "python3", "-m", "http.server", "80", "--bind", inside], {
      stdio: "ignore",
    });
    for (let i = 0; i < 50 && !(await tcpOpens(inside, 80, trusted, 500)); i++)
      await new Promise((r) => setTimeout(r, 100));
  });
  after(async () => {
    http?.kill();
    await sshd?.stop();
    await sh(`ip netns del ${ns} 2>/dev/null; ip link del ${hostIf} 2>/dev/null; true`);
    dropRollbacks(`t-fw-${process.pid}`);
  });

  const rules = (sources: string[]): string =>
    renderRules({
      sshPort: 2222,
      trustedSources: sources.map((s) => parseNetwork(s) as Network),
      openTcp: [80, 443],
      openUdp: [],
    });
  const activate = (): string =>
    `if [ -f ${rulesFile()} ]; then nft -f ${rulesFile()}; else nft delete table inet xen_estate 2>/dev/null || true; fi`;

  test("the rendered rules pass nft's own check", async () => {
    fs.writeFileSync(path.join(dir, "check.nft"), rules(["10.231.0.0/16", "2001:db8::/32"]));
    await sh(`ip netns exec ${ns} nft -c -f ${path.join(dir, "check.nft")}`);
  });

  test("rules that trust the provider's address go live: SSH only from trusted sources, HTTP from anyone, other tools' rules kept", async () => {
    const pool = new SshPool();
    try {
      const conn = connect(inside, 2222, sshd.hostKey.fingerprint);
      const host = pool.host(conn);
      const peer = (await host.script(`${SSH_PEER_FUNCTION}\nxe_ssh_peer`)).stdout.trim();
      assert.equal(peer, trusted, "the host sees the provider at its primary address");
      for (let round = 0; round < 2; round++) {
        // The second round reloads the same rules (forced): still nothing of the other tool's is lost.
        await applyWithRollback(
          host,
          {
            label: `t-fw-${process.pid}`,
            files: [{ path: rulesFile(), content: rules([`${trusted}/32`]), validate: "nft -c -f %s" }],
            activate: activate(),
            confirmSeconds: 20,
            force: round === 1,
          },
          { reconnect: conn, describe: "a new login from the trusted address" },
        );
      }
      assert.match(
        (await sh(`ip netns exec ${ns} nft list table inet xen_estate`)).stdout,
        /comment "xen-estate [0-9a-f]{16}"/,
      );
      assert.match(
        (await sh(`ip netns exec ${ns} iptables -S FORWARD`)).stdout,
        /-A FORWARD -s 10\.99\.0\.5\/32 -j ACCEPT/,
      );
      assert.equal(await tcpOpens(inside, 2222, trusted), true, "SSH from the trusted address");
      assert.equal(await tcpOpens(inside, 2222, untrusted), false, "SSH from another address is dropped");
      assert.equal(await tcpOpens(inside, 80, untrusted), true, "HTTP from anyone");
    } finally {
      await pool.close();
    }
  });

  test("rules that leave out the provider's address cut new logins, and the host rolls them back by itself", async () => {
    const pool = new SshPool();
    try {
      const conn = connect(inside, 2222, sshd.hostKey.fingerprint);
      const host = pool.host(conn);
      const before = fs.readFileSync(rulesFile(), "utf8");
      await assert.rejects(
        applyWithRollback(
          host,
          {
            label: `t-fw-${process.pid}`,
            files: [{ path: rulesFile(), content: rules([`${untrusted}/32`]) }],
            activate: activate(),
            confirmSeconds: 12,
          },
          { reconnect: conn, describe: "a new login from the trusted address" },
        ),
        (err: Error) =>
          err instanceof RefusedError && /restored the previous ones by itself/.test(err.message),
      );
      assert.equal(fs.readFileSync(rulesFile(), "utf8"), before, "the previous rule file is back");
      assert.equal(await tcpOpens(inside, 2222, trusted), true, "the trusted address gets in again");
      assert.equal(await tcpOpens(inside, 2222, untrusted), false);
      assert.match((await sh(`ip netns exec ${ns} iptables -S FORWARD`)).stdout, /10\.99\.0\.5/);
    } finally {
      await pool.close();
    }
  });
});
