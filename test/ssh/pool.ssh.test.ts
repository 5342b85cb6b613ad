/**
 * The SSH executor against real OpenSSH servers started by the test (see test/support/sshd.ts).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  Checker,
  DIAL_LOG_ENV,
  joinConnection,
  resolveConnection,
  RemoteCommandError,
  ResolvedConnection,
  setLogSink,
  SshConnectError,
  SshPool,
  SudoPasswordRequiredError,
} from "../../provider";
import {
  ensureTestUsers,
  freePort,
  generateKey,
  inMountNamespace,
  JumpTopology,
  KeyPair,
  startAgent,
  startSshd,
  Sshd,
  USERS,
} from "../support/sshd";

function conn(
  fields: Record<string, unknown>,
  credentials: Record<string, unknown> = {},
): ResolvedConnection {
  const c = new Checker();
  const resolved = resolveConnection(c.at("connection"), fields, credentials);
  assert.deepEqual(
    c.errors.map((e) => e.message),
    [],
  );
  return resolved!;
}

const logged: string[] = [];
let dir: string;
let key: KeyPair;
let sshd: Sshd;

before(async () => {
  setLogSink((_sev, message) => logged.push(message));
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-exec-"));
  key = await generateKey(dir, "client");
  await ensureTestUsers();
  sshd = await startSshd({ authorizedKeys: [key.publicKey] });
});

after(async () => {
  await sshd?.stop();
  setLogSink(undefined);
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs `body` with a fresh pool, closed afterwards whatever happens. */
async function withPool(body: (pool: SshPool) => Promise<void>): Promise<void> {
  const pool = new SshPool();
  try {
    await body(pool);
  } finally {
    await pool.close();
  }
}

function root(extra: Record<string, unknown> = {}): ResolvedConnection {
  return conn(
    { host: sshd.host, port: sshd.port, hostKey: sshd.hostKey.fingerprint, ...extra },
    { privateKey: key.privateKey },
  );
}

describe("authentication", () => {
  test("logs in with a private key and runs a script under bash -euo pipefail", async () => {
    await withPool(async (pool) => {
      const r = await pool.host(root()).script('echo "flags $-"\ntrue | true\necho after-pipe-ok');
      assert.match(r.stdout, /^flags \S*e\S*u/, "errexit and nounset are on");
      assert.match(r.stdout, /after-pipe-ok/);
      assert.equal(r.exitCode, 0);
      const failing = await pool.host(root()).script("false | true", { allowFailure: true });
      assert.equal(failing.exitCode, 1, "pipefail makes a failing pipeline fail the script");
    });
  });

  test("logs in with a password", async () => {
    await withPool(async (pool) => {
      const c = conn(
        {
          host: sshd.host,
          port: sshd.port,
          user: USERS.sudoer.name,
          hostKey: sshd.hostKey.fingerprint,
          agentSocketPath: "/nonexistent",
        },
        { password: USERS.sudoer.password },
      );
      const r = await pool.host(c).exec("whoami");
      assert.equal(r.stdout.trim(), "root", "a sudoer's commands run through sudo -n");
    });
  });

  test("logs in through an ssh-agent socket", async () => {
    const agent = await startAgent(key);
    const pool = new SshPool();
    try {
      const c = conn({
        host: sshd.host,
        port: sshd.port,
        hostKey: sshd.hostKey.fingerprint,
        agentSocketPath: agent.socket,
      });
      assert.equal((await pool.host(c).exec("echo agent-ok")).stdout.trim(), "agent-ok");
    } finally {
      await pool.close();
      await agent.stop();
    }
  });

  test("logs in with an encrypted key and its passphrase", async () => {
    const encrypted = await generateKey(dir, "encrypted", { passphrase: "correct horse battery" });
    const server = await startSshd({ authorizedKeys: [encrypted.publicKey] });
    const pool = new SshPool();
    try {
      const c = conn(
        { host: server.host, port: server.port, hostKey: server.hostKey.fingerprint },
        { privateKey: encrypted.privateKey, privateKeyPassword: "correct horse battery" },
      );
      assert.equal((await pool.host(c).exec("echo enc-ok")).stdout.trim(), "enc-ok");
    } finally {
      await pool.close();
      await server.stop();
    }
  });

  test("reports a rejected key as an auth failure without retrying", async () => {
    const stranger = await generateKey(dir, "stranger");
    await withPool(async (pool) => {
      const c = conn(
        {
          host: sshd.host,
          port: sshd.port,
          hostKey: sshd.hostKey.fingerprint,
          agentSocketPath: "/nonexistent",
        },
        { privateKey: stranger.privateKey },
      );
      await assert.rejects(pool.host(c).exec("true"), (e: unknown) => {
        assert.ok(e instanceof SshConnectError);
        assert.equal(e.kind, "auth");
        assert.equal(e.attempts, 1);
        return true;
      });
    });
  });
});

describe("host keys", () => {
  test("accepts a known_hosts line as the pin", async () => {
    await withPool(async (pool) => {
      const line = `[${sshd.host}]:${sshd.port} ${sshd.hostKey.publicKey}`;
      assert.equal((await pool.host(root({ hostKey: line })).exec("echo pinned")).stdout.trim(), "pinned");
    });
  });

  test("refuses a server whose key does not match the pin, before authenticating or running anything", async () => {
    const other = await generateKey(dir, "other-host");
    const marker = path.join(dir, "must-not-exist");
    const pool = new SshPool();
    const logBefore = sshd.log().length;
    try {
      await assert.rejects(
        pool.host(root({ hostKey: other.fingerprint })).exec(`touch ${marker}`),
        (e: unknown) => {
          assert.ok(e instanceof SshConnectError);
          assert.equal(e.kind, "host-key");
          assert.match(e.message, new RegExp(sshd.hostKey.fingerprint.replace(/[+/]/g, "\\$&")));
          assert.equal(e.attempts, 1, "a host-key mismatch is never retried");
          return true;
        },
      );
      assert.equal(fs.existsSync(marker), false);
      const attemptLog = sshd.log().slice(logBefore);
      assert.match(attemptLog, /Connection from/);
      assert.doesNotMatch(attemptLog, /Accepted publickey|Failed publickey|Postponed publickey|Accepted key/);
      assert.equal(pool.stats.handshakes, 0);
    } finally {
      await pool.close();
    }
  });

  test("refuses an unpinned server unless insecureIgnoreHostKey is set, and warns when it is", async () => {
    await withPool(async (pool) => {
      const unpinned = joinConnection(
        {
          host: sshd.host,
          port: sshd.port,
          user: "root",
          dialErrorLimit: 1,
          perDialTimeout: 5,
          commandTimeout: 60,
          insecureIgnoreHostKey: false,
        },
        { privateKey: key.privateKey },
      );
      await assert.rejects(pool.host(unpinned).exec("true"), /host-key: host key SHA256:\S+ is not pinned/);
      logged.length = 0;
      const insecure = { ...unpinned, insecureIgnoreHostKey: true };
      assert.equal((await pool.host(insecure).exec("echo ok")).stdout.trim(), "ok");
      assert.ok(logged.some((m) => /accepted without verification/.test(m)));
    });
  });
});

describe("dialing", () => {
  test("retries with backoff until a port that opens late answers", async () => {
    const port = await freePort();
    const late = await startSshd({ authorizedKeys: [key.publicKey], port, delayMs: 2500 });
    const pool = new SshPool();
    try {
      const c = conn(
        { host: "127.0.0.1", port, hostKey: late.hostKey.fingerprint, dialErrorLimit: 10 },
        { privateKey: key.privateKey },
      );
      const r = await pool.host(c).exec("echo late-ok");
      assert.equal(r.stdout.trim(), "late-ok");
      assert.ok(pool.stats.dialAttempts > 1, `expected retries, saw ${pool.stats.dialAttempts} attempt(s)`);
      assert.equal(pool.stats.handshakes, 1);
    } finally {
      await pool.close();
      await late.stop();
    }
  });

  test("gives up after dialErrorLimit attempts on a refused port and says so", async () => {
    const port = await freePort();
    await withPool(async (pool) => {
      const c = conn(
        { host: "127.0.0.1", port, hostKey: sshd.hostKey.fingerprint, dialErrorLimit: 3 },
        { privateKey: key.privateKey },
      );
      await assert.rejects(pool.host(c).exec("true"), (e: unknown) => {
        assert.ok(e instanceof SshConnectError);
        assert.equal(e.kind, "refused");
        assert.equal(e.attempts, 3);
        assert.match(e.message, /after 3 attempts/);
        return true;
      });
    });
  });

  test("records every dial attempt, failed ones too, in the file XEN_ESTATE_DIAL_LOG names, and no credential", async () => {
    const file = path.join(dir, "dials.log");
    const refused = await freePort();
    process.env[DIAL_LOG_ENV] = file;
    try {
      await withPool(async (pool) => {
        const good = conn(
          { host: sshd.host, port: sshd.port, hostKey: sshd.hostKey.fingerprint },
          { privateKey: key.privateKey },
        );
        await pool.host(good).exec("true");
        await pool.host(good).exec("true");
        const bad = conn(
          { host: "127.0.0.1", port: refused, hostKey: sshd.hostKey.fingerprint, dialErrorLimit: 2 },
          { privateKey: key.privateKey },
        );
        await assert.rejects(pool.host(bad).exec("true"), SshConnectError);
        assert.equal(pool.stats.dialAttempts, 3);
      });
    } finally {
      delete process.env[DIAL_LOG_ENV];
    }
    assert.deepEqual(fs.readFileSync(file, "utf8").split("\n").filter(Boolean), [
      `dial root@${sshd.host}:${sshd.port}`,
      `dial root@127.0.0.1:${refused}`,
      `dial root@127.0.0.1:${refused}`,
    ]);
    assert.doesNotMatch(fs.readFileSync(file, "utf8"), /PRIVATE KEY/);
  });

  test("reports a name that does not resolve as a DNS failure", async () => {
    await withPool(async (pool) => {
      const c = conn(
        { host: "no-such-host.invalid", hostKey: sshd.hostKey.fingerprint, dialErrorLimit: 1 },
        { privateKey: key.privateKey },
      );
      await assert.rejects(
        pool.host(c).exec("true"),
        (e: unknown) => e instanceof SshConnectError && e.kind === "dns",
      );
    });
  });

  test("times out a server that accepts TCP but never speaks SSH", async () => {
    const net = await import("node:net");
    const silent = net.createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const port = (silent.address() as import("node:net").AddressInfo).port;
    const pool = new SshPool();
    try {
      const c = conn(
        { host: "127.0.0.1", port, hostKey: sshd.hostKey.fingerprint, dialErrorLimit: 1, perDialTimeout: 1 },
        { privateKey: key.privateKey },
      );
      await assert.rejects(
        pool.host(c).exec("true"),
        (e: unknown) => e instanceof SshConnectError && e.kind === "timeout",
      );
    } finally {
      await pool.close();
      silent.close();
    }
  });

  test("reconnects after the pooled connection drops", async () => {
    await withPool(async (pool) => {
      const host = pool.host(root());
      await host.exec("true");
      // Kill this session's sshd child: the pooled connection dies under the pool.
      // Our bash's parent is the `timeout` guard; its parent is sshd's session process.
      await host.exec("kill -9 $(ps -o ppid= -p $PPID)", { allowFailure: true }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await host.exec("echo back")).stdout.trim(), "back");
      assert.equal(pool.stats.handshakes, 2);
    });
  });
});

describe("jump hosts", () => {
  const topo = new JumpTopology();
  let jump: Sshd;
  let target: Sshd;

  before(async () => {
    await topo.up();
    jump = await startSshd({ authorizedKeys: [key.publicKey], netns: topo.jumpNs, listen: topo.jumpAddress });
    target = await startSshd({
      authorizedKeys: [key.publicKey],
      netns: topo.targetNs,
      listen: topo.targetAddress,
    });
  });

  after(async () => {
    await target?.stop();
    await jump?.stop();
    await topo.down();
  });

  test("reaches a host that only the jump host can route to", async () => {
    await withPool(async (pool) => {
      const direct = conn(
        {
          host: topo.targetAddress,
          hostKey: target.hostKey.fingerprint,
          dialErrorLimit: 1,
          perDialTimeout: 2,
        },
        { privateKey: key.privateKey },
      );
      await assert.rejects(
        pool.host(direct).exec("true"),
        SshConnectError,
        "the target is not routable directly",
      );
      const via = conn(
        {
          host: topo.targetAddress,
          hostKey: target.hostKey.fingerprint,
          proxy: { host: topo.jumpAddress, hostKey: jump.hostKey.fingerprint },
        },
        { privateKey: key.privateKey, proxy: { privateKey: key.privateKey } },
      );
      const r = await pool.host(via).exec("ip -brief addr show t0");
      assert.match(r.stdout, new RegExp(topo.targetAddress.replace(/\./g, "\\.")));
      assert.equal(pool.stats.handshakes, 2, "one handshake with the jump host, one with the target");
    });
  });

  test("checks the target's host key even through a jump host", async () => {
    await withPool(async (pool) => {
      const via = conn(
        {
          host: topo.targetAddress,
          hostKey: jump.hostKey.fingerprint,
          proxy: { host: topo.jumpAddress, hostKey: jump.hostKey.fingerprint },
        },
        { privateKey: key.privateKey, proxy: { privateKey: key.privateKey } },
      );
      await assert.rejects(
        pool.host(via).exec("true"),
        (e: unknown) => e instanceof SshConnectError && e.kind === "host-key",
      );
    });
  });
});

describe("commands", () => {
  test("kills a command that outlives its deadline and says it timed out", async () => {
    await withPool(async (pool) => {
      const host = pool.host(root());
      const started = Date.now();
      await assert.rejects(host.exec("sleep 37.5", { timeoutMs: 1000 }), (e: unknown) => {
        assert.ok(e instanceof RemoteCommandError);
        assert.equal(e.timedOut, true);
        assert.equal(e.host, sshd.host);
        assert.match(e.message, /timed out/);
        return true;
      });
      assert.ok(Date.now() - started < 15_000);
      await new Promise((r) => setTimeout(r, 500));
      const left = await host.exec("pgrep -f 'sleep 3[7].5' || true");
      assert.equal(left.stdout.trim(), "", "the remote process is gone");
    });
  });

  test("a failing command raises RemoteCommandError with exit code, command and stderr tail", async () => {
    await withPool(async (pool) => {
      await assert.rejects(
        pool.host(root()).script("echo step one\necho 'disk is full' >&2\nexit 3"),
        (e: unknown) => {
          assert.ok(e instanceof RemoteCommandError);
          assert.equal(e.exitCode, 3);
          assert.equal(e.timedOut, false);
          assert.equal(e.command, "echo step one");
          assert.match(e.stderrTail, /disk is full/);
          assert.ok(e.durationMs >= 0);
          return true;
        },
      );
    });
  });

  test("a script's commands cannot read the rest of the script from stdin", async () => {
    await withPool(async (pool) => {
      const r = await pool.host(root()).script("cat\necho still-here");
      assert.equal(r.stdout.trim(), "still-here");
    });
  });

  test("streams a command's stdin from the caller", async () => {
    await withPool(async (pool) => {
      const r = await pool.host(root()).exec("sha256sum", { stdin: Buffer.alloc(1 << 20, 7) });
      const { createHash } = await import("node:crypto");
      assert.equal(
        r.stdout.split(" ")[0],
        createHash("sha256")
          .update(Buffer.alloc(1 << 20, 7))
          .digest("hex"),
      );
    });
  });

  test("collects a 50 MB output whole", async () => {
    await withPool(async (pool) => {
      const r = await pool.host(root()).exec("head -c 50000000 /dev/zero | tr '\\0' a");
      assert.equal(r.stdoutBuffer.length, 50_000_000);
      assert.equal(r.stdoutBuffer.indexOf("b"), -1);
    });
  });

  test("runs 20 commands in parallel over one pooled connection with a single handshake", async () => {
    await withPool(async (pool) => {
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => pool.host(root()).exec(`sleep 0.3; echo ${i}`)),
      );
      assert.deepEqual(
        results.map((r) => Number(r.stdout.trim())),
        Array.from({ length: 20 }, (_, i) => i),
      );
      assert.equal(pool.stats.handshakes, 1);
      assert.equal(pool.stats.commands, 20);
    });
  });

  test("redacts secrets from streamed log lines and errors", async () => {
    const pool = new SshPool();
    logged.length = 0;
    try {
      const secret = "hunter2-very-secret";
      await assert.rejects(
        pool.host(root()).exec(`echo ${secret}; echo "${secret}" >&2; exit 1`, { secrets: [secret] }),
        (e: unknown) => {
          assert.ok(e instanceof RemoteCommandError);
          assert.doesNotMatch(e.message, /hunter2/);
          return true;
        },
      );
      assert.ok(logged.length > 0);
      assert.ok(
        logged.every((m) => !m.includes(secret)),
        logged.join("\n"),
      );
    } finally {
      await pool.close();
    }
  });
});

describe("the shell scripts run in", () => {
  test("reads none of the host's startup files, though the shell sshd starts a session with reads them", async () => {
    // As on a host: sshd's session shell (bash) reads /etc/bash.bashrc (Debian's and Ubuntu's bash do for a shell
    // sshd starts). Here that file prints the flags it runs under and then reads an unset variable, which fails
    // under -u, as Debian's own does ("PS1: unbound variable").
    const rc = path.join(dir, "bash.bashrc");
    fs.writeFileSync(rc, 'echo "xe-rc $-" >&2\n: "$XE_NOT_SET"\n');
    const empty = path.join(dir, "empty-bashrc");
    fs.writeFileSync(empty, "");
    const host = await startSshd({
      authorizedKeys: [key.publicKey],
      hostSessions: true,
      wrap: inMountNamespace([
        `mount --bind ${rc} /etc/bash.bashrc`,
        // This machine's root may have a ~/.bashrc of its own (slow, and not this test's).
        `if [ -e /root/.bashrc ]; then mount --bind ${empty} /root/.bashrc; fi`,
      ]),
    });
    try {
      await withPool(async (pool) => {
        const h = pool.host(
          conn(
            { host: host.host, port: host.port, hostKey: host.hostKey.fingerprint },
            { privateKey: key.privateKey },
          ),
        );
        for (const r of [await h.script("echo ran"), await h.exec("echo ran")]) {
          assert.equal(r.stdout, "ran\n");
          const ran = r.stderr.split("\n").filter((l) => l.startsWith("xe-rc "));
          assert.ok(
            ran.length > 0,
            `the session's shell read the startup file (the case at hand): ${r.stderr}`,
          );
          assert.deepEqual(
            ran.filter((l) => /^xe-rc \S*u/.test(l)),
            [],
            "no startup file ran inside the script's shell (-euo pipefail)",
          );
          assert.doesNotMatch(r.stderr, /unbound variable/);
        }
      });
    } finally {
      await host.stop();
    }
  });
});

describe("sudo", () => {
  test("runs as root through sudo -n for a NOPASSWD user", async () => {
    await withPool(async (pool) => {
      const c = conn(
        { host: sshd.host, port: sshd.port, user: USERS.sudoer.name, hostKey: sshd.hostKey.fingerprint },
        { privateKey: key.privateKey },
      );
      const r = await pool.host(c).script("id -u\ncat /etc/shadow >/dev/null && echo can-read-shadow");
      assert.match(r.stdout, /^0\ncan-read-shadow/);
    });
  });

  test("says clearly when sudo wants a password", async () => {
    await withPool(async (pool) => {
      const c = conn(
        { host: sshd.host, port: sshd.port, user: USERS.noSudo.name, hostKey: sshd.hostKey.fingerprint },
        { privateKey: key.privateKey },
      );
      await assert.rejects(pool.host(c).exec("id -u"), (e: unknown) => {
        assert.ok(e instanceof SudoPasswordRequiredError);
        assert.match(e.message, /NOPASSWD/);
        return true;
      });
    });
  });
});

describe("sharing a pooled connection", () => {
  test("a request pinned to another host key gets its own handshake and is refused, though a connection is open", async () => {
    await withPool(async (pool) => {
      assert.equal((await pool.host(root()).exec("echo ok")).stdout.trim(), "ok");
      const other = await generateKey(dir, "unpinned-host-key");
      await assert.rejects(
        pool.host(root({ hostKey: other.fingerprint, dialErrorLimit: 1 })).exec("touch /tmp/xe-must-not-run"),
        (e: unknown) => e instanceof SshConnectError && e.kind === "host-key",
      );
      assert.equal(pool.stats.handshakes, 1, "the second pin was checked on a handshake of its own");
      assert.equal(fs.existsSync("/tmp/xe-must-not-run"), false);
    });
  });

  test("a request with other (wrong) credentials is authenticated on its own and refused", async () => {
    await withPool(async (pool) => {
      await pool.host(root()).exec("true");
      const stranger = await generateKey(dir, "second-stranger");
      const wrong = conn(
        { host: sshd.host, port: sshd.port, hostKey: sshd.hostKey.fingerprint, dialErrorLimit: 1 },
        { privateKey: stranger.privateKey },
      );
      await assert.rejects(
        pool.host(wrong).exec("true"),
        (e: unknown) => e instanceof SshConnectError && e.kind === "auth",
      );
    });
  });

  test("an insecure request never rides on a pinned connection, nor a pinned one on an insecure connection", async () => {
    await withPool(async (pool) => {
      await pool.host(root()).exec("true");
      await pool.host(root({ hostKey: undefined, insecureIgnoreHostKey: true })).exec("true");
      assert.equal(pool.stats.handshakes, 2);
    });
  });
});

describe("the channel cap", () => {
  /** Runs `fn` with a pool capped at 2 channels a connection, against an sshd that allows 2 sessions a connection. */
  async function withTwoSessions(
    fn: (pool: SshPool, c: ReturnType<typeof conn>) => Promise<void>,
  ): Promise<void> {
    const small = await startSshd({ authorizedKeys: [key.publicKey], extraConfig: ["MaxSessions 2"] });
    const pool = new SshPool({ maxChannelsPerConnection: 2 });
    try {
      await fn(
        pool,
        conn(
          { host: small.host, port: small.port, hostKey: small.hostKey.fingerprint },
          { privateKey: key.privateKey },
        ),
      );
    } finally {
      await pool.close();
      await small.stop();
    }
  }

  test("never more channels at once than the cap, against a server that allows only as many sessions", async () => {
    await withTwoSessions(async (pool, c) => {
      const results = await Promise.all(
        Array.from({ length: 30 }, (_, i) => pool.host(c).exec(`sleep 0.05; echo ${i}`)),
      );
      assert.deepEqual(
        results.map((r) => Number(r.stdout.trim())),
        Array.from({ length: 30 }, (_, i) => i),
      );
      assert.equal(pool.stats.maxActive, 2);
      assert.equal(pool.stats.handshakes, 1);
    });
  });

  test("many requests that find the pooled connection dropped share one new dial, within the server's sessions", async () => {
    // A second dial would show as a second handshake, a third channel as a session the server refuses.
    await withTwoSessions(async (pool, c) => {
      const h = pool.host(c);
      await h.exec("true");
      // Kill the sshd process serving this connection (the nearest sshd ancestor), so the pooled client sees it close.
      await h
        .exec(
          'p=$$; while [ "$(ps -o comm= -p "$p")" != sshd ]; do p=$(ps -o ppid= -p "$p" | tr -d " "); done; kill -9 "$p"',
        )
        .catch(() => undefined);
      await new Promise((r) => setTimeout(r, 300));
      const before = pool.stats.handshakes;
      const results = await Promise.all(
        Array.from({ length: 24 }, (_, i) => pool.host(c).exec(`sleep 0.05; echo ${i}`)),
      );
      assert.deepEqual(
        results.map((r) => Number(r.stdout.trim())),
        Array.from({ length: 24 }, (_, i) => i),
      );
      assert.equal(pool.stats.handshakes - before, 1);
      assert.equal(pool.stats.maxActive, 2);
    });
  });
});

describe("what reaches the log", () => {
  test("a command's stdout is never logged (it may be a secret file's content); its stderr lines are", async () => {
    const pool = new SshPool();
    logged.length = 0;
    try {
      await pool.host(root()).exec("echo stdout-line-0fe3; echo stderr-line-9ab1 >&2");
      const text = logged.join("\n");
      assert.doesNotMatch(text, /stdout-line-0fe3/);
      assert.match(text, /stderr-line-9ab1/);
    } finally {
      await pool.close();
    }
  });
});
