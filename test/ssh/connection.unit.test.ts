/**
 * `check` of the connection: defaults, every rule, and no secret ever echoed.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  authOf,
  poolKey,
  secretsOf,
  Checker,
  checkConnection,
  fingerprintOf,
  parseHostKeyPin,
  splitConnection,
  joinConnection,
} from "../../provider";
import { fixtureKeys } from "../support/fixture-keys";

const hostPub = fixtureKeys.hostPublicKey;
const hostFp = fixtureKeys.hostFingerprint;
const clientKey = fixtureKeys.clientPrivateKey;

function check(
  raw: unknown,
  credentials: unknown = {},
): { errors: string[]; props: string[]; value: unknown } {
  const c = new Checker();
  const value = checkConnection(c.at("connection"), raw, credentials);
  return { errors: c.errors.map((e) => e.message), props: c.errors.map((e) => e.property), value };
}

describe("connection defaults", () => {
  test("fills port 22, user root, 10 dial attempts, 15 s per dial and a 600 s command deadline", () => {
    const { errors, value } = check({ host: "dom0.example.com", hostKey: hostFp });
    assert.deepEqual(errors, []);
    assert.deepEqual(value, {
      host: "dom0.example.com",
      port: 22,
      user: "root",
      dialErrorLimit: 10,
      perDialTimeout: 15,
      commandTimeout: 600,
      insecureIgnoreHostKey: false,
      hostKey: hostFp,
    });
  });

  test("accepts IPv4 and IPv6 literals", () => {
    assert.deepEqual(check({ host: "203.0.113.7", hostKey: hostFp }).errors, []);
    assert.deepEqual(check({ host: "2001:db8::1", hostKey: hostFp }).errors, []);
  });
});

describe("connection rules", () => {
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    [
      "a host with a space",
      { host: "dom0 example", hostKey: hostFp },
      "connection.host",
      /`connection.host` must be a host name, a dotted-decimal IPv4 address or an IPv6 address.*got "dom0 example"/,
    ],
    [
      "a host with a newline",
      { host: "dom0\nrm -rf /", hostKey: hostFp },
      "connection.host",
      /got "dom0\\nrm -rf \/"/,
    ],
    [
      "port 0",
      { host: "h", port: 0, hostKey: hostFp },
      "connection.port",
      /`connection.port` must be an integer from 1 to 65535, got 0/,
    ],
    ["port 70000", { host: "h", port: 70000, hostKey: hostFp }, "connection.port", /got 70000/],
    [
      "an unparseable host key",
      { host: "h", hostKey: "SHA256:abc" },
      "connection.hostKey",
      /must be a host-key pin, got "SHA256:abc"\. a SHA256 fingerprint has 43/,
    ],
    ["garbage as a host key", { host: "h", hostKey: "not a key" }, "connection.hostKey", /expected `SHA256:/],
    [
      "no host key and no opt-out",
      { host: "h" },
      "connection.hostKey",
      /is required to authenticate the server.*insecureIgnoreHostKey/,
    ],
    [
      "a user with a shell character",
      { host: "h", user: "root;id", hostKey: hostFp },
      "connection.user",
      /must be a Unix user name/,
    ],
  ];
  for (const [what, raw, prop, message] of cases) {
    test(`rejects ${what}, naming ${prop}`, () => {
      const { errors, props } = check(raw);
      assert.deepEqual(props, [prop]);
      assert.match(errors[0]!, message);
    });
  }

  test("reports every problem at once", () => {
    const { props } = check({ host: "a b", port: 0, hostKey: "x" });
    assert.deepEqual(props, ["connection.host", "connection.port", "connection.hostKey"]);
  });

  test("rejects a jump-host chain that loops back to the target", () => {
    const { props, errors } = check({
      host: "a",
      hostKey: hostFp,
      proxy: { host: "b", hostKey: hostFp, proxy: { host: "a", hostKey: hostFp } },
    });
    assert.deepEqual(props, ["connection.proxy.proxy"]);
    assert.match(
      errors.join("\n"),
      /must not loop back to a host already in the chain, got "root@a:22 -> root@b:22 -> root@a:22"/,
    );
  });

  test("accepts a two-hop chain and validates each hop's own fields", () => {
    assert.deepEqual(
      check({
        host: "a",
        hostKey: hostFp,
        proxy: { host: "b", hostKey: hostFp, proxy: { host: "c", hostKey: hostFp } },
      }).errors,
      [],
    );
    assert.deepEqual(
      check({ host: "a", hostKey: hostFp, proxy: { host: "b", port: 0, hostKey: hostFp } }).props,
      ["connection.proxy.port"],
    );
  });

  test("rejects a private key that does not parse without echoing it", () => {
    const bogus =
      "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAsecretmaterialAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
    const { props, errors } = check({ host: "h", hostKey: hostFp }, { privateKey: bogus });
    assert.deepEqual(props, ["connection.privateKey"]);
    assert.match(errors[0]!, /must be a private key in OpenSSH or PEM format, got \[secret\]/);
    assert.doesNotMatch(errors[0]!, /secretmaterial/);
  });

  test("rejects a public key given as the private key", () => {
    const { errors } = check({ host: "h", hostKey: hostFp }, { privateKey: hostPub });
    assert.match(errors[0]!, /got \[secret\]/);
  });

  test("accepts a real private key", () => {
    assert.deepEqual(check({ host: "h", hostKey: hostFp }, { privateKey: clientKey }).errors, []);
  });
});

describe("host-key pins", () => {
  const blob = Buffer.from(hostPub.split(" ")[1]!, "base64");

  test("the fingerprint of a key is exactly what ssh-keygen -l prints", () => {
    assert.equal(fingerprintOf(blob), hostFp);
  });

  test("a fingerprint, a public-key line and a known_hosts line are all pins", () => {
    assert.deepEqual(parseHostKeyPin(hostFp), { kind: "fingerprint", sha256: hostFp.slice(7) });
    assert.equal((parseHostKeyPin(hostPub) as { kind: string }).kind, "key");
    assert.equal((parseHostKeyPin(`[dom0]:2222 ${hostPub}`) as { kind: string }).kind, "key");
  });

  test("a key line whose base64 holds another key type is refused", () => {
    const wrong = hostPub.replace(/^ssh-ed25519/, "ssh-rsa");
    assert.match((parseHostKeyPin(wrong) as { error: string }).error, /does not hold a ssh-rsa key/);
  });
});

describe("secrets in state", () => {
  test("splitConnection moves keys and passwords (also of jump hosts) out of the public part", () => {
    const { connection, credentials } = splitConnection({
      host: "a",
      privateKey: "K",
      password: "P",
      proxy: { host: "b", privateKeyPassword: "Q" },
    });
    assert.deepEqual(connection, { host: "a", proxy: { host: "b" } });
    assert.deepEqual(credentials, { privateKey: "K", password: "P", proxy: { privateKeyPassword: "Q" } });
    assert.doesNotMatch(JSON.stringify(connection), /"K"|"P"|"Q"/);
  });

  test("joinConnection puts them back for dialing", () => {
    const joined = joinConnection(
      {
        host: "a",
        port: 22,
        user: "root",
        dialErrorLimit: 1,
        perDialTimeout: 1,
        commandTimeout: 1,
        insecureIgnoreHostKey: false,
        proxy: {
          host: "b",
          port: 22,
          user: "root",
          dialErrorLimit: 1,
          perDialTimeout: 1,
          commandTimeout: 1,
          insecureIgnoreHostKey: false,
        },
      },
      { privateKey: "K", proxy: { password: "Q" } },
    );
    assert.equal(joined.privateKey, "K");
    assert.equal(joined.proxy?.password, "Q");
  });
});

describe("what is secret", () => {
  const base = {
    host: "a",
    port: 22,
    user: "root",
    dialErrorLimit: 1,
    perDialTimeout: 1,
    commandTimeout: 1,
    insecureIgnoreHostKey: false,
  };

  test("the agent socket goes into the credentials, never into the readable part of state", () => {
    const { connection, credentials } = splitConnection({
      host: "a",
      agentSocketPath: "/run/user/1000/agent.sock",
    });
    assert.deepEqual(connection, { host: "a" });
    assert.deepEqual(credentials, { agentSocketPath: "/run/user/1000/agent.sock" });
    const checked = check({ host: "a", hostKey: hostFp, agentSocketPath: "/tmp/agent" });
    assert.equal((checked.value as Record<string, unknown>).agentSocketPath, undefined);
  });

  test("a key read from XEN_ESTATE_SSH_KEY_FILE is redacted like any credential", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-keyfile-"));
    const file = path.join(dir, "id");
    fs.writeFileSync(file, clientKey, { mode: 0o600 });
    const saved = { key: process.env.XEN_ESTATE_SSH_KEY_FILE, agent: process.env.SSH_AUTH_SOCK };
    process.env.XEN_ESTATE_SSH_KEY_FILE = file;
    delete process.env.SSH_AUTH_SOCK;
    try {
      assert.ok(secretsOf(joinConnection(base, {})).includes(clientKey));
      assert.equal(authOf(joinConnection(base, {})).privateKey, clientKey);
    } finally {
      if (saved.key === undefined) delete process.env.XEN_ESTATE_SSH_KEY_FILE;
      else process.env.XEN_ESTATE_SSH_KEY_FILE = saved.key;
      if (saved.agent !== undefined) process.env.SSH_AUTH_SOCK = saved.agent;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("two logins share a pooled connection only with the same pin, insecure flag and credentials", () => {
    const a = joinConnection({ ...base, hostKey: hostFp }, { privateKey: "K" });
    assert.equal(poolKey(a), poolKey(joinConnection({ ...base, hostKey: hostFp }, { privateKey: "K" })));
    const others = [
      joinConnection({ ...base, hostKey: hostPub }, { privateKey: "K" }),
      joinConnection({ ...base, hostKey: hostFp }, { privateKey: "K2" }),
      joinConnection({ ...base, hostKey: hostFp }, { privateKey: "K", password: "P" }),
      joinConnection({ ...base, insecureIgnoreHostKey: true }, { privateKey: "K" }),
      joinConnection({ ...base, hostKey: hostFp, proxy: { ...base, host: "j" } }, { privateKey: "K" }),
    ];
    for (const o of others) assert.notEqual(poolKey(o), poolKey(a));
    assert.doesNotMatch(poolKey(a), /K/, "the key names no credential");
  });
});
