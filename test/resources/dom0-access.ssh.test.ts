/**
 * Dom0Access against the real sshd binary: its drop-in validates (`sshd -t`) and its settings win even when the
 * distribution's own file, read after it, says otherwise; and the resource itself moves a host's sshd to a new
 * port under the host's rollback timer, which undoes a port the provider cannot reach.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  Checker,
  dom0AccessKind,
  hostContext,
  RefusedError,
  renderSshdDropIn,
  resolveConnection,
  SSHD_DROP_IN,
  SshPool,
  VERSION,
  type Context,
  type Dom0AccessInputs,
  type Dom0AccessOutputs,
} from "../../provider";
import { checked } from "../support/checked";
import { stopRollbackSleepers } from "../support/rollback";
import { freePort, generateKey, startHostOwnSshd, tcpOpens, type KeyPair, type Sshd } from "../support/sshd";

describe("the sshd drop-in", () => {
  test("validates with sshd -t and wins over later files: port, no root, no passwords, no X11", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-sshd-dropin-"));
    try {
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(dir, "hostkey")]);
      fs.writeFileSync(
        path.join(dir, "00-xen-estate.conf"),
        renderSshdDropIn({ adminUser: "ops", authorizedKeys: [], sshPort: 2222 }),
      );
      // What a distribution ships after the drop-in's Include: the opposite settings.
      fs.writeFileSync(
        path.join(dir, "sshd_config"),
        `Include ${dir}/*.conf\nHostKey ${dir}/hostkey\nPermitRootLogin yes\nPasswordAuthentication yes\nX11Forwarding yes\n`,
      );
      fs.mkdirSync("/run/sshd", { recursive: true });
      execFileSync("/usr/sbin/sshd", ["-t", "-f", path.join(dir, "sshd_config")]);
      const eff = execFileSync(
        "/usr/sbin/sshd",
        ["-T", "-f", path.join(dir, "sshd_config"), "-C", "user=root,host=x,addr=198.51.100.7"],
        { encoding: "utf8" },
      );
      for (const line of [
        "port 2222",
        "permitrootlogin no",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "x11forwarding no",
      ])
        assert.ok(eff.split("\n").includes(line), `${line} in:\n${eff}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * Dom0Access itself, create and update, on a real sshd that runs as a host's does: it reads /etc/ssh/sshd_config
 * (an overlay of this machine's /etc in a private mount namespace: the admin's user, sudoers and the drop-in land in
 * this test's directory), its pid is /run/sshd.pid (a private /run) and a reload is its SIGHUP (no systemd here, so
 * the host's rollback timer is the `setsid` sleeper). The provider's connections are real logins.
 */
describe("Dom0Access on a host's own sshd", { timeout: 240_000 }, () => {
  let base: string;
  let key: KeyPair;
  let sshd: Sshd;
  let oldPort: number;
  const pools: SshPool[] = [];

  before(async () => {
    base = fs.mkdtempSync("/dev/shm/xe-access-");
    key = await generateKey(base, "client");
    oldPort = await freePort();
    // The port the server had before xen-estate, in a drop-in of its own (Dom0Access' file replaces it).
    sshd = await startHostOwnSshd(base, { authorizedKeys: [key.publicKey], port: oldPort });
  });

  after(async () => {
    for (const p of pools) await p.close();
    await sshd?.stop();
    // A rollback sleeper left by a failed test.
    stopRollbackSleepers(path.join(base, "var-lib", "rollback"));
    fs.rmSync(base, { recursive: true, force: true });
  });

  /** A context over a new pool, logging in as `user` on `port`. */
  function context(user: string, port: number): Context {
    const pool = new SshPool();
    pools.push(pool);
    return hostContext(
      pool.host(
        resolveConnection(
          new Checker(),
          {
            host: sshd.host,
            port,
            user,
            hostKey: sshd.hostKey.fingerprint,
            dialErrorLimit: 1,
            perDialTimeout: 5,
          },
          { privateKey: key.privateKey },
        )!,
      ),
    );
  }

  function inputs(sshPort: number, connectPort = sshPort): Dom0AccessInputs {
    return checked<Dom0AccessInputs>("Dom0Access", {
      connection: { host: sshd.host, port: oldPort, hostKey: sshd.hostKey.fingerprint },
      credentials: { privateKey: key.privateKey },
      xenEstateVersion: VERSION,
      distribution: "debian",
      release: "bookworm",
      adminUser: "xeops",
      authorizedKeys: [key.publicKey],
      sshPort,
      connectPort,
      confirmSeconds: 15,
      onDelete: "keep",
    });
  }

  /** Whether a brand-new login as `user` on `port` runs a command as root. */
  async function logsIn(user: string, port: number): Promise<boolean> {
    try {
      const r = await context(user, port).host.script("id -u", { summary: "log in" });
      return r.stdout.trim() === "0";
    } catch {
      return false;
    }
  }

  let hardened: Dom0AccessOutputs;

  test("create moves sshd to the declared port, confirms it through a new login as the admin and refuses root", async () => {
    const port = await freePort();
    hardened = await dom0AccessKind.create(context("root", oldPort), inputs(port), () => {});
    assert.deepEqual(hardened.applied, { port, user: "xeops" });
    assert.equal(await logsIn("xeops", port), true, "the admin logs in on the new port and sudo works");
    assert.equal(await logsIn("root", port), false, "root is refused");
    assert.equal(await tcpOpens(sshd.host, oldPort, undefined), false, "the old port is closed");
  });

  test("an update to a port the provider cannot reach is undone by the host: sshd answers on the port it had", async () => {
    const before = hardened.applied!.port;
    const next = await freePort();
    const unreachable = await freePort();
    const started = Date.now();
    await assert.rejects(
      dom0AccessKind.update(context("xeops", before), "access", hardened, inputs(next, unreachable), {
        changed: ["sshPort", "connectPort", "sshdFiles"],
        replaces: [],
        classes: {},
      }),
      (err: Error) =>
        err instanceof RefusedError &&
        /cut the SSH path.*restored the previous ones by itself after 15 s/.test(err.message),
    );
    assert.ok(Date.now() - started >= 15_000, "the host waited for its deadline");
    const dropIn = await context("xeops", before).host.script(`cat ${SSHD_DROP_IN}`, { summary: "read" });
    assert.match(dropIn.stdout, new RegExp(`^Port ${before}$`, "m"), "the previous drop-in is back");
    assert.equal(await logsIn("xeops", before), true, "a new login on the port it had works");
    assert.equal(
      await tcpOpens(sshd.host, next, undefined),
      false,
      "nothing listens on the port that cut the path",
    );
  });
});
