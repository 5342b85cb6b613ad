/**
 * How xen-estate reaches a host. The shape follows `@pulumi/command`'s `remote.Connection`, so one object can be
 * passed to both, plus host-key pinning and a command deadline.
 *
 * In state the connection is split in two: the public part (host, port, user, pin, jump hosts) stays readable in
 * `pulumi preview`, the credentials (keys, passwords) are stored as a Pulumi secret and never logged.
 */
import type * as pulumi from "@pulumi/pulumi";
import { Checker, isHostName, USER_NAME } from "./validate";
import { parseHostKeyPin } from "./ssh/hostkey";

/** Connection to a host over SSH, as given by a program. */
export interface ConnectionArgs {
  /** Host name or IP address to connect to. */
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
   * ssh-agent socket. Not stored: resolved when the provider connects.
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
  agentSocketPath?: string;
  proxy?: Connection;
}

/** The secret part, stored encrypted in state. Mirrors the proxy chain. */
export interface Credentials {
  password?: string;
  privateKey?: string;
  privateKeyPassword?: string;
  proxy?: Credentials;
}

/** Everything needed to dial: a connection with its credentials joined back in. */
export interface ResolvedConnection extends Connection, Credentials {
  proxy?: ResolvedConnection;
}

const SECRET_KEYS = ["password", "privateKey", "privateKeyPassword"] as const;
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
    } else if (k === "proxy" && v && typeof v === "object") {
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
  if (credentials?.password) joined.password = credentials.password;
  if (credentials?.privateKey) joined.privateKey = credentials.privateKey;
  if (credentials?.privateKeyPassword) joined.privateKeyPassword = credentials.privateKeyPassword;
  if (proxy) joined.proxy = joinConnection(proxy, credentials?.proxy);
  return joined;
}

/**
 * Validates and normalises a connection (public part plus credentials), filling defaults. Records every problem
 * in `c` under `connection.…`; secrets are never echoed. Pure and offline.
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
  const creds = (credentials && typeof credentials === "object" ? credentials : {}) as Record<
    string,
    unknown
  >;
  const host = c.string(r, "host", {
    required: true,
    max: 253,
    rule: "must be a host name or an IP address (no spaces, newlines or shell characters)",
  });
  if (host !== undefined && !isHostName(host))
    c.fail("host", host, "must be a host name or an IP address (no spaces, newlines or shell characters)");
  const port = c.integer(r, "port", { min: 1, max: 65535, default: 22 });
  const user = c.string(r, "user", {
    default: "root",
    pattern: USER_NAME,
    rule: "must be a Unix user name (lower-case letters, digits, `_` and `-`, starting with a letter or `_`)",
  });
  const dialErrorLimit = c.integer(r, "dialErrorLimit", { min: 1, max: 1000, default: 10 });
  const perDialTimeout = c.integer(r, "perDialTimeout", { min: 1, max: 3600, default: 15, unit: "seconds" });
  const commandTimeout = c.integer(r, "commandTimeout", {
    min: 1,
    max: 7 * 86400,
    default: 600,
    unit: "seconds",
  });
  const insecureIgnoreHostKey = c.boolean(r, "insecureIgnoreHostKey", false);
  const hostKey = c.string(r, "hostKey");
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
  const agentSocketPath = c.string(r, "agentSocketPath");

  for (const k of SECRET_KEYS) {
    const v = creds[k] ?? r[k];
    if (v !== undefined && v !== null && typeof v !== "string")
      c.fail(k, "[secret]", "must be a string", undefined, true);
  }
  const privateKey = (creds.privateKey ?? r.privateKey) as string | undefined;
  if (typeof privateKey === "string" && privateKey !== "") {
    const problem = privateKeyProblem(
      privateKey,
      (creds.privateKeyPassword ?? r.privateKeyPassword) as string | undefined,
    );
    if (problem)
      c.fail("privateKey", undefined, `must be a private key in OpenSSH or PEM format`, problem, true);
  }

  const self = `${user ?? "root"}@${host ?? "?"}:${port ?? 22}`;
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
    dialErrorLimit: dialErrorLimit ?? 10,
    perDialTimeout: perDialTimeout ?? 15,
    commandTimeout: commandTimeout ?? 600,
    insecureIgnoreHostKey,
  };
  if (hostKey !== undefined) out.hostKey = hostKey.trim();
  if (agentSocketPath !== undefined) out.agentSocketPath = agentSocketPath;
  if (proxy) out.proxy = proxy;
  return out;
}

/** The jump hosts of a connection, nearest first. */
export function jumpChain(conn: Connection): Connection[] {
  const hops: Connection[] = [];
  for (let p = conn.proxy; p; p = p.proxy) hops.push(p);
  return hops;
}

/** A key that identifies one SSH login (and the route to it) in the connection pool. */
export function connectionKey(conn: Connection): string {
  const self = `${conn.user}@${conn.host}:${conn.port}`;
  return conn.proxy ? `${self} via ${connectionKey(conn.proxy)}` : self;
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

/** The secret strings of a resolved connection, for log redaction. */
export function secretsOf(conn: ResolvedConnection): string[] {
  const out: string[] = [];
  for (let c: ResolvedConnection | undefined = conn; c; c = c.proxy) {
    for (const k of SECRET_KEYS) {
      const v = c[k];
      if (v) out.push(v);
    }
  }
  return out;
}
