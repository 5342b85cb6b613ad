/**
 * XenGuest composes its children under Pulumi's runtime mocks: names derived from the component, parent set,
 * the guest wired to its volumes.
 */
import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as pulumi from "@pulumi/pulumi";
import { checkInputs } from "../../provider";

interface Registered {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
}
const registered: Registered[] = [];

before(async () => {
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        registered.push({ type: args.type, name: args.name, inputs: args.inputs as Record<string, unknown> });
        const outs: Record<string, unknown> = { ...(args.inputs as Record<string, unknown>) };
        if (args.type.endsWith(":LvmVolume")) outs.path = `/dev/vg0/${String(outs.name)}`;
        if (args.type.endsWith("DomU")) outs.domid = 7;
        return { id: `${args.name}-id`, state: outs };
      },
      call: () => ({}),
    },
    "xen-estate",
    "test",
    false,
  );
});

function value<T>(o: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => o.apply((v) => resolve(v)));
}

describe("XenGuest", () => {
  test("makes root and swap volumes named after it, and a NAT guest that uses them", async () => {
    const { XenGuest } = await import("../../components");
    const g = new XenGuest("app1", {
      connection: { host: "dom0", insecureIgnoreHostKey: true },
      network: { mode: "nat", ip: "10.0.0.5" },
      rootSize: "2GiB",
      swapSize: "512MiB",
      memoryMiB: 256,
      boot: { kernel: "/boot/vmlinuz" },
    });
    assert.equal(await value(g.rootPath), "/dev/vg0/app1-root");
    assert.equal(await value(g.domid), 7);
    const names = registered.map((r) => [r.type, r.name]);
    assert.deepEqual(names, [
      ["xen-estate:components:XenGuest", "app1"],
      ["pulumi-nodejs:dynamic/xen-estate:LvmVolume", "app1-root"],
      ["pulumi-nodejs:dynamic/xen-estate:LvmVolume", "app1-swap"],
      ["pulumi-nodejs:dynamic/xen-estate:NatDomU", "app1"],
    ]);
    const guest = registered.find((r) => r.type.endsWith("NatDomU"))!;
    assert.deepEqual(guest.inputs.disks, [
      { path: "/dev/vg0/app1-root", vdev: "xvda" },
      { path: "/dev/vg0/app1-swap", vdev: "xvdb" },
    ]);
    assert.equal(registered.find((r) => r.name === "app1-swap")!.inputs.filesystem, "swap");
  });

  test("a bridged guest carries the provider's MAC", async () => {
    registered.length = 0;
    const { XenGuest } = await import("../../components");
    const g = new XenGuest("web1", {
      connection: { host: "dom0", insecureIgnoreHostKey: true },
      network: { mode: "bridged", ip: "203.0.113.10", mac: "00:50:56:00:12:34" },
      rootSize: "2GiB",
      memoryMiB: 256,
      boot: { kernel: "/boot/vmlinuz" },
    });
    await value(g.domid);
    const guest = registered.find((r) => r.type.endsWith("BridgedDomU"))!;
    assert.equal(guest.inputs.mac, "00:50:56:00:12:34");
    assert.equal(
      registered.filter((r) => r.type.endsWith("LvmVolume")).length,
      1,
      "no swap volume without swapSize",
    );
  });

  test("a network mode other than bridged or nat is refused, naming network.mode, before anything is made", async () => {
    registered.length = 0;
    const { XenGuest } = await import("../../components");
    for (const mode of ["Bridged", "natt", "", "$(reboot)"])
      assert.throws(
        () =>
          new XenGuest("bad1", {
            connection: { host: "dom0", insecureIgnoreHostKey: true },
            network: { mode, ip: "10.0.0.9" } as unknown as { mode: "nat"; ip: string },
            rootSize: "2GiB",
            memoryMiB: 256,
            boot: { kernel: "/boot/vmlinuz" },
          }),
        (err: Error) => /`network\.mode` must be one of "bridged", "nat", got /.test(err.message),
        mode,
      );
    assert.deepEqual(registered, []);
  });

  test("a root volume without a filesystem gets no label, so it passes the volume's check", async () => {
    registered.length = 0;
    const { XenGuest } = await import("../../components");
    const g = new XenGuest("mig1", {
      connection: { host: "dom0", insecureIgnoreHostKey: true },
      network: { mode: "nat", ip: "10.0.0.9" },
      rootSize: "2GiB",
      rootFilesystem: "none",
      memoryMiB: 256,
      boot: { bootloader: "pvgrub2" },
    });
    await value(g.domid);
    const root = registered.find((r) => r.name === "mig1-root")!;
    assert.equal(root.inputs.filesystem, "none");
    assert.equal(root.inputs.label, undefined);
    assert.deepEqual(
      checkInputs("LvmVolume", { ...root.inputs, connection: { host: "dom0", insecureIgnoreHostKey: true } })
        .failures,
      [],
    );
  });

  test("every guest argument passes through to the guest, lifecycle actions and running included", async () => {
    registered.length = 0;
    const { XenGuest } = await import("../../components");
    const g = new XenGuest("app2", {
      connection: { host: "dom0", insecureIgnoreHostKey: true },
      network: { mode: "nat", ip: "10.0.0.12" },
      rootSize: "2GiB",
      memoryMiB: 256,
      boot: { kernel: "/boot/vmlinuz" },
      onPoweroff: "preserve",
      onReboot: "destroy",
      running: false,
    });
    await value(g.domid);
    const guest = registered.find((r) => r.type.endsWith("NatDomU"))!;
    assert.deepEqual(
      [guest.inputs.onPoweroff, guest.inputs.onReboot, guest.inputs.running],
      ["preserve", "destroy", false],
    );
  });
});
