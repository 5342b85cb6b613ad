/**
 * The provider pattern's pure planning, shown on RemoteFile: check reports every failure with its property,
 * diff replaces only for the declared fields.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { checkInputs, planDiff, providerFor, runtime, VERSION } from "../../provider";
import { checked as check } from "../support/checked";
import { fixtureKeys } from "../support/fixture-keys";

const hostFp = fixtureKeys.hostFingerprint;
const clientKey = fixtureKeys.clientPrivateKey;

const base = {
  connection: { host: "dom0", hostKey: hostFp },
  credentials: { privateKey: clientKey },
  xenEstateVersion: VERSION,
  path: "/etc/motd",
  content: "hello\n",
};

function checked(over: Record<string, unknown> = {}): Record<string, unknown> {
  return check("RemoteFile", { ...base, ...over });
}

describe("check", () => {
  test("normalises inputs and fills defaults", () => {
    const i = checked({ mode: "0600" });
    assert.equal(i.owner, "root");
    assert.equal(i.group, "root");
    assert.equal(i.mode, "600");
    assert.equal(i.validate, null);
    assert.equal((i.connection as { port: number }).port, 22);
  });

  test("returns every failure with its property", async () => {
    const r = await runtime.check(
      "RemoteFile",
      {},
      { ...base, path: "etc/motd", mode: "999", connection: { host: "a b", hostKey: hostFp } },
    );
    assert.deepEqual(
      r.failures?.map((f) => f.property),
      ["connection.host", "path", "mode"],
    );
    assert.match(
      r.failures[1]!.reason,
      /^`path` must be an absolute path of letters, digits and `_\.\+@%=,:~-` \(no spaces, quotes, `\$`, backticks or other shell characters\), without `\.` or `\.\.` parts, `\/\/` or a trailing `\/`, got "etc\/motd"$/,
    );
  });

  test("refuses a validate command without the %s placeholder", () => {
    const { failures } = checkInputs("RemoteFile", { ...base, validate: "sshd -t" });
    assert.equal(failures[0]?.property, "validate");
  });
});

describe("diff", () => {
  const olds = { ...checked(), sha256: "x", previousBackup: null };

  test("no change gives no diff", () => {
    assert.deepEqual(planDiff("RemoteFile", olds, checked()), {
      changes: false,
      replaces: [],
      deleteBeforeReplace: false,
      changed: [],
      classes: {},
    });
  });

  test("a content change is an in-place update", () => {
    const d = planDiff("RemoteFile", olds, checked({ content: "bye\n" }));
    assert.deepEqual([d.changes, d.replaces, d.changed], [true, [], ["content"]]);
  });

  test("a new path replaces the file, deleting the old one first", () => {
    const d = planDiff("RemoteFile", olds, checked({ path: "/etc/issue" }));
    assert.deepEqual([d.replaces, d.deleteBeforeReplace], [["path"], true]);
  });

  test("how the host is reached (its address, port or credentials) is only ever an update, never a replacement", () => {
    const host = planDiff(
      "RemoteFile",
      olds,
      checked({ connection: { host: "dom0.example.org", hostKey: hostFp } }),
    );
    assert.deepEqual([host.changes, host.replaces, host.changed], [true, [], ["connection"]]);
    const port = planDiff(
      "RemoteFile",
      olds,
      checked({ connection: { host: "dom0", port: 2222, hostKey: hostFp } }),
    );
    assert.deepEqual([port.changes, port.replaces], [true, []]);
    const creds = planDiff("RemoteFile", olds, checked({ credentials: { password: "new-password" } }));
    assert.deepEqual([creds.changes, creds.replaces, creds.changed], [true, [], ["credentials"]]);
  });

  test("a new library version shows as an update and replaces nothing", () => {
    const d = planDiff("RemoteFile", olds, checked({ xenEstateVersion: "99.0.0" }));
    assert.deepEqual([d.changes, d.replaces, d.changed], [true, [], ["xenEstateVersion"]]);
  });

  test("output-only properties never cause a diff", () => {
    assert.equal(planDiff("RemoteFile", { ...olds, sha256: "other" }, checked()).changes, false);
  });
});

describe("the serialized provider", () => {
  test("captures nothing but the kind's name and requires the package by name", () => {
    const p = providerFor("RemoteFile");
    for (const fn of [p.check, p.diff, p.create, p.read, p.update, p.delete]) {
      const src = String(fn);
      assert.match(src, /require\("xen-estate"\)\.runtime\.\w+\(kind/);
      assert.doesNotMatch(src, /ssh2|handlebars|privateKey/);
    }
  });
});
