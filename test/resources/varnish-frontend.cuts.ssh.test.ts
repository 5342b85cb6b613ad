/**
 * VarnishFrontend under cut connections (issue 15): for create, two updates (new sites: a VCL load; a new cache
 * size: a restart) and delete, the SSH path to a real sshd is dropped before, during and after each remote step in
 * turn; the next run (as the engine makes it) must converge: the VCL Varnish runs (`vcl.show`) is the file's, the
 * varnishd that runs has the drop-in's command line, varnish.service and varnishncsa.service each have exactly one
 * drop-in (the declared one), no half-written file, at most `keepVcls` older VCLs of ours kept, and every site
 * answers through Varnish; after delete, no file of ours or drop-in directory is left and varnishd runs with the
 * package's own settings again.
 *
 * Real: sshd, bash, varnishd 7 (compiling, loading and serving every VCL), varnishadm, the HTTP backends. The sshd
 * runs in a network namespace of its own (Varnish's fixed admin port 6082 and port 80 are the namespace's) and a
 * private mount namespace in which /etc/varnish, /etc/systemd/system, /var/lib/varnish, /var/backups and /run/lock
 * are directories of this test, so the kind's absolute paths touch nothing of this machine.
 *
 * SIMULATOR: systemd. This machine's PID 1 is not systemd, so `systemctl` in that namespace is a small stand-in
 * for varnish.service only: `daemon-reload` reads the unit's ExecStart= (the package's unit, then its drop-ins),
 * `restart` is a job that runs to its end even when its caller goes away (as systemd's jobs do) and starts the real
 * varnishd with that command line, `is-active` says whether it runs (`activating`/`deactivating` while a job does).
 * The lab dom0 runs the real systemd.
 *
 * The fast tier cuts every step once (`during`, the cut that leaves the most undecided); the slow tier cuts each
 * step all three ways.
 */
import { after, before } from "node:test";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import {
  Checker,
  hostContext,
  resolveConnection,
  SshPool,
  VARNISH_DROP_IN,
  VARNISHNCSA_DROP_IN,
  VARNISH_VCL,
  varnishFrontendKind,
  VERSION,
  type Context,
  type RemoteHost,
  type VarnishFrontendInputs,
  type VarnishFrontendOutputs,
} from "../../provider";
import {
  activeVclScript,
  dropInDigest,
  vclDigest,
  waitServingScript,
} from "../../provider/resources/varnish-frontend/scripts";
import { checked } from "../support/checked";
import { CutRelay, describeCutMatrix, type CutScenario } from "../support/cut-matrix";
import { generateKey, inMountNamespace, startSshd, type KeyPair, type Sshd } from "../support/sshd";
import { makeVethNamespace, removeVethNamespace } from "../support/netns";

const run = promisify(execFile);
const sh = (cmd: string): Promise<{ stdout: string }> => run("bash", ["-c", cmd]);

const id = process.pid % 200;
const ns = `xecut-v-${process.pid}`;
const hostIf = `xecv${process.pid % 100000}`;
const outside = `10.232.${id}.1`;
const inside = `10.232.${id}.2`;

let base: string;
let key: KeyPair;
let sshd: Sshd;
let relay: CutRelay;
let admin: RemoteHost;
const pools: SshPool[] = [];
const backends: http.Server[] = [];
const backendPorts: Record<string, number> = {};
/** This test's directories that stand for the host's, in the sshd's mount namespace. */
const mounts = {
  etcVarnish: "/etc/varnish",
  systemd: "/etc/systemd/system",
  varLib: "/var/lib/varnish",
  backups: "/var/backups",
  lock: "/run/lock",
} as const;
const local = (k: keyof typeof mounts): string => path.join(base, k);
const sim = (): string => path.join(base, "sim");
const dropInDir = (): string => path.join(local("systemd"), "varnish.service.d");
const logDropInDir = (): string => path.join(local("systemd"), "varnishncsa.service.d");

/** The systemctl SIMULATOR (see the file's header). */
function systemctlSimulator(simDir: string): string {
  return `#!/bin/bash
# SIMULATOR (test/resources/varnish-frontend.cuts.ssh.test.ts): systemd's service manager, for varnish.service only.
sim=${JSON.stringify(simDir)}
quiet=; args=(); for a in "$@"; do case "$a" in -q|--quiet) quiet=1 ;; --no-block) ;; *) args+=("$a") ;; esac; done
case "\${args[1]:-varnish.service}" in varnish|varnish.service) ;; *) echo "systemctl simulator: only varnish.service" >&2; exit 5 ;; esac
load() {
  for f in /lib/systemd/system/varnish.service /etc/systemd/system/varnish.service.d/*.conf; do
    [ -f "$f" ] && { cat -- "$f"; echo; }
  done | awk '{ line = cont ? line " " $0 : $0; cont = sub(/\\\\$/, "", line); if (!cont && line ~ /^ExecStart=/) last = substr(line, 11) } END { print last }' > "$sim/loaded.new"
  mv -f "$sim/loaded.new" "$sim/loaded"
}
alive() { [ -f "$sim/pid" ] && kill -0 "$(cat "$sim/pid")" 2>/dev/null; }
# Like systemd's cgroup, the process group (varnishd's manager and its cache child) goes as a whole.
stop() {
  if [ -f "$sim/pid" ]; then
    p=$(cat "$sim/pid"); kill -TERM -- "-$p" 2>/dev/null || true
    for i in $(seq 300); do kill -0 -- "-$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$p" 2>/dev/null || true
    for i in $(seq 50); do kill -0 -- "-$p" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$sim/pid"
}
# Started as systemd's Type=exec: the job ends once the process runs varnishd itself, not while it is still setsid.
start() {
  read -ra cmd < "$sim/loaded"; setsid "\${cmd[@]}" </dev/null >>"$sim/varnishd.log" 2>&1 & p=$!; echo "$p" > "$sim/pid"
  exe=$(readlink -f -- "\${cmd[0]}"); for i in $(seq 200); do [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$exe" ] && break; kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
}
# A job of the service manager: it runs to its end even when its caller goes away, one job of the unit at a time.
job() { setsid flock "$sim/job.lock" bash -c "sim=$sim; $(declare -f alive stop start); $1" </dev/null >/dev/null 2>&1 & wait $!; }
case "\${args[0]}" in
  daemon-reload) load ;;
  enable) touch "$sim/enabled" ;;
  # As systemd: the unit's state, printed unless --quiet; only "active" succeeds (a job under way is not).
  is-active)
    if ! flock -n "$sim/job.lock" true; then state=$(alive && echo deactivating || echo activating)
    elif alive; then state=active; else state=inactive; fi
    [ -n "$quiet" ] || echo "$state"; [ "$state" = active ] || exit 3 ;;
  restart) job "stop; start" ;;
  stop) job stop ;;
  *) echo "systemctl simulator: \${args[*]} is not simulated" >&2; exit 5 ;;
esac
`;
}

async function backend(name: string): Promise<number> {
  const server = http.createServer((req, res) => res.end(`${name} host=${req.headers.host ?? ""}\n`));
  await new Promise<void>((r) => server.listen(0, outside, r));
  backends.push(server);
  return (server.address() as { port: number }).port;
}

/** GET / from the namespace's port 80 with this Host header: "STATUS body", or the error. */
function get(host: string): Promise<string> {
  return new Promise((resolve) => {
    const req = http.get(
      { host: inside, port: 80, path: "/", headers: { host }, agent: false, timeout: 5000 },
      (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve(`${res.statusCode} ${body.trim()}`));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => resolve(`error ${e.message}`));
  });
}

before(async () => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), "xecut-varnish-"));
  fs.chmodSync(base, 0o755);
  for (const k of Object.keys(mounts)) fs.mkdirSync(local(k as keyof typeof mounts), { mode: 0o755 });
  fs.mkdirSync(sim(), { mode: 0o755 });
  fs.copyFileSync("/etc/varnish/default.vcl", path.join(local("etcVarnish"), "default.vcl"));
  fs.writeFileSync(path.join(local("etcVarnish"), "secret"), `${randomUUID()}\n`, { mode: 0o600 });
  fs.writeFileSync(path.join(base, "systemctl"), systemctlSimulator(sim()), { mode: 0o755 });
  key = await generateKey(base, "client");
  await sh(removeVethNamespace({ ns, hostIf }));
  await sh(
    makeVethNamespace({ ns, hostIf, hostAddresses: [`${outside}/24`], inside: `${inside}/24` }).join(" && "),
  );
  const binds = [
    ...Object.entries(mounts).map(([k, target]) => `mount --bind ${path.join(base, k)} ${target}`),
    `mount --bind ${path.join(base, "systemctl")} /usr/bin/systemctl`,
  ];
  sshd = await startSshd({
    authorizedKeys: [key.publicKey],
    netns: ns,
    listen: inside,
    wrap: inMountNamespace(binds),
  });
  relay = new CutRelay(sshd.host, sshd.port);
  await relay.start();
  backendPorts.app1 = await backend("app1");
  backendPorts.shop = await backend("shop");
  const pool = new SshPool();
  pools.push(pool);
  admin = pool.host(
    resolveConnection(
      new Checker(),
      { host: sshd.host, port: sshd.port, hostKey: sshd.hostKey.fingerprint },
      { privateKey: key.privateKey },
    )!,
  );
  // A fresh install: the package's varnish.service runs, with its own settings.
  await admin.script("systemctl daemon-reload && systemctl restart varnish.service");
});

after(async () => {
  try {
    await admin?.script("systemctl stop varnish.service");
  } catch {
    /* the session may be gone; the pid below is ours */
  }
  const pidFile = path.join(sim(), "pid");
  if (fs.existsSync(pidFile)) {
    try {
      process.kill(-Number(fs.readFileSync(pidFile, "utf8")), "SIGKILL");
    } catch {
      /* already gone */
    }
  }
  for (const p of pools) await p.close();
  await relay?.stop();
  await sshd?.stop();
  await Promise.all(backends.map((s) => new Promise((r) => s.close(r))));
  await sh(`ip netns del ${ns} 2>/dev/null; ip link del ${hostIf} 2>/dev/null; true`);
  fs.rmSync(base, { recursive: true, force: true });
});

/** A context over a fresh pool (a new `pulumi up` process) through the relay. */
function freshContext(): Context {
  return hostContext(relay.freshHost(sshd.hostKey.fingerprint, key.privateKey));
}

const SITES_ONE = (): Record<string, unknown>[] => [
  {
    hostnames: ["app1.example.org"],
    backend: `${outside}:${backendPorts.app1}`,
    healthCheck: { intervalSeconds: 1, timeoutSeconds: 1 },
  },
];
const SITES_TWO = (): Record<string, unknown>[] => [
  ...SITES_ONE(),
  { hostnames: ["*.shop.example"], backend: `${outside}:${backendPorts.shop}`, healthCheck: false },
];

function inputs(sites: Record<string, unknown>[], cacheSize = "16MiB"): VarnishFrontendInputs {
  return checked<VarnishFrontendInputs>("VarnishFrontend", {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: sshd.hostKey.fingerprint },
    xenEstateVersion: VERSION,
    sites,
    listen: [":80"],
    cacheSize,
    installPackage: false,
    readyTimeoutSeconds: 30,
  });
}

/** What the sites of `sites` answer through Varnish when they serve. */
function expectedAnswers(sites: Record<string, unknown>[]): Record<string, string> {
  const out: Record<string, string> = { "app1.example.org": "200 app1 host=app1.example.org" };
  if (sites.length > 1) out["cart.shop.example"] = "200 shop host=cart.shop.example";
  return out;
}

const WAIT_RUNNING =
  "until varnishadm -t 5 status 2>/dev/null | grep -q 'Child in state running'; do sleep 0.2; done";

/** The host as a fresh install has it: no file of ours, varnishd running with the package's settings. */
async function resetFresh(): Promise<void> {
  fs.rmSync(path.join(local("backups"), "xen-estate"), { recursive: true, force: true });
  fs.rmSync(dropInDir(), { recursive: true, force: true });
  fs.rmSync(logDropInDir(), { recursive: true, force: true });
  for (const f of fs.readdirSync(local("etcVarnish")))
    if (f !== "default.vcl" && f !== "secret") fs.rmSync(path.join(local("etcVarnish"), f));
  await admin.script("systemctl daemon-reload && systemctl restart varnish.service");
  await admin.script(WAIT_RUNNING);
}

/**
 * The host and the engine's state after a finished create of `sites`: the files and the managed lists a create
 * writes, varnishd restarted with them (one restart, where a create from a fresh install would make two), and
 * checked to be converged, so the state is the one a create reaches.
 */
async function resetCreated(sites: Record<string, unknown>[]): Promise<VarnishFrontendOutputs> {
  const i = inputs(sites);
  fs.rmSync(path.join(local("backups"), "xen-estate"), { recursive: true, force: true });
  fs.rmSync(dropInDir(), { recursive: true, force: true });
  fs.rmSync(logDropInDir(), { recursive: true, force: true });
  for (const f of fs.readdirSync(local("etcVarnish")))
    if (f !== "default.vcl" && f !== "secret") fs.rmSync(path.join(local("etcVarnish"), f));
  fs.mkdirSync(dropInDir(), { recursive: true });
  fs.mkdirSync(logDropInDir(), { recursive: true });
  fs.writeFileSync(path.join(local("etcVarnish"), "xen-estate.vcl"), i.files[VARNISH_VCL]!);
  fs.writeFileSync(path.join(dropInDir(), "xen-estate.conf"), i.files[VARNISH_DROP_IN]!);
  fs.writeFileSync(path.join(logDropInDir(), "xen-estate.conf"), i.files[VARNISHNCSA_DROP_IN]!);
  for (const [dir, base] of [
    ["etc/varnish", "xen-estate.vcl"],
    ["etc/systemd/system/varnish.service.d", "xen-estate.conf"],
    ["etc/systemd/system/varnishncsa.service.d", "xen-estate.conf"],
  ] as const) {
    const d = path.join(local("backups"), "xen-estate", dir);
    fs.mkdirSync(d, { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(d, ".xen-estate-managed"), `${base}\n`);
  }
  await admin.script("systemctl daemon-reload && systemctl restart varnish.service");
  await admin.script(WAIT_RUNNING);
  await admin.script(waitServingScript(i.sites, i.listen[0]!, 30));
  const problem = await convergedOn(i);
  if (problem) throw new Error(`the created state was not reached: ${problem}`);
  return {
    ...i,
    activeVcl: "boot",
    loadedVcl: vclDigest(i.files[VARNISH_VCL]!),
    appliedDropIn: dropInDigest(i.files[VARNISH_DROP_IN]!),
  };
}

/** Temp files a write left behind (`.<name>.xen-estate.XXXXXX`), in the directories the kind writes. */
function leftovers(): string[] {
  return [local("etcVarnish"), dropInDir(), logDropInDir()]
    .filter((d) => fs.existsSync(d))
    .flatMap((d) => fs.readdirSync(d).filter((f) => f.includes(".xen-estate.")));
}

/** The command line of the varnishd that runs now (the simulator's service), or null. */
async function runningCommandLine(): Promise<string | null> {
  const r = await admin.script(
    `p=$(cat ${path.join(sim(), "pid")} 2>/dev/null) && [ -r /proc/$p/cmdline ] && tr '\\0' ' ' < /proc/$p/cmdline || true`,
  );
  return r.stdout.trim() || null;
}

/** The last ExecStart= of a unit text (continuation lines joined). */
function execStart(unit: string): string {
  const lines = unit.replace(/\\\n/g, " ").split("\n");
  const last = lines.filter((l) => /^ExecStart=./.test(l)).pop();
  return (last ?? "").slice("ExecStart=".length).trim().split(/\s+/).join(" ");
}

/** Why the host does not run `i` as declared, or undefined. */
async function convergedOn(i: VarnishFrontendInputs): Promise<string | undefined> {
  const vclFile = path.join(local("etcVarnish"), "xen-estate.vcl");
  const dropIn = path.join(dropInDir(), "xen-estate.conf");
  if (!fs.existsSync(vclFile) || fs.readFileSync(vclFile, "utf8") !== i.files[VARNISH_VCL])
    return "the VCL file is not the declared one";
  const dropIns = fs.existsSync(dropInDir()) ? fs.readdirSync(dropInDir()) : [];
  if (dropIns.join(",") !== "xen-estate.conf") return `the drop-ins are [${dropIns.join(", ")}]`;
  if (fs.readFileSync(dropIn, "utf8") !== i.files[VARNISH_DROP_IN])
    return "the drop-in is not the declared one";
  const logDropIns = fs.existsSync(logDropInDir()) ? fs.readdirSync(logDropInDir()) : [];
  if (logDropIns.join(",") !== "xen-estate.conf")
    return `varnishncsa's drop-ins are [${logDropIns.join(", ")}]`;
  if (fs.readFileSync(path.join(logDropInDir(), "xen-estate.conf"), "utf8") !== i.files[VARNISHNCSA_DROP_IN])
    return "varnishncsa's drop-in is not the declared one";
  if (leftovers().length > 0) return `left ${leftovers().join(", ")}`;
  const cmdline = await runningCommandLine();
  if (cmdline !== execStart(i.files[VARNISH_DROP_IN]))
    return `varnishd runs as ${cmdline ?? "nothing"}, not with the drop-in's command line`;
  const r = await admin.script(activeVclScript());
  const sha = /^active-sha (\S+)$/m.exec(r.stdout)?.[1];
  if (sha !== vclDigest(i.files[VARNISH_VCL]))
    return `the active VCL (vcl.show) is not the file's:\n${r.stdout}`;
  const list = (await admin.script("varnishadm -t 10 vcl.list")).stdout;
  const ours = list.split("\n").filter((l) => /^available\b.*\bxen_estate_/.test(l));
  if (ours.length > i.keepVcls) return `varnish keeps ${ours.length} older VCLs of ours:\n${list}`;
  const sites = i.sites.length > 1 ? SITES_TWO() : SITES_ONE();
  for (const [host, answer] of Object.entries(expectedAnswers(sites))) {
    const got = await get(host);
    if (got !== answer) return `${host} answers ${got}`;
  }
  return undefined;
}

/** Why the host still holds something of the frontend after delete, or undefined. */
async function convergedDeleted(): Promise<string | undefined> {
  if (fs.existsSync(path.join(local("etcVarnish"), "xen-estate.vcl"))) return `${VARNISH_VCL} is left`;
  if (fs.existsSync(dropInDir()))
    return `the drop-in directory is left, holding [${fs.readdirSync(dropInDir()).join(", ")}]`;
  if (fs.existsSync(logDropInDir()))
    return `varnishncsa's drop-in directory is left, holding [${fs.readdirSync(logDropInDir()).join(", ")}]`;
  if (leftovers().length > 0) return `left ${leftovers().join(", ")}`;
  const managed = path.join(local("backups"), "xen-estate", "etc", "varnish", ".xen-estate-managed");
  if (fs.existsSync(managed) && fs.readFileSync(managed, "utf8").includes("xen-estate.vcl"))
    return "the VCL is still listed as managed";
  const cmdline = await runningCommandLine();
  const pkg = execStart(fs.readFileSync("/lib/systemd/system/varnish.service", "utf8"));
  if (cmdline !== pkg) return `varnishd runs as ${cmdline ?? "nothing"}, not with the package's settings`;
  if (!(await get("app1.example.org")).startsWith("error"))
    return "something still answers on port 80 after delete";
  return undefined;
}

/** A create, as the engine makes it: one that recorded what it made continues as an update. */
function createRun(i: () => VarnishFrontendInputs) {
  return async (ctx: Context, last: { partial?: VarnishFrontendOutputs }): Promise<unknown> => {
    if (last.partial)
      return varnishFrontendKind.update(ctx, "id", last.partial, i(), {
        changed: [],
        replaces: [],
        classes: {},
      });
    let partial: Partial<VarnishFrontendOutputs> | undefined;
    try {
      return await varnishFrontendKind.create(ctx, i(), (p) => (partial = p));
    } catch (err) {
      if (partial) last.partial = { ...i(), ...partial } as VarnishFrontendOutputs;
      throw err;
    }
  };
}

/** An update from what `from` created to `to`: a failed one is retried from the same recorded state. */
function updateScenario(
  operation: string,
  from: () => Record<string, unknown>[],
  to: () => VarnishFrontendInputs,
  changed: string[],
): CutScenario<VarnishFrontendOutputs> {
  let olds: VarnishFrontendOutputs;
  return {
    operation,
    reset: async () => {
      olds = await resetCreated(from());
    },
    run: (ctx) => varnishFrontendKind.update(ctx, "id", olds, to(), { changed, replaces: [], classes: {} }),
    converged: () => convergedOn(to()),
  };
}

const scenarios = (): CutScenario<VarnishFrontendOutputs>[] => {
  let created: VarnishFrontendOutputs;
  return [
    {
      operation: "create",
      reset: resetFresh,
      run: createRun(() => inputs(SITES_ONE())),
      converged: () => convergedOn(inputs(SITES_ONE())),
    },
    updateScenario("update (sites)", SITES_ONE, () => inputs(SITES_TWO()), ["sites", "files"]),
    updateScenario("update (cache)", SITES_ONE, () => inputs(SITES_ONE(), "32MiB"), ["cacheMiB", "files"]),
    {
      operation: "delete",
      reset: async () => {
        created = await resetCreated(SITES_ONE());
      },
      run: (ctx) => varnishFrontendKind.delete(ctx, "id", created),
      converged: convergedDeleted,
    },
  ];
};

describeCutMatrix("VarnishFrontend", scenarios(), {
  relay: () => relay,
  freshContext,
  timeoutMs: 60 * 60_000,
});
