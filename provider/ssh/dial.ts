/**
 * One SSH login, once: a TCP socket (or a tunnel through a jump host), the host-key check before any credential
 * is offered, then authentication. Retries and sharing are the pool's business ({@link SshPool}).
 */
import * as net from "node:net";
import type { Duplex } from "node:stream";
import type { Client, ConnectConfig } from "ssh2";
import { ConnectFailureKind, SshConnectError } from "../core/errors";
import type { Logger } from "../core/log";
import { redact } from "../core/log";
import { authOf, ResolvedConnection, secretsOf } from "./connection";
import { fingerprintOf, parseHostKeyPin, pinMatches } from "./hostkey";

/** Opens a TCP connection to the connection's host and port, classifying failures. */
export function tcpConnect(conn: ResolvedConnection, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: conn.host, port: conn.port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(
        new SshConnectError(
          conn.host,
          conn.port,
          "timeout",
          `TCP connect took longer than ${conn.perDialTimeout} s`,
          1,
        ),
      );
    }, timeoutMs);
    sock.once("connect", () => {
      clearTimeout(timer);
      sock.setNoDelay(true);
      resolve(sock);
    });
    sock.once("error", (err: Error & { code?: string }) => {
      clearTimeout(timer);
      const kind: ConnectFailureKind =
        err.code === "ENOTFOUND" || err.code === "EAI_AGAIN"
          ? "dns"
          : err.code === "ECONNREFUSED"
            ? "refused"
            : err.code === "ETIMEDOUT" || err.code === "EHOSTUNREACH"
              ? "timeout"
              : "network";
      const detail =
        kind === "dns"
          ? `cannot resolve ${conn.host}`
          : kind === "refused"
            ? `nothing listens on port ${conn.port}`
            : err.message;
      reject(new SshConnectError(conn.host, conn.port, kind, detail, 1, { cause: err }));
    });
  });
}

/** Opens a TCP tunnel from a jump host's connection to the connection's host and port (`ssh -J`). */
export function forwardOut(
  jump: Client,
  jumpHost: string,
  conn: ResolvedConnection,
  timeoutMs: number,
): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          new SshConnectError(
            conn.host,
            conn.port,
            "timeout",
            `jump host ${jumpHost} did not open a tunnel within ${conn.perDialTimeout} s`,
            1,
          ),
        ),
      timeoutMs,
    );
    jump.forwardOut("127.0.0.1", 0, conn.host, conn.port, (err, stream) => {
      clearTimeout(timer);
      if (err) {
        const refused = /refused|administratively prohibited|connect failed/i.test(err.message);
        reject(
          new SshConnectError(
            conn.host,
            conn.port,
            refused ? "refused" : "proxy",
            `via ${jumpHost}: ${err.message}`,
            1,
            { cause: err },
          ),
        );
      } else resolve(stream);
    });
  });
}

/** An established login: the client and the server's raw host key, as verified against the pin. */
export interface Handshaken {
  client: Client;
  /** The host key blob the server presented and the pin accepted (SSH wire format, as in a known_hosts line). */
  hostKey: Buffer;
}

/**
 * Runs the SSH handshake over `sock`: the host key is compared with the pin before authentication (a mismatch
 * leaks no credential and runs nothing), then the connection's own credentials are offered.
 * `onClose` is called when the connection closes after it was established.
 */
export function handshake(
  sock: Duplex,
  conn: ResolvedConnection,
  log: Logger,
  onClose: () => void,
): Promise<Handshaken> {
  const { Client } = require("ssh2") as typeof import("ssh2");
  return new Promise<Handshaken>((resolve, reject) => {
    const client = new Client();
    let hostKeyProblem: string | undefined;
    let verified: Buffer | undefined;
    let settled = false;
    const pin = conn.hostKey ? parseHostKeyPin(conn.hostKey) : undefined;
    const auth = authOf(conn);
    const config: ConnectConfig = {
      sock,
      username: conn.user,
      readyTimeout: conn.perDialTimeout * 1000,
      keepaliveInterval: 15_000,
      keepaliveCountMax: 4,
      tryKeyboard: !!auth.password,
      hostVerifier: (key: Buffer): boolean => {
        const fp = fingerprintOf(key);
        if (pin && !("error" in pin)) {
          if (pinMatches(pin, key)) {
            verified = Buffer.from(key);
            return true;
          }
          hostKeyProblem = `host key ${fp} does not match the pinned ${pin.kind === "fingerprint" ? `SHA256:${pin.sha256}` : fingerprintOf(pin.blob)}; refusing to authenticate`;
          return false;
        }
        if (conn.insecureIgnoreHostKey) {
          log.warn(
            `ssh ${conn.host}:${conn.port}: host key ${fp} accepted without verification (insecureIgnoreHostKey)`,
          );
          verified = Buffer.from(key);
          return true;
        }
        hostKeyProblem = `host key ${fp} is not pinned; set connection.hostKey (or insecureIgnoreHostKey for throwaway hosts)`;
        return false;
      },
    };
    if (auth.password) config.password = auth.password;
    if (auth.privateKey) config.privateKey = auth.privateKey;
    if (auth.passphrase) config.passphrase = auth.passphrase;
    if (auth.agent) config.agent = auth.agent;
    if (auth.password) {
      const password = auth.password;
      client.on("keyboard-interactive", (_name, _instr, _lang, prompts, finish) =>
        finish(prompts.map(() => password)),
      );
    }
    client.on("ready", () => {
      settled = true;
      resolve({ client, hostKey: verified ?? Buffer.alloc(0) });
    });
    client.on("error", (err: Error & { level?: string; code?: string }) => {
      if (settled || err.level === "agent") {
        // An unusable agent is not fatal: ssh2 goes on with the other methods and reports the outcome.
        log.debug(
          `ssh ${conn.host}:${conn.port}: ${err.level === "agent" ? "agent" : "connection"} error: ${err.message}`,
        );
        return;
      }
      settled = true;
      client.end();
      reject(classify(conn, err, hostKeyProblem));
    });
    client.on("close", () => {
      if (settled) {
        onClose();
        return;
      }
      settled = true;
      reject(
        new SshConnectError(
          conn.host,
          conn.port,
          hostKeyProblem ? "host-key" : "closed",
          hostKeyProblem ?? "connection closed during handshake",
          1,
        ),
      );
    });
    client.connect(config);
  });
}

function classify(
  conn: ResolvedConnection,
  err: Error & { level?: string; code?: string },
  hostKeyProblem?: string,
): SshConnectError {
  let kind: ConnectFailureKind = "network";
  let detail = err.message;
  if (hostKeyProblem) {
    kind = "host-key";
    detail = hostKeyProblem;
  } else if (err.level === "client-authentication") {
    const auth = authOf(conn);
    kind = "auth";
    detail = `authentication as ${conn.user} failed (methods tried: ${[auth.privateKey && "publickey", auth.password && "password", auth.agent && "agent"].filter(Boolean).join(", ") || "none"})`;
  } else if (err.level === "client-timeout" || /timed out/i.test(err.message)) {
    kind = "timeout";
    detail = `no SSH handshake within ${conn.perDialTimeout} s`;
  } else if (err.code === "ECONNRESET" || /ECONNRESET/.test(err.message)) {
    kind = "closed";
  }
  return new SshConnectError(conn.host, conn.port, kind, redact(detail, secretsOf(conn)), 1, { cause: err });
}
