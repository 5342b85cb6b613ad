/**
 * A SIMULATOR of host tools (lvs, xl, xenstore-ls…) for the ssh suite: a directory of tiny scripts put first on the
 * PATH of the scripts a real sshd runs, each answering with fixed output and exit status and logging its argv.
 * It shows how our scripts react to an answer (a failing probe, a disk some guest holds) that this machine cannot
 * produce for real; what the real tools answer is proven in the lab suite.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { hostContext } from "../../provider";
import type { Context, RemoteHost } from "../../provider";

export interface Stub {
  stdout?: string;
  stderr?: string;
  /** @default 0 */
  exit?: number;
}

/** Writes one executable per stub into `dir` (each appends its argv, NUL-separated, to `<dir>/<name>.argv`). */
export function writeStubs(dir: string, stubs: Record<string, Stub>): void {
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, s] of Object.entries(stubs)) {
    const file = path.join(dir, name);
    fs.writeFileSync(
      file,
      [
        "#!/bin/bash",
        `printf '%s\\0' "$@" >> ${JSON.stringify(`${file}.argv`)}; printf '\\n' >> ${JSON.stringify(`${file}.argv`)}`,
        s.stdout !== undefined ? `printf '%s' ${shq(s.stdout)}` : "",
        s.stderr !== undefined ? `printf '%s' ${shq(s.stderr)} >&2` : "",
        `exit ${s.exit ?? 0}`,
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
  }
}

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A host whose scripts find the stubs in `dir` before the real tools. */
export function withStubs(host: RemoteHost, dir: string): RemoteHost {
  const prefix = `export PATH=${shq(dir)}:"$PATH"\n`;
  return new Proxy(host, {
    get(target, prop, receiver) {
      if (prop === "script" || prop === "refusable")
        return (script: string, opts?: object) =>
          (target[prop] as (s: string, o?: object) => unknown).call(target, prefix + script, opts);
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
}

/** A Context on `host` whose scripts find `stubs`, written into a fresh directory under `parent`. */
export function stubbedContext(host: RemoteHost, parent: string, stubs: Record<string, Stub>): Context {
  const d = fs.mkdtempSync(path.join(parent, "stubs-"));
  writeStubs(d, stubs);
  return hostContext(withStubs(host, d));
}
