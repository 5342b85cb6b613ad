/**
 * "Could not look" is never "not there": the probes that decide whether a guest runs or which VCL Varnish runs,
 * run by a real sshd with xl, systemctl and varnishadm simulated by stub commands (test/support/stub-commands.ts;
 * the lab suite runs the real tools), fail when their tool fails instead of answering "absent".
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { RemoteCommandError } from "../../provider";
import type { Context, RemoteHost, SshPool } from "../../provider";
import { domainState } from "../../provider/guest/domain";
import { activeVclScript } from "../../provider/resources/varnish-frontend/scripts";
import { startLocalHost, type Sshd } from "../support/sshd";
import { stubbedContext, type Stub } from "../support/stub-commands";

let sshd: Sshd;
let pool: SshPool;
let host: RemoteHost;
let dir: string;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-probes-ssh-"));
  ({ sshd, pool, host } = await startLocalHost(dir));
});

after(async () => {
  await pool.close();
  await sshd.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

function ctxWith(stubs: Record<string, Stub>): Context {
  return stubbedContext(host, dir, stubs);
}

describe("whether a guest runs", () => {
  test("xl list failing (xenstored down) is an error naming the guest, not a guest that is not running", async () => {
    const ctx = ctxWith({ xl: { stderr: "libxl: error: cannot connect to xenstored\n", exit: 1 } });
    await assert.rejects(domainState(ctx, "web1"), (e: unknown) => {
      assert.ok(e instanceof RemoteCommandError, String(e));
      assert.match(e.message, /xl list failed, so whether\s+web1\s+runs is not known/);
      return true;
    });
  });

  test("xl list answering without the guest means it does not run", async () => {
    const ctx = ctxWith({
      xl: { stdout: "Name ID Mem VCPUs State Time(s)\nDomain-0 0 1024 2 r----- 10.0\n" },
    });
    assert.equal(await domainState(ctx, "web1"), null);
  });

  test("xl list listing the guest gives its domain id", async () => {
    const ctx = ctxWith({
      xl: {
        stdout: "Name ID Mem VCPUs State Time(s)\nDomain-0 0 1024 2 r----- 10.0\nweb1 7 512 1 -b---- 1.0\n",
      },
    });
    assert.equal(await domainState(ctx, "web1"), 7);
  });
});

describe("which VCL Varnish runs", () => {
  test("a running varnish whose varnishadm fails is an error, not a Varnish with no VCL loaded", async () => {
    const ctx = ctxWith({
      systemctl: {},
      varnishadm: { stderr: "Could not connect to varnishd\n", exit: 1 },
    });
    await assert.rejects(ctx.host.script(activeVclScript()), (e: unknown) => {
      assert.ok(e instanceof RemoteCommandError, String(e));
      assert.match(e.message, /varnish.service is active but varnishadm vcl.list failed/);
      return true;
    });
  });

  test("a running varnish names its active VCL and the digest of its source", async () => {
    const ctx = ctxWith({
      systemctl: {},
      varnishadm: { stdout: "active      auto    warm         0    xen_estate_1\n" },
    });
    const out = (await ctx.host.script(activeVclScript())).stdout;
    assert.match(out, /^service active\nactive xen_estate_1\nactive-sha [0-9a-f]{64}\n$/);
  });

  test("a stopped varnish is reported inactive without asking varnishadm", async () => {
    const ctx = ctxWith({ systemctl: { exit: 3 }, varnishadm: { exit: 1 } });
    assert.equal((await ctx.host.script(activeVclScript())).stdout, "service inactive\n");
  });
});
