/**
 * NAT guests created at once share one set of NAT pieces on the dom0: the vif script and settings are written once
 * and each iptables rule exists exactly once, however the creates interleave; the pieces stay while any NAT guest
 * is left and go with the last one. Real engine (which creates independent resources in parallel), real Xen.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createSpans, createStack, repoRoot, resourceChanges, type PulumiStack } from "../engine/harness";
import { Lab } from "../lab/lab";
import { labMachine } from "../lab/shared";
import { slowTier } from "../support/tier";

slowTier(
  "test/examples/walkthrough.lab.test.ts creates two NAT guests at once beside the walkthrough's own on every run (each rule once, the shared pieces kept for the one left), puts a flushed NAT back after refresh, and its destroy proves the last guest takes the pieces with it",
);

const NAT = "pulumi-nodejs:dynamic/xen-estate:NatDomU";
const machine = labMachine("dom0");

describe("NAT guests created in parallel on the lab dom0", { timeout: 30 * 60 * 1000 }, () => {
  let lab: Lab;
  let stack: PulumiStack;

  /** How many times each xen-estate NAT rule is in the dom0's ruleset. */
  async function ruleCounts(): Promise<{ masquerade: number; forward: number }> {
    const rules = await lab.ssh("iptables-save | grep -- '--comment xen-estate-nat' || true");
    return {
      masquerade: rules.split("\n").filter((l) => l.includes("-j MASQUERADE")).length,
      forward: rules.split("\n").filter((l) => l.startsWith("-A FORWARD")).length,
    };
  }

  before(async () => {
    lab = await machine.acquire();
    stack = await createStack({
      programDir: `${repoRoot()}/test/lab/fixtures/nat-guests`,
      linkPackage: true,
      config: {
        ...lab.stackConfig(),
        count: { value: "3" },
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

  test("three guests created at once: each answers, and each NAT rule exists exactly once", async () => {
    const up = await stack.up();
    assert.equal(resourceChanges(up).filter((s) => s.type === NAT && s.op === "create").length, 3);
    const spans = createSpans(up.events, NAT);
    assert.equal(spans.length, 3);
    assert.ok(
      Math.max(...spans.map((s) => s[0])) < Math.min(...spans.map((s) => s[1])),
      `the three creates overlapped in time: ${JSON.stringify(spans)}`,
    );
    assert.deepEqual(await ruleCounts(), { masquerade: 1, forward: 2 });
    for (const i of [1, 2, 3])
      assert.match(
        await lab.ssh(`curl -fsS --max-time 10 http://10.0.0.${10 + i}/`),
        new RegExp(`xen-estate-kit ok name=nat${i}`),
      );
    assert.equal((await lab.ssh("ls /etc/xen/scripts/ | grep -c xen-estate-nat")).trim(), "1");
  });

  test("removing two guests keeps the shared NAT pieces for the one left", async () => {
    await stack.setConfig("count", "1");
    const up = await stack.up();
    assert.equal(resourceChanges(up).filter((s) => s.type === NAT && s.op === "delete").length, 2);
    assert.deepEqual(await ruleCounts(), { masquerade: 1, forward: 2 });
    assert.equal(
      (await lab.ssh("ls /etc/xen/xen-estate-nat.conf /etc/xen/scripts/vif-xen-estate-nat | wc -l")).trim(),
      "2",
    );
    assert.match(await lab.ssh("curl -fsS --max-time 10 http://10.0.0.11/"), /name=nat1/);
  });

  test("a firewall tool that flushed the NAT shows up in refresh, and the next up puts it back once", async () => {
    await lab.ssh("iptables -t nat -F POSTROUTING && sysctl -qw net.ipv4.ip_forward=0");
    assert.deepEqual((await ruleCounts()).masquerade, 0);
    const refresh = await stack.refresh();
    assert.equal(refresh.changeSummary?.update, 1, JSON.stringify(refresh.changeSummary));
    const up = await stack.up();
    assert.equal(resourceChanges(up).filter((s) => s.type === NAT && s.op === "update").length, 1);
    assert.deepEqual(await ruleCounts(), { masquerade: 1, forward: 2 });
    assert.equal((await lab.ssh("sysctl -n net.ipv4.ip_forward")).trim(), "1");
    assert.match(await lab.ssh("curl -fsS --max-time 10 http://10.0.0.11/"), /name=nat1/);
  });

  test("the last NAT guest takes the rules, the script and the settings with it", async () => {
    await stack.destroy();
    assert.deepEqual(await ruleCounts(), { masquerade: 0, forward: 0 });
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
