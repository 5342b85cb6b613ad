/**
 * Lock and state file names made from inputs (a device's path), offline: every one fits in a directory entry, a name
 * that already fits keeps the name it always had, and two paths never share a lock.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { deviceLock, fileNamePart, NAME_MAX } from "../../provider/remote/lock";
import { stateKey } from "../../provider/resources/linode-migration/plan";

/** A device path as check accepts one: /dev/ and parts of up to 255 characters, anything but / and NUL in them. */
const devicePath = fc
  .array(
    fc.string({ minLength: 1, maxLength: 255 }).filter((s) => !/[/\0]/.test(s)),
    { minLength: 1, maxLength: 16 },
  )
  .map((parts) => `/dev/${parts.join("/")}`);

const entry = (p: string): string => p.slice(p.lastIndexOf("/") + 1);

describe("file names made from a device's path", () => {
  test("a lock's name fits in a directory entry, whatever the path", () => {
    fc.assert(
      fc.property(devicePath, (p) => {
        assert.ok(Buffer.byteLength(entry(deviceLock(p))) <= NAME_MAX, deviceLock(p));
        assert.match(deviceLock(p), /^\/run\/lock\/xen-estate-disk\.[A-Za-z0-9_.-]+\.lock$/);
      }),
    );
  });

  test("a migration's state names fit in a directory entry with their prefix", () => {
    fc.assert(
      fc.property(devicePath, (p) => {
        assert.ok(Buffer.byteLength(`migration-${stateKey(p)}`) <= NAME_MAX, stateKey(p));
      }),
    );
  });

  test("a path whose name fits keeps the name it always had (locks and journals of earlier releases still match)", () => {
    assert.equal(deviceLock("/dev/vg0/web-root"), "/run/lock/xen-estate-disk._dev_vg0_web-root.lock");
    assert.equal(stateKey("/dev/loop2"), "loop2");
    assert.equal(stateKey("/dev/mapper/vg0-web root"), "mapper_vg0-web_root");
  });

  test("two paths too long for a name never share one: the cut name ends in a hash of the whole path", () => {
    const long = fc
      .string({ minLength: 300, maxLength: 600 })
      .map((s) => `/dev/x/${s.replace(/[/\0]/g, "a")}`);
    fc.assert(
      fc.property(long, long, (a, b) => {
        fc.pre(a !== b);
        assert.notEqual(fileNamePart(a, 200), fileNamePart(b, 200));
      }),
    );
    // Two paths alike in their first 300 characters, which is all a cut name could keep.
    const same = `/dev/${"a".repeat(300)}`;
    assert.notEqual(deviceLock(`${same}1`), deviceLock(`${same}2`));
  });
});
