/**
 * The VCL VarnishFrontend renders, run by a real varnishd (Varnish 7.1 from Debian) on this machine in front of two
 * real HTTP backends: routing by Host header, what must not match, and the compile check that keeps a broken VCL
 * out. The service lifecycle (systemd reload without dropped requests) is proven on the lab dom0.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { checkInputs, VARNISH_VALIDATE, VARNISH_VCL, VERSION, writeRemoteFile } from "../../provider";
import type { VarnishSite } from "../../provider";
import { waitServingScript } from "../../provider/resources/varnish-frontend/scripts";
import { freePort, startLocalHost } from "../support/sshd";
import { withStubs } from "../support/stub-commands";

let dir: string;
let varnishd: ChildProcess | undefined;
let port: number;
const backends: http.Server[] = [];

/** An HTTP server on 127.0.0.1 that names itself and the Host header it got. */
async function backend(name: string): Promise<number> {
  const server = http.createServer((req, res) => res.end(`${name} host=${req.headers.host ?? ""}\n`));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  backends.push(server);
  return (server.address() as { port: number }).port;
}

function vclFor(sites: Record<string, unknown>[]): string {
  const { inputs, failures } = checkInputs("VarnishFrontend", {
    connection: { host: "dom0", hostKey: "SHA256:" + "A".repeat(43) },
    xenEstateVersion: VERSION,
    sites,
  });
  assert.deepEqual(
    failures.map((f) => f.message),
    [],
  );
  return (inputs as { files: Record<string, string> }).files[VARNISH_VCL]!;
}

/** GET / with this Host header; returns "STATUS body". */
function get(host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/", headers: { host }, agent: false }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => resolve(`${res.statusCode} ${body.trim()}`));
    });
    req.on("error", reject);
  });
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-varnish-"));
  // Like /etc/varnish: varnishd -C compiles as the unprivileged vcache user, who must be able to read the file.
  fs.chmodSync(dir, 0o755);
  const a = await backend("app1");
  const b = await backend("shop");
  const vcl = path.join(dir, "xen-estate.vcl");
  fs.writeFileSync(
    vcl,
    vclFor([
      { hostnames: ["app1.example.org", "www.app1.example.org"], backend: `127.0.0.1:${a}` },
      { hostnames: ["*.shop.example"], backend: `127.0.0.1:${b}`, healthCheck: false },
    ]),
  );
  port = await freePort();
  varnishd = spawn(
    "varnishd",
    [
      "-F",
      "-j",
      "none",
      "-n",
      path.join(dir, "work"),
      "-a",
      `127.0.0.1:${port}`,
      "-f",
      vcl,
      "-s",
      "malloc,16m",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  varnishd.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await get("probe.invalid");
      break;
    } catch {
      if (Date.now() > deadline || varnishd.exitCode !== null)
        throw new Error(`varnishd did not start: ${stderr}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
});

after(async () => {
  varnishd?.kill("SIGTERM");
  await Promise.all(backends.map((s) => new Promise((r) => s.close(r))));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("the rendered VCL in a real varnishd", () => {
  test("each site's host names reach its backend, which sees the original Host header", async () => {
    assert.equal(await get("app1.example.org"), "200 app1 host=app1.example.org");
    assert.equal(await get("www.app1.example.org"), "200 app1 host=www.app1.example.org");
    assert.equal(await get("cart.shop.example"), "200 shop host=cart.shop.example");
    assert.equal(await get("a.b.shop.example"), "200 shop host=a.b.shop.example");
  });

  test("the Host header is matched without its port and regardless of case", async () => {
    assert.equal(await get("APP1.Example.ORG:8080"), "200 app1 host=app1.example.org");
  });

  test("hosts no site names get 404, including look-alikes a careless regex would let through", async () => {
    for (const host of [
      "unknown.example",
      "app1.example.org.evil.example",
      "evil-app1.example.org",
      "shop.example", // a wildcard means subdomains only
      "cartxshop.example",
      "cart.shopxexample",
    ])
      assert.match(await get(host), /^404 /, host);
  });
});

describe("the compile check", () => {
  let local: Awaited<ReturnType<typeof startLocalHost>>;
  before(async () => (local = await startLocalHost(dir)));
  after(async () => local?.stop());

  test("a VCL that does not compile never replaces the one in place, and the compiler's message is shown", async () => {
    const target = path.join(dir, "in-place.vcl");
    const good = vclFor([{ hostnames: ["a.example"], backend: "10.0.0.5" }]);
    await writeRemoteFile(local.host, target, good, { validate: VARNISH_VALIDATE });
    await assert.rejects(
      writeRemoteFile(local.host, target, good.replace("return (synth(404", "error (404"), {
        validate: VARNISH_VALIDATE,
      }),
      /validation of the new .*in-place\.vcl failed: [\s\S]*Symbol not found: 'error'/,
    );
    assert.equal(fs.readFileSync(target, "utf8"), good);
  });
});

describe("waiting until the sites serve", () => {
  let local: Awaited<ReturnType<typeof startLocalHost>>;
  let stubs: string;
  before(async () => {
    local = await startLocalHost(fs.mkdtempSync(path.join(dir, "wait-")));
    // The real varnishadm, pointed at this test's varnishd (which runs under its own work directory).
    stubs = path.join(dir, "stubs");
    fs.mkdirSync(stubs, { recursive: true });
    fs.writeFileSync(
      path.join(stubs, "varnishadm"),
      `#!/bin/bash\nexec /usr/bin/varnishadm -n ${JSON.stringify(path.join(dir, "work"))} "$@"\n`,
      { mode: 0o755 },
    );
  });
  after(async () => local?.stop());

  const sitesOf = (sites: Record<string, unknown>[]): VarnishSite[] =>
    (
      checkInputs("VarnishFrontend", {
        connection: { host: "dom0", hostKey: "SHA256:" + "A".repeat(43) },
        xenEstateVersion: VERSION,
        sites,
      }).inputs as unknown as { sites: VarnishSite[] }
    ).sites;

  test("returns at once when every site's backend is healthy and answers through Varnish", async () => {
    const a = backends[0]!.address() as { port: number };
    const sites = sitesOf([{ hostnames: ["app1.example.org"], backend: `127.0.0.1:${a.port}` }]);
    await withStubs(local.host, stubs).script(waitServingScript(sites, `127.0.0.1:${port}`, 20));
  });

  test("fails after its deadline naming a site that gets 503, the way a fresh guest that does not serve yet would", async () => {
    const dead = await freePort();
    const vcl = path.join(dir, "with-dead.vcl");
    fs.writeFileSync(
      vcl,
      vclFor([
        {
          hostnames: ["app1.example.org"],
          backend: `127.0.0.1:${(backends[0]!.address() as { port: number }).port}`,
        },
        { hostnames: ["new.example.org"], backend: `127.0.0.1:${dead}`, healthCheck: false },
      ]),
    );
    const admin = withStubs(local.host, stubs);
    await admin.script(
      `varnishadm vcl.load withdead ${vcl} >/dev/null && varnishadm vcl.use withdead >/dev/null`,
    );
    try {
      const sites = sitesOf([
        { hostnames: ["app1.example.org"], backend: "127.0.0.1:1" },
        { hostnames: ["new.example.org"], backend: `127.0.0.1:${dead}`, healthCheck: false },
      ]);
      await assert.rejects(
        admin.script(waitServingScript(sites, `127.0.0.1:${port}`, 3)),
        /not serving after 3 s: new\.example\.org \(HTTP 503\)/,
      );
    } finally {
      await admin.script("varnishadm vcl.use boot >/dev/null");
    }
  });
});
