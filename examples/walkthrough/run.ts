/**
 * `npm run estate [-- up|preview|refresh|destroy|down]`: the main job, the walkthrough (this folder's program) on
 * the lab's stand-ins for its machines. It starts, or reuses when they run, the bare server (plain Debian 12 as
 * installimage leaves it, booting through its own GRUB in QEMU: test/lab/bare-server.ts) and the source VPS (a
 * real sshd in a network namespace holding a Debian 12 disk: test/lab/source.ts), points the `lab` stack of the
 * repository's project (Pulumi.yaml at the root runs this program) at them, and runs `pulumi up` with the project's
 * Pulumi CLI (`npm run pulumi`). The first `up` takes the bare server to a Xen dom0, migrates the VPS onto it,
 * installs the NAT guest and puts Varnish in front (20–35 minutes under software emulation); a second one changes
 * nothing. `destroy` removes the guests and volumes (the dom0 stays a dom0, as Dom0Host promises); `down` destroys
 * and stops both machines.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { attachBareServer, startBareServer, type BareServer } from "../../test/lab/bare-server";
import { SourceVps } from "../../test/lab/source";
import {
  MIGRATED,
  NAT,
  SSH_PORT,
  walkthroughBareOptions,
  walkthroughConfig,
} from "../../test/lab/walkthrough";

const repo = path.resolve(__dirname, "..", "..", "..");
const STACK = "lab";
const BARE = "walkthrough";
const SOURCE = "walkthrough-source";
/** The source VPS's address slot (test/lab/source.ts): fixed, since the bare server's forward names its address. */
const SOURCE_SLOT = 15999;

const say = (line: string): void => void process.stderr.write(`${line}\n`);

/** Runs the project's Pulumi CLI; `input` goes to its stdin (a config value: never on its command line). */
function pulumi(args: string[], input?: string, quiet = false): Promise<number> {
  return new Promise((resolve, reject) => {
    const p = spawn("bash", [path.join(repo, "test", "engine", "pulumi.sh"), ...args], {
      cwd: repo,
      stdio: [
        input === undefined ? "inherit" : "pipe",
        quiet ? "ignore" : "inherit",
        quiet ? "ignore" : "inherit",
      ],
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

/** The read-only loop device that shows the source's disk as its rescue system would (made once). */
function sourceLoop(src: SourceVps): string {
  const found = spawnSync("losetup", ["-j", src.diskImage], { encoding: "utf8" })
    .stdout.split(":")[0]
    ?.trim();
  if (found) return found;
  const r = spawnSync("losetup", ["-f", "--show", "-r", src.diskImage], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`losetup of ${src.diskImage} failed: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

function detachLoops(src: SourceVps): void {
  const out = spawnSync("losetup", ["-j", src.diskImage], { encoding: "utf8" }).stdout;
  for (const line of out.split("\n").filter(Boolean)) spawnSync("losetup", ["-d", line.split(":")[0]!]);
}

/** The two machines, reused when both run; a fresh bare server means a fresh stack (its state described another). */
async function machines(): Promise<{ src: SourceVps; bare: BareServer; fresh: boolean }> {
  let src = SourceVps.attach(SOURCE);
  let bare = attachBareServer(BARE, { sshPort: SSH_PORT });
  if (src?.isRunning() && bare) return { src, bare, fresh: false };
  await bare?.stop();
  if (src) detachLoops(src);
  say("starting the source VPS and booting the bare server (QEMU, software emulation: a few minutes)…");
  src = await SourceVps.start({ instance: SOURCE, detach: true, slot: SOURCE_SLOT });
  bare = await startBareServer({
    ...walkthroughBareOptions(src),
    instance: BARE,
    detach: true,
    log: say,
  });
  return { src, bare, fresh: true };
}

async function main(): Promise<number> {
  const action = process.argv[2] ?? "up";
  if (!["up", "preview", "refresh", "destroy", "down"].includes(action)) {
    say("usage: npm run estate [-- up|preview|refresh|destroy|down]");
    return 2;
  }
  linkSelf();
  if (action === "down") {
    const bare = attachBareServer(BARE, { sshPort: SSH_PORT });
    if (bare) await pulumi(["destroy", "--yes", "--stack", STACK]);
    await bare?.stop();
    const src = SourceVps.attach(SOURCE);
    if (src) {
      detachLoops(src);
      await src.stop();
    }
    return 0;
  }
  if (action !== "up" && !attachBareServer(BARE, { sshPort: SSH_PORT })) {
    say("the lab's bare server is not running: `npm run estate` (up) starts it");
    return 1;
  }
  const { src, bare, fresh } = await machines();
  if (fresh && (await pulumi(["stack", "select", STACK], "", true)) === 0) {
    say(`a fresh bare server: the ${STACK} stack's old state described another machine, so it starts over`);
    await must(["stack", "rm", "--yes", "--force", STACK]);
  }
  await must(["stack", "select", "--create", STACK]);
  for (const [key, { value, secret }] of Object.entries(walkthroughConfig(bare, src, sourceLoop(src)).config))
    await must(["config", "set", "--stack", STACK, ...(secret ? ["--secret"] : []), key], value);
  say(
    `bare server: ssh on 127.0.0.1:${bare.lab.port} (port ${SSH_PORT} once hardened: 127.0.0.1:${bare.lab.forwarded[String(SSH_PORT)]}); source VPS ${src.address}:22`,
  );
  switch (action) {
    case "up": {
      const code = await pulumi(["up", "--yes", "--stack", STACK]);
      if (code === 0) {
        say(
          `Varnish on the dom0 answers for the NAT guest: curl -H 'Host: ${NAT.hostname}' http://127.0.0.1:${bare.lab.httpPort}/`,
        );
        say(
          `the dom0's admin: ssh -i ${bare.lab.privateKeyFile} -p ${bare.lab.forwarded[String(SSH_PORT)]} ops@127.0.0.1 (the migrated VPS is ${MIGRATED.ip} on its bridge)`,
        );
      }
      return code;
    }
    case "preview":
      return pulumi(["preview", "--diff", "--stack", STACK]);
    case "refresh":
      return pulumi(["refresh", "--yes", "--stack", STACK]);
    default:
      return pulumi(["destroy", "--yes", "--stack", STACK]);
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
