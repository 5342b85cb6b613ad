/**
 * HetznerInstallimage against the rescue-system SIMULATOR (test/support/rescue-sim.ts: a real sshd in a network
 * namespace with simulated installimage, lsblk and reboot): the declared drives are checked before anything is
 * wiped, the rendered config and the post-install hook reach installimage, and after the reboot the provider
 * reaches the installed system only with the host key it generated (never trusting the first key it sees).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  checkInputs,
  Checker,
  RefusedError,
  resolveConnection,
  runtime,
  setSharedPool,
  SshPool,
  VERSION,
} from "../../provider";
import { RESCUE_DISKS, RESCUE_IMAGE, RESCUE_INSTALL, RescueSim } from "../support/rescue-sim";
import { generateKey, type KeyPair } from "../support/sshd";

describe("HetznerInstallimage in the simulated rescue system", { timeout: 120_000 }, () => {
  let dir: string;
  let key: KeyPair;
  let sim: RescueSim;
  let pool: SshPool;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "xedh-ii-"));
    key = await generateKey(dir, "client");
    sim = await RescueSim.start({
      disks: [...RESCUE_DISKS],
      images: [RESCUE_IMAGE],
      authorizedKeys: [key.publicKey],
    });
    pool = new SshPool();
    setSharedPool(pool);
  });
  after(async () => {
    await pool?.close();
    setSharedPool(undefined);
    await sim?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function inputs(
    over: Record<string, unknown> = {},
    hostKey = sim.sshd.hostKey.fingerprint,
  ): Record<string, unknown> {
    const r = checkInputs("HetznerInstallimage", {
      connection: { host: sim.address, hostKey, dialErrorLimit: 2 },
      credentials: { privateKey: key.privateKey },
      xenEstateVersion: VERSION,
      ...RESCUE_INSTALL,
      ...over,
    });
    assert.deepEqual(
      r.failures.map((f) => f.message),
      [],
    );
    return r.inputs!;
  }

  test("drives that are not the declared ones are refused before anything is written", async () => {
    await assert.rejects(
      runtime.create(
        "HetznerInstallimage",
        inputs({ drives: [{ device: "/dev/nvme0n1", serial: "OTHERDISK" }, "/dev/nvme1n1"] }),
      ),
      (err: Error) =>
        err instanceof RefusedError &&
        /nvme0n1 has serial S4EWNX0R100001, not OTHERDISK.*nothing was wiped/.test(err.message),
    );
    assert.equal(sim.installedConfig(), null, "installimage never ran");
  });

  test("installs from the rendered config, reboots, and is reached with the generated host key only", async () => {
    const rescuePin = sim.sshd.hostKey.fingerprint;
    const i = inputs();
    const created = await runtime.create("HetznerInstallimage", i);
    assert.equal(sim.state, "installed");
    assert.equal(sim.installedConfig(), i.config, "installimage got the rendered config");
    assert.match(
      sim.installedConfig()!,
      /^DRIVE1 \/dev\/nvme0n1\nDRIVE2 \/dev\/nvme1n1\nSWRAID 1\nSWRAIDLEVEL 1$/m,
    );
    const outs = created.outs as Record<string, string>;
    // The installed system presents exactly the key the resource generated and pinned.
    assert.equal(sim.sshd.hostKey.fingerprint, outs.installedFingerprint);
    assert.notEqual(outs.installedFingerprint, rescuePin);
    assert.match(
      fs.readFileSync(
        path.join(sim.root, "etc", "ssh", "sshd_config.d", "00-xen-estate-hostkey.conf"),
        "utf8",
      ),
      /^HostKey \/etc\/ssh\/ssh_host_ed25519_key$/m,
    );
    // No private key in state but the connection's own, which Pulumi stores encrypted (`credentials`).
    const { credentials: _secret, ...readable } = outs;
    assert.doesNotMatch(JSON.stringify(readable), /PRIVATE KEY|b3BlbnNzaC1rZXktdjE/);
    // Refresh reaches it through the new pin (reachedBy); the rescue pin is refused by the new system.
    const read = await runtime.read("HetznerInstallimage", created.id, outs);
    assert.equal(read.id, created.id);
    const old = new SshPool();
    try {
      const c = resolveConnection(
        new Checker(),
        { host: sim.address, hostKey: rescuePin, dialErrorLimit: 1 },
        { privateKey: key.privateKey },
      )!;
      await assert.rejects(old.host(c).script("true"), /host-key/);
    } finally {
      await old.close();
    }
  });

  test("the installed system is never reinstalled: it has no installimage", async () => {
    await assert.rejects(
      runtime.create("HetznerInstallimage", inputs({}, sim.sshd.hostKey.fingerprint)),
      (err: Error) => err instanceof RefusedError && /not Hetzner's rescue system/.test(err.message),
    );
  });
});
