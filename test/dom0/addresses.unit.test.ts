/**
 * Trusted sources: what parses, what is refused, and that membership agrees with a plain bit-by-bit model.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { networkContains, parseNetwork, parseAuthorizedKey, publicKeyOf } from "../../provider";
import { fixtureKeys } from "../support/fixture-keys";

describe("trusted sources", () => {
  const good: [string, string][] = [
    ["198.51.100.7", "198.51.100.7/32"],
    ["198.51.100.0/24", "198.51.100.0/24"],
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["2001:db8::1", "2001:db8::1/128"],
    ["2001:DB8:0:0::/32", "2001:db8::/32"],
    ["::/0", "::/0"],
  ];
  for (const [text, norm] of good)
    test(`${text} is the network ${norm}`, () => {
      const n = parseNetwork(text);
      assert.ok(!("error" in n), JSON.stringify(n));
      assert.equal(n.text, norm);
    });

  const bad = [
    "198.51.100.7/33",
    "198.51.100.1/24",
    "example.org",
    "10.0.0.0/8; rm -rf /",
    "1.2.3",
    "2001:db8::/129",
    "010.0.0.1",
  ];
  for (const text of bad)
    test(`${JSON.stringify(text)} is refused with a reason`, () => assert.ok("error" in parseNetwork(text)));

  test("a host-bits mistake names the network that was meant", () => {
    const n = parseNetwork("198.51.100.1/24");
    assert.ok("error" in n);
    assert.match(n.error, /198\.51\.100\.0\/24/);
  });

  test("an IPv4 address lies in a network exactly when its first prefix bits match (property)", () => {
    const ip = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255));
    fc.assert(
      fc.property(ip, ip, fc.integer({ min: 0, max: 32 }), (a, b, prefix) => {
        const toInt = (x: number[]): number => x.reduce((n, o) => n * 256 + o, 0);
        const size = 2 ** (32 - prefix);
        const base = toInt(a) - (toInt(a) % size);
        const baseText = [24, 16, 8, 0].map((s) => Math.floor(base / 2 ** s) % 256).join(".");
        const net = parseNetwork(`${baseText}/${prefix}`);
        assert.ok(!("error" in net));
        const expected = Math.floor(toInt(b) / size) === Math.floor(base / size);
        assert.equal(networkContains(net, b.join(".")), expected);
      }),
    );
  });

  test("an IPv4-mapped IPv6 peer counts as its IPv4 address", () => {
    const net = parseNetwork("10.0.2.0/24");
    assert.ok(!("error" in net));
    assert.equal(networkContains(net, "::ffff:10.0.2.2"), true);
    assert.equal(networkContains(net, "10.0.3.2"), false);
  });

  test("every IPv6 network contains its own address and its normal form parses to itself (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }),
        fc.integer({ min: 0, max: 128 }),
        (groups, prefix) => {
          const addr = groups.map((g) => g.toString(16)).join(":");
          const bytes = groups.flatMap((g) => [g >> 8, g & 0xff]);
          const masked = bytes.map(
            (b, i) => b & ((0xff << (8 - Math.max(0, Math.min(8, prefix - i * 8)))) & 0xff),
          );
          const mg = [];
          for (let i = 0; i < 16; i += 2) mg.push(((masked[i]! << 8) | masked[i + 1]!).toString(16));
          const net = parseNetwork(`${mg.join(":")}/${prefix}`);
          assert.ok(!("error" in net), JSON.stringify(net));
          assert.equal(networkContains(net, addr), true);
          const again = parseNetwork(net.text);
          assert.ok(!("error" in again));
          assert.equal(again.text, net.text);
        },
      ),
    );
  });
});

describe("authorized keys", () => {
  const key = fixtureKeys.hostPublicKey;
  test("a plain public key line is accepted with its comment", () => {
    const k = parseAuthorizedKey(key);
    assert.ok(!("error" in k));
    assert.equal(k.type, "ssh-ed25519");
  });
  test("a key with options is refused, saying so", () => {
    const k = parseAuthorizedKey(`from="10.0.0.1",no-pty ${key}`);
    assert.ok("error" in k);
    assert.match(k.error, /options/);
  });
  test("a key whose base64 holds another type is refused", () => {
    const [, b64] = key.split(" ");
    const k = parseAuthorizedKey(`ssh-rsa ${b64}`);
    assert.ok("error" in k);
  });
  test("the public key of a private key is derived offline", () => {
    const pub = publicKeyOf(fixtureKeys.clientPrivateKey);
    assert.match(pub ?? "", /^ssh-ed25519 AAAA/);
  });
});
