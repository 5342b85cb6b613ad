/**
 * The cut-connection matrix's fast tier leaves out the steps that only look at the host and cuts every other one;
 * its table shows which cells were cut, which converged and which steps wait for the slow tier.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { formatCutTable, onlyLooks, type CutResult } from "./cut-matrix";

describe("which steps the fast tier cuts", () => {
  test("steps that read, list, wait or probe only look, as the matrices' own summaries say", () => {
    for (const summary of [
      "look for varnishd",
      "look at vg0/web",
      "stat 1 file(s)",
      "which VCL varnish runs",
      "which address this connection comes from",
      "wait for varnish",
      "wait until every site serves",
      "read the managed list",
      "probe vg0/web",
      "is the guest running",
      "how much the volume group holds",
      "xl list",
    ])
      assert.equal(onlyLooks(summary), true, summary);
  });

  test("steps that write, remove, restart, apply, enable, confirm or install change the host and are cut", () => {
    for (const summary of [
      "write /etc/varnish/xen-estate.vcl",
      "remove /etc/xen-estate/firewall.nft",
      "restart varnish",
      "load and use the new VCL",
      "apply firewall under a 15 s rollback timer",
      "enable the firewall at boot",
      "unload the firewall",
      "confirm sshd on port 2222",
      "install web",
      "reboot into Xen",
      "restore /etc/hosts",
      "xl create /etc/xen/web.cfg",
      "stop web",
      "some step no rule knows",
    ])
      assert.equal(onlyLooks(summary), false, summary);
  });
});

describe("the printed table", () => {
  test("shows each cut's outcome, '-' for ways not cut and '·' for steps left to the slow tier", () => {
    const results: CutResult[] = [
      { operation: "create", step: 1, summary: "look for varnishd", skipped: true },
      {
        operation: "create",
        step: 2,
        summary: "write /etc/varnish/xen-estate.vcl",
        when: "during",
        converged: true,
      },
      {
        operation: "create",
        step: 3,
        summary: "restart varnish",
        when: "during",
        converged: false,
        detail: "x",
      },
    ];
    const lines = formatCutTable("VarnishFrontend", results).split("\n");
    assert.match(lines[0]!, /^cut-connection matrix for VarnishFrontend: /);
    assert.deepEqual(
      lines.slice(1).map((l) => l.trim().split(/\s+/).slice(-3)),
      [
        ["·", "·", "·"],
        ["-", "yes", "-"],
        ["-", "NO", "-"],
      ],
    );
  });
});
