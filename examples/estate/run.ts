/**
 * `npm run estate [-- up|preview|refresh|destroy|down]`: the main job. Boots the lab dom0 (or reuses the running
 * one), points the `lab` stack of this project at it and runs `pulumi up` of examples/estate with the project's
 * Pulumi CLI (`npm run pulumi`). `down` destroys the stack's resources and stops the lab.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { Lab } from "../../test/lab/lab";

const repo = path.resolve(__dirname, "..", "..", "..");
const STACK = "lab";

function pulumi(args: string[], input?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const p = spawn("bash", [path.join(repo, "test", "engine", "pulumi.sh"), ...args], {
      cwd: repo,
      stdio: [input === undefined ? "inherit" : "pipe", "inherit", "inherit"],
    });
    p.on("error", reject);
    p.on("exit", (code) => resolve(code ?? 1));
    if (input !== undefined) p.stdin!.end(input);
  });
}

async function must(args: string[], input?: string): Promise<void> {
  const code = await pulumi(args, input);
  if (code !== 0) throw new Error(`pulumi ${args.join(" ")} exited with ${code}`);
}

/** The dynamic-provider process finds the package through node_modules (see test/engine/README.md). */
function linkSelf(): void {
  const link = path.join(repo, "node_modules", "xen-estate");
  if (!fs.existsSync(link)) fs.symlinkSync("..", link, "dir");
}

async function main(): Promise<number> {
  const action = process.argv[2] ?? "up";
  linkSelf();
  let lab = Lab.attach("dom0");
  if (action === "down") {
    if (lab?.isRunning()) await pulumi(["destroy", "--yes", "--stack", STACK]);
    await lab?.stop();
    return 0;
  }
  if (!lab?.isRunning()) {
    process.stderr.write("booting the lab dom0 (QEMU, software emulation: a few minutes)…\n");
    lab = await Lab.start("dom0", { detach: true, instance: "dom0" });
  }
  process.stderr.write(`lab dom0: ssh port ${lab.port}, host key ${lab.hostKey}\n`);
  if ((await pulumi(["stack", "select", STACK])) !== 0) await must(["stack", "init", STACK]);
  await must(["config", "set", "--stack", STACK, "dom0Host", lab.host]);
  await must(["config", "set", "--stack", STACK, "dom0Port", String(lab.port)]);
  await must(["config", "set", "--stack", STACK, "dom0HostKey", lab.hostKey]);
  await must(["config", "set", "--stack", STACK, "--secret", "dom0PrivateKey"], lab.privateKey);
  switch (action) {
    case "up": {
      // --refresh: a lab boots pristine, so state from an earlier boot must be reconciled first.
      const code = await pulumi(["up", "--yes", "--refresh", "--stack", STACK]);
      if (code === 0)
        process.stderr.write(
          `the dom0's Varnish answers on this machine: curl -H 'Host: app1.estate.test' http://127.0.0.1:${lab.httpPort}/\n`,
        );
      return code;
    }
    case "preview":
      return pulumi(["preview", "--diff", "--stack", STACK]);
    case "refresh":
      return pulumi(["refresh", "--yes", "--stack", STACK]);
    case "destroy":
      return pulumi(["destroy", "--yes", "--stack", STACK]);
    default:
      process.stderr.write("usage: npm run estate [-- up|preview|refresh|destroy|down]\n");
      return 2;
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
