// Runs the compiled test suites with node's test runner.
//   node test/run-tests.mjs            every suite
//   node test/run-tests.mjs unit ssh   only those suites (directories under test/)
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

const files = wanted.flatMap((suite) => {
  if (!order.includes(suite)) {
    console.error(`unknown suite ${suite}; suites are: ${order.join(", ")}`);
    process.exit(2);
  }
  return testFiles(join(dist, suite)).sort();
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
