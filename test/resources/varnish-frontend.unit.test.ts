/**
 * VarnishFrontend planning: what `check` refuses, what it renders, and how host names become VCL conditions.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  checkInputs,
  hostCondition,
  planDiff,
  sha256,
  VARNISH_DROP_IN,
  VARNISHNCSA_DROP_IN,
  VARNISH_VCL,
  varnishFrontendKind,
  VERSION,
} from "../../provider";
import type { VarnishFrontendInputs, VarnishFrontendOutputs } from "../../provider";
import { spawnSync } from "node:child_process";
import {
  dropInDigest,
  vclDigest,
  waitServingScript,
} from "../../provider/resources/varnish-frontend/scripts";
import { shellSplices } from "../support/quoting";
import { fakeHost, fakeVarnishHost } from "../support/fake-host";
import { fixtureKeys } from "../support/fixture-keys";

const common = {
  connection: { host: "dom0", hostKey: fixtureKeys.hostFingerprint },
  xenEstateVersion: VERSION,
};
const site = { hostnames: ["app1.example.org"], backend: "10.0.0.5" };

function failing(raw: Record<string, unknown>): string[] {
  return checkInputs("VarnishFrontend", { ...common, ...raw }).failures.map((f) => f.property);
}

function files(raw: Record<string, unknown>): Record<string, string> {
  const { inputs, failures } = checkInputs("VarnishFrontend", { ...common, ...raw });
  assert.deepEqual(
    failures.map((f) => f.message),
    [],
  );
  return (inputs as { files: Record<string, string> }).files;
}

describe("VarnishFrontend checks", () => {
  const bad: [string, Record<string, unknown>, string[]][] = [
    ["no sites", { sites: [] }, ["sites"]],
    [
      "a site without host names",
      { sites: [{ hostnames: [], backend: "10.0.0.5" }] },
      ["sites[0].hostnames"],
    ],
    [
      "a host name with a space",
      { sites: [{ ...site, hostnames: ["app 1.example.org"] }] },
      ["sites[0].hostnames[0]"],
    ],
    [
      "a host name with a quote (VCL injection)",
      { sites: [{ ...site, hostnames: ['a.org" || true || "'] }] },
      ["sites[0].hostnames[0]"],
    ],
    ["a bare TLD-less name", { sites: [{ ...site, hostnames: ["localhost"] }] }, ["sites[0].hostnames[0]"]],
    [
      "a wildcard in the middle",
      { sites: [{ ...site, hostnames: ["a.*.example.org"] }] },
      ["sites[0].hostnames[0]"],
    ],
    [
      "one host name in two sites",
      { sites: [site, { hostnames: ["APP1.example.org"], backend: "10.0.0.6" }] },
      ["sites[1].hostnames[0]"],
    ],
    ["a backend that is a name", { sites: [{ ...site, backend: "app1.internal" }] }, ["sites[0].backend"]],
    [
      "a backend port out of range",
      { sites: [{ ...site, backend: "10.0.0.5:70000" }] },
      ["sites[0].backend"],
    ],
    [
      "a probe path with a quote",
      { sites: [{ ...site, healthCheck: { path: '/"x' } }] },
      ["sites[0].healthCheck.path"],
    ],
    [
      "a probe timeout longer than its interval",
      { sites: [{ ...site, healthCheck: { intervalSeconds: 2, timeoutSeconds: 5 } }] },
      ["sites[0].healthCheck.timeoutSeconds"],
    ],
    ["a listen address without a port", { sites: [site], listen: ["0.0.0.0"] }, ["listen[0]"]],
    ["a listen address that is a name", { sites: [site], listen: ["example.org:80"] }, ["listen[0]"]],
    ["a cache size without a unit that is too small", { sites: [site], cacheSize: "1MiB" }, ["cacheSize"]],
    ["a cache size that is not a size", { sites: [site], cacheSize: "lots" }, ["cacheSize"]],
  ];
  for (const [what, raw, props] of bad) test(`reject ${what}`, () => assert.deepEqual(failing(raw), props));

  test("defaults: listen on :80, 256 MiB of cache, a health check on / every 5 s, keep 2 old VCLs", () => {
    const f = files({ sites: [site] });
    assert.match(f[VARNISH_DROP_IN]!, / -a :80 -T localhost:6082 .* -s malloc,256m\n/);
    assert.match(f[VARNISH_DROP_IN]!, /varnishreload -m 2\n/);
    assert.match(f[VARNISH_VCL]!, /probe site0_probe \{\n\s+\.url = "\/";\n\s+\.interval = 5s;/);
  });

  test("host names are compared lower-case; a wildcard matches subdomains with its dots escaped", () => {
    assert.equal(
      hostCondition(["app1.example.org", "*.shop.example"]),
      'req.http.Host == "app1.example.org" || req.http.Host ~ "\\.shop\\.example$"',
    );
    assert.match(
      files({ sites: [{ ...site, hostnames: ["App1.Example.org"] }] })[VARNISH_VCL]!,
      /== "app1\.example\.org"/,
    );
  });
});

describe("VarnishFrontend changes", () => {
  const olds = () => {
    const { inputs } = checkInputs("VarnishFrontend", { ...common, sites: [site] });
    return { ...inputs, activeVcl: "boot" } as Record<string, unknown>;
  };

  test("a new site is an update that changes only the VCL, never a replacement", () => {
    const news = checkInputs("VarnishFrontend", {
      ...common,
      sites: [site, { hostnames: ["b.example.org"], backend: "10.0.0.6:8080" }],
    }).inputs!;
    const before = olds();
    const d = planDiff("VarnishFrontend", before, news);
    assert.deepEqual([d.changes, d.replaces, d.changed], [true, [], ["files", "sites"]]);
    const [was, now] = [before.files, news.files] as Record<string, string>[];
    assert.notEqual(now![VARNISH_VCL], was![VARNISH_VCL]);
    assert.equal(now![VARNISH_DROP_IN], was![VARNISH_DROP_IN], "the service is reloaded, not restarted");
  });

  test("reaching the host another way is an update, never a replacement", () => {
    const news = checkInputs("VarnishFrontend", {
      ...common,
      connection: { ...common.connection, host: "dom1" },
      sites: [site],
    }).inputs!;
    const d = planDiff("VarnishFrontend", olds(), news);
    assert.deepEqual([d.changes, d.replaces], [true, []]);
  });
});

describe("loads and restarts that are owed", () => {
  const inputs = () =>
    checkInputs("VarnishFrontend", { ...common, sites: [site] }).inputs as unknown as VarnishFrontendInputs;
  const applied = (): VarnishFrontendOutputs => {
    const i = inputs();
    return {
      ...i,
      activeVcl: "boot",
      loadedVcl: vclDigest(i.files[VARNISH_VCL]!),
      appliedDropIn: dropInDigest(i.files[VARNISH_DROP_IN]!),
    };
  };
  const host = (runningSource: string) => fakeVarnishHost(runningSource);

  test("a load that did not happen last time is done now, though the file is already written", async () => {
    const h = host(inputs().files[VARNISH_VCL]!);
    await varnishFrontendKind.update(h.ctx, "id", { ...applied(), loadedVcl: null }, inputs(), {
      changed: [],
      replaces: [],
      classes: {},
    });
    assert.ok(h.summaries.includes("load and use the new VCL"));
    assert.ok(!h.summaries.includes("restart varnish"));
  });

  test("a create whose connection is lost while it writes has already recorded the frontend, so the next up updates it instead of refusing its own VCL", async () => {
    // Found by the cut-connection matrix (varnish-frontend.cuts.ssh.test.ts): the VCL written, the answer lost.
    const h = fakeHost([
      { match: /look for varnishd/, answer: "yes\n" },
      { match: /stat 1 file/, answer: "absent\n" },
      { match: /write \//, answer: 255 },
    ]);
    let recorded: Partial<VarnishFrontendOutputs> | undefined;
    await assert.rejects(varnishFrontendKind.create(h.ctx, inputs(), (p) => (recorded = p)));
    assert.ok(
      h.summaries.some((s) => s.startsWith("write ")),
      "the write was tried",
    );
    assert.deepEqual(recorded, { activeVcl: null, loadedVcl: null, appliedDropIn: null });
  });

  test("a restart owed after a half-made create is done by the next up", async () => {
    const h = host(inputs().files[VARNISH_VCL]!);
    await varnishFrontendKind.update(h.ctx, "id", { ...applied(), appliedDropIn: null }, inputs(), {
      changed: [],
      replaces: [],
      classes: {},
    });
    assert.ok(h.summaries.includes("restart varnish"));
  });

  test("refresh reports a varnishd that runs another VCL than the file's, so the next up loads it", async () => {
    const i = applied();
    const stale = fakeHost([
      {
        match: /stat 3 file/,
        answer: [VARNISH_VCL, VARNISH_DROP_IN, VARNISHNCSA_DROP_IN]
          .map((f) => `file ${sha256(i.files[f]!)} root root 644\n`)
          .join(""),
      },
      {
        match: /which VCL varnish runs/,
        answer: `service active\nactive boot\nactive-sha ${vclDigest("vcl 4.1; # older")}\n`,
      },
    ]);
    const read = await varnishFrontendKind.read(stale.ctx, "id", i);
    assert.equal(read?.vclLoaded, false);
    assert.ok(
      planDiff(
        "VarnishFrontend",
        read as unknown as Record<string, unknown>,
        inputs() as unknown as Record<string, unknown>,
      ).changed.includes("vclLoaded"),
    );
  });

  test("an upgrade of the library alone rewrites no file and restarts nothing", async () => {
    const h = host(inputs().files[VARNISH_VCL]!);
    const upgraded = { ...inputs(), xenEstateVersion: "99.0.0" };
    assert.doesNotMatch(upgraded.files[VARNISH_DROP_IN]!, new RegExp(VERSION.replace(/\./g, "\\.")));
    await varnishFrontendKind.update(h.ctx, "id", applied(), upgraded, {
      changed: ["xenEstateVersion"],
      replaces: [],
      classes: {},
    });
    assert.ok(!h.summaries.includes("restart varnish"));
    assert.ok(!h.summaries.includes("load and use the new VCL"));
  });
});

describe("the serving check's script", () => {
  test("holds site names, ids and the listen address as quoted words, even values check would refuse", () => {
    const name = `app.example.org$(touch /tmp/xe-x)"`;
    const id = `site0";x`;
    const listen = `10.0.0.1'$(y):80`;
    const script = waitServingScript([{ id, hostnames: [name], probe: {} }], listen, 30);
    assert.equal(spawnSync("bash", ["-n"], { input: script }).status, 0);
    for (const v of [name, id, "10.0.0.1'$(y)"]) assert.deepEqual(shellSplices(script, v), [], v);
  });
});
