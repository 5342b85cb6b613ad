// Runs the compiled test suites with node's test runner, sharing lab machines among the lab files, and prints a
// timing table at the end.
//   node test/run-tests.mjs                   every suite, fast tier (`npm run test:only`)
//   node test/run-tests.mjs unit ssh          only those suites
//   node test/run-tests.mjs --slow            every tier: the slow duplicates as well
//   node test/run-tests.mjs --build --lint --docs   `npm test`: build first; lint and the API docs with the suites
//   node test/run-tests.mjs --serial lab ssh  the lab lane after the host lane, not beside it
// A test file's suite is the last word before `.test.js`: `test/resources/lvm-volume.lab.test.ts` is the lab
// suite's test of provider/resources/lvm-volume. Test files mirror the source tree, so one resource's unit, ssh,
// engine and lab tests sit side by side. Suites: unit (pure logic), ssh (real sshd), engine (real Pulumi CLI),
// lab (QEMU + Xen).
//
// Schedule (DEVELOPERS.md): after the build, two lanes run side by side. The host lane runs lint, the API docs,
// unit, ssh and engine, one at a time until the lab lane is done, then two at a time. The lab lane runs at the same
// time (one emulated machine at a time): it boots each lab machine the files declared (test/lab/shared.ts), runs
// every file that declared it on it, one after another, and boots the next; a file that leaves its machine dirty
// fails, and the next file gets a freshly booted machine. Lab files that declare no machine (the walkthrough boots
// its own bare server) run last, with no machine of the runner's running. Neither lane's suites may depend on the
// machine being idle: a deadline is set for a busy machine or replaced by a readiness check (DEVELOPERS.md,
// "Deadlines and flakes"). `--serial` runs the lanes one after the other instead (host lane first), to measure what
// the overlap saves or to rule it out.
// Files declaring `slowTier(…)` (test/support/tier.ts) run only with --slow.
// XEN_ESTATE_TIMINGS=FILE: append the table's rows to FILE (for .ci/run) instead of printing the table.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { appendRows, formatTable } from "./timings.mjs";

const root = new URL("..", import.meta.url).pathname;
const dist = join(root, "dist", "test");
const order = ["unit", "ssh", "engine", "lab"];
const FLAGS = ["--build", "--lint", "--docs", "--slow", "--serial"];
const args = process.argv.slice(2);
for (const a of args.filter((a) => a.startsWith("-")))
  if (!FLAGS.includes(a)) {
    console.error(`unknown option ${a}; options: ${FLAGS.join(", ")}`);
    process.exit(2);
  }
const flags = new Set(args.filter((a) => a.startsWith("-")));
const named = args.filter((a) => !a.startsWith("-"));
const wanted = named.length > 0 ? named : order;
for (const suite of wanted)
  if (!order.includes(suite)) {
    console.error(`unknown suite ${suite}; suites are: ${order.join(", ")}`);
    process.exit(2);
  }
const tier = flags.has("--slow") ? "slow" : "fast";

const rows = [];
const started = Date.now();
/** Runs `fn` (→ true when it passed) as a timed row of the table. */
async function timed(name, fn, note) {
  const start = Date.now();
  let ok = false;
  try {
    ok = await fn();
  } catch (e) {
    console.error(`${name}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  }
  rows.push({ start, seconds: (Date.now() - start) / 1000, status: ok ? "ok" : "FAIL", name, note });
  return ok;
}

function finish(code) {
  rows.push({
    start: started,
    seconds: (Date.now() - started) / 1000,
    status: code === 0 ? "ok" : "FAIL",
    name: `tests (all, ${tier} tier)`,
  });
  if (process.env.XEN_ESTATE_TIMINGS) appendRows(process.env.XEN_ESTATE_TIMINGS, rows);
  else process.stdout.write(`\n${formatTable(rows, { title: `tests (${tier} tier)`, since: started })}`);
  process.exit(code);
}

/**
 * Runs a command with the terminal; resolves true when it exits 0. With `prefix`, each line it prints starts with
 * it (the lab lane's lines among the host lane's, both printing at once).
 */
function run(cmd, argv, env = {}, prefix = "") {
  return new Promise((resolve) => {
    const p = spawn(cmd, argv, {
      stdio: prefix ? ["ignore", "pipe", "pipe"] : "inherit",
      cwd: root,
      env: { ...process.env, ...env },
    });
    if (prefix)
      for (const [from, to] of [
        [p.stdout, process.stdout],
        [p.stderr, process.stderr],
      ]) {
        let rest = "";
        from.setEncoding("utf8");
        from.on("data", (chunk) => {
          const lines = (rest + chunk).split("\n");
          rest = lines.pop();
          for (const l of lines) to.write(`${prefix}${l}\n`);
        });
        from.on("end", () => rest && to.write(`${prefix}${rest}\n`));
      }
    p.on("error", (e) => {
      console.error(`${cmd}: ${e.message}`);
      resolve(false);
    });
    p.on("close", (code) => resolve(code === 0));
  });
}

/**
 * Each suite runs in a mount namespace of its own (root, with util-linux's unshare): a filesystem one suite mounts
 * for a moment (a loop device's) is never copied into a namespace another suite creates meanwhile (`ip netns exec`,
 * a sandboxed sshd), where it would stay mounted and keep the device busy after the suite's own umount. This
 * machine's mounts are private, so nothing of one suite's reaches another's; /run/netns stays shared
 * (`--propagation unchanged`), so every suite sees every network namespace.
 */
const ownMounts =
  process.getuid?.() === 0 &&
  spawnSync("unshare", ["--mount", "--propagation", "unchanged", "true"], { stdio: "ignore" }).status === 0;
/**
 * Runs test files with node's runner; true when every test and every hook passed. Node exits 0 when only a hook
 * failed (a lab file's `after` that finds the machine dirty, a cleanup that threw), so a TAP copy of the run is read
 * too: any `not ok` in it, at any depth, fails the run.
 */
const nodeTest = async (files, env = {}, prefix = "") => {
  const tap = join(tmpdir(), `xen-estate-tap-${process.pid}-${++tapRuns}.tap`);
  const argv = [
    "--test",
    "--test-concurrency=1",
    "--test-reporter=spec",
    "--test-reporter-destination=stdout",
    "--test-reporter=tap",
    `--test-reporter-destination=${tap}`,
    ...files,
  ];
  try {
    const exited = await (ownMounts
      ? run(
          "unshare",
          ["--mount", "--propagation", "unchanged", "--", process.execPath, ...argv],
          { XEN_ESTATE_TEST_TIER: tier, ...env },
          prefix,
        )
      : run(process.execPath, argv, { XEN_ESTATE_TEST_TIER: tier, ...env }, prefix));
    let notOk = [];
    try {
      notOk = readFileSync(tap, "utf8")
        .split("\n")
        .filter((l) => /^\s*not ok \d+/.test(l) && !/# TODO\b/.test(l));
    } catch {
      notOk = ["(no TAP report was written)"];
    }
    if (exited && notOk.length > 0)
      console.error(
        `${prefix}the runner exited 0, but its report says: ${notOk.map((l) => l.trim()).join("; ")}`,
      );
    return exited && notOk.length === 0;
  } finally {
    rmSync(tap, { force: true });
  }
};
let tapRuns = 0;
/** The prefix of the lab lane's lines, unless the lanes run one after the other. */
const LAB = flags.has("--serial") ? "" : "[lab] ";

const source = (file) =>
  relative(root, file)
    .replace(/^dist\//, "")
    .replace(/\.js$/, ".ts");

if (flags.has("--build") && !(await timed("build", () => run("npm", ["run", "--silent", "build"]))))
  finish(1);

function testFiles(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) return testFiles(p);
    return f.endsWith(".test.js") ? [p] : [];
  });
}

const suiteOf = (file) => /\.([a-z]+)\.test\.js$/.exec(file)?.[1];
const all = testFiles(dist);
const strays = all.filter((f) => !order.includes(suiteOf(f)));
if (strays.length > 0) {
  console.error(
    `test files without a suite (name them <name>.<${order.join("|")}>.test.ts):\n  ${strays.join("\n  ")}`,
  );
  process.exit(2);
}
const selected = wanted.flatMap((suite) => all.filter((f) => suiteOf(f) === suite).sort());
if (selected.length === 0) {
  console.error("no compiled tests found: run `npm run build` first");
  process.exit(1);
}

// What the files declare (their lab machine, their tier), read without running them.
const declaring = selected.filter((f) => /\b(labMachine|slowTier)\b/.test(readFileSync(f, "utf8")));
const plan = {};
if (declaring.length > 0) {
  const r = spawnSync(process.execPath, [join(dist, "support", "plan.js"), ...declaring], {
    cwd: root,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  if (r.status !== 0) {
    console.error("reading the test files' declarations (test/support/plan.ts) failed");
    process.exit(1);
  }
  Object.assign(plan, JSON.parse(r.stdout.trim().split("\n").pop()));
}
const files = [];
for (const f of selected) {
  const slow = plan[f]?.slow ?? [];
  if (slow.length > 0 && tier === "fast")
    rows.push({
      start: Date.now(),
      seconds: 0,
      status: "skip",
      name: `slow tier: ${source(f)}`,
      note: slow[0],
    });
  else files.push(f);
}

// The lab files, grouped by the machine they declare; a fresh machine is a group of its own.
const labFiles = files.filter((f) => suiteOf(f) === "lab");
const groups = [];
const unshared = [];
const labOff = process.env.XEN_ESTATE_LAB === "0";
for (const f of labFiles) {
  const needs = plan[f]?.lab ?? [];
  if (needs.length > 1) {
    console.error(`${source(f)} declares ${needs.length} lab machines; a file has one (test/lab/shared.ts)`);
    process.exit(2);
  }
  if (needs.length === 0 || labOff) {
    unshared.push(f);
    continue;
  }
  const need = needs[0];
  const key = `${need.host}-${need.memoryMiB}MiB${need.fresh ? "-fresh" : ""}`;
  const g = need.fresh ? undefined : groups.find((x) => x.key === key);
  if (g) {
    g.files.push(f);
    g.need.source ||= need.source;
  } else groups.push({ key, need: { ...need }, files: [f] });
}
// Shared machines before fresh ones, dom0 (the longest boot, the most files) first.
const rank = (g) => [g.need.fresh ? 1 : 0, g.need.host === "dom0" ? 0 : 1, -g.files.length];
groups.sort((a, b) => {
  const [x, y] = [rank(a), rank(b)];
  return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
});

let failed = false;
const note = (ok) => {
  if (!ok) failed = true;
  return ok;
};

// The host lane: lint, the API docs and the suites that need no lab machine, in this order. One worker runs them
// while the lab lane runs (the emulated machine wants both cores); once the lab lane is done, a second worker takes
// the next job waiting, so the run's tail does not use one core of two. Jobs that run side by side keep their test
// hosts apart: each file's namespaces, addresses, ports and loop devices are its own (test/support).
const hostJobs = [];
if (flags.has("--lint"))
  hostJobs.push({ name: "lint", run: (prefix) => run("npm", ["run", "--silent", "lint"], {}, prefix) });
if (flags.has("--docs"))
  hostJobs.push({
    name: "docs (TypeDoc)",
    run: (prefix) => run("npm", ["run", "--silent", "docs"], {}, prefix),
  });
for (const suite of ["unit", "ssh", "engine"]) {
  const these = files.filter((f) => suiteOf(f) === suite);
  if (these.length > 0)
    hostJobs.push({
      name: suite,
      note: `${these.length} files`,
      run: (prefix) => nodeTest(these, {}, prefix),
    });
}
/** Runs the host lane's jobs one after another until none is waiting; the second worker's lines carry the job's name. */
async function hostWorker(second) {
  for (let job = hostJobs.shift(); job; job = hostJobs.shift()) {
    const { name, note: why, run: go } = job;
    const prefix = second ? `[${name.split(" ")[0]}] ` : "";
    const said = [why, second && "the second worker's, after the lab lane"].filter(Boolean).join("; ");
    note(await timed(name, () => go(prefix), said || undefined));
  }
}
const hostLane = hostWorker(false);

// The lab lane.
const labLane = (async () => {
  if (groups.length === 0 && unshared.length === 0) return;
  if (flags.has("--serial")) await hostLane;
  const require = createRequire(import.meta.url);
  const shared = groups.length > 0 ? require(join(dist, "lab", "shared.js")) : undefined;
  const state = mkdtempSync(join(tmpdir(), "xen-estate-lab-run-"));
  const log = (line) => process.stderr.write(`[lab] ${line}\n`);
  try {
    for (const [i, g] of groups.entries()) {
      const label = `${g.key}${g.need.source ? " + source VPS" : ""}`;
      let machine;
      let bootFailed = false;
      const boot = async (why) => {
        if (bootFailed) return false;
        const row = rows.length;
        await timed(
          `lab: boot ${label}`,
          async () => {
            machine = await shared.bootShared(g.need, g.key, log);
            return true;
          },
          why,
        );
        // A wait for the lab lock (another run's machine) is part of the row, and said so.
        const wait = machine?.lab.lockWaitMs ?? 0;
        if (wait > 2000 && rows[row])
          rows[row].note = `${why}; ${Math.round(wait / 1000)} s of it waiting for the lab lock`;
        bootFailed = machine === undefined;
        return !bootFailed;
      };
      const stop = async () => {
        const m = machine;
        machine = undefined;
        note(
          await timed(`lab: stop ${label}`, async () => {
            await shared.stopAndProve(m.lab, { keepConsoleLog: failed });
            return true;
          }),
        );
      };
      note(await boot(`for ${g.files.length} file(s)`));
      for (const f of g.files) {
        if (!machine && !note(await boot("again: the last file did not leave it clean"))) {
          rows.push({
            start: Date.now(),
            seconds: 0,
            status: "FAIL",
            name: `lab: ${source(f)}`,
            note: "no machine: its boot failed",
          });
          continue;
        }
        const report = join(state, `${relative(dist, f).replace(/\W/g, "_")}.json`);
        rmSync(report, { force: true });
        note(
          await timed(`lab: ${source(f)}`, () =>
            nodeTest(
              [f],
              { XEN_ESTATE_LAB_SHARED: JSON.stringify(machine.shared), XEN_ESTATE_LAB_REPORT: report },
              LAB,
            ),
          ),
        );
        let clean = false;
        try {
          clean = JSON.parse(readFileSync(report, "utf8")).clean === true;
        } catch {
          // no report: the file never released the machine, so nobody knows its state
        }
        if (!clean) {
          log(`${source(f)} did not leave ${machine.shared.instance} clean (or did not say): stopping it`);
          await stop();
        }
      }
      if (machine) await stop();
    }
    if (unshared.length > 0)
      note(
        await timed(
          "lab: files without a shared machine",
          () => nodeTest(unshared, {}, LAB),
          unshared.map(source).join(" "),
        ),
      );
  } finally {
    rmSync(state, { recursive: true, force: true });
  }
})();

// The second host worker, once the lab lane no longer needs the cores (with --serial the host lane is done by then).
const secondHostWorker = labLane.then(() => hostWorker(true));
await Promise.all([hostLane, labLane, secondHostWorker]);
finish(failed ? 1 : 0);
