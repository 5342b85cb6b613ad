/**
 * Hostile input, reusable by every suite: a fixed corpus of strings that mean something to a shell, a config
 * parser or a template engine, fast-check arbitraries built from the same pieces, and values of the wrong type.
 *
 * A piece that could run a command does so by creating a canary file, `/tmp/xe-canary-<id>`: a test that runs a
 * script and finds no canary afterwards knows the piece was not executed. Every canary id is unique in the corpus,
 * so a canary that appears names the piece that got through.
 *
 * Pieces are used three ways on a string input (see {@link spliced}): instead of the valid value, appended to it,
 * and inserted in its middle (option-like pieces also in front), so a rule that only looks at the start or the end
 * of a value is caught too.
 */
import fc from "fast-check";

/** Where canary files appear (on the host that runs the script). */
export const CANARY_DIR = "/tmp";
/** Every canary file's name starts with this. */
export const CANARY_PREFIX = "xe-canary-";

/** The command that leaves the canary of `id` when it runs. */
export function canaryCommand(id: string): string {
  return `touch ${CANARY_DIR}/${CANARY_PREFIX}${id}`;
}

export interface HostilePiece {
  /** Unique, also the canary's id when the piece carries one. */
  id: string;
  value: string;
  /** What the piece attacks. */
  why: string;
}

const pieces: HostilePiece[] = [];
function piece(id: string, value: string, why: string): void {
  if (pieces.some((p) => p.id === id)) throw new Error(`hostile corpus: id ${id} used twice`);
  pieces.push({ id, value, why });
}
/** A piece that runs the canary command of its own id through `shape` (which gets the command). */
function canary(id: string, shape: (cmd: string) => string, why: string): void {
  piece(id, shape(canaryCommand(id)), why);
}

// --- Command execution in a shell -------------------------------------------------------------------------
canary("subst", (c) => `$(${c})`, "command substitution");
canary("backtick", (c) => `\`${c}\``, "backtick command substitution");
canary("semicolon", (c) => `;${c};`, "command separator");
canary("semicolon-sp", (c) => ` ; ${c} ; `, "command separator with spaces (word splitting)");
canary("pipe", (c) => `|${c}`, "pipeline");
canary("and", (c) => `&&${c}`, "and-list");
canary("or", (c) => `||${c}`, "or-list");
canary("background", (c) => `&${c}&`, "background list");
canary("newline", (c) => `\n${c}\n`, "newline and a command");
canary("crlf", (c) => `\r\n${c}\r\n`, "CR LF and a command");
canary("sq-break", (c) => `';${c};'`, "closes a single-quoted string");
canary("dq-break", (c) => `";${c};"`, "closes a double-quoted string");
canary("dq-subst", (c) => `"$(${c})"`, "command substitution inside double quotes");
canary("arith", (c) => `$((0))$(${c})`, "arithmetic then substitution");
canary("param", (c) => `\${x:-$(${c})}`, "parameter expansion default");
canary("proc-subst", (c) => `<(${c})`, "process substitution");
canary("redirect", () => `>${CANARY_DIR}/${CANARY_PREFIX}redirect`, "output redirection creates a file");
canary("brace", (c) => `{ ${c}; }`, "brace group");
canary("subshell", (c) => `(${c})`, "subshell");
canary("heredoc", (c) => `<<EOF\n${c}\nEOF`, "here-document");
canary("eval", (c) => `eval '${c}'`, "eval");
canary("nul-cmd", (c) => `\u0000;${c}`, "NUL then a command");
canary("esc-nl", (c) => `\\\n${c}`, "backslash-newline line continuation");
canary("dollar-sq", (c) => `$'\\x27';${c};`, "ANSI-C quoting");
canary("xl-break", (c) => `"\nname = "$(${c})`, "closes an xl.cfg string and adds a key");
canary(
  "vcl-inline-c",
  (c) => `"; }\nC{ system("${c}"); }C\nsub x { "`,
  "closes a VCL string and adds inline C",
);
canary("systemd-exec", (c) => `\nExecStartPre=/bin/sh -c '${c}'`, "adds an ExecStartPre to a systemd unit");
canary("percent-nl", (c) => `%0A${c.replace(/ /g, "%20")}`, "percent-encoded newline and command");
canary("hbs-raw", (c) => `{{{${c}}}}`, "Handlebars triple-stash");

// --- Quoting and structure --------------------------------------------------------------------------------
piece("sq", "'", "single quote");
piece("dq", '"', "double quote");
piece("bs", "\\", "backslash");
piece("bq", "`", "backtick alone");
piece("dollar", "$", "dollar alone");
piece("dollar-var", "$HOME", "variable expansion");
piece("glob-star", "*", "glob");
piece("glob-q", "?", "glob one character");
piece("glob-class", "[a-z]", "glob class");
piece("tilde", "~root", "tilde expansion");
piece("brace-exp", "{a,b}", "brace expansion");
piece("bang", "!!", "history expansion");
piece("hash", "#", "comment start");
piece("space", " ", "a space (word splitting)");
piece("tab", "\t", "a tab");
piece("nl", "\n", "a newline");
piece("cr", "\r", "a carriage return");
piece("nul", "\u0000", "NUL");
piece("ctrl", "\u0001\u001b[31m\u007f", "control characters and an ANSI escape");
piece("hbs", "{{x}}", "Handlebars mustache");
piece("hbs3", "{{{x}}}", "Handlebars triple-stash");
piece("hbs-block", "{{#each x}}{{/each}}", "Handlebars block");
piece("hbs-proto", "{{constructor.constructor}}", "Handlebars prototype access");
piece("vcl-close", '"; }', "closes a VCL string and block");
piece("vcl-long", '"} {"', "closes a VCL long string");
piece("vcl-comment", "/* ", "opens a VCL comment");
piece("xl-close-list", '"]', "closes an xl.cfg string and list");
piece("xl-comma", '",', "closes an xl.cfg string in a list");
piece("xl-nl-list", "\n]", "newline and list close");
piece("xl-key", "\nname=x", "newline and an xl.cfg key");
piece("diskspec", ",access=rw,target=/dev/sda", "another key in an xl disk spec");
piece("vifspec", ",script=/tmp/x", "another key in an xl vif spec");
piece("systemd-spec", "%h%n$HOME", "systemd specifiers and variables");
piece("semicolon-only", ";", "a bare semicolon");
piece("equals", "=", "an equals sign");
piece("colon", ":", "a colon");
piece("comma", ",", "a comma");
piece("slash", "/", "a slash");
piece("dotdot", "/../..", "parent directory parts");
piece("double-slash", "//", "an empty path part");
piece("percent", "%", "a percent sign");
piece("percent-bad", "%E0%A4%A", "a malformed percent escape");
piece("percent-nul", "%00", "a percent-encoded NUL");
piece("percent-sq", "%27%22", "percent-encoded quotes");
piece("at", "@", "an at sign");
piece("userinfo", "user:pass@", "URL userinfo");

// --- Option-like ------------------------------------------------------------------------------------------
piece("opt-rf", "-rf", "an option");
piece("opt-help", "--help", "a long option");
piece("opt-dashdash", "--", "end of options");
piece("opt-eq", "--output=/tmp/xe-hostile-out", "a long option with a value");
piece("opt-dash", "-", "a lone dash (stdin)");

// --- Unicode look-alikes ----------------------------------------------------------------------------------
piece("fullwidth-solidus", "\uff0f", "fullwidth solidus (looks like /)");
piece("rtl-override", "\u202e", "right-to-left override");
piece("zwsp", "\u200b", "zero-width space");
piece("homoglyph", "\uff58", "fullwidth x (homoglyph)");
piece("cyrillic-a", "\u0430", "Cyrillic a (homoglyph)");
piece("kelvin", "\u212a", "Kelvin sign (lower-cases to k)");
piece("nbsp", "\u00a0", "no-break space");
piece("line-sep", "\u2028", "Unicode line separator");
piece("emoji", "\u{1f4a3}", "astral-plane character");
piece("lone-surrogate", "\ud800", "lone surrogate");
piece("bom", "\ufeff", "byte order mark");
piece("fullwidth-digits", "\uff11\uff12", "fullwidth digits");

// --- Sizes and emptiness ----------------------------------------------------------------------------------
piece("empty", "", "empty");
piece("spaces", "   ", "whitespace only");
piece("long-10k", "a".repeat(10_000), "overlong (10k)");
piece("long-100k", "x".repeat(100_000), "overlong (100k)");
piece("long-path", `/${"d/".repeat(3000)}f`, "overlong path");
piece("long-canary", `${"b".repeat(5000)}$(${canaryCommand("long-canary")})`, "overlong with a command");

// --- Numbers and keywords in strings ----------------------------------------------------------------------
piece("num-like", "1e3", "a string that looks like a number");
piece("hex-like", "0x10", "hex");
piece("neg", "-1", "a negative number");
piece("true-str", "true", "a boolean word");
piece("null-str", "null", "null as a word");
piece("proto", "__proto__", "a prototype key");
piece("constructor", "constructor", "an Object.prototype key");
piece("unknown", "04da6b54-80e4-46f7-96ec-b56ff0331ba9", "the engine's unknown-value sentinel");

/** The fixed corpus. */
export const HOSTILE_PIECES: readonly HostilePiece[] = pieces;

/** One hostile value for a string input, and how it was made. */
export interface HostileValue {
  /** `<piece id>@<how>`: `subst@append`. */
  id: string;
  value: string;
  piece: HostilePiece;
  how: "replace" | "append" | "insert" | "prepend" | "generated";
}

/**
 * The hostile values for one string input whose valid value is `valid`: each piece instead of it, after it and in
 * its middle (option-like ones in front of it too). A value the same as the valid one is left out.
 */
export function spliced(valid: string): HostileValue[] {
  const out: HostileValue[] = [];
  const mid = Math.floor(valid.length / 2);
  for (const p of pieces) {
    const forms: [HostileValue["how"], string][] = [
      ["replace", p.value],
      ["append", valid + p.value],
      ["insert", valid.slice(0, mid) + p.value + valid.slice(mid)],
      // In front matters where a value can start like an option; elsewhere the middle already shows whether a
      // rule looks at the whole value.
      ...(p.id.startsWith("opt-") ? [["prepend", p.value + valid] as [HostileValue["how"], string]] : []),
    ];
    const seen = new Set<string>([valid]);
    for (const [how, value] of forms) {
      if (seen.has(value)) continue;
      seen.add(value);
      out.push({ id: `${p.id}@${how}`, value, piece: p, how });
    }
  }
  return out;
}

/** The canary ids a value carries (those of the pieces in it). */
export function canariesIn(value: string): string[] {
  return [...value.matchAll(new RegExp(`${CANARY_PREFIX}([A-Za-z0-9-]+)`, "g"))].map((m) => m[1]!);
}

// --- fast-check -------------------------------------------------------------------------------------------

/** One piece of the corpus (the overlong ones left out: they make shrinking slow and are covered fixed). */
export const pieceArb: fc.Arbitrary<string> = fc.constantFrom(
  ...pieces.filter((p) => p.value.length < 1000).map((p) => p.value),
);

/**
 * Strings built from corpus pieces, shell and config metacharacters and arbitrary Unicode, so generated values
 * combine attacks the fixed corpus has only one at a time.
 */
export const hostileStringArb: fc.Arbitrary<string> = fc
  .array(
    fc.oneof(
      { weight: 4, arbitrary: pieceArb },
      { weight: 2, arbitrary: fc.constantFrom(..."'\"\\`$;|&<>(){}[]*?!#~=%,:@/ \t\n\r\u0000-") },
      { weight: 2, arbitrary: fc.string({ maxLength: 8 }) },
      { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 4 }) },
      { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 4 }) },
    ),
    { minLength: 1, maxLength: 6 },
  )
  .map((parts) => parts.join(""));

/** A generated hostile value for an input whose valid value is `valid`: alone, or spliced into it. */
export function hostileFor(valid: string): fc.Arbitrary<string> {
  return fc
    .tuple(hostileStringArb, fc.nat(), fc.constantFrom("replace", "append", "insert", "prepend"))
    .map(([v, at, how]) => {
      if (how === "replace") return v;
      if (how === "append") return valid + v;
      if (how === "prepend") return v + valid;
      const i = valid.length === 0 ? 0 : at % (valid.length + 1);
      return valid.slice(0, i) + v + valid.slice(i);
    });
}

// --- Type confusion ---------------------------------------------------------------------------------------

export interface Confusion {
  id: string;
  value: unknown;
}

function nested(depth: number): unknown {
  let v: unknown = "deep";
  for (let i = 0; i < depth; i++) v = { a: v };
  return v;
}

function prototypeLess(): unknown {
  const o = Object.create(null) as Record<string, unknown>;
  o.host = "dom0";
  o.path = "/dev/vg0/x";
  return o;
}

/**
 * Values of the wrong type for any input: what the engine can send when a program passes the wrong thing (it
 * sends JSON-like values; `undefined`, NaN and Infinity arrive from JavaScript programs and tests).
 */
export const CONFUSIONS: readonly Confusion[] = [
  { id: "null", value: null },
  { id: "true", value: true },
  { id: "false", value: false },
  { id: "zero", value: 0 },
  { id: "negative", value: -1 },
  { id: "float", value: 1.5 },
  { id: "big", value: 2 ** 60 },
  { id: "NaN", value: Number.NaN },
  { id: "Infinity", value: Number.POSITIVE_INFINITY },
  { id: "-Infinity", value: Number.NEGATIVE_INFINITY },
  { id: "empty-array", value: [] },
  { id: "array-of-string", value: ["x"] },
  { id: "array-of-null", value: [null] },
  { id: "array-nested", value: [[["x"]]] },
  { id: "array-long", value: Array.from({ length: 10_000 }, (_, i) => i) },
  { id: "empty-object", value: {} },
  { id: "object", value: { a: 1, b: "x" } },
  { id: "object-proto-key", value: JSON.parse('{"__proto__": {"polluted": true}, "host": "x"}') as unknown },
  { id: "object-constructor", value: { constructor: "x", toString: "y", valueOf: 3 } },
  { id: "nested-64", value: nested(64) },
  { id: "nested-1000", value: nested(1000) },
  { id: "prototype-less", value: prototypeLess() },
  { id: "string-number", value: "42" },
  { id: "string-float", value: "1.5" },
  { id: "string-exp", value: "1e3" },
  { id: "string-hex", value: "0x10" },
  { id: "string-space-number", value: " 42 " },
  { id: "string-negative-zero", value: "-0" },
  { id: "string-fullwidth-number", value: "\uff14\uff12" },
  { id: "string-true", value: "true" },
  { id: "string-empty", value: "" },
  { id: "string-unknown", value: "04da6b54-80e4-46f7-96ec-b56ff0331ba9" },
];

/** fast-check arbitrary of JSON-like values of any shape (for "check never throws"). */
export const anyValueArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  fc.constantFrom(...CONFUSIONS.map((c) => c.value)),
  fc.double(),
  hostileStringArb,
);
