/**
 * Dom0Monitoring (a Dom0Host concern) under cut connections (issue 15): a create (the mail relay's config, the
 * aliases, smartd's schedule, mdadm's MAILADDR, relatime in the fstab and on the live `/`) and an update (another
 * operator address and schedule) have the provider's SSH path dropped at each remote step in turn; the next run (as
 * the engine makes it) must converge: every file the declared one, mdadm.conf's arrays kept with one MAILADDR, the
 * fstab's `/` relatime and its other lines as they were, `/` remounted relatime, smartd running the declared
 * schedule, each original kept once as it was before the first write, no temp file left. A delete with
 * `onDelete: "restore"` must leave the originals back, the file xen-estate made gone, smartd running the restored
 * schedule and its record on the host removed.
 *
 * Real: sshd, bash, the files in an overlay of this machine's /etc (a private mount namespace, as a host's own
 * sshd sees it: test/support/sshd.ts), the backups. Simulated (test/support/stub-commands.ts's way, on the PATH
 * of the scripts): `dma` (only looked for), `systemctl` (this machine's PID 1 is not systemd; a restart of
 * smartmontools records the smartd.conf smartd would read), and `findmnt`/`mount` for `/` (its mount options live in
 * a file, so a remount is seen without remounting this machine's root).
 */
import { after, before } from "node:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { BACKUP_ROOT, hostContext, shellQuote, VERSION, type Context } from "../../provider";
import { dom0MonitoringKind, type Dom0MonitoringInputs } from "../../provider/resources/dom0-monitoring";
import {
  ALIASES,
  DMA_CONF,
  MONITORING_STATE,
  SMARTD_APPLIED,
  SMARTD_CONF,
} from "../../provider/resources/dom0-monitoring/plan";
import { planDiff } from "../../provider/framework/plan";
import { ORIGINAL_SUFFIX } from "../../provider/remote/files";
import { checked } from "../support/checked";
import { CutRelay, describeCutMatrix, lookAtHost, type CutScenario } from "../support/cut-matrix";
import { withStubs } from "../support/stub-commands";
import { freePort, generateKey, runDirect, startHostOwnSshd, type KeyPair, type Sshd } from "../support/sshd";

const FSTAB = [
  "# /etc/fstab: static file system information.",
  "UUID=3f1c0d2e-0000-4000-8000-000000000001 / ext4 rw,strictatime,errors=remount-ro 0 1",
  "UUID=3f1c0d2e-0000-4000-8000-000000000002 /boot ext4 defaults 0 2",
  "",
].join("\n");
const MDADM = [
  "# mdadm.conf written by the installer",
  "ARRAY /dev/md/0 metadata=1.2 UUID=7c5e1a4b:00000000:00000000:00000001 name=rescue:0",
  "ARRAY /dev/md/1 metadata=1.2 UUID=7c5e1a4b:00000000:00000000:00000002 name=rescue:1",
  "",
].join("\n");
const ALIASES_ORIGINAL = "# See man 5 aliases for format\npostmaster:    root\n";
const SMARTD_ORIGINAL =
  "DEVICESCAN -d removable -n standby -m root -M exec /usr/share/smartmontools/smartd-runner\n";

let base: string;
let key: KeyPair;
let sshd: Sshd;
let relay: CutRelay;
let stubs: string;
/** The simulated state of `/`'s mount options and of the smartd.conf smartd runs. */
const rootOptions = (): string => path.join(base, "root-options");
const smartdRunning = (): string => path.join(base, "smartd-running");

const sha256 = (s: string): string => createHash("sha256").update(s).digest("hex");

before(async () => {
  base = fs.mkdtempSync("/dev/shm/xecut-monitoring-");
  key = await generateKey(base, "client");
  sshd = await startHostOwnSshd(base, { authorizedKeys: [key.publicKey], port: await freePort() });
  relay = new CutRelay(sshd.host, sshd.port);
  await relay.start();
  stubs = path.join(base, "stubs");
  fs.mkdirSync(stubs);
  const stub = (name: string, body: string[]): void =>
    fs.writeFileSync(path.join(stubs, name), ["#!/bin/bash", ...body, ""].join("\n"), { mode: 0o755 });
  stub("dma", ["exit 0"]);
  stub("systemctl", [
    `case "$*" in`,
    `  "restart smartmontools.service") sha256sum < ${SMARTD_CONF} | cut -d' ' -f1 > ${smartdRunning()} ;;`,
    `  "enable --quiet smartmontools.service") ;;`,
    // try-restart: smartd runs in this simulation whenever it has a recorded schedule.
    `  "try-restart smartmontools.service") [ -f ${smartdRunning()} ] && sha256sum < ${SMARTD_CONF} | cut -d' ' -f1 > ${smartdRunning()} ;;`,
    `  *) echo "systemctl stub: unexpected: $*" >&2; exit 1 ;;`,
    `esac`,
  ]);
  stub("findmnt", [
    `[ "$*" = "-no OPTIONS /" ] || { echo "findmnt stub: unexpected: $*" >&2; exit 1; }`,
    `cat ${rootOptions()}`,
  ]);
  stub("mount", [
    `[ "$*" = "-o remount,relatime /" ] || { echo "mount stub: unexpected: $*" >&2; exit 1; }`,
    `echo rw,relatime,errors=remount-ro > ${rootOptions()}`,
  ]);
});

after(async () => {
  await relay?.stop();
  await sshd?.stop();
  fs.rmSync(base, { recursive: true, force: true });
});

/** Runs `script` as root straight to sshd (not through the relay). */
function direct(script: string): Promise<string> {
  return runDirect(sshd, key.privateKey, "root", script);
}

/** A context over a fresh pool (a new `pulumi up` process) through the relay, its scripts finding the stubs. */
function freshContext(): Context {
  return hostContext(withStubs(relay.freshHost(sshd.hostKey.fingerprint, key.privateKey), stubs));
}

function inputs(mailTo: string, schedule: string): Dom0MonitoringInputs {
  return checked<Dom0MonitoringInputs>("Dom0Monitoring", {
    connection: { host: "127.0.0.1", port: relay.port, hostKey: sshd.hostKey.fingerprint },
    credentials: { privateKey: key.privateKey },
    xenEstateVersion: VERSION,
    mailTo,
    relay: { host: "mail.example.org", port: 587, starttls: true },
    mailName: "dom0.example.org",
    users: ["ops"],
    smartDisks: [{ device: "/dev/nvme0n1", schedule }, "/dev/nvme1n1"],
    onDelete: "restore",
  });
}
const FIRST = (): Dom0MonitoringInputs => inputs("ops@example.org", "(S/../.././02|L/../../6/03)");
const SECOND = (): Dom0MonitoringInputs => inputs("oncall@example.org", "(S/../.././04|L/../../7/05)");

/** The server as the installer left it: its own fstab, mdadm.conf, aliases and smartd.conf, nothing of ours. */
async function resetBare(): Promise<void> {
  await direct(
    [
      `rm -rf -- ${BACKUP_ROOT} ${MONITORING_STATE} /etc/dma`,
      `mkdir -p /etc/mdadm`,
      `printf '%s' ${shellQuote(FSTAB)} > /etc/fstab`,
      `printf '%s' ${shellQuote(MDADM)} > /etc/mdadm/mdadm.conf`,
      `printf '%s' ${shellQuote(ALIASES_ORIGINAL)} > ${ALIASES}`,
      `printf '%s' ${shellQuote(SMARTD_ORIGINAL)} > ${SMARTD_CONF}`,
    ].join("\n"),
  );
  fs.writeFileSync(rootOptions(), "rw,strictatime,errors=remount-ro\n");
  fs.writeFileSync(smartdRunning(), `${sha256(SMARTD_ORIGINAL)}\n`);
}

/** Files as the host's sessions see them (null: absent), and the temp files left in /etc, in one SSH call. */
function look(files: readonly string[]): ReturnType<typeof lookAtHost> {
  return lookAtHost(direct, files, `find /etc -maxdepth 2 -name '.*.xen-estate.*'`);
}

const MDADM_CONF = "/etc/mdadm/mdadm.conf";
const original = (file: string): string => `${BACKUP_ROOT}${file}${ORIGINAL_SUFFIX}`;

/** Why the host does not hold what `i` declares, or undefined. */
async function convergedOn(i: Dom0MonitoringInputs, outs: unknown): Promise<string | undefined> {
  if (!outs) return "the last run returned no outputs";
  const originals: Record<string, string> = {
    "/etc/fstab": FSTAB,
    [ALIASES]: ALIASES_ORIGINAL,
    [SMARTD_CONF]: SMARTD_ORIGINAL,
  };
  const host = await look([
    ...Object.keys(i.files),
    MDADM_CONF,
    "/etc/fstab",
    ...Object.keys(originals).map(original),
    original(DMA_CONF),
  ]);
  const at = (f: string): string | null => host.files.get(f) ?? null;
  for (const [file, content] of Object.entries(i.files))
    if (at(file) !== content) return `${file} is not the declared one`;
  const mdadm = at(MDADM_CONF) ?? "";
  if (!mdadm.startsWith(MDADM)) return "mdadm.conf lost what the installer wrote";
  const mailaddr = mdadm.split("\n").filter((l) => l.startsWith("MAILADDR"));
  if (mailaddr.join("|") !== "MAILADDR root")
    return `mdadm.conf's MAILADDR lines: ${JSON.stringify(mailaddr)}`;
  const fstab = at("/etc/fstab") ?? "";
  const want = FSTAB.replace("rw,strictatime,errors=remount-ro", "rw,errors=remount-ro,relatime");
  if (fstab.replace(/\t/g, " ") !== want) return `the fstab is ${JSON.stringify(fstab)}`;
  if (!/(^|,)relatime(,|$)/.test(fs.readFileSync(rootOptions(), "utf8").trim()))
    return "/ is still strictatime";
  if (fs.readFileSync(smartdRunning(), "utf8").trim() !== sha256(i.files[SMARTD_CONF]!))
    return "smartd does not run the declared schedule";
  if (host.temps !== "") return `temp files left: ${host.temps}`;
  for (const [file, content] of Object.entries(originals))
    if (at(original(file)) !== content) return `${file}'s original is not kept as it was`;
  if (at(original(DMA_CONF)) !== null) return `${DMA_CONF} had no original, yet one is kept`;
  return undefined;
}

const scenarios = (): CutScenario<unknown>[] => {
  let outs: unknown;
  return [
    {
      // A create records nothing until it returns: a failed one is made again.
      operation: "create",
      reset: async () => {
        outs = undefined;
        await resetBare();
      },
      run: async (ctx) => {
        outs = await dom0MonitoringKind.create(ctx, FIRST(), () => {});
        return outs;
      },
      converged: () => convergedOn(FIRST(), outs),
    },
    {
      // A failed update is tried again with the same olds and news.
      operation: "update (operator, schedule)",
      reset: async () => {
        outs = undefined;
        await resetBare();
        await dom0MonitoringKind.create(freshContext(), FIRST(), () => {});
      },
      run: async (ctx) => {
        outs = await dom0MonitoringKind.update(
          ctx,
          "127.0.0.1:monitoring",
          FIRST(),
          SECOND(),
          planDiff("Dom0Monitoring", { ...FIRST() }, { ...SECOND() }),
        );
        return outs;
      },
      converged: () => convergedOn(SECOND(), outs),
    },
    {
      // onDelete "restore": the originals go back, the file xen-estate made goes to the backups.
      operation: "delete (restore)",
      reset: async () => {
        await resetBare();
        await dom0MonitoringKind.create(freshContext(), FIRST(), () => {});
      },
      run: (ctx) => dom0MonitoringKind.delete(ctx, "127.0.0.1:monitoring", FIRST()),
      converged: async () => {
        const host = await look([ALIASES, SMARTD_CONF, DMA_CONF, SMARTD_APPLIED]);
        if (host.files.get(ALIASES) !== ALIASES_ORIGINAL) return `${ALIASES} is not the original`;
        if (host.files.get(SMARTD_CONF) !== SMARTD_ORIGINAL) return `${SMARTD_CONF} is not the original`;
        if (host.files.get(DMA_CONF) !== null) return `${DMA_CONF} is still there`;
        if (fs.readFileSync(smartdRunning(), "utf8").trim() !== sha256(SMARTD_ORIGINAL))
          return "smartd does not run the restored schedule";
        if (host.files.get(SMARTD_APPLIED) !== null) return `${SMARTD_APPLIED} is left`;
        return host.temps === "" ? undefined : `temp files left: ${host.temps}`;
      },
    },
  ];
};

describeCutMatrix("Dom0Monitoring", scenarios(), {
  relay: () => relay,
  freshContext,
  timeoutMs: 20 * 60_000,
});
