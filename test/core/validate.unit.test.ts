/**
 * The shared rules of every check: paths, host names, sizes and the way values are shown in failures.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  checkInputs,
  isSafeAbsolutePath,
  MAX_SIZE_BYTES,
  parseSize,
  PATH_RULE,
  showValue,
  VERSION,
} from "../../provider";
import { isHostName } from "../../provider/core/validate";
import { fixtureKeys } from "../support/fixture-keys";

const connection = { host: "dom0", hostKey: fixtureKeys.hostFingerprint };

describe("paths", () => {
  test("a RemoteFile path with a command substitution is refused in check, naming the rule", () => {
    const { failures } = checkInputs("RemoteFile", {
      connection,
      xenEstateVersion: VERSION,
      path: "/tmp/x/$(touch /tmp/pwned)/f",
      content: "x",
    });
    assert.deepEqual(
      failures.map((f) => [f.property, f.message]),
      [["path", `\`path\` ${PATH_RULE}, got "/tmp/x/$(touch /tmp/pwned)/f"`]],
    );
  });

  test("an install image path with $(…) is refused, naming install.image", () => {
    const { failures } = checkInputs("NatDomU", {
      connection,
      xenEstateVersion: VERSION,
      name: "app1",
      ip: "10.0.0.5",
      memoryMiB: 256,
      boot: { kernel: "/boot/vmlinuz" },
      disks: [{ path: "/dev/vg0/app1-root", vdev: "xvda" }],
      install: { image: "/srv/img-$(id).tar.gz" },
    });
    assert.deepEqual(
      failures.map((f) => f.property),
      ["install.image"],
    );
  });

  test("a disk path that climbs out of /dev with .. is refused", () => {
    const { failures } = checkInputs("BridgedDomU", {
      connection,
      xenEstateVersion: VERSION,
      name: "web1",
      ip: "203.0.113.10",
      mac: "00:50:56:00:12:34",
      memoryMiB: 256,
      boot: { kernel: "/boot/vmlinuz" },
      disks: [{ path: "/dev/../etc/shadow", vdev: "xvda" }],
    });
    assert.deepEqual(
      failures.map((f) => f.property),
      ["disks[0].path"],
    );
  });

  test("every accepted path is made only of harmless characters and has no empty, . or .. part", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 64 }), (tail) => {
        const p = `/${tail}`;
        if (!isSafeAbsolutePath(p)) return;
        assert.match(p, /^\/[A-Za-z0-9_.+@%=,:~/-]*$/);
        if (p !== "/")
          assert.ok(
            p
              .slice(1)
              .split("/")
              .every((part) => part !== "" && part !== "." && part !== ".."),
          );
      }),
      { numRuns: 2000 },
    );
  });

  test("any path with a shell character, a quote, whitespace or a control character is refused", () => {
    const bad = fc.constantFrom(..."$`\"'\\;&|<>(){}[]*?! \t\n\r\0#".split(""));
    fc.assert(
      fc.property(fc.string({ maxLength: 10 }), bad, fc.string({ maxLength: 10 }), (a, c, b) => {
        assert.equal(isSafeAbsolutePath(`/${a}${c}${b}`), false);
      }),
    );
  });
});

describe("host names", () => {
  test("numeric forms libc reads as octal or hex are refused; dotted decimal and IPv6 pass", () => {
    for (const bad of ["010.0.0.1", "0x7f.1", "127.1", "1.2.3.04", "0177.0.0.1", "4294967295"])
      assert.equal(isHostName(bad), false, bad);
    for (const good of ["10.0.0.1", "203.0.113.5", "::1", "2a01:4f8::1", "dom0.example.org", "dom0"])
      assert.equal(isHostName(good), true, good);
    const { failures } = checkInputs("RemoteFile", {
      connection: { ...connection, host: "010.0.0.1" },
      xenEstateVersion: VERSION,
      path: "/etc/motd",
      content: "x",
    });
    assert.deepEqual(
      failures.map((f) => f.property),
      ["connection.host"],
    );
  });
});

describe("sizes", () => {
  test("sizes above 1PiB are refused", () => {
    assert.deepEqual(parseSize("7PiB"), { error: "must be at most 1PiB" });
    assert.equal(parseSize("1PiB"), MAX_SIZE_BYTES);
    assert.deepEqual(parseSize(MAX_SIZE_BYTES + 1), { error: "must be at most 1PiB" });
  });

  test("a long run of spaces before garbage is refused (the parser looks at no more than 64 characters)", () => {
    assert.ok("error" in (parseSize(`1${" ".repeat(40_000)}!`) as object));
    assert.ok("error" in (parseSize(`1${" ".repeat(60)}GiB`) as object));
  });

  test("every size written as a number and a unit parses back to the bytes it names", () => {
    const units: [string, number][] = [
      ["B", 1],
      ["KiB", 2 ** 10],
      ["MiB", 2 ** 20],
      ["GiB", 2 ** 30],
      ["TiB", 2 ** 40],
      ["G", 2 ** 30],
      ["MB", 1e6],
      ["GB", 1e9],
    ];
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1000 }),
        fc.constantFrom(...units),
        fc.boolean(),
        (n, [u, f], space) => {
          assert.equal(parseSize(`${n}${space ? " " : ""}${u}`), n * f);
        },
      ),
    );
  });

  test("the parser never throws and always answers bytes in range or an error", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.double(), fc.integer(), fc.constant(null), fc.object()), (v) => {
        const r = parseSize(v);
        if (typeof r === "number") assert.ok(Number.isSafeInteger(r) && r > 0 && r <= MAX_SIZE_BYTES);
        else assert.equal(typeof r.error, "string");
      }),
      { numRuns: 2000 },
    );
  });
});

describe("showing values in failures", () => {
  test("a private key pasted into any field is never echoed", () => {
    const shown = showValue(fixtureKeys.clientPrivateKey);
    assert.doesNotMatch(shown, /OPENSSH|b3BlbnNzaC/);
    assert.match(shown, /\[secret\]/);
    const { failures } = checkInputs("RemoteFile", {
      connection: { host: "dom0", hostKey: fixtureKeys.clientPrivateKey },
      xenEstateVersion: VERSION,
      path: "/etc/motd",
      content: "x",
    });
    assert.equal(failures[0]?.property, "connection.hostKey");
    for (const line of fixtureKeys.clientPrivateKey.split("\n").filter((l) => l.length > 8))
      assert.ok(!failures[0].message.includes(line), "no line of the key is in the message");
  });

  test("a password given as the user is described, not shown", () => {
    const { failures } = checkInputs("RemoteFile", {
      connection: { ...connection, user: "Tr0ub4dor&3" },
      xenEstateVersion: VERSION,
      path: "/etc/motd",
      content: "x",
    });
    assert.equal(failures[0]?.property, "connection.user");
    assert.doesNotMatch(failures[0].message, /Tr0ub4dor/);
    assert.match(failures[0].message, /\[secret\] \(11 characters\)/);
  });
});
