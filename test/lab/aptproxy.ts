/**
 * The lab's package source: a tiny caching HTTP proxy for Debian's archive, so lab machines install
 * packages (Varnish, debootstrap of guests) without any route to the internet.
 *
 * QEMU starts one copy per guest connection (`guestfwd=tcp:10.0.2.100:3142-cmd:node aptproxy.js --stdio …`),
 * with the connection on fd 0; nothing listens on the host. `--listen 127.0.0.1:PORT` serves the same on a
 * TCP port for hosts in network namespaces. Each connection carries one request and is then closed
 * (`Connection: close`): apt and wget reconnect for the next one.
 *
 * Accepted request forms:
 *   GET http://deb.debian.org/debian/dists/… HTTP/1.1     (apt with Acquire::http::Proxy, wget with http_proxy)
 *   GET /debian/dists/… HTTP/1.1                         (as a mirror: debootstrap … http://10.0.2.100:3142/debian)
 * Only the hosts in UPSTREAM_HOSTS are fetched; anything else gets 403. Files under pool/ and by-hash/ never
 * change for a given path, so they are cached on disk (under --cache) and served from there the next time.
 *
 * In --stdio mode fd 1 and fd 2 are the guest's socket too: never log to stdout/stderr, use --log FILE.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import * as path from "node:path";

export const UPSTREAM_HOSTS = ["deb.debian.org"];
export const DEFAULT_UPSTREAM = "deb.debian.org";
const MIRROR_PREFIXES = ["/debian/", "/debian-security/"];

export interface ProxyOptions {
  cacheDir?: string;
  logFile?: string;
}

export interface ParsedRequest {
  method: string;
  host: string;
  path: string;
  headers: Record<string, string>;
}

/** Parses a request head; returns a reason string when the request is not one we serve. */
export function parseRequest(head: string): ParsedRequest | string {
  const lines = head.split("\r\n");
  const m = /^(GET|HEAD) (\S+) HTTP\/1\.[01]$/.exec(lines[0] ?? "");
  if (!m) return `unsupported request line ${JSON.stringify(lines[0] ?? "")}`;
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  const target = m[2]!;
  let host: string;
  let p: string;
  if (target.startsWith("http://")) {
    const u = new URL(target);
    host = u.hostname;
    p = u.pathname + u.search;
  } else if (target.startsWith("/")) {
    if (!MIRROR_PREFIXES.some((pre) => target.startsWith(pre))) return `not a mirror path: ${target}`;
    host = DEFAULT_UPSTREAM;
    p = target;
  } else {
    return `unsupported target ${target}`;
  }
  if (!UPSTREAM_HOSTS.includes(host))
    return `host ${host} is not an allowed upstream (${UPSTREAM_HOSTS.join(", ")})`;
  if (p.split("/").includes("..")) return `path with .. refused: ${p}`;
  return { method: m[1]!, host, path: p, headers };
}

/** Paths whose content never changes: Debian pool files and by-hash index files. */
export function isImmutable(p: string): boolean {
  return /\/pool\//.test(p) || /\/by-hash\//.test(p);
}

function cacheFile(cacheDir: string, host: string, p: string): string {
  return path.join(cacheDir, host, p.replace(/\?.*$/, ""));
}

function logLine(opts: ProxyOptions, line: string): void {
  if (!opts.logFile) return;
  try {
    fs.appendFileSync(opts.logFile, `${new Date().toISOString()} ${line}\n`);
  } catch {
    // logging must never break the transfer
  }
}

function readHead(sock: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end >= 0) {
        sock.off("data", onData);
        sock.pause();
        resolve(buf.subarray(0, end).toString("latin1"));
      } else if (buf.length > 64 * 1024) {
        reject(new Error("request head over 64 KiB"));
      }
    };
    sock.on("data", onData);
    sock.once("end", () => reject(new Error("connection closed before a request")));
    sock.once("error", reject);
  });
}

function respond(
  sock: net.Socket,
  status: number,
  reason: string,
  headers: Record<string, string | number>,
  body?: string,
): void {
  const lines = [
    `HTTP/1.1 ${status} ${reason}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    "Connection: close",
    "",
    "",
  ];
  sock.write(lines.join("\r\n"));
  if (body === undefined) sock.end();
  else sock.end(body);
}

/** Serves one request on `sock` and closes it. */
export async function handleConnection(sock: net.Socket, opts: ProxyOptions): Promise<void> {
  let head: string;
  try {
    head = await readHead(sock);
  } catch (e) {
    logLine(opts, `error ${(e as Error).message}`);
    sock.destroy();
    return;
  }
  const req = parseRequest(head);
  if (typeof req === "string") {
    logLine(opts, `403 ${req}`);
    respond(
      sock,
      403,
      "Forbidden",
      { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(req) + 1 },
      `${req}\n`,
    );
    return;
  }
  const started = Date.now();
  const cached =
    opts.cacheDir && isImmutable(req.path) ? cacheFile(opts.cacheDir, req.host, req.path) : undefined;
  if (cached && !req.headers.range && fs.existsSync(cached)) {
    const size = fs.statSync(cached).size;
    logLine(opts, `HIT ${req.method} ${req.host}${req.path} ${size}`);
    sock.write(
      `HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n`,
    );
    if (req.method === "HEAD") {
      sock.end();
      return;
    }
    await new Promise<void>((resolve) => {
      const rs = fs.createReadStream(cached);
      rs.on("error", () => {
        sock.destroy();
        resolve();
      });
      rs.on("end", resolve);
      rs.pipe(sock);
    });
    return;
  }
  const fwdHeaders: Record<string, string> = {
    "User-Agent": req.headers["user-agent"] ?? "xen-estate-lab-aptproxy",
  };
  for (const h of ["if-modified-since", "if-none-match", "range", "if-range", "cache-control"]) {
    if (req.headers[h]) fwdHeaders[h] = req.headers[h]!;
  }
  await new Promise<void>((resolve) => {
    const up = http.request(
      { host: req.host, port: 80, path: req.path, method: req.method, headers: fwdHeaders, timeout: 60_000 },
      (res) => {
        const status = res.statusCode ?? 502;
        const keep = [
          "content-length",
          "content-type",
          "last-modified",
          "etag",
          "content-range",
          "accept-ranges",
          "location",
          "date",
        ];
        const headers: Record<string, string> = {};
        for (const k of keep) {
          const v = res.headers[k];
          if (typeof v === "string") headers[k] = v;
        }
        sock.write(
          [
            `HTTP/1.1 ${status} ${res.statusMessage ?? ""}`,
            ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
            "Connection: close",
            "",
            "",
          ].join("\r\n"),
        );
        let tmp: string | undefined;
        let out: fs.WriteStream | undefined;
        if (cached && status === 200 && req.method === "GET") {
          fs.mkdirSync(path.dirname(cached), { recursive: true });
          tmp = `${cached}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.part`;
          out = fs.createWriteStream(tmp);
        }
        let bytes = 0;
        res.on("data", (chunk: Buffer) => {
          bytes += chunk.length;
          out?.write(chunk);
          sock.write(chunk);
        });
        res.on("end", () => {
          logLine(opts, `${status} ${req.method} ${req.host}${req.path} ${bytes} ${Date.now() - started}ms`);
          const expected = Number(res.headers["content-length"] ?? -1);
          if (out && tmp) {
            const t = tmp;
            out.end(() => {
              if (expected < 0 || expected === bytes) fs.renameSync(t, cached!);
              else fs.rmSync(t, { force: true });
            });
          }
          sock.end();
          resolve();
        });
        res.on("error", (e) => {
          logLine(opts, `error upstream ${req.path}: ${e.message}`);
          if (tmp) fs.rmSync(tmp, { force: true });
          sock.destroy();
          resolve();
        });
      },
    );
    up.on("timeout", () => up.destroy(new Error("upstream timeout")));
    up.on("error", (e) => {
      logLine(opts, `502 ${req.host}${req.path}: ${e.message}`);
      if (!sock.destroyed)
        respond(sock, 502, "Bad Gateway", { "Content-Type": "text/plain" }, `upstream: ${e.message}\n`);
      resolve();
    });
    up.end();
  });
}

function parseArgs(argv: string[]): {
  stdio: boolean;
  listen?: string;
  connect?: string;
  opts: ProxyOptions;
} {
  const opts: ProxyOptions = {};
  let stdio = false;
  let listen: string | undefined;
  let connect: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--stdio") stdio = true;
    else if (a === "--listen") listen = argv[++i];
    else if (a === "--connect") connect = argv[++i];
    else if (a === "--cache") opts.cacheDir = argv[++i];
    else if (a === "--log") opts.logFile = argv[++i];
    else throw new Error(`unknown argument ${a}`);
  }
  return { stdio, listen, connect, opts };
}

if (require.main === module) {
  const { stdio, listen, connect, opts } = parseArgs(process.argv.slice(2));
  if (connect) {
    // Plain relay for QEMU guestfwd: the guest connection on fd 0 <-> a TCP port on the host (e.g. a source
    // VPS's sshd in a network namespace). `--connect HOST:PORT`.
    const [host, port] = connect.split(":");
    const guest = new net.Socket({ fd: 0, readable: true, writable: true });
    const target = net.connect(Number(port), host ?? "127.0.0.1");
    guest.pipe(target);
    target.pipe(guest);
    const close = (): void => {
      guest.destroy();
      target.destroy();
    };
    guest.on("error", close);
    target.on("error", close);
    guest.on("close", close);
    target.on("close", close);
  } else if (stdio) {
    // A hard stop: a stuck transfer must not leave processes behind (QEMU starts these in their own session).
    setTimeout(() => process.exit(1), 15 * 60_000).unref();
    const sock = new net.Socket({ fd: 0, readable: true, writable: true });
    void handleConnection(sock, opts);
  } else if (listen) {
    const [host, port] = listen.split(":");
    const srv = net.createServer((s) => void handleConnection(s, opts));
    srv.listen(Number(port), host ?? "127.0.0.1", () => {
      console.log(`aptproxy listening on ${listen}`);
    });
  } else {
    console.error(
      "usage: aptproxy.js --stdio|--listen HOST:PORT [--cache DIR] [--log FILE] | --connect HOST:PORT",
    );
    process.exit(2);
  }
}
