/**
 * Hostile input through `pulumi up` on a lab dom0: the corpus of test/support/hostile.ts, spliced into the inputs
 * that take free text and reach the dom0's scripts and configs, every value that `check` accepts (the same check the
 * engine runs, called here first to choose them), declared by a real program, sent through the real engine and
 * provider to the real tools on the lab's Xen dom0:
 *
 * - RemoteFile: a file's path and content, a secret file's content (coreutils);
 * - LvmVolume: a volume's name and label (LVM, mkfs);
 * - NatDomU: a guest's kernel command line and owner (xl);
 * - BridgedDomU: its domain name, owner, kernel command line, disk path (a device node made at that path), bridge (a
 *   bridge of that name), and its unattended install's image path, nameservers and authorized key (xl, Xen's
 *   hotplug scripts, mkfs, tar, the guest's files);
 * - VarnishFrontend: its sites' host names, a health-check path and the cache size (varnishd's VCL compiler, its
 *   probe, systemd), in front of an HTTP server on the dom0 that answers every path and records what it was asked;
 * - Dom0XenBoot: Xen's and dom0's extra command-line arguments and xl's default bridge (GRUB's defaults, which
 *   grub-mkconfig sources as shell, and grub.cfg made from them);
 * - Dom0Monitoring: where mail goes, the relay, the mail name and an account whose mail is forwarded (dma, aliases).
 *
 * After `up`, every value arrived whole where it was meant to (files, the guest's disk, the probe's request, each
 * site answering its names through Varnish, the guest on its bridge); after `up`, `refresh` and `destroy`, no canary
 * file exists on the dom0 or on this machine: no piece ran as a command.
 *
 * Left out, with their proof elsewhere: inputs that are commands by contract (`validate`, `reloadCommand`), and
 * inputs whose accepted hostile values no real host can satisfy, so `up` could only fail (`owner`/`group`: no such
 * user; `mkfsOptions`: options mkfs refuses; a debootstrap mirror: no such host): test/framework/hostile-input.ssh.test.ts
 * runs every one of them through the real scripts on a real sshd, where the tools are stubs that log their argv.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { shellQuote, VARNISH_VCL } from "../../provider";
import { createStack, repoRoot, resourceChanges, type PulumiStack } from "../engine/harness";
import { slowTier } from "../support/tier";
import {
  asWritten,
  BRIDGED_NET,
  bridgedNeeds,
  canaries as canariesOn,
  declare,
  FILES,
  type BridgedNeeds,
  type Declared,
} from "./hostile";
import { imageAnswer } from "./kit";
import { LAB_NET, type Lab } from "./lab";
import { labMachine } from "./shared";

slowTier(
  "test/framework/hostile-input.ssh.test.ts runs every corpus piece check accepts, for every string input of every kind, through the real scripts on a real sshd on every run, finding no canary and no value split into words; this file sends them through pulumi up to a lab dom0",
);

const machine = labMachine("dom0");
/** At most this many resources per input (canary pieces first), to bound the lab time. */
const PER_INPUT = 6;
/** The HTTP server on the dom0 the frontend's sites are served by: it answers every path, and records each. */
const BACKEND = { port: 8093, dir: "/run/xeh-backend", unit: "xeh-backend" };
const BACKEND_PY = String.raw`
import base64, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open("${BACKEND.dir}/paths", "ab") as f:
            f.write(base64.b64encode(self.path.encode("latin-1")) + b"\n")
        body = ("xeh-backend host=%s\n" % self.headers.get("Host", "")).encode("latin-1")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_HEAD = do_GET
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", ${BACKEND.port}), H).serve_forever()
`;
/** The volume the bridged guest's disk path names (a device node of it at that path). */
const BRIDGED_LV = "vg0/xehb-disk";

describe("hostile input through pulumi up on a lab dom0", { timeout: 60 * 60_000 }, () => {
  let lab: Lab;
  let stack: PulumiStack;
  let specDir: string;
  let declared: Declared[];
  let bridged: BridgedNeeds;
  /** What the Dom0Host concerns would leave that was not there before (paths, and `dma`: the package). */
  let made: string[] = [];
  /** Whether Varnish's access log daemon ran before this file (see load.lab.test.ts: a VarnishFrontend starts it). */
  let logDaemonRan = true;

  /** The canary files on the dom0 and on this machine. */
  const canaries = (): Promise<string[]> => canariesOn((command) => lab.ssh(command));
  const q = shellQuote;

  before(async () => {
    lab = await machine.acquire();
    logDaemonRan = (await lab.ssh("systemctl is-active varnishncsa.service || true")).trim() === "active";
    declared = declare(lab, {
      perInput: PER_INPUT,
      guest: true,
      frontend: { backend: `127.0.0.1:${BACKEND.port}` },
      bridged: true,
      concerns: true,
    });
    for (const d of declared) console.log(`# hostile: ${d.name}: ${d.carries}`);
    bridged = bridgedNeeds(declared)!;
    // What the Dom0Host concerns change beyond their own files, to be undone after (the image has no GRUB
    // directory, as it boots Xen without a boot loader, and no dma; dma's package makes /etc/mailname).
    const had = await lab.ssh(
      "for f in /boot/grub /etc/aliases /etc/mailname; do [ -e $f ] && echo $f; done; dpkg-query -W -f '${Status}\\n' dma 2>/dev/null | grep -q ' installed$' && echo dma || true",
    );
    made = ["/boot/grub", "/etc/aliases", "/etc/mailname", "dma"].filter((f) => !had.split("\n").includes(f));
    if (made.includes("/boot/grub")) await lab.ssh("mkdir /boot/grub");
    // What the bridged guest's values name: its bridge (the dom0 on it, to reach the guest), a device node of a
    // fresh volume at its disk's path, the kit's root filesystem at its image's path. And the frontend's backend.
    await lab.ssh(
      [
        "set -e",
        `ip link add name ${q(bridged.bridge)} type bridge`,
        `ip addr add ${BRIDGED_NET.prefix}.1/24 dev ${q(bridged.bridge)}`,
        `ip link set ${q(bridged.bridge)} up`,
        `lvcreate -q -y -Zy -L 16M -n ${BRIDGED_LV.split("/")[1]} ${BRIDGED_LV.split("/")[0]} >/dev/null`,
        // An install fills a fresh ext4 (as an LvmVolume with a filesystem makes it).
        `mkfs.ext4 -q -L xehb /dev/${BRIDGED_LV}`,
        `mkdir -p -- "$(dirname -- ${q(bridged.disk)})"`,
        `mknod -m 600 -- ${q(bridged.disk)} b $(lsblk -dno MAJ:MIN /dev/${BRIDGED_LV} | tr ':' ' ')`,
        `mkdir -p -- "$(dirname -- ${q(bridged.image)})"`,
        `cp -- ${LAB_NET.kitDir}/rootfs.tar.gz ${q(bridged.image)}`,
        `mkdir -p ${BACKEND.dir}`,
        `cat > ${BACKEND.dir}/server.py <<'XEH_PY'\n${BACKEND_PY}\nXEH_PY`,
        `systemd-run --quiet --unit=${BACKEND.unit} python3 ${BACKEND.dir}/server.py`,
        `for i in $(seq 50); do curl -fsS -o /dev/null http://127.0.0.1:${BACKEND.port}/ && break; sleep 0.2; done`,
        `: > ${BACKEND.dir}/paths`,
      ].join("\n"),
    );
    specDir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-hostile-lab-"));
    const specFile = path.join(specDir, "spec.json");
    fs.writeFileSync(specFile, JSON.stringify({ resources: declared }));
    stack = await createStack({
      programDir: `${repoRoot()}/test/lab/fixtures/hostile`,
      linkPackage: true,
      config: { ...lab.stackConfig(), specFile: { value: specFile } },
    });
    assert.deepEqual(await canaries(), [], "no canary before the run");
  });

  after(async () => {
    try {
      if (stack) await stack.destroy().catch((e: Error) => console.log(`# ${e.message.split("\n")[0]}`));
      await stack?.remove();
      // What a failed run may have left: the guests, the volumes, the files; and what this file made itself.
      const b = bridged;
      await lab?.ssh(
        [
          "xl destroy xehg 2>/dev/null || true",
          ...(b
            ? [
                `xl destroy ${q(b.domain)} 2>/dev/null || true`,
                `rm -f -- /etc/xen/auto/${q(b.domain)}`,
                `ip link del ${q(b.bridge)} 2>/dev/null || true`,
                `rm -rf -- /dev/xehb`,
              ]
            : []),
          `lvremove -q -y ${BRIDGED_LV} >/dev/null 2>&1 || true`,
          "for lv in $(lvs --noheadings -o lv_name vg0 | awk '$1 ~ /^xeh/'); do lvremove -f vg0/$lv >/dev/null; done",
          `systemctl stop ${BACKEND.unit}.service 2>/dev/null || true`,
          `rm -rf ${FILES} ${BACKEND.dir}`,
          ...(made.includes("dma") ? ["apt-get purge -qq -y dma >/dev/null"] : []),
          ...made.filter((f) => f.startsWith("/")).map((f) => `rm -rf -- ${f}`),
          // As load.lab.test.ts: the machine had Varnish's access log daemon stopped (it fails at boot on the image).
          ...(logDaemonRan ? [] : ["systemctl stop varnishncsa.service"]),
        ].join("\n"),
      );
      fs.rmSync(specDir, { recursive: true, force: true });
    } finally {
      await machine.release();
    }
  });

  test("every kind's free-text inputs carry corpus pieces, canaries among them", () => {
    const carried = (kind: string): string =>
      declared
        .filter((d) => d.kind === kind)
        .map((d) => d.carries)
        .join("; ");
    assert.match(carried("NatDomU"), /boot\.cmdline [1-9]\d* pieces, owner [1-9]\d* pieces/);
    assert.match(
      carried("BridgedDomU"),
      /^BridgedDomU name [1-9]\d* pieces, owner [1-9]\d* pieces, cmdline [1-9]\d* pieces, disk [1-9]\d* pieces, bridge [1-9]\d* pieces, image [1-9]\d* pieces, nameserver [1-9]\d* pieces, key [1-9]\d* pieces$/,
    );
    assert.match(
      carried("VarnishFrontend"),
      /hostnames( \S+@append){6}, a hostname of [1-9]\d* pieces, healthCheck\.path [1-9]\d* pieces, cacheSize [1-9]\d* pieces/,
    );
    assert.match(
      carried("Dom0XenBoot"),
      /^Dom0XenBoot xenArgs [1-9]\d* pieces, dom0KernelArgs [1-9]\d* pieces, bridge [1-9]\d* pieces$/,
    );
    assert.match(
      carried("Dom0Monitoring"),
      /^Dom0Monitoring mailTo [1-9]\d* pieces, relay [1-9]\d* pieces, mailName [1-9]\d* pieces, user [1-9]\d* pieces$/,
    );
    for (const v of [bridged.disk, bridged.image, bridged.authorizedKeys[0]!, probePath()])
      assert.match(v, /xe-canary-/, `a canary in ${JSON.stringify(v).slice(0, 80)}`);
  });

  test("up creates every resource, each value as data, and no piece runs", async () => {
    assert.ok(declared.length > 10, `a program of ${declared.length} resources`);
    const up = await stack.up();
    const created = resourceChanges(up).filter((s) => s.op === "create").length;
    assert.equal(created, declared.length);
    assert.deepEqual(await canaries(), []);
    // Each file holds exactly its content, byte for byte, as the engine carried it (see asWritten).
    for (const d of declared.filter((x) => x.kind === "RemoteFile")) {
      const p = d.args.path as string;
      const got = await lab.ssh(`base64 -w0 < ${shellQuote(p)}`);
      assert.equal(
        Buffer.from(got.trim(), "base64").toString(),
        asWritten(d.args.content as string),
        d.carries,
      );
    }
  });

  test("each of the frontend's sites answers its names through Varnish, and its probe asks for the path as written", async () => {
    for (const name of siteNames()) {
      // Names are compared lower-case (check keeps them so); the Kelvin sign lower-cases to an ASCII k.
      const got = await lab.ssh(`curl -sS -m 10 -H ${q(`Host: ${name}`)} http://127.0.0.1/`);
      assert.equal(got.trim(), `xeh-backend host=${name}`, `through Varnish with Host ${name}`);
    }
    const asked = (await lab.ssh(`cat ${BACKEND.dir}/paths`))
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => Buffer.from(l, "base64").toString("latin1"));
    assert.ok(asked.includes(probePath()), `the probe asked for ${JSON.stringify(probePath())}`);
    const vcl = await lab.ssh(`cat ${VARNISH_VCL}`);
    for (const name of siteNames()) assert.ok(vcl.includes(name), `the VCL names ${name}`);
  });

  test("the bridged guest runs on its bridge from its disk's path, its install wrote the key and nameserver as written", async () => {
    assert.equal(
      (await lab.ssh(`xl list | awk -v n=${q(bridged.domain)} '$1 == n' | wc -l`)).trim(),
      "1",
      `the domain ${bridged.domain} runs`,
    );
    const vifs = await lab.ssh(`ls /sys/class/net/${q(bridged.bridge)}/brif`);
    assert.match(vifs, /^vif\d+\.0$/m, `a vif on ${bridged.bridge}`);
    // The kit boots the installed image, which answers with the hostname and at the address the install wrote.
    const answer = await lab.ssh(`curl -sS -m 10 http://${BRIDGED_NET.guest}/`);
    assert.equal(answer.trim(), imageAnswer(bridged.domain));
    const file = (f: string): Promise<string> =>
      lab.ssh(`debugfs -R ${q(`cat ${f}`)} ${q(bridged.disk)} 2>/dev/null`);
    assert.equal(
      await file("/root/.ssh/authorized_keys"),
      `${bridged.authorizedKeys[0]!.trim().split(/\s+/).join(" ")}\n`,
    );
    assert.match(
      await file("/etc/resolv.conf"),
      new RegExp(`^nameserver ${bridged.nameservers[0]!.trim()}$`, "m"),
    );
  });

  test("each guest's owner tag, set from its hostile resource name, arrived in its config as written", async () => {
    for (const [kind, domain] of [
      ["NatDomU", "xehg"],
      ["BridgedDomU", bridged.domain],
    ] as const) {
      const d = declared.find((x) => x.kind === kind)!;
      const cfg = await lab.ssh(`cat ${q(`/etc/xen/${domain}.cfg`)}`);
      const owner = `xen-estate-lab-hostile/${stack.name}/${d.name}`;
      assert.ok(cfg.split("\n").includes(`# xen-estate-owner ${owner}`), `${kind} ${domain}: ${owner}`);
    }
  });

  test("the Dom0Host concerns wrote their values as written, and GRUB's configuration made from them holds them", async () => {
    const boot = declared.find((d) => d.kind === "Dom0XenBoot")!.args as {
      xenArgs: string;
      dom0KernelArgs: string;
      bridge: string;
    };
    const grub = await lab.ssh("cat /boot/grub/grub.cfg");
    const xen = grub.split("\n").find((l) => /^\s*multiboot2\s+\/boot\/xen/.test(l)) ?? "";
    assert.ok(xen.includes(` ${boot.xenArgs}`), `Xen's line in grub.cfg carries xenArgs: ${xen}`);
    const linux = grub.split("\n").find((l) => /^\s*module2\s+\/boot\/vmlinuz/.test(l)) ?? "";
    assert.ok(
      linux.includes(` ${boot.dom0KernelArgs}`),
      `dom0's line in grub.cfg carries dom0KernelArgs: ${linux}`,
    );
    const xl = (await lab.ssh("cat /etc/xen/xl.conf")).split("\n");
    assert.ok(xl.includes(`vif.default.bridge="${boot.bridge}"`), "xl's default bridge");
    const mon = declared.find((d) => d.kind === "Dom0Monitoring")!.args as {
      mailTo: string;
      relay: { host: string };
      mailName: string;
      users: string[];
    };
    const dma = (await lab.ssh("cat /etc/dma/dma.conf")).split("\n");
    assert.ok(dma.includes(`SMARTHOST ${mon.relay.host}`), "dma's relay");
    assert.ok(dma.includes(`MAILNAME ${mon.mailName}`), "dma's mail name");
    const aliases = (await lab.ssh("cat /etc/aliases")).split("\n");
    assert.ok(aliases.includes(`${mon.users[0]}: ${mon.mailTo}`), "the account's mail goes to mailTo");
  });

  test("refresh and a second up find nothing changed, and no piece runs", async () => {
    await stack.refresh();
    const second = await stack.up();
    assert.deepEqual(resourceChanges(second), []);
    assert.deepEqual(await canaries(), []);
  });

  test("destroy removes every resource, and no piece runs", async () => {
    const down = await stack.destroy();
    assert.equal(resourceChanges(down).filter((s) => s.op === "delete").length, declared.length);
    assert.deepEqual(await canaries(), []);
    assert.equal(
      (
        await lab.ssh("lvs --noheadings -o lv_name vg0 | awk '$1 ~ /^xeh/ && $1 != \"xehb-disk\"' | wc -l")
      ).trim(),
      "0",
    );
    for (const guest of ["xehg", bridged.domain])
      assert.equal((await lab.ssh(`xl list | awk -v n=${q(guest)} '$1 == n' | wc -l`)).trim(), "0", guest);
    assert.equal((await lab.ssh(`ls -A /sys/class/net/${q(bridged.bridge)}/brif | wc -l`)).trim(), "0");
  });

  /** The frontend's host names as check keeps them (lower-case). */
  function siteNames(): string[] {
    const fe = declared.find((d) => d.kind === "VarnishFrontend")!;
    return (fe.args.sites as { hostnames: string[] }[]).flatMap((s) =>
      s.hostnames.map((h) => h.toLowerCase()),
    );
  }

  /** The health-check path that carries the corpus (the second site's). */
  function probePath(): string {
    const fe = declared.find((d) => d.kind === "VarnishFrontend")!;
    return (fe.args.sites as { healthCheck: { path: string } }[])[1]!.healthCheck.path;
  }
});
