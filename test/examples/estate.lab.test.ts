/**
 * The example estate (examples/estate: two volumes, a bridged and a NAT guest, Varnish in front of the NAT guest)
 * through the real Pulumi engine against the lab's real Xen 4.17 dom0: up, idempotence without remote writes,
 * offline preview, growing a volume under a running guest, live memory, a Varnish reload under traffic, drift after
 * `xl destroy`, and a destroy that leaves nothing behind.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createStack, diagnostics, repoRoot, resourceChanges, type PulumiStack } from "../engine/harness";
import { Lab } from "../lab/lab";
import { labMachine } from "../lab/shared";
import { httpGet } from "../support/http";

const LV = "pulumi-nodejs:dynamic/xen-estate:LvmVolume";
const NAT = "pulumi-nodejs:dynamic/xen-estate:NatDomU";
const BRIDGED = "pulumi-nodejs:dynamic/xen-estate:BridgedDomU";
const VARNISH = "pulumi-nodejs:dynamic/xen-estate:VarnishFrontend";
const MiB = 2 ** 20;
const machine = labMachine("dom0");

describe("the example estate on the lab dom0", { timeout: 50 * 60 * 1000 }, () => {
  let lab: Lab;
  let stack: PulumiStack;

  /** `xl list` as name → { id, mem, state }. */
  async function domains(): Promise<Map<string, { id: number; mem: number; state: string }>> {
    const out = await lab.ssh("xl list | tail -n +2");
    const map = new Map<string, { id: number; mem: number; state: string }>();
    for (const line of out.trim().split("\n")) {
      const [name, id, mem, , state] = line.trim().split(/\s+/);
      if (name) map.set(name, { id: Number(id), mem: Number(mem), state: state ?? "" });
    }
    return map;
  }

  /** Inode and mtime of every file the estate writes on the dom0, and the backups made so far. */
  function fingerprint(): Promise<string> {
    return lab.ssh(
      "stat -c '%n %i %Y' /etc/xen/web1.cfg /etc/xen/app1.cfg /etc/xen/xen-estate-nat.conf /etc/xen/scripts/vif-xen-estate-nat /etc/varnish/xen-estate.vcl /etc/systemd/system/varnish.service.d/xen-estate.conf; find /var/backups/xen-estate -type f 2>/dev/null | sort",
    );
  }

  /** GET / through the dom0's port 80 (Varnish) with this Host header: "STATUS body", or "error …". */
  const viaFrontend = (host: string): Promise<string> => httpGet(lab.httpPort, host);

  before(async () => {
    lab = await machine.acquire();
    stack = await createStack({
      programDir: repoRoot(),
      linkPackage: true,
      config: {
        ...lab.stackConfig(),
      },
    });
  });

  after(async () => {
    try {
      await stack?.remove();
    } finally {
      await machine.release();
    }
  });

  test("up makes both volumes and starts both guests, each answering on its network", async () => {
    const up = await stack.up();
    assert.deepEqual(
      resourceChanges(up)
        .filter((s) => s.type !== "xen-estate:components:XenGuest")
        .map((s) => [s.type, s.op])
        .sort(),
      [
        [BRIDGED, "create"],
        [LV, "create"],
        [LV, "create"],
        [NAT, "create"],
        [VARNISH, "create"],
      ],
    );
    const doms = await domains();
    assert.match(doms.get("web1")?.state ?? "", /^[-rbp]{6}$/);
    assert.match(doms.get("app1")?.state ?? "", /^[-rbp]{6}$/);
    assert.match(await lab.ssh("lvs --noheadings -o lv_name vg0"), /app1-root[\s\S]*web1-root/);
    assert.match(await lab.ssh("curl -fsS --max-time 10 http://10.99.0.10/"), /xen-estate-kit ok name=web1/);
    // app1 was installed from the image and boots its own kernel and userland from its volume through pvgrub2.
    assert.match(await lab.ssh("grep '^kernel' /etc/xen/app1.cfg"), /grub-x86_64-xen\.bin/);
    assert.match(await lab.ssh("curl -fsS --max-time 10 http://10.0.0.5/"), /xen-estate-image ok name=app1/);
    assert.match(
      await lab.ssh("iptables -t nat -S POSTROUTING"),
      /-s 10\.0\.0\.0\/24 ! -d 10\.0\.0\.0\/24 .*xen-estate-nat -j MASQUERADE/,
    );
    assert.match(
      await lab.ssh("readlink /etc/xen/auto/web1.cfg /etc/xen/auto/app1.cfg"),
      /web1\.cfg\n\/etc\/xen\/app1\.cfg/,
    );
  });

  test("Varnish on the dom0 passes a request to the NAT guest its Host header names, and refuses other hosts", async () => {
    assert.equal(await viaFrontend("app1.estate.test"), "200 xen-estate-image ok name=app1");
    assert.equal(await viaFrontend("APP1.estate.test:80"), "200 xen-estate-image ok name=app1");
    assert.match(await viaFrontend("web1.estate.test"), /^404 /);
  });

  test("the NAT guest reaches beyond its private network through the dom0's NAT", async () => {
    // 10.0.2.100:3142 is on the dom0's uplink side (the lab's package source); the guest has no other way there.
    assert.match(
      await lab.ssh("curl -fsS --max-time 20 'http://10.0.0.5/cgi-bin/reach?10.0.2.100:3142'"),
      /reach 10\.0\.2\.100:3142 ok/,
    );
    assert.match(await lab.ssh("iptables -t nat -L POSTROUTING -v -n"), /^\s*[1-9]\d*\s+\d+\s+MASQUERADE/m);
  });

  test("a second up reports no changes and writes nothing on the dom0", async () => {
    const before = await fingerprint();
    const up = await stack.up();
    assert.deepEqual(resourceChanges(up), []);
    assert.equal(await fingerprint(), before);
  });

  test("preview plans a change without connecting to the dom0", async () => {
    await stack.setConfig("appMemoryMiB", "224");
    const logins = await lab.acceptedLogins();
    const preview = await stack.preview({ diff: true });
    assert.deepEqual(
      resourceChanges(preview).map((s) => [s.type, s.op]),
      [[NAT, "update"]],
    );
    assert.match(preview.stdout, /memory = 224/, "the diff shows the config file's new line");
    // The count itself logs in once.
    assert.equal(await lab.acceptedLogins(), logins + 1);
  });

  test("changing memory applies live: same domain, new size", async () => {
    const before = (await domains()).get("app1");
    const up = await stack.up();
    assert.deepEqual(
      resourceChanges(up).map((s) => [s.type, s.op]),
      [[NAT, "update"]],
    );
    const now = (await domains()).get("app1");
    assert.equal(now?.id, before?.id, "the guest was not restarted");
    assert.equal(now?.mem, 224);
    assert.match(await lab.ssh("grep '^memory' /etc/xen/app1.cfg"), /memory = 224/);
  });

  test("growing a volume a running guest holds is an in-place update: the LV grows, its filesystem is left to the guest", async () => {
    // web1's guest has its volume attached (not mounted by the busybox kit, but it could mount it at any moment):
    // the host never fscks or resizes a filesystem a guest holds; it grows the LV and says the guest must resize.
    const before = (await domains()).get("web1");
    await stack.setConfig("webRootSize", "96MiB");
    const up = await stack.up();
    assert.deepEqual(
      resourceChanges(up).map((s) => [s.type, s.op]),
      [[LV, "update"]],
    );
    assert.equal(
      Number((await lab.ssh("lvs --noheadings --units b --nosuffix -o lv_size vg0/web1-root")).trim()),
      96 * MiB,
    );
    const sb = await lab.ssh(
      "dumpe2fs -h /dev/vg0/web1-root 2>/dev/null | grep -E '^(Block count|Block size):'",
    );
    const blocks = Number(/Block count:\s+(\d+)/.exec(sb)?.[1]);
    const size = Number(/Block size:\s+(\d+)/.exec(sb)?.[1]);
    assert.equal(blocks * size, 64 * MiB, "the filesystem the guest holds was not touched");
    assert.ok(
      diagnostics(up, "warning").some((d) =>
        /vg0\/web1-root grew, but its filesystem belongs to guest web1: run resize2fs/.test(d.message),
      ),
      JSON.stringify(diagnostics(up, "warning")),
    );
    assert.equal((await domains()).get("web1")?.id, before?.id, "the guest kept running");
  });

  test("adding a host name reloads Varnish under traffic: no request fails, the cache process keeps running", async () => {
    const uptime = async (): Promise<number> =>
      Number((await lab.ssh("varnishstat -1 -f MAIN.uptime | awk '{print $2}'")).trim());
    const before = { uptime: await uptime(), vcl: (await stack.outputs()).frontendVcl };
    await stack.setConfig("appHostnames", "app1.estate.test,www.app1.estate.test");
    const answers: string[] = [];
    let done = false;
    const traffic = (async () => {
      while (!done) answers.push(await viaFrontend("app1.estate.test"));
    })();
    let up: Awaited<ReturnType<PulumiStack["up"]>>;
    try {
      up = await stack.up();
      // Keep asking a little after the switch too.
      await new Promise((r) => setTimeout(r, 3000));
    } finally {
      done = true;
      await traffic;
    }
    assert.deepEqual(
      resourceChanges(up).map((s) => [s.type, s.op]),
      [[VARNISH, "update"]],
    );
    assert.ok(answers.length >= 5, `only ${answers.length} requests were made during the reload`);
    assert.deepEqual(
      answers.filter((a) => a !== "200 xen-estate-image ok name=app1"),
      [],
      `${answers.length} requests`,
    );
    assert.equal(await viaFrontend("www.app1.estate.test"), "200 xen-estate-image ok name=app1");
    assert.ok((await uptime()) >= before.uptime, "varnishd was reloaded, not restarted");
    const after = (await stack.outputs()).frontendVcl;
    assert.notEqual(after, before.vcl);
    assert.match(String(after), /^xen_estate_/);
  });

  test("a guest destroyed out of band shows up in refresh, and the next up starts it again", async () => {
    await lab.ssh("xl destroy web1");
    const refresh = await stack.refresh();
    assert.equal(refresh.changeSummary?.update, 1, JSON.stringify(refresh.changeSummary));
    const up = await stack.up();
    assert.deepEqual(
      resourceChanges(up).map((s) => [s.type, s.op]),
      [[BRIDGED, "update"]],
    );
    assert.match((await domains()).get("web1")?.state ?? "", /^[-rbp]{6}$/);
    assert.match(await lab.ssh("curl -fsS --max-time 10 http://10.99.0.10/"), /name=web1/);
  });

  test("destroy leaves no guests, configs, links, volumes or NAT rules", async () => {
    const destroy = await stack.destroy();
    assert.equal(destroy.code, 0);
    assert.deepEqual([...(await domains()).keys()], ["Domain-0"]);
    assert.equal((await lab.ssh("ls /etc/xen/auto; ls /etc/xen/*.cfg 2>/dev/null || true")).trim(), "");
    assert.equal((await lab.ssh("lvs --noheadings -o lv_name vg0")).trim(), "");
    assert.doesNotMatch(await lab.ssh("iptables-save"), /xen-estate-nat/);
    assert.equal(
      (
        await lab.ssh(
          "ls /etc/varnish/xen-estate.vcl /etc/systemd/system/varnish.service.d/xen-estate.conf 2>/dev/null || true",
        )
      ).trim(),
      "",
    );
    assert.match(
      await viaFrontend("app1.estate.test"),
      /^error /,
      "nothing answers on the dom0's port 80 any more",
    );
    assert.equal(
      (
        await lab.ssh(
          "ls /etc/xen/xen-estate-nat.conf /etc/xen/scripts/vif-xen-estate-nat 2>/dev/null || true",
        )
      ).trim(),
      "",
    );
  });
});
