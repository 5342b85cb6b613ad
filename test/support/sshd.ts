/**
 * Real OpenSSH servers for the executor's integration tests, started by the test itself with generated keys.
 *
 * `startSshd()` runs `/usr/sbin/sshd -D` on 127.0.0.1 (or inside a network namespace) with its own host key,
 * authorized keys and log. `JumpTopology` builds two namespaces so that a target is reachable only through a
 * jump host: root ns --veth-- jump ns --veth-- target ns, with no route from the root ns to the target.
 */
import { ChildProcess, execFile, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { Checker, resolveConnection, RemoteHost, SshPool } from "../../provider";

const run = promisify(execFile);

/**
 * The sshd_config line every test sshd carries so that its sessions do not run this machine's ~/.bashrc (see
 * {@link startSshd}); the lab's source VPS uses it too.
 */
export const SESSION_ENV = "SetEnv SHLVL=1";

const isSetEnv = (line: string): boolean => /^\s*SetEnv\s/i.test(line);

/** `SetEnv` lines merged into one (sshd uses the first only), or none. */
function sessionEnv(...lines: string[][]): string[] {
  const vars = lines.flat().map((l) => l.replace(/^\s*SetEnv\s+/i, ""));
  return vars.length > 0 ? [`SetEnv ${vars.join(" ")}`] : [];
}

export interface KeyPair {
  privateKey: string;
  publicKey: string;
  /** `SHA256:…` */
  fingerprint: string;
  file: string;
}

export async function generateKey(
  dir: string,
  name: string,
  opts: { passphrase?: string; type?: string } = {},
): Promise<KeyPair> {
  const file = path.join(dir, name);
  // ssh-keygen would ask on stdin whether to overwrite, and wait forever.
  if (fs.existsSync(file)) throw new Error(`generateKey: ${file} exists already; give the key another name`);
  await run("ssh-keygen", [
    "-q",
    "-t",
    opts.type ?? "ed25519",
    "-N",
    opts.passphrase ?? "",
    "-C",
    name,
    "-f",
    file,
  ]);
  const { stdout } = await run("ssh-keygen", ["-lf", `${file}.pub`]);
  return {
    privateKey: fs.readFileSync(file, "utf8"),
    publicKey: fs.readFileSync(`${file}.pub`, "utf8").trim(),
    fingerprint: stdout.split(" ")[1]!,
    file,
  };
}

/** A key pair already on disk (`file` and `file.pub`). */
export async function existingKey(file: string): Promise<KeyPair> {
  const { stdout } = await run("ssh-keygen", ["-lf", `${file}.pub`]);
  return {
    privateKey: fs.readFileSync(file, "utf8"),
    publicKey: fs.readFileSync(`${file}.pub`, "utf8").trim(),
    fingerprint: stdout.split(" ")[1]!,
    file,
  };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Test users created once per machine: one with passwordless sudo, one whose sudo wants a password. */
export const USERS = {
  sudoer: { name: "xetest", password: "xe-test-Pw-4827" },
  noSudo: { name: "xetestpw", password: "xe-test-Pw-9931" },
};

export async function ensureTestUsers(): Promise<void> {
  for (const u of Object.values(USERS)) {
    const exists = await run("id", [u.name]).then(
      () => true,
      () => false,
    );
    if (!exists) await run("useradd", ["-m", "-s", "/bin/bash", u.name]);
    await new Promise<void>((resolve, reject) => {
      const p = spawn("chpasswd", [], { stdio: ["pipe", "ignore", "inherit"] });
      p.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`chpasswd exited ${code}`))));
      p.stdin.end(`${u.name}:${u.password}\n`);
    });
  }
  fs.mkdirSync("/etc/sudoers.d", { recursive: true });
  fs.writeFileSync(
    "/etc/sudoers.d/xen-estate-tests",
    `${USERS.sudoer.name} ALL=(ALL) NOPASSWD: ALL\n${USERS.noSudo.name} ALL=(ALL) ALL\n`,
    {
      mode: 0o440,
    },
  );
}

export interface SshdOptions {
  /** Public keys allowed to log in (any user). */
  authorizedKeys: string[];
  port?: number;
  listen?: string;
  /** Run inside this network namespace. */
  netns?: string;
  /** Words run before sshd's own command line (inside the namespace), e.g. to start it in a sandbox. */
  wrap?: string[];
  /** Start the server only after this many milliseconds (the port is reserved but closed until then). */
  delayMs?: number;
  /** Extra sshd_config lines. */
  extraConfig?: string[];
  /**
   * Make this sshd another machine as far as xen-estate can tell: its sessions see this text as /etc/machine-id (a
   * private mount namespace bind-mounts it; the host's file is untouched).
   */
  machineId?: string;
  /** Use this host key (a private key file; its `.pub` beside it) instead of generating one. */
  hostKeyFile?: string;
  /**
   * Run sshd the way a host's own sshd runs, for code that changes and reloads it: it reads /etc/ssh/sshd_config as
   * its sessions see it (`wrap` must mount an /etc overlay whose upper directory is `upperEtc`, and a private /run:
   * the pid is in /run/sshd.pid). That file is written into `upperEtc` before the start; it begins with the Include
   * of /etc/ssh/sshd_config.d/*.conf, as Debian's does, and names no port: a drop-in there must (`Port <port>`).
   */
  systemConfig?: { upperEtc: string };
  /**
   * Start sessions as a host's own sshd does, without the shell level every test sshd sets ({@link SESSION_ENV}):
   * the session's bash then reads this machine's startup files (/etc/bash.bashrc, root's ~/.bashrc, seconds under
   * load). @default false
   */
  hostSessions?: boolean;
}

export interface Sshd {
  host: string;
  port: number;
  hostKey: KeyPair;
  /** The file its sessions read as authorized keys (every user). */
  authorizedKeysFile: string;
  /** The sshd log so far (LogLevel VERBOSE). */
  log(): string;
  stop(): Promise<void>;
  dir: string;
}

/**
 * A `wrap` for {@link startSshd}: sshd runs in a mount namespace of its own where `commands` ran first (bind mounts,
 * overlays), so what its sessions change there never reaches the host's files.
 */
export function inMountNamespace(commands: readonly string[]): string[] {
  return [
    "unshare",
    "-m",
    "--propagation",
    "private",
    "bash",
    "-c",
    `set -e; ${commands.join("; ")}; exec "$@"`,
    "xe-mounts",
  ];
}

/**
 * A real sshd that runs as a host's own does, for the concerns that change sshd itself (Dom0Access): it reads
 * /etc/ssh/sshd_config (an overlay of this machine's /etc in a private mount namespace, whose changes land in
 * `base`/etc-upper), its pid is /run/sshd.pid (a private /run), and /home, /run/lock, /var/lib/xen-estate and
 * /var/backups are directories of `base`. It listens on `port`, which a drop-in of the host's own
 * (`sshd_config.d/00-xen-estate.conf`, the file Dom0Access replaces) declares. `base` must exist; its directories
 * are made here, and the caller removes it after {@link Sshd.stop}.
 */
export async function startHostOwnSshd(
  base: string,
  opts: { authorizedKeys: string[]; port: number },
): Promise<Sshd> {
  for (const d of ["etc-upper", "etc-work", "var-lib", "backups", "lock", "home"])
    fs.mkdirSync(path.join(base, d), { recursive: true, mode: 0o755 });
  fs.mkdirSync(path.join(base, "etc-upper", "ssh", "sshd_config.d"), { recursive: true });
  fs.writeFileSync(
    path.join(base, "etc-upper", "ssh", "sshd_config.d", "00-xen-estate.conf"),
    `Port ${opts.port}\n`,
  );
  return startSshd({
    authorizedKeys: opts.authorizedKeys,
    port: opts.port,
    systemConfig: { upperEtc: path.join(base, "etc-upper") },
    wrap: inMountNamespace([
      `mount -t overlay xe-host-etc -o lowerdir=/etc,upperdir=${base}/etc-upper,workdir=${base}/etc-work /etc`,
      `mount -t tmpfs xe-host-run /run`,
      `mkdir -p /run/sshd /run/lock`,
      `mount --bind ${base}/lock /run/lock`,
      `mount --bind ${base}/home /home`,
      // The mount point exists on a machine where nothing of xen-estate ran yet (a fresh CI machine).
      `mkdir -p /var/lib/xen-estate`,
      `mount --bind ${base}/var-lib /var/lib/xen-estate`,
      `mount --bind ${base}/backups /var/backups`,
    ]),
  });
}

/**
 * Runs `script` as `user` logged in straight to `sshd` with `privateKey`, over a new pool closed afterwards and
 * failing fast (one dial of at most 5 s): a test's own look at the host or reset of it, never through a relay.
 */
export async function runDirect(
  sshd: Pick<Sshd, "host" | "port" | "hostKey">,
  privateKey: string,
  user: string,
  script: string,
): Promise<string> {
  const pool = new SshPool();
  try {
    const conn = resolveConnection(
      new Checker(),
      {
        host: sshd.host,
        port: sshd.port,
        user,
        hostKey: sshd.hostKey.fingerprint,
        dialErrorLimit: 1,
        perDialTimeout: 5,
      },
      { privateKey },
    )!;
    return (await pool.host(conn).script(script, { summary: "look or reset" })).stdout;
  } finally {
    await pool.close();
  }
}

/** Starts a real sshd with a fresh host key. */
export async function startSshd(opts: SshdOptions): Promise<Sshd> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-sshd-"));
  const hostKey = opts.hostKeyFile
    ? await existingKey(opts.hostKeyFile)
    : await generateKey(dir, "host_ed25519");
  const port = opts.port ?? (opts.netns ? 22 : await freePort());
  const listen = opts.listen ?? "127.0.0.1";
  fs.mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const authDir = path.join(dir, "authorized");
  fs.mkdirSync(authDir, { mode: 0o755 });
  fs.writeFileSync(path.join(authDir, "keys"), opts.authorizedKeys.join("\n") + "\n", { mode: 0o644 });
  fs.chmodSync(dir, 0o755);
  const logFile = path.join(dir, "sshd.log");
  const system = opts.systemConfig;
  const extra = opts.extraConfig ?? [];
  const config = [
    ...(system ? ["Include /etc/ssh/sshd_config.d/*.conf"] : [`Port ${port}`]),
    `ListenAddress ${listen}`,
    `HostKey ${hostKey.file}`,
    `PidFile ${system ? "/run/sshd.pid" : path.join(dir, "sshd.pid")}`,
    `AuthorizedKeysFile ${path.join(authDir, "keys")}`,
    "StrictModes no",
    "UsePAM no",
    "PermitRootLogin prohibit-password",
    "PasswordAuthentication yes",
    "KbdInteractiveAuthentication no",
    "PubkeyAuthentication yes",
    "AllowTcpForwarding yes",
    "LogLevel VERBOSE",
    "MaxStartups 100:30:200",
    "Subsystem sftp internal-sftp",
    // Sessions start as on a host whose root has no dotfiles: bash, run by sshd as a top-level shell, sources
    // ~/.bashrc, and this machine's (pyenv, cargo) costs seconds per command under load and puts pyenv's python
    // first on PATH. A shell level of 1 makes the session's bash a nested one, which does not. sshd uses the first
    // SetEnv line only, so the caller's variables join it.
    ...sessionEnv(opts.hostSessions ? [] : [SESSION_ENV], extra.filter(isSetEnv)),
    ...extra.filter((l) => !isSetEnv(l)),
  ].join("\n");
  let configFile = path.join(dir, "sshd_config");
  if (system) {
    fs.mkdirSync(path.join(system.upperEtc, "ssh"), { recursive: true });
    fs.writeFileSync(path.join(system.upperEtc, "ssh", "sshd_config"), config + "\n");
    configFile = "/etc/ssh/sshd_config";
  } else fs.writeFileSync(configFile, config + "\n");
  let argv = ["/usr/sbin/sshd", "-D", "-e", "-f", configFile];
  if (opts.machineId !== undefined) {
    const idFile = path.join(dir, "machine-id");
    fs.writeFileSync(idFile, `${opts.machineId}\n`, { mode: 0o644 });
    argv = [
      "unshare",
      "-m",
      "--propagation",
      "private",
      "sh",
      "-c",
      'mount --bind "$0" /etc/machine-id && exec "$@"',
      idFile,
      ...argv,
    ];
  }
  const wrapped = [...(opts.wrap ?? []), ...argv];
  const cmd = opts.netns ? ["ip", "netns", "exec", opts.netns, ...wrapped] : wrapped;
  let child: ChildProcess | undefined;
  const logStream = fs.createWriteStream(logFile);
  const start = (): void => {
    child = spawn(cmd[0]!, cmd.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.pipe(logStream, { end: false });
    child.stderr!.pipe(logStream, { end: false });
  };
  let timer: NodeJS.Timeout | undefined;
  if (opts.delayMs) timer = setTimeout(start, opts.delayMs);
  else {
    start();
    await waitForPort(opts.netns, listen, port, 10_000);
  }
  return {
    host: listen,
    port,
    hostKey,
    authorizedKeysFile: path.join(authDir, "keys"),
    dir,
    log: () => fs.readFileSync(logFile, "utf8"),
    stop: async () => {
      if (timer) clearTimeout(timer);
      if (child && child.exitCode === null) {
        // Sessions outlive the listening sshd (each is its own process, reparented when it exits): end them too,
        // by their pids, or one whose client is gone (a namespace deleted under it) lingers for ever.
        const sessions = await run("pgrep", ["-P", String(child.pid)]).then(
          (r) => r.stdout.split("\n").filter(Boolean).map(Number),
          () => [] as number[],
        );
        const exited = new Promise((r) => child!.once("exit", r));
        child.kill("SIGTERM");
        for (const pid of sessions) {
          try {
            process.kill(pid, "SIGTERM");
          } catch {
            /* already gone */
          }
        }
        await exited;
      }
      child?.stdout?.unpipe(logStream);
      child?.stderr?.unpipe(logStream);
      logStream.end();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function waitForPort(
  netns: string | undefined,
  host: string,
  port: number,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = netns
      ? await run("ip", ["netns", "exec", netns, "bash", "-c", `exec 3<>/dev/tcp/${host}/${port}`]).then(
          () => true,
          () => false,
        )
      : await new Promise<boolean>((resolve) => {
          const s = net.connect({ host, port });
          s.once("connect", () => {
            s.destroy();
            resolve(true);
          });
          s.once("error", () => resolve(false));
        });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(
    `sshd on ${host}:${port}${netns ? ` in ${netns}` : ""} did not start within ${timeoutMs} ms`,
  );
}

/** Starts an ssh-agent holding `key`; returns its socket and a stop function. */
export async function startAgent(key: KeyPair): Promise<{ socket: string; stop: () => Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-agent-"));
  const socket = path.join(dir, "agent.sock");
  const { stdout } = await run("ssh-agent", ["-a", socket, "-s"]);
  const pid = Number(/SSH_AGENT_PID=(\d+)/.exec(stdout)?.[1]);
  await run("ssh-add", [key.file], { env: { ...process.env, SSH_AUTH_SOCK: socket } });
  return {
    socket,
    stop: () => {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        /* already gone */
      }
      fs.rmSync(dir, { recursive: true, force: true });
      return Promise.resolve();
    },
  };
}

/**
 * Two network namespaces: `jump` is reachable from here at `jumpAddress`; `target` only from `jump` at
 * `targetAddress`. Nothing routes from the root namespace to the target.
 */
export class JumpTopology {
  readonly jumpNs: string;
  readonly targetNs: string;
  readonly jumpAddress: string;
  readonly targetAddress: string;
  private readonly hostIf: string;

  constructor(id = process.pid % 10000) {
    this.jumpNs = `xe-jump-${id}`;
    this.targetNs = `xe-target-${id}`;
    this.hostIf = `xej${id}`;
    const third = id % 250;
    this.jumpAddress = `10.213.${third}.2`;
    this.targetAddress = `10.214.${third}.2`;
  }

  async up(): Promise<void> {
    await this.down();
    const third = this.jumpAddress.split(".")[2];
    const sh = [
      `ip netns add ${this.jumpNs}`,
      `ip netns add ${this.targetNs}`,
      `ip link add ${this.hostIf} type veth peer name j0 netns ${this.jumpNs}`,
      `ip addr add 10.213.${third}.1/30 dev ${this.hostIf}`,
      `ip link set ${this.hostIf} up`,
      `ip -n ${this.jumpNs} addr add ${this.jumpAddress}/30 dev j0`,
      `ip -n ${this.jumpNs} link set j0 up`,
      `ip -n ${this.jumpNs} link set lo up`,
      `ip -n ${this.jumpNs} link add j1 type veth peer name t0 netns ${this.targetNs}`,
      `ip -n ${this.jumpNs} addr add 10.214.${third}.1/30 dev j1`,
      `ip -n ${this.jumpNs} link set j1 up`,
      `ip -n ${this.targetNs} addr add ${this.targetAddress}/30 dev t0`,
      `ip -n ${this.targetNs} link set t0 up`,
      `ip -n ${this.targetNs} link set lo up`,
    ].join(" && ");
    await run("bash", ["-c", sh]);
  }

  async down(): Promise<void> {
    await run("bash", [
      "-c",
      `ip link del ${this.hostIf} 2>/dev/null; ip netns del ${this.jumpNs} 2>/dev/null; ip netns del ${this.targetNs} 2>/dev/null; true`,
    ]);
  }
}

/** A real sshd on this machine and a pooled {@link RemoteHost} logged in to it as root with a fresh key. */
export async function startLocalHost(dir: string): Promise<{
  sshd: Sshd;
  pool: SshPool;
  host: RemoteHost;
  stop: () => Promise<void>;
}> {
  const key = await generateKey(dir, "client");
  const sshd = await startSshd({ authorizedKeys: [key.publicKey] });
  const conn = resolveConnection(
    new Checker(),
    { host: sshd.host, port: sshd.port, hostKey: sshd.hostKey.fingerprint },
    { privateKey: key.privateKey },
  );
  const pool = new SshPool();
  const host = pool.host(conn!);
  return {
    sshd,
    pool,
    host,
    stop: async () => {
      await pool.close();
      await sshd.stop();
    },
  };
}

/** Whether a TCP connection from `from` to host:port is accepted within `ms` (a dropped SYN times out). */
export function tcpOpens(host: string, port: number, from: string | undefined, ms = 3000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port, ...(from ? { localAddress: from } : {}) });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, ms);
    s.once("connect", () => {
      clearTimeout(timer);
      s.destroy();
      resolve(true);
    });
    s.once("error", () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}
