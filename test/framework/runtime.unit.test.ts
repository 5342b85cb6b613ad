/**
 * The runtime's own rules, against a simulated host: the machine a resource lives on is what identifies its host
 * (not its address), and a read without state says how to take an object over.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { runtime, setSharedPool, SshPool, VERSION } from "../../provider";
import { checked } from "../support/checked";
import { fakeHost, type FakeHost } from "../support/fake-host";
import { fixtureKeys } from "../support/fixture-keys";

const connection = { host: "dom0", hostKey: fixtureKeys.hostFingerprint };

/** Routes the runtime's hosts to `fake`. */
function useFake(fake: FakeHost): void {
  setSharedPool({ host: () => fake.ctx.host } as unknown as SshPool);
}

after(() => setSharedPool(undefined));

const file = () => ({
  ...checked("RemoteFile", { connection, xenEstateVersion: VERSION, path: "/etc/motd", content: "hi\n" }),
  sha256: "x",
  previousBackup: null,
});

describe("which machine a resource lives on", () => {
  test("create records the machine id of the host it made the resource on", async () => {
    const fake = fakeHost([
      { match: /read the machine id/, answer: "machine-id:aaaa\n" },
      { match: /write \/etc\/motd/, answer: "changed  \n" },
    ]);
    useFake(fake);
    const r = await runtime.create("RemoteFile", file());
    assert.equal((r.outs as Record<string, unknown>).hostId, "machine-id:aaaa");
  });

  test("an update that reaches another machine refuses and changes nothing there", async () => {
    const fake = fakeHost([{ match: /read the machine id/, answer: "machine-id:bbbb\n" }]);
    useFake(fake);
    const olds = { ...file(), hostId: "machine-id:aaaa" };
    const news = checked("RemoteFile", {
      connection: { ...connection, host: "dom0.example.org" },
      xenEstateVersion: VERSION,
      path: "/etc/motd",
      content: "new\n",
    });
    await assert.rejects(
      runtime.update("RemoteFile", "dom0:/etc/motd", olds, news),
      /was made on the machine machine-id:aaaa, but dom0\.example\.org is machine-id:bbbb: refusing to act on another machine/,
    );
    assert.deepEqual(fake.summaries, ["read the machine id"], "nothing but the identity was asked");
  });

  test("reaching the same machine by another name is an ordinary update", async () => {
    const fake = fakeHost([
      { match: /read the machine id/, answer: "machine-id:aaaa\n" },
      { match: /write \/etc\/motd/, answer: "changed  \n" },
    ]);
    useFake(fake);
    const olds = { ...file(), hostId: "machine-id:aaaa" };
    const news = checked("RemoteFile", {
      connection: { ...connection, host: "dom0.example.org" },
      xenEstateVersion: VERSION,
      path: "/etc/motd",
      content: "new\n",
    });
    const r = await runtime.update("RemoteFile", "dom0:/etc/motd", olds, news);
    assert.equal((r.outs as Record<string, unknown>).hostId, "machine-id:aaaa");
  });
});

describe("a create that fails half way", () => {
  test("records what it made with the serialized provider, so refresh and destroy can load it before the next up", async () => {
    const fake = fakeHost([
      { match: /read the machine id/, answer: "machine-id:aaaa\n" },
      { match: /write \/etc\/motd/, answer: "changed  \n" },
      { match: /reload/, answer: 1 },
    ]);
    useFake(fake);
    const inputs = {
      ...checked("RemoteFile", {
        connection,
        xenEstateVersion: VERSION,
        path: "/etc/motd",
        content: "hi\n",
        reloadCommand: "systemctl reload motd",
      }),
      __provider: "serialized provider",
    };
    const err = await runtime.create("RemoteFile", inputs).then(
      () => assert.fail("the create succeeded"),
      (e: unknown) => e as { id?: string; properties?: Record<string, unknown> },
    );
    assert.equal(err.id, "dom0:/etc/motd");
    assert.equal(err.properties?.sha256, null, "its reload is still owed");
    assert.equal(err.properties?.__provider, "serialized provider");
  });
});

describe("read without state", () => {
  test("answers with an error that names adopt as the way to take over an existing object", async () => {
    for (const props of [{}, undefined]) {
      await assert.rejects(
        runtime.read("LvmVolume", "dom0:/dev/vg0/x", props as unknown as Record<string, unknown>),
        /LvmVolume cannot be imported or read without its state .*`adopt: true`/s,
      );
    }
  });
});
