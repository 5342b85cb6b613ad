// Runs the compiled test suites with node's test runner.
//   node test/run-tests.mjs            every suite
//   node test/run-tests.mjs unit ssh   only those suites
// A test file's suite is the last word before `.test.js`: `test/resources/lvm-volume.lab.test.ts` is the lab
// suite's test of provider/resources/lvm-volume. Test files mirror the source tree, so one resource's unit, ssh,
// engine and lab tests sit side by side.
// Suites: unit (pure logic), ssh (real sshd), engine (real Pulumi CLI), lab (QEMU + Xen).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const dist = join(root, "dist", "test");
const order = ["unit", "ssh", "engine", "lab"];
const wanted = process.argv.slice(2).length > 0 ? process.argv.slice(2) : order;

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
const files = wanted.flatMap((suite) => {
  if (!order.includes(suite)) {
    console.error(`unknown suite ${suite}; suites are: ${order.join(", ")}`);
    process.exit(2);
  }
  return all.filter((f) => suiteOf(f) === suite).sort();
});
if (files.length === 0) {
  console.error("no compiled tests found: run `npm run build` first");
  process.exit(1);
}
const r = spawnSync(process.execPath, ["--test", "--test-concurrency=1", "--test-reporter=spec", ...files], {
  stdio: "inherit",
  cwd: root,
});
process.exit(r.status ?? 1);
