/**
 * The judgement the hostile-input tests pass on one (kind, input path, value): `check` never throws; either a
 * failure names that property (or a parent) and shows no secret, or every script the kind would then run parses
 * (`bash -n`) and holds the value only where it is data, and every file it renders keeps the value inside its
 * quotes with the structure of the valid input's file. Shared by the unit suite (which judges) and the ssh suite
 * (which runs the accepted cases' scripts for real).
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { RefusedError, runtime } from "../../provider";
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

const run = promisify(execFile);

/** Strings of the valid inputs that are secrets: no failure message may contain them. */
export const KNOWN_SECRETS = [
  "xe-hostile-password",
  "xe-hostile-jump-password",
  "xemirrorpass",
  "xeproxypass",
  "xe-hostile-token",
  "xe-hostile-source-password",
];

/** Paths whose value is secret (a failure must not echo it). */
function isSecretPath(p: InputPath): boolean {
  const t = pathText(p);
  return (
    p.includes("credentials") ||
    /^(source\.)?connection(\.proxy)*\.(user|password|privateKey|privateKeyPassword)$/.test(t) ||
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
  /** The checked valid inputs as JSON, to recognise a case that normalises to them. */
  inputsJson: string;
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
    inputsJson: JSON.stringify(inputs),
  };
}

/** A rendered file's role, independent of names in its path: `xl.cfg`, `vcl`, `systemd`, `nat.conf`… */
function fileRole(path: string): string {
  if (path === VARNISH_VCL) return "vcl";
  if (path === VARNISH_DROP_IN) return "systemd";
  if (path === NAT_CONF) return "nat.conf";
  if (path === NAT_SCRIPT) return "nat-script";
  if (path.startsWith(`${XEN_CONFIG_DIR}/`) && path.endsWith(".cfg")) return "xl.cfg";
  // A dom0's own files (the Dom0Host concerns). Some paths hold an input (the admin's name, the netplan file).
  if (path === "/etc/xen/xl.conf") return "xl.conf";
  if (/^\/etc\/systemd\/system\/[^/]+\.service$/.test(path)) return `systemd:${path}`;
  // Sourced by shell scripts (update-grub, the xendomains init script).
  if (path === "/etc/default/xendomains" || path.startsWith("/etc/default/grub.d/")) return `shell:${path}`;
  if (/^\/etc\/sudoers\.d\/xen-estate-/.test(path)) return "lines:sudoers";
  if (/^\/home\/[^/]+\/\.ssh\/authorized_keys$/.test(path)) return "free-lines:authorized_keys";
  if (/^\/etc\/netplan\/[^/]+\.yaml$/.test(path)) return "lines:netplan";
  if (LINE_FILES.includes(path) || /^\/etc\/(sysctl|modules-load)\.d\/[^/]+\.conf$/.test(path))
    return `lines:${path}`;
  return `other:${path}`;
}

/**
 * Line-based files (one setting, address, alias or rule per line, words separated by blanks): a value that changes
 * how many lines there are, or what a line starts with or how many words it has, made a setting of its own.
 */
const LINE_FILES = [
  "/etc/aliases",
  "/etc/apt/apt.conf.d/90xen-estate",
  "/etc/apt/sources.list",
  "/etc/apt/sources.list.d/debian.sources",
  "/etc/apt/sources.list.d/ubuntu.sources",
  "/etc/dma/dma.conf",
  "/etc/network/interfaces",
  "/etc/smartd.conf",
  "/etc/xen-estate/firewall.nft",
];

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

/**
 * Syntax checks by skeleton: bash never looks inside '…' or a quoted here-document, so one check per shape. Checks
 * are batched: one bash runs `bash -n` on each script of a batch in turn (a process per script is still started,
 * by bash, which is much cheaper than starting one from node), each script in a file of its own so that none can
 * run into the next.
 */
export class SyntaxChecker {
  private readonly results = new Map<string, Promise<string | null>>();
  private readonly byText = new Map<string, Promise<string | null>>();
  private batch: { script: string; resolve: (r: string | null) => void; reject: (e: unknown) => void }[] = [];
  private flushing: Promise<void> = Promise.resolve();
  /** Scripts given to `bash -n`. */
  runs = 0;

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
      r = new Promise<string | null>((resolve, reject) => this.batch.push({ script, resolve, reject }));
      this.results.set(key, r);
      if (this.batch.length === 1) setImmediate(() => this.flush());
      if (this.batch.length >= 64) this.flush();
    }
    if (this.byText.size < 50_000) this.byText.set(script, r);
    return r;
  }

  private flush(): void {
    const batch = this.batch;
    this.batch = [];
    if (batch.length === 0) return;
    this.runs += batch.length;
    this.flushing = this.flushing.then(() =>
      bashNAll(batch.map((b) => b.script)).then(
        (out) => batch.forEach((b, i) => b.resolve(out[i]!)),
        (err) => batch.forEach((b) => b.reject(err)),
      ),
    );
  }
}

/** `bash -n` on each script, wrapped the way RemoteHost.script wraps it (a function body); null where it parses. */
async function bashNAll(scripts: readonly string[]): Promise<(string | null)[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-hostile-syntax-"));
  try {
    const files = scripts.map((s, i) => {
      const f = path.join(dir, String(i));
      fs.writeFileSync(f, `__xen_estate_main() {\n${s}\n}\n`);
      return f;
    });
    const loop = `for f in "$@"; do if ! out=$(bash -n "$f" 2>&1); then printf '%s\\0%s\\0' "\${f##*/}" "$out"; fi; done`;
    const { stdout } = await run("bash", ["-c", loop, "xe-syntax", ...files], { maxBuffer: 64 * 2 ** 20 });
    const out: (string | null)[] = scripts.map(() => null);
    const parts = stdout.split("\0");
    for (let k = 0; k + 1 < parts.length; k += 2)
      out[Number(parts[k])] = parts[k + 1]!.trim().split("\n").slice(0, 3).join(" | ");
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
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
  // Normalised to exactly the valid inputs (a default for null, "2" for 2): judged already, as the valid run.
  if (JSON.stringify(inputs) === base.inputsJson) return res;
  // 3. Every script parses and holds the value as data; every file keeps it inside its quotes.
  const pending = await judgeScripts(base, res, inputs, value, hostile, syntax);
  // An empty or blank string is an absent value to check (the input's default applies), which may change a
  // file's structure as leaving the input out would: that is not a value leaving its quotes.
  judgeFiles(
    base,
    inputs,
    res.operations,
    hostile && typeof value === "string"
      ? distinctive(value, base.allText, isCommandPath(base, res.path))
      : [],
    hostile && typeof value === "string" && value.trim() !== "",
    (msg) => void res.problems.push(msg),
    [validAt(base.variant.inputs, path), typeof value === "string" ? value : undefined].filter(
      (x): x is string => x !== undefined,
    ),
  );
  res.done = Promise.all(pending).then(() => undefined);
  return res;
}

function isCommandPath(base: Baseline, path: string): boolean {
  return (KIND_INPUTS[base.variant.kind]?.commands ?? []).includes(path);
}

/**
 * Runs the lifecycle on checked `inputs` against the simulator and judges every script it sends: it parses
 * (`bash -n`, returned as pending checks) and holds `value` only as data.
 */
async function judgeScripts(
  base: Baseline,
  res: CaseResult,
  inputs: Record<string, unknown>,
  value: unknown,
  hostile: boolean,
  syntax: SyntaxChecker,
  refusalIsFine = false,
): Promise<Promise<void>[]> {
  const p = (msg: string): void => void res.problems.push(msg);
  const { operations } = await recordLifecycle(base.variant.kind, inputs, base.outs ?? undefined);
  res.operations = operations;
  for (const o of operations)
    if (o.error && !(refusalIsFine && o.error instanceof RefusedError))
      p(`${o.operation} failed against the simulator: ${o.error.message}`);
  const isCommand = isCommandPath(base, res.path);
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
  return pending;
}

/**
 * Defence in depth: `value` put into inputs *after* check (as if check had let it through), at `path` of the
 * checked inputs. Every script must still parse and hold the value as data: quoting does not rely on validation.
 */
export async function judgeUnchecked(
  base: Baseline,
  path: InputPath,
  valueId: string,
  value: string,
  syntax: SyntaxChecker,
  inputs: Record<string, unknown>,
): Promise<CaseResult> {
  const res: CaseResult = {
    variant: base.variant.name,
    path: pathText(path),
    valueId,
    value,
    accepted: true,
    problems: [],
    operations: [],
    done: Promise.resolve(),
  };
  // A value check would have refused may make the lifecycle refuse too (an owner tag that cannot match): safe.
  const pending = await judgeScripts(base, res, inputs, value, true, syntax, true);
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

/** The valid string at `path` of a variant's inputs, if there is one. */
function validAt(inputs: unknown, path: InputPath): string | undefined {
  let o: unknown = inputs;
  for (const k of path)
    o = o && typeof o === "object" ? (o as Record<string | number, unknown>)[k] : undefined;
  return typeof o === "string" ? o : undefined;
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
  /** The valid value and the case's (where a line-based file may hold them as a line's first word). */
  values: readonly string[] = [],
): void {
  const files = filesByRole(inputs);
  for (const [role, text] of files) {
    const before = base.files.get(role);
    if (text === before) continue;
    if (role === "xl.cfg" || role === "xl.conf" || role === "vcl") {
      const lex = role === "vcl" ? lexVcl : lexXlCfg;
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
    } else if (role === "systemd" || role.startsWith("systemd:")) {
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
    } else if (role === "nat.conf" || role === "nat-script" || role.startsWith("shell:")) {
      // Sourced and run by bash on the dom0.
      const lexed = lexShell(text);
      for (const problem of lexed.problems) p(`${role}: ${problem}`);
      for (const n of needles) for (const s of shellSplices(text, n, lexed)) p(`${role}: spliced ${s}`);
      if (hostile && before !== undefined && shellSkeleton(text) !== shellSkeleton(before))
        p(`${role}: its structure differs from the valid input's`);
    } else if (role.startsWith("lines:") || role.startsWith("free-lines:")) {
      // No quoting to keep a value in: its lines and words are the structure (free text: only the lines).
      const free = role.startsWith("free-lines:");
      for (const [n, line] of text.split("\n").entries())
        if ([...line].some((ch) => ch !== "\t" && (ch < " " || ch === "\u007f")))
          p(`${role}: line ${n + 1} holds control characters: ${JSON.stringify(line.slice(0, 120))}`);
      // A line may start with the value itself (the admin's sudoers line, an alias): its first word is the value's
      // place then, not a keyword it could have become.
      const shape = (t: string): string[] =>
        lineShape(t, free).map((l, n) => {
          const first = t.split("\n")[n]!.trim().split(/\s+/)[0] ?? "";
          const own = [...needles, ...values].some((x) => x.trim() !== "" && first.includes(x));
          return own ? `(value)/${l.split("/").pop()}` : l;
        });
      if (hostile && before !== undefined && JSON.stringify(shape(text)) !== JSON.stringify(shape(before)))
        p(
          `${role}: its lines or their words differ from the valid input's: ${JSON.stringify(text.slice(0, 300))}`,
        );
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
