/**
 * npm run lab -- build                   build (or find cached) lab images
 * npm run lab -- up [host]               boot a lab host in the background and print how to reach it
 * npm run lab -- ssh <host> <command…>   run a command there (e.g. `npm run lab -- ssh dom0 xl info`)
 * npm run lab -- status                  running instances, cached images
 * npm run lab -- down                    stop every lab instance and remove its overlays
 * npm run lab -- prune                   remove cached images of older recipes
 * npm run lab -- bench                   measure the lab (see bench.ts)
 */
import * as fs from "node:fs";
import * as path from "node:path";
import {
  LAB_HOSTS,
  LabHostName,
  Lab,
  buildImage,
  downAll,
  labCacheDir,
  pruneImages,
  recipeHash,
} from "./lab";
import { SourceVps, buildSourceImage, downSources } from "./source";

function usage(): never {
  process.stderr.write(
    [
      "usage: npm run lab -- <command>",
      "  build [--force]          build the dom0, bare and source images (cached by recipe hash)",
      "  up [host]                boot host (dom0, bare or source; default dom0) in the background",
      "  ssh <host> <command…>    run a command on a running host",
      "  status                   show running instances and cached images",
      "  down [instance]          stop one instance, or all of them (other processes' test runs too)",
      "  prune                    remove cached images of older recipes",
      "  bench                    measure build, boot and xl create times",
      "",
    ].join("\n"),
  );
  process.exit(2);
}

function hostArg(a: string | undefined): LabHostName | "source" {
  const h = (a ?? "dom0") as LabHostName;
  if (a === "source") return "source";
  if (!LAB_HOSTS.includes(h)) {
    process.stderr.write(
      `unknown lab host ${JSON.stringify(a)}; hosts: ${[...LAB_HOSTS, "source"].join(", ")}\n`,
    );
    process.exit(2);
  }
  return h;
}

function describe(lab: Lab): string {
  return [
    `${lab.instance}: running (QEMU pid ${lab.qemuPid}) since ${lab.startedAt}${lab.bootMs ? `, SSH after ${Math.round(lab.bootMs / 1000)} s` : ""}`,
    `  ssh:      ${lab.sshCommandLine()}`,
    `  or:       npm run lab -- ssh ${lab.instance} <command>`,
    `  ssh port: 127.0.0.1:${lab.port}  (host key ${lab.hostKey})`,
    `  http:     127.0.0.1:${lab.httpPort} -> ${lab.instance}:80`,
    `  key:      ${lab.privateKeyFile}`,
    `  console:  ${lab.consoleLog}`,
  ].join("\n");
}

async function main(): Promise<number> {
  const [cmd, ...rest] = process.argv.slice(2);
  switch (cmd) {
    case "build": {
      const t = Date.now();
      const img = await buildImage("dom0", { force: rest.includes("--force") });
      process.stdout.write(
        `dom0 image ${img.builtNow ? `built in ${Math.round((Date.now() - t) / 1000)} s` : "cached"}: ${img.dir}\n` +
          `  Xen ${img.xen}, kernel ${img.kernelVersion}, host key ${img.hostKeyFingerprint}\n`,
      );
      const t1 = Date.now();
      const bare = await buildImage("bare", { force: rest.includes("--force") });
      process.stdout.write(
        `bare server image ${bare.builtNow ? `built in ${Math.round((Date.now() - t1) / 1000)} s` : "cached"}: ${bare.dir}\n`,
      );
      const t2 = Date.now();
      const src = buildSourceImage({ force: rest.includes("--force") });
      process.stdout.write(
        `source VPS disk ${src.builtNow ? `built in ${Math.round((Date.now() - t2) / 1000)} s` : "cached"}: ${src.dir}/disk.img (${src.sizeMiB} MiB, host key ${src.hostKeyFingerprint})\n`,
      );
      return 0;
    }
    case "up": {
      const host = hostArg(rest[0]);
      if (host === "source") {
        const old = SourceVps.attach("source");
        if (old) old.stopSync();
        const src = await SourceVps.start({ instance: "source", detach: true });
        process.stdout.write(
          [
            `source: sshd in network namespace ${src.netns} at ${src.address}:22 (host key ${src.hostKey})`,
            `  ssh:   ssh ${src.sshArgs().join(" ")}`,
            `  or:    npm run lab -- ssh source <command>`,
            `  disk:  ${src.diskImage} (marker ${src.marker})`,
            "",
          ].join("\n"),
        );
        return 0;
      }
      const running = Lab.attach(host);
      if (running?.isRunning()) {
        process.stdout.write(`${describe(running)}\n`);
        return 0;
      }
      const lab = await Lab.start(host, { detach: true, instance: host });
      process.stdout.write(`${describe(lab)}\nstop with: npm run lab -- down\n`);
      return 0;
    }
    case "ssh": {
      const [instance, ...words] = rest;
      if (!instance || words.length === 0) usage();
      const input = process.stdin.isTTY ? undefined : fs.readFileSync(0);
      const src = SourceVps.attach(instance);
      if (src) {
        const r = await src.exec(words.join(" "), { timeoutMs: 30 * 60_000 });
        process.stdout.write(r.stdout);
        process.stderr.write(r.stderr);
        return r.exitCode ?? 1;
      }
      const lab = Lab.attach(instance);
      if (!lab?.isRunning()) {
        process.stderr.write(`lab ${instance} is not running: npm run lab -- up ${instance}\n`);
        return 1;
      }
      // Piped stdin goes through (`npm run lab -- ssh dom0 'cat > /tmp/x.cfg' < x.cfg`).
      const r = await lab.exec(words.join(" "), { timeoutMs: 30 * 60_000, input });
      process.stdout.write(r.stdout);
      process.stderr.write(r.stderr);
      return r.exitCode ?? 1;
    }
    case "status": {
      const labs = Lab.list();
      if (labs.length === 0) process.stdout.write("no lab instances\n");
      for (const src of SourceVps.list())
        process.stdout.write(`${src.instance}: source VPS sshd at ${src.address}:22 in netns ${src.netns}\n`);
      for (const lab of labs) {
        process.stdout.write(
          lab.isRunning()
            ? `${describe(lab)}\n`
            : `${lab.instance}: not running (stale state in ${lab.stateDir}; \`down\` removes it)\n`,
        );
      }
      const cache = labCacheDir();
      const current = recipeHash();
      if (fs.existsSync(cache)) {
        for (const d of fs.readdirSync(cache).sort()) {
          const meta = path.join(cache, d, "image.json");
          if (fs.existsSync(meta))
            process.stdout.write(
              `image ${d}${d.endsWith(current) ? " (current recipe)" : " (old recipe)"}: ${path.join(cache, d)}\n`,
            );
          else if (d.startsWith("base-"))
            process.stdout.write(`debootstrap base ${d}: ${path.join(cache, d)}\n`);
        }
      }
      if (!fs.existsSync(path.join(cache, current, "done")))
        process.stdout.write(`current recipe ${current} is not built: npm run lab -- build\n`);
      return 0;
    }
    case "down": {
      if (rest[0]) {
        // One instance only (`down guestpath`); without a name, everything, including other processes' runs.
        const lab = Lab.attach(rest[0]);
        const src = SourceVps.attach(rest[0]);
        if (!lab && !src) {
          process.stderr.write(`no lab instance ${rest[0]}\n`);
          return 1;
        }
        await lab?.stop();
        src?.stopSync();
        process.stdout.write(`stopped: ${rest[0]}\n`);
        return 0;
      }
      const names = [...(await downAll()), ...downSources()];
      process.stdout.write(names.length ? `stopped: ${names.join(", ")}\n` : "nothing was running\n");
      return 0;
    }
    case "prune": {
      const removed = pruneImages();
      process.stdout.write(removed.length ? `removed: ${removed.join(", ")}\n` : "nothing to prune\n");
      return 0;
    }
    case "bench": {
      const { runLabBench } = await import("./bench");
      await runLabBench();
      return 0;
    }
    default:
      usage();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
