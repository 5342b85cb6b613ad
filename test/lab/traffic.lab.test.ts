/**
 * Traffic through changes (issue 15 item 3): while a client on the lab dom0 asks Varnish for every site's names a few
 * times a second, one program (test/lab/fixtures/nat-guests: busybox NAT guests, a VarnishFrontend routing
 * `nat<i>.<domain>` to guest i) adds a site with its guest, adds a name to every site, tries a change whose VCL does
 * not compile (the compiler made to fail: a valid declaration cannot produce one), removes a site with its guest, and
 * a backend guest is restarted under it. Every request gets an answer from Varnish, never a refused or timed-out
 * connection; a site that exists before and after a change answers 200 throughout it; a site `up` made answers 200
 * from the moment `up` returns; a removed site answers 200 until the new VCL is active and 404 after, never 503; the
 * failed change leaves the active VCL as it was; a restarted backend's site answers 200 or 503 while it is down and
 * 200 again after. Real engine, real varnishd and Xen on the lab dom0.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  createStack,
  kindOps,
  repoRoot,
  resourceChanges,
  type PulumiStack,
  type RunResult,
} from "../engine/harness";
import { slowTier } from "../support/tier";
import type { Lab } from "./lab";
import { labMachine } from "./shared";

slowTier(
  "test/examples/walkthrough.lab.test.ts adds a host name to its frontend under traffic on every run (no failed request, varnishd reloaded, not restarted), and test/resources/varnish-frontend.ssh.test.ts proves on a real varnishd that a VCL that does not compile never replaces the one in place and that a frontend waits until its sites serve; this file adds, changes and removes sites, fails a change's compile and restarts a backend under traffic",
);

const machine = labMachine("dom0");
/** The names the client asks for, every round: three sites' own and the first site's alias. */
const NAMES = ["nat1.t.test", "nat2.t.test", "nat3.t.test", "nat1.v.test"] as const;
type Name = (typeof NAMES)[number];
/** The client: a transient unit on the dom0, one line per request (`<epoch seconds> <name> <HTTP code>`). */
const CLIENT = { unit: "xe-traffic", log: "/run/xe-traffic.log" };
/** Where Varnish's compiler finds vmod std (Debian 12, Varnish 7.1); hidden to make a compile fail. */
const VMOD_STD = "/usr/lib/x86_64-linux-gnu/varnish/vmods/libvmod_std.so";

interface Answer {
  at: number;
  name: Name;
  code: string;
}

describe("traffic through changes to a VarnishFrontend and its guests", { timeout: 60 * 60_000 }, () => {
  let lab: Lab;
  let stack: PulumiStack;
  let logDaemonRan = true;

  /** The dom0's clock, in seconds (the client's timestamps are its). */
  const now = async (): Promise<number> => Number((await lab.ssh("date +%s.%N")).trim());
  /** Every answer the client logged. */
  const answers = async (): Promise<Answer[]> =>
    (await lab.ssh(`cat ${CLIENT.log}`))
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => {
        const [at, name, code] = l.trim().split(" ");
        return { at: Number(at), name: name as Name, code: code! };
      });
  /** The codes `name` got between `from` and `to` (dom0 seconds). */
  const codes = (all: Answer[], name: Name, from: number, to: number): string[] =>
    all.filter((a) => a.name === name && a.at >= from && a.at <= to).map((a) => a.code);
  /** Runs `change` between two readings of the dom0's clock. */
  const during = async <R>(change: () => Promise<R>): Promise<{ from: number; to: number; result: R }> => {
    const from = await now();
    const result = await change();
    const to = await now();
    return { from, to, result };
  };
  /** The name of the VCL varnishd has active. */
  const activeVcl = async (): Promise<string> =>
    (await lab.ssh("varnishadm vcl.list | awk '$1 == \"active\" { print $NF }'")).trim();
  const only = (list: string[], allowed: string[]): string[] => list.filter((c) => !allowed.includes(c));

  before(async () => {
    lab = await machine.acquire();
    logDaemonRan = (await lab.ssh("systemctl is-active varnishncsa.service || true")).trim() === "active";
    stack = await createStack({
      programDir: `${repoRoot()}/test/lab/fixtures/nat-guests`,
      linkPackage: true,
      timeoutMs: 30 * 60_000,
      config: {
        ...lab.stackConfig(),
        count: { value: "2" },
        siteDomain: { value: "t.test" },
        aliasDomain: { value: "" },
      },
    });
    const up = await stack.up();
    assert.deepEqual(kindOps(up), [
      "LvmVolume create",
      "LvmVolume create",
      "NatDomU create",
      "NatDomU create",
      "VarnishFrontend create",
    ]);
    await lab.ssh(
      [
        `cat > /run/xe-traffic.sh <<'XE'`,
        `while :; do`,
        `  for h in ${NAMES.join(" ")}; do`,
        `    c=$(curl -s -o /dev/null -w '%{http_code}' -m 30 -H "Host: $h" http://127.0.0.1/ || true)`,
        `    echo "$(date +%s.%N) $h \${c:-000}"`,
        `  done`,
        `  sleep 0.2`,
        `done`,
        `XE`,
        `systemd-run --quiet --unit=${CLIENT.unit} bash -c 'exec bash /run/xe-traffic.sh >> ${CLIENT.log}'`,
      ].join("\n"),
    );
  });

  after(async () => {
    try {
      await lab?.ssh(
        [
          `systemctl stop ${CLIENT.unit}.service 2>/dev/null || true`,
          `rm -f /run/xe-traffic.sh ${CLIENT.log}`,
          `if mountpoint -q ${VMOD_STD}; then umount ${VMOD_STD}; fi`,
        ].join("\n"),
      );
      if (stack) await stack.destroy().catch((e: Error) => console.log(`# ${e.message.split("\n")[0]}`));
      await stack?.remove();
      // As load.lab.test.ts: a VarnishFrontend starts the access log daemon the image has stopped.
      if (lab && !logDaemonRan) await lab.ssh("systemctl stop varnishncsa.service");
    } finally {
      await machine.release();
    }
  });

  test("a site added with its guest: the others answer 200 throughout, the new one 200 as soon as up returns", async () => {
    await stack.setConfig("count", "3");
    const { from, to } = await during(() => stack.up());
    await new Promise((r) => setTimeout(r, 3000));
    const all = await answers();
    for (const n of ["nat1.t.test", "nat2.t.test"] as const)
      assert.deepEqual(only(codes(all, n, from, to), ["200"]), [], n);
    const after = codes(all, "nat3.t.test", to, Infinity);
    assert.ok(after.length > 0, "the client asked for the new site after up returned");
    assert.deepEqual(only(after, ["200"]), [], "the new site serves from the moment up returns");
    assert.deepEqual(only(codes(all, "nat3.t.test", 0, from), ["404"]), [], "unknown before: 404");
  });

  test("a name added to every site: their names answer 200 throughout, the new name 200 as soon as up returns", async () => {
    const vclBefore = await activeVcl();
    await stack.setConfig("aliasDomain", "v.test");
    const { from, to, result } = await during(() => stack.up());
    assert.deepEqual(kindOps(result), ["VarnishFrontend update"]);
    await new Promise((r) => setTimeout(r, 3000));
    const all = await answers();
    for (const n of ["nat1.t.test", "nat2.t.test", "nat3.t.test"] as const)
      assert.deepEqual(only(codes(all, n, from, to), ["200"]), [], n);
    assert.deepEqual(only(codes(all, "nat1.v.test", to, Infinity), ["200"]), []);
    assert.notEqual(await activeVcl(), vclBefore, "a new VCL is active");
  });

  test("a change whose VCL does not compile fails up and leaves the active VCL serving every site as before", async () => {
    const vclBefore = await activeVcl();
    await lab.ssh(`: > /run/xe-empty-vmod && mount --bind /run/xe-empty-vmod ${VMOD_STD}`);
    let attempt: { from: number; to: number; result: RunResult };
    try {
      await stack.setConfig("aliasDomain", "");
      attempt = await during(() => stack.up({ expectFailure: true }));
    } finally {
      await lab.ssh(`umount ${VMOD_STD} && rm -f /run/xe-empty-vmod`);
    }
    const { from, to, result: failed } = attempt;
    assert.notEqual(failed.code, 0);
    assert.match(`${failed.stdout}\n${failed.stderr}`, /libvmod_std\.so/, "the compiler's message is shown");
    assert.equal(await activeVcl(), vclBefore, "the active VCL is the one before");
    const all = await answers();
    for (const n of NAMES) assert.deepEqual(only(codes(all, n, from, to + 2), ["200"]), [], n);
  });

  test("a site removed with its guest: the others answer 200 throughout, the removed one 200 and then 404, never 503", async () => {
    await stack.setConfig("count", "2");
    const { from, to, result } = await during(() => stack.up());
    assert.deepEqual(kindOps(result), ["LvmVolume delete", "NatDomU delete", "VarnishFrontend update"]);
    await new Promise((r) => setTimeout(r, 3000));
    const all = await answers();
    for (const n of ["nat1.t.test", "nat2.t.test"] as const)
      assert.deepEqual(only(codes(all, n, from, to), ["200"]), [], n);
    for (const n of ["nat3.t.test", "nat1.v.test"] as const) {
      const seen = codes(all, n, from, Infinity);
      assert.deepEqual(only(seen, ["200", "404"]), [], `${n}: ${seen.join(" ")}`);
      const first404 = seen.indexOf("404");
      assert.ok(first404 >= 0, `${n} is gone`);
      assert.deepEqual(only(seen.slice(first404), ["404"]), [], `${n}: 404 once gone: ${seen.join(" ")}`);
    }
  });

  test("a backend restarted: its site answers 200 or 503 meanwhile and 200 again, the other 200 throughout", async () => {
    const from = await now();
    await lab.ssh("xl destroy nat2 && xl create -q /etc/xen/nat2.cfg");
    let back = 0;
    for (let i = 0; i < 120 && back === 0; i++) {
      await new Promise((r) => setTimeout(r, 2000));
      const recent = codes(await answers(), "nat2.t.test", from, Infinity);
      if (recent.length > 3 && recent.slice(-3).every((c) => c === "200")) back = await now();
    }
    assert.ok(back > 0, "nat2's site answers 200 again within 4 minutes");
    const all = await answers();
    assert.deepEqual(only(codes(all, "nat2.t.test", from, back), ["200", "503"]), []);
    assert.deepEqual(only(codes(all, "nat1.t.test", from, back), ["200"]), []);
  });

  test("no request went unanswered at any time, and a last up changes nothing", async () => {
    const all = await answers();
    assert.ok(all.length > 100, `${all.length} requests`);
    const unanswered = all.filter((a) => a.code === "000");
    assert.deepEqual(
      unanswered.slice(0, 5),
      [],
      `${unanswered.length} of ${all.length} requests got no answer`,
    );
    const up = await stack.up();
    assert.deepEqual(resourceChanges(up), []);
  });
});
