/**
 * How xen-estate reaches a host. The shape follows `@pulumi/command`'s `remote.Connection`, so one object can be
 * passed to both, plus host-key pinning and a command deadline.
 *
 * In state the connection is split in two: the public part (host, port, user, pin, jump hosts) stays readable in
 * `pulumi preview`, the credentials (keys, passwords, the agent socket) are stored as a Pulumi secret and never
 * logged.
 *
 * How a host is reached is not what it is: a change of address, port, user or jump host is an update of every
 * resource on it, never a replacement. What identifies the host is its machine id (`/etc/machine-id`), recorded
 * by each resource when it is created; an update or refresh that reaches a machine with another id refuses
 * instead of acting on the wrong machine ({@link HOST_ID_SCRIPT}).
 */
import type * as pulumi from "@pulumi/pulumi";
import { createHmac, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { Checker, isHostName, USER_NAME } from "../core/validate";
import { parseHostKeyPin } from "./hostkey";

/** Connection to a host over SSH, as given by a program. */
export interface ConnectionArgs {
  /** Host name or IP address to connect to (dotted-decimal IPv4, IPv6 or a DNS name). */
  readonly host: pulumi.Input<string>;
  /** TCP port of sshd. @default 22 */
  readonly port?: pulumi.Input<number>;
  /** User to log in as; anyone but root runs commands through `sudo -n`. @default "root" */
  readonly user?: pulumi.Input<string>;
  /** Password for password or keyboard-interactive authentication. Stored as a secret. */
  readonly password?: pulumi.Input<string>;
  /** Private key in OpenSSH or PEM format (the key itself, not a path). Stored as a secret. */
  readonly privateKey?: pulumi.Input<string>;
  /** Passphrase of an encrypted `privateKey`. Stored as a secret. */
  readonly privateKeyPassword?: pulumi.Input<string>;
  /**
   * ssh-agent socket. Stored with the credentials (encrypted), never in the readable part of state.
   * @default the provider process's `SSH_AUTH_SOCK`
   */
  readonly agentSocketPath?: pulumi.Input<string>;
  /** Dial attempts before giving up (DNS, refused and timeouts are retried with backoff). @default 10 */
  readonly dialErrorLimit?: pulumi.Input<number>;
  /** Seconds to wait for one dial, handshake and authentication to complete. @default 15 */
  readonly perDialTimeout?: pulumi.Input<number>;
  /** Jump host to tunnel through (`ssh -J`); may itself have a `proxy`. */
  readonly proxy?: pulumi.Input<ConnectionArgs>;
  /**
   * The server's host key: `SHA256:…` as `ssh-keygen -lf` prints it, a public-key line or a known_hosts line.
   * Without it the connection is refused unless `insecureIgnoreHostKey` is true.
   */
  readonly hostKey?: pulumi.Input<string>;
  /** Accept any host key (logged as a warning on every connection). For throwaway labs only. @default false */
  readonly insecureIgnoreHostKey?: pulumi.Input<boolean>;
  /** Seconds one remote command may run before it is killed. @default 600 */
  readonly commandTimeout?: pulumi.Input<number>;
}

/** Every default of a connection, declared once. */
export const CONNECTION_DEFAULTS = {
  port: 22,
  user: "root",
  /** Dial attempts. */
  dialErrorLimit: 10,
  /** Seconds per dial. */
  perDialTimeout: 15,
  /** Seconds per command. */
  commandTimeout: 600,
  insecureIgnoreHostKey: false,
} as const;

/** The public, validated part of a connection as stored in state and seen by the provider. */
export interface Connection {
  host: string;
  port: number;
  user: string;
  dialErrorLimit: number;
  perDialTimeout: number;
  commandTimeout: number;
  hostKey?: string;
  insecureIgnoreHostKey: boolean;
  proxy?: Connection;
}

/** The secret part, stored encrypted in state. Mirrors the proxy chain. */
export interface Credentials {
  password?: string;
  privateKey?: string;
  privateKeyPassword?: string;
  agentSocketPath?: string;
  proxy?: Credentials;
}

/** Everything needed to dial: a connection with its credentials joined back in. */
export interface ResolvedConnection extends Connection, Credentials {
  proxy?: ResolvedConnection;
}

/** The fields that go into the secret part. */
export const SECRET_KEYS = ["password", "privateKey", "privateKeyPassword", "agentSocketPath"] as const;
const MAX_JUMPS = 8;

/** Splits a program's connection object into its public and secret parts. Pure. */
export function splitConnection(raw: Record<string, unknown>): {
  connection: Record<string, unknown>;
  credentials: Credentials;
} {
  const connection: Record<string, unknown> = {};
  const credentials: Credentials = {};
  for (const [k, v] of Object.entries(raw)) {
    if ((SECRET_KEYS as readonly string[]).includes(k)) {
      if (v !== undefined && v !== null && v !== "") (credentials as Record<string, unknown>)[k] = v;
    } else if (k === "proxy" && v && typeof v === "object" && !Array.isArray(v)) {
      const inner = splitConnection(v as Record<string, unknown>);
      connection.proxy = inner.connection;
      if (Object.keys(inner.credentials).length > 0) credentials.proxy = inner.credentials;
    } else if (v !== undefined) {
      connection[k] = v;
    }
  }
  return { connection, credentials };
}

/** Joins the two parts for dialing. Pure. */
export function joinConnection(
  connection: Connection,
  credentials: Credentials | undefined,
): ResolvedConnection {
  const { proxy, ...rest } = connection;
  const joined: ResolvedConnection = { ...rest };
  for (const k of SECRET_KEYS) {
    const v = credentials?.[k];
    if (typeof v === "string" && v !== "") joined[k] = v;
  }
  if (proxy) joined.proxy = joinConnection(proxy, credentials?.proxy);
  return joined;
}

const HOST_RULE =
  "must be a host name, a dotted-decimal IPv4 address or an IPv6 address (no spaces, newlines, shell characters or octal/hex numbers)";

/**
 * Validates and normalises a connection (public part plus credentials), filling defaults. Records every problem
 * in `c` under `connection.…`; secrets are never echoed. Pure, offline, and never throws.
 */
export function checkConnection(
  c: Checker,
  raw: unknown,
  credentials: unknown,
  chain: string[] = [],
): Connection | undefined {
  if (raw === undefined || raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    c.fail("", raw, "must be an object with at least `host`");
    return undefined;
  }
  const r = raw as Record<string, unknown>;
  const creds = (
    credentials && typeof credentials === "object" && !Array.isArray(credentials) ? credentials : {}
  ) as Record<string, unknown>;
  const D = CONNECTION_DEFAULTS;
  const host = c.string(r, "host", { required: true, max: 253, rule: HOST_RULE });
  if (host !== undefined && !isHostName(host)) c.fail("host", host, HOST_RULE);
  const port = c.integer(r, "port", { min: 1, max: 65535, default: D.port });
  // A password pasted into `user` must not be echoed back: a bad user name is described, not shown.
  const user = c.string(r, "user", {
    default: D.user,
    pattern: USER_NAME,
    rule: "must be a Unix user name (lower-case letters, digits, `_` and `-`, starting with a letter or `_`, at most 32)",
    secret: true,
  });
  const dialErrorLimit = c.integer(r, "dialErrorLimit", { min: 1, max: 1000, default: D.dialErrorLimit });
  const perDialTimeout = c.integer(r, "perDialTimeout", {
    min: 1,
    max: 3600,
    default: D.perDialTimeout,
    unit: "seconds",
  });
  const commandTimeout = c.integer(r, "commandTimeout", {
    min: 1,
    max: 7 * 86400,
    default: D.commandTimeout,
    unit: "seconds",
  });
  const insecureIgnoreHostKey = c.boolean(r, "insecureIgnoreHostKey", D.insecureIgnoreHostKey);
  const hostKey = c.string(r, "hostKey", { max: 16384 });
  if (hostKey !== undefined) {
    const pin = parseHostKeyPin(hostKey);
    if ("error" in pin) c.fail("hostKey", hostKey, "must be a host-key pin", pin.error);
  } else if (!insecureIgnoreHostKey) {
    c.fail(
      "hostKey",
      undefined,
      "is required to authenticate the server",
      "Pin the key (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host prints it) or set `insecureIgnoreHostKey: true` for a throwaway host",
    );
  }
  // The agent socket may still arrive in the public part from an older program: accept it from either.
  const agentRaw = creds.agentSocketPath ?? r.agentSocketPath;
  if (agentRaw !== undefined && agentRaw !== null && agentRaw !== "" && typeof agentRaw !== "string")
    c.fail("agentSocketPath", agentRaw, "must be a path");

  for (const k of SECRET_KEYS) {
    if (k === "agentSocketPath") continue;
    const v = creds[k] ?? r[k];
    if (v !== undefined && v !== null && typeof v !== "string")
      c.fail(k, undefined, "must be a string", undefined, true);
  }
  const privateKey = creds.privateKey ?? r.privateKey;
  if (typeof privateKey === "string" && privateKey !== "") {
    const passphrase = creds.privateKeyPassword ?? r.privateKeyPassword;
    const problem = privateKeyProblem(privateKey, typeof passphrase === "string" ? passphrase : undefined);
    if (problem)
      c.fail("privateKey", undefined, `must be a private key in OpenSSH or PEM format`, problem, true);
  }

  const self = `${user ?? D.user}@${host ?? "?"}:${port ?? D.port}`;
  let proxy: Connection | undefined;
  if (chain.includes(self)) {
    // Reported at the hop that closes the loop; the path shows the whole chain.
    c.fail("", [...chain, self].join(" -> "), "must not loop back to a host already in the chain");
  } else if (r.proxy !== undefined && r.proxy !== null) {
    if (chain.length + 1 >= MAX_JUMPS)
      c.fail("proxy", chain.length + 1, `must be at most ${MAX_JUMPS} jumps deep`);
    else proxy = checkConnection(c.at("proxy"), r.proxy, creds.proxy, [...chain, self]);
  }
  if (host === undefined || port === undefined || user === undefined) return undefined;
  const out: Connection = {
    host,
    port,
    user,
    dialErrorLimit: dialErrorLimit ?? D.dialErrorLimit,
    perDialTimeout: perDialTimeout ?? D.perDialTimeout,
    commandTimeout: commandTimeout ?? D.commandTimeout,
    insecureIgnoreHostKey,
  };
  if (hostKey !== undefined) out.hostKey = hostKey.trim();
  if (proxy) out.proxy = proxy;
  return out;
}

/** The credentials of a connection after checking, with an agent socket that arrived in the public part moved in. */
export function checkedCredentials(rawConnection: unknown, credentials: unknown): Credentials | undefined {
  const creds = (
    credentials && typeof credentials === "object" && !Array.isArray(credentials) ? { ...credentials } : {}
  ) as Credentials & Record<string, unknown>;
  const r = (rawConnection && typeof rawConnection === "object" ? rawConnection : {}) as Record<
    string,
    unknown
  >;
  if (typeof r.agentSocketPath === "string" && r.agentSocketPath !== "" && !creds.agentSocketPath)
    creds.agentSocketPath = r.agentSocketPath;
  if (r.proxy && typeof r.proxy === "object") {
    const inner = checkedCredentials(r.proxy, creds.proxy);
    if (inner) creds.proxy = inner;
  }
  return Object.keys(creds).length > 0 ? creds : undefined;
}

/** The jump hosts of a connection, nearest first. */
export function jumpChain(conn: Connection): Connection[] {
  const hops: Connection[] = [];
  for (let p = conn.proxy; p; p = p.proxy) hops.push(p);
  return hops;
}

/** `user@host:port[ via …]`: how a login is named in logs. */
export function connectionLabel(conn: Connection): string {
  const self = `${conn.user}@${conn.host}:${conn.port}`;
  return conn.proxy ? `${self} via ${connectionLabel(conn.proxy)}` : self;
}

/** A per-process key, so pool keys derived from credentials cannot be reversed even from a memory dump. */
const POOL_KEY_SECRET = randomBytes(32);

/**
 * The key of a login in the connection pool: the route plus everything that decides whether a connection may be
 * shared, namely the host-key pin, the insecure flag and the credentials (of every hop). A resource with another
 * pin or other credentials gets its own connection, so its own pin and authentication are always checked.
 */
export function poolKey(conn: ResolvedConnection): string {
  const auth = authOf(conn);
  const digest = createHmac("sha256", POOL_KEY_SECRET)
    .update(
      JSON.stringify([
        conn.hostKey ?? null,
        conn.insecureIgnoreHostKey,
        auth.password ?? null,
        auth.privateKey ?? null,
        auth.passphrase ?? null,
        auth.agent ?? null,
      ]),
    )
    .digest("hex")
    .slice(0, 32);
  const self = `${conn.user}@${conn.host}:${conn.port}#${digest}`;
  return conn.proxy ? `${self} via ${poolKey(conn.proxy)}` : self;
}

/** How a login authenticates: its own credentials, else the agent, else the key file named in the environment. */
export function authOf(conn: ResolvedConnection): {
  password?: string;
  privateKey?: string;
  passphrase?: string;
  agent?: string;
} {
  const out: { password?: string; privateKey?: string; passphrase?: string; agent?: string } = {};
  if (conn.password) out.password = conn.password;
  if (conn.privateKey) out.privateKey = conn.privateKey;
  if (conn.privateKeyPassword) out.passphrase = conn.privateKeyPassword;
  const agent = conn.agentSocketPath ?? process.env.SSH_AUTH_SOCK;
  if (agent) out.agent = agent;
  if (!out.password && !out.privateKey && !out.agent) {
    const keyFile = process.env.XEN_ESTATE_SSH_KEY_FILE;
    if (keyFile) out.privateKey = fs.readFileSync(keyFile, "utf8");
  }
  return out;
}

/** Why a private key cannot be used, without quoting it; undefined when it parses. */
export function privateKeyProblem(key: string, passphrase: string | undefined): string | undefined {
  // ssh2 is required lazily: check must stay cheap for configs without keys.
  const { utils } = require("ssh2") as typeof import("ssh2");
  let parsed: ReturnType<typeof utils.parseKey>;
  try {
    parsed = utils.parseKey(key, passphrase);
  } catch {
    return "The key could not be parsed";
  }
  if (parsed instanceof Error) {
    const m = parsed.message;
    if (/passphrase/i.test(m))
      return "The key is encrypted: set `privateKeyPassword` (or the passphrase is wrong)";
    return "The key could not be parsed (paste the whole key including its BEGIN and END lines)";
  }
  const keys = Array.isArray(parsed) ? parsed : [parsed];
  if (keys.length === 0 || !keys[0]!.isPrivateKey()) return "This is a public key; the private key is needed";
  return undefined;
}

/**
 * The secret strings of a resolved connection, for log redaction: its credentials (of every hop) and a key
 * read from `XEN_ESTATE_SSH_KEY_FILE`.
 */
export function secretsOf(conn: ResolvedConnection): string[] {
  const out: string[] = [];
  for (let c: ResolvedConnection | undefined = conn; c; c = c.proxy) {
    const auth = authOf(c);
    for (const v of [auth.password, auth.privateKey, auth.passphrase]) if (v) out.push(v);
  }
  return out;
}

/**
 * Prints the machine's identity: `/etc/machine-id` (stable across host-key rotation, new after a reinstall), else
 * the SHA-256 of the ed25519 host key.
 */
export const HOST_ID_SCRIPT = [
  `if [ -s /etc/machine-id ]; then echo "machine-id:$(cat /etc/machine-id)"`,
  `elif [ -f /etc/ssh/ssh_host_ed25519_key.pub ]; then echo "host-key:$(sha256sum < /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f1)"`,
  `else echo "XE-NO-HOST-ID" >&2; exit 1; fi`,
].join("\n");

/**
 * Checks a connection as a program gives it (public fields and credentials together or apart) and joins it for
 * dialing: what the runtime does for every resource, for callers outside the engine (tests, tools).
 */
export function resolveConnection(
  c: Checker,
  raw: unknown,
  credentials?: unknown,
): ResolvedConnection | undefined {
  const split =
    raw && typeof raw === "object" && !Array.isArray(raw)
      ? splitConnection(raw as Record<string, unknown>)
      : undefined;
  const merged = mergeCredentials(split?.credentials, credentials);
  const checked = checkConnection(c, split?.connection ?? raw, merged);
  if (!checked || !c.ok) return undefined;
  return joinConnection(checked, checkedCredentials(split?.connection ?? raw, merged));
}

function mergeCredentials(a: unknown, b: unknown): Credentials {
  const x = (a && typeof a === "object" ? a : {}) as Credentials;
  const y = (b && typeof b === "object" ? b : {}) as Credentials;
  const out: Credentials = { ...x, ...y };
  if (x.proxy || y.proxy) out.proxy = mergeCredentials(x.proxy, y.proxy);
  return out;
}
