/**
 * `npm run bench`: every figure on one line, `bench <name> <value> <unit>`, so runs can be compared.
 *   node dist/test/bench/index.js [planning] [migration] [lab] [load] [walkthrough]
 */
import { benchPlanning } from "./planning";

function print(name: string, value: number, unit: string): void {
  process.stdout.write(`bench ${name} ${value} ${unit}\n`);
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const all = wanted.length === 0;
  if (all || wanted.includes("planning")) benchPlanning(print);
  if (all || wanted.includes("migration")) {
    // The migration's transfer over a 1 Gbit/s link shaped between network namespaces (root, no QEMU).
    const { benchMigration } = await import("./migration");
    await benchMigration(print);
  }
  if (all || wanted.includes("lab")) {
    // The lab's figures (image build, boot, xl create) need QEMU; see test/lab/README.md.
    const { runLabBench } = await import("../lab/bench");
    await runLabBench((line) => process.stdout.write(`${line}\n`));
  }
  if (all || wanted.includes("load")) {
    // Ten guests created, changed and destroyed at once on a lab dom0, against one (≈ 30 min; test/lab/load.ts).
    const { runLoadBench } = await import("../lab/bench");
    await runLoadBench((line) => process.stdout.write(`${line}\n`));
  }
  if (all || wanted.includes("walkthrough")) {
    // The whole walkthrough in the lab (≈ 40 min: the bare server's Xen install and reboot); see test/lab/bench.ts.
    const { runWalkthroughBench } = await import("../lab/bench");
    await runWalkthroughBench((line) => process.stdout.write(`${line}\n`));
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
