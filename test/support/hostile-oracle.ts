/**
 * The judgement the hostile-input tests pass on one (kind, input path, value): `check` never throws; either a
 * failure names that property (or a parent) and shows no secret, or every script the kind would then run parses
 * (`bash -n`) and holds the value only where it is data, and every file it renders keeps the value inside its
 * quotes with the structure of the valid input's file. Shared by the unit suite (which judges) and the ssh suite
 * (which runs the accepted cases' scripts for real).
 */
import { spawn } from "node:child_process";
import { runtime } from "../../provider";
import { containsUnknown } from "../../provider/core/validate";
import { checkInputs } from "../../provider/framework/plan";
import { NAT_CONF, NAT_SCRIPT, XEN_CONFIG_DIR } from "../../provider/guest/paths";
import { VARNISH_DROP_IN, VARNISH_VCL } from "../../provider/resources/varnish-frontend/plan";
import { acceptableProperties, KIND_INPUTS, pathText, type InputPath, type KindVariant } from "./kind-inputs";
import {
  configSkeleton,
  configSplices,
  innerScripts,
  lexShell,
  lexVcl,
  lexXlCfg,
  lineShape,
  parseSystemdUnit,
  shellSkeleton,
  shellSplices,
  shellWords,
} from "./quoting";
import { recordLifecycle, type OperationRecord } from "./recording-host";

/** Strings of the valid inputs that are secrets: no failure message may contain them. */
export const KNOWN_SECRETS = [
  "xe-hostile-password",
  "xe-hostile-jump-password",
  "xemirrorpass",
  "xeproxypass",
  "xe-hostile-token",
];

/** Paths whose value is secret (a failure must not echo it). */
function isSecretPath(p: InputPath): boolean {
  const t = pathText(p);
  return (
    p[0] === "credentials" ||
    /^connection(\.proxy)*\.(user|password|privateKey|privateKeyPassword)$/.test(t) ||
    t === "content"
  );
}

/** One case and what was found. */
export interface CaseResult {
  variant: string;
  path: string;
  valueId: string;
  value: unknown;
  accepted: boolean;
  problems: string[];
  /**
   * Settles when the case's syntax checks are done (they add to `problems`). `judge` does not wait for them, so
   * `bash -n` runs while the next cases are judged: await this before reading `problems`.
   */
  done: Promise<void>;
  /** What each lifecycle operation sent (accepted cases). */
  operations: OperationRecord[];
}

/** What the valid inputs of a variant produce: the yardstick for structure and distinctiveness. */
export interface Baseline {
  variant: KindVariant;
  inputs: Record<string, unknown>;
  outs: Record<string, unknown> | null;
  operations: OperationRecord[];
  /** Every script and command text of the valid run, joined. */
  allText: string;
  /** Rendered files in their order, by role (see {@link fileRole}). */
  files: Map<string, string>;
  /** Files written into the guest's filesystem by the install, by path. */
  guestFiles: Map<string, string>;
}

export async function baselineOf(variant: KindVariant): Promise<Baseline> {
  const { inputs, failures } = checkInputs(variant.kind, variant.inputs);
  if (failures.length > 0 || !inputs)
    throw new Error(
      `${variant.name}: the valid inputs fail check: ${failures.map((f) => f.message).join("; ")}`,
    );
  const { operations, outs } = await recordLifecycle(variant.kind, inputs);
  const errors = operations.filter((o) => o.error);
  if (errors.length > 0)
    throw new Error(
      `${variant.name}: the valid inputs' ${errors.map((o) => `${o.operation} failed against the simulator: ${o.error!.message}`).join("; ")}`,
    );
  return {
    variant,
    inputs,
    outs,
    operations,
    allText: operations.flatMap((o) => o.recorded.map((r) => r.text)).join("\n"),
    files: filesByRole(inputs),
    guestFiles: guestFilesOf(operations),
  };
}

/** A rendered file's role, independent of names in its path: `xl.cfg`, `vcl`, `systemd`, `nat.conf`… */
function fileRole(path: string): string {
  if (path === VARNISH_VCL) return "vcl";
  if (path === VARNISH_DROP_IN) return "systemd";
  if (path === NAT_CONF) return "nat.conf";
  if (path === NAT_SCRIPT) return "nat-script";
  if (path.startsWith(`${XEN_CONFIG_DIR}/`) && path.endsWith(".cfg")) return "xl.cfg";
  return `other:${path}`;
}

function filesByRole(inputs: Record<string, unknown>): Map<string, string> {
  const out = new Map<string, string>();
  const files = inputs.files;
  if (files && typeof files === "object")
    for (const [p, c] of Object.entries(files as Record<string, unknown>))
      if (typeof c === "string") out.set(fileRole(p), c);
  return out;
}

/** Files an install writes into the guest: `printf '%s' CONTENT | xe_put MODE PATH`, and the wgetrc. */
function guestFilesOf(operations: OperationRecord[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const o of operations)
    for (const r of o.recorded)
      if (r.text.includes("xe_put")) for (const [k, v] of guestFilesIn(r.text)) out.set(k, v);
  return out;
}

const guestFilesCache = new Map<string, Map<string, string>>();

/** The guest files one script writes (cached: most cases send the valid run's install script unchanged). */
function guestFilesIn(script: string): Map<string, string> {
  const known = guestFilesCache.get(script);
  if (known) return known;
  const out = new Map<string, string>();
  if (guestFilesCache.size > 2000) guestFilesCache.clear();
  guestFilesCache.set(script, out);
  const words = shellWords(script);
  for (let k = 4; k + 2 < words.length; k++)
    if (words[k]!.text === "xe_put" && words[k - 1]!.text === "|" && words[k - 4]!.text === "printf")
      out.set(words[k + 2]!.text, words[k - 2]!.text);
  // printf '%s\n' LINE… > "$auth/wgetrc"
  for (let k = 0; k + 1 < words.length; k++) {
    if (words[k]!.text !== "printf" || words[k + 1]!.text !== "%s\\n") continue;
    const lines: string[] = [];
    let j = k + 2;
    while (j < words.length && !/^[;\n|&]$/.test(words[j]!.text) && !words[j]!.expands)
      lines.push(words[j++]!.text);
    if (words[j]?.expands && words[j]!.text.includes("wgetrc")) out.set("wgetrc", lines.join("\n"));
  }
  return out;
}

/** Syntax checks by skeleton: bash never looks inside '…' or a quoted here-document, so one check per shape. */
export class SyntaxChecker {
  private readonly results = new Map<string, Promise<string | null>>();
  private running = 0;
  private readonly queue: (() => void)[] = [];
  runs = 0;

  constructor(private readonly concurrency = 2) {}

  private readonly byText = new Map<string, Promise<string | null>>();

  /** Whether this exact script was checked already (no need to lex it for the check). */
  seen(script: string): boolean {
    return this.byText.has(script);
  }

  /** `null` when `bash -n` accepts the script, else its complaint. */
  check(script: string, lexed?: ReturnType<typeof lexShell>): Promise<string | null> {
    const known = this.byText.get(script);
    if (known) return known;
    const key = shellSkeleton(script, lexed);
    let r = this.results.get(key);
    if (!r) {
      r = this.limited(() => bashN(script));
      this.results.set(key, r);
    }
    if (this.byText.size < 50_000) this.byText.set(script, r);
    return r;
  }

  private limited<T>(fn: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const start = (): void => {
        this.running++;
        this.runs++;
        fn()
          .then(resolve, reject)
          .finally(() => {
            this.running--;
            this.queue.shift()?.();
          });
      };
      if (this.running < this.concurrency) start();
      else this.queue.push(start);
    });
  }
}

/** `bash -n` on a script wrapped the way RemoteHost.script wraps it (a function body). */
function bashN(script: string): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const p = spawn("bash", ["-n"], { stdio: ["pipe", "ignore", "pipe"] });
    let err = "";
    p.stderr.on("data", (c: Buffer) => (err += c.toString()));
    p.on("error", reject);
    p.on("close", (code) => resolve(code === 0 ? null : err.trim().split("\n").slice(0, 3).join(" | ")));
    p.stdin.on("error", () => {});
    p.stdin.end(`__xen_estate_main() {\n${script}\n}\n`);
  });
}

/**
 * Judges one case: `raw` is the variant's inputs with `value` at `path`. `hostile` says the value is a hostile
 * string for a string input (so it is looked for in scripts and files, and the files must keep the valid input's
 * structure); a value of the wrong type is only held to "refused by name, or everything still parses".
 */
export async function judge(
  base: Baseline,
  path: InputPath,
  valueId: string,
  value: unknown,
  syntax: SyntaxChecker,
  raw: Record<string, unknown>,
  hostile: boolean,
): Promise<CaseResult> {
  const variant = base.variant;
  const res: CaseResult = {
    variant: variant.name,
    path: pathText(path),
    valueId,
    value,
    accepted: false,
    problems: [],
    operations: [],
    done: Promise.resolve(),
  };
  const p = (msg: string): void => void res.problems.push(msg);
  // 1. check never throws (runtime.check calls checkInputs inside; a throw there is a rejection here).
  let checked: Awaited<ReturnType<typeof runtime.check>>;
  try {
    checked = await runtime.check(variant.kind, {}, raw);
  } catch (err) {
    p(`check threw: ${(err as Error).message}`);
    return res;
  }
  // 2. A refusal names the property (or a parent) and echoes no secret.
  const failures = checked.failures ?? [];
  if (failures.length > 0) {
    const ok = acceptableProperties(path, variant.kind);
    for (const f of failures)
      if (
        !ok.includes(f.property) &&
        !f.property.startsWith(`${res.path}.`) &&
        !f.property.startsWith(`${res.path}[`)
      )
        p(`refused naming ${JSON.stringify(f.property)}: ${f.reason.slice(0, 200)}`);
    const secrets = [...KNOWN_SECRETS];
    if (isSecretPath(path) && typeof value === "string" && value.length >= 8) secrets.push(value);
    for (const f of failures)
      for (const s of secrets)
        if (f.reason.includes(s))
          p(`a failure shows a secret (${s.slice(0, 12)}…): ${f.reason.slice(0, 200)}`);
    return res;
  }
  res.accepted = true;
  const inputs = checked.inputs as Record<string, unknown>;
  if (containsUnknown(inputs)) return res; // not known yet: nothing runs until it is
  // 3. Every script parses and holds the value as data; every file keeps it inside its quotes.
  const { operations } = await recordLifecycle(variant.kind, inputs, base.outs ?? undefined);
  res.operations = operations;
  for (const o of operations)
    if (o.error) p(`${o.operation} failed against the simulator: ${o.error.message}`);
  const isCommand = (KIND_INPUTS[variant.kind]?.commands ?? []).includes(res.path);
  const needles = hostile && typeof value === "string" ? distinctive(value, base.allText, isCommand) : [];
  const pending: Promise<void>[] = [];
  for (const o of operations)
    for (const r of o.recorded) {
      const where = `${o.operation} (${r.summary || r.method})`;
      if (r.method === "exec") {
        // RemoteHost.exec hands the command line to `bash -c` quoted: the line itself is what runs.
        if (!isCommand)
          for (const n of needles)
            if (r.text.includes(n)) p(`${where}: the value is part of a command line run by exec`);
        continue;
      }
      const present = needles.filter((n) => r.text.includes(n) || r.text.includes(n.replace(/'/g, `'\\''`)));
      const lexed = present.length > 0 || !syntax.seen(r.text) ? lexShell(r.text) : undefined;
      pending.push(
        syntax.check(r.text, lexed).then((complaint) => {
          if (complaint) p(`${where}: bash -n: ${complaint}`);
        }),
      );
      if (!lexed) continue;
      for (const n of present) for (const s of shellSplices(r.text, n, lexed)) p(`${where}: spliced ${s}`);
      if (!isCommand && present.length > 0)
        for (const inner of innerScripts(r.text, lexed))
          for (const n of present)
            for (const s of shellSplices(inner, n)) p(`${where}: inside bash -c: spliced ${s}`);
    }
  // An empty or blank string is an absent value to check (the input's default applies), which may change a
  // file's structure as leaving the input out would: that is not a value leaving its quotes.
  judgeFiles(
    base,
    inputs,
    operations,
    needles,
    hostile && typeof value === "string" && value.trim() !== "",
    p,
  );
  res.done = Promise.all(pending).then(() => undefined);
  return res;
}

/**
 * The forms of a value worth looking for: the value, and for a command input the parts between `%s` (which the
 * write primitive replaces). Forms that occur in the valid run's scripts anyway cannot be told apart from them and
 * are left out, as are forms too short to be telling.
 */
function distinctive(value: string, baseline: string, isCommand: boolean): string[] {
  const forms = isCommand ? value.split("%s") : [value];
  return forms.filter((f) => f.length >= 3 && f.trim() !== "" && !baseline.includes(f));
}

/** VCL's `==` and `~` conditions have the same shape (a wildcard host name uses `~`). */
const vclShape = (s: string): string => s.replace(/ ~ /g, " == ");

function judgeFiles(
  base: Baseline,
  inputs: Record<string, unknown>,
  operations: OperationRecord[],
  needles: string[],
  hostile: boolean,
  p: (msg: string) => void,
): void {
  const files = filesByRole(inputs);
  for (const [role, text] of files) {
    const before = base.files.get(role);
    if (text === before) continue;
    if (role === "xl.cfg" || role === "vcl") {
      const lex = role === "xl.cfg" ? lexXlCfg : lexVcl;
      for (const problem of lex(text).problems) p(`${role}: ${problem}`);
      for (const n of needles)
        for (const s of configSplices(text, n, lex, [JSON.stringify(n).slice(1, -1)]))
          p(`${role}: spliced ${s}`);
      const shape = role === "vcl" ? vclShape : undefined;
      if (
        hostile &&
        before !== undefined &&
        configSkeleton(text, lex, shape) !== configSkeleton(before, lex, shape)
      )
        p(`${role}: its structure differs from the valid input's (a value left its string)`);
    } else if (role === "systemd") {
      const now = parseSystemdUnit(text);
      const was = before !== undefined ? parseSystemdUnit(before) : undefined;
      for (const problem of now.problems) p(`${role}: ${problem}`);
      for (const s of now.settings)
        if (s.active.length > 0) p(`${role}: ${s.key} has active words ${s.active.join(" ")}`);
      if (
        hostile &&
        was &&
        JSON.stringify(now.settings.map((s) => [s.key, s.words.length])) !==
          JSON.stringify(was.settings.map((s) => [s.key, s.words.length]))
      )
        p(`${role}: its settings or their words differ from the valid input's`);
    } else if (role === "nat.conf" || role === "nat-script") {
      // Sourced and run by bash on the dom0.
      const lexed = lexShell(text);
      for (const problem of lexed.problems) p(`${role}: ${problem}`);
      for (const n of needles) for (const s of shellSplices(text, n, lexed)) p(`${role}: spliced ${s}`);
      if (hostile && before !== undefined && shellSkeleton(text) !== shellSkeleton(before))
        p(`${role}: its structure differs from the valid input's`);
    } else p(`a rendered file this test cannot read: ${role}`);
  }
  // Files the install writes inside the guest: line-based formats whose shape a value must not change.
  const guest = guestFilesOf(operations);
  for (const [path, text] of guest) {
    const before = base.guestFiles.get(path);
    if (before === undefined || before === text) continue;
    const free = path === "/root/.ssh/authorized_keys" || path === "/etc/hostname";
    if (hostile && JSON.stringify(lineShape(text, free)) !== JSON.stringify(lineShape(before, free)))
      p(
        `the guest's ${path}: its lines or fields differ from the valid input's: ${JSON.stringify(text.slice(0, 300))}`,
      );
    if (path === "wgetrc")
      for (const line of text.split("\n"))
        if (!/^[a-z_]+ = \S+$/.test(line))
          p(`wgetrc: a line that is not one setting: ${JSON.stringify(line)}`);
  }
}
