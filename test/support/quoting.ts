/**
 * Test-side parsers that say where a value landed in a rendered script or config file, and whether it can mean
 * anything there: a bash lexer (quoting, expansions, here-documents, comments), and tokenizers for xl.cfg(5), VCL
 * and systemd unit files. They are deliberately small and conservative: anything they do not understand counts as
 * "active", so a value landing there is reported, never waved through.
 *
 * The question they answer for a value V and a text T: does every occurrence of V in T lie where its characters
 * are plain data (inside a quoted string, a quoted here-document, a comment), or consist only of characters that
 * mean nothing to the parser (a shell word of letters, digits and `_@%+=:,./-`)? An occurrence that does not is a
 * splice: the value was pasted into the text raw.
 */

/** What a character of a shell script is. */
export type ShellContext =
  | "sq" // inside '…': inert
  | "sq-quote" // the ' that opens or closes '…'
  | "dq" // literal text inside "…"
  | "dq-quote" // the " that opens or closes "…"
  | "escape" // a backslash and the character it escapes
  | "expansion" // $name, ${…}, $(…)/`…` delimiters, $'…'
  | "word" // an unquoted character of a word
  | "operator" // blanks, ; & | < > ( ) and newlines outside quotes
  | "comment" // # … to the end of the line
  | "heredoc" // body of a here-document with a quoted delimiter: inert
  | "heredoc-expanding" // body of a here-document with an unquoted delimiter: like "…"
  | "heredoc-delimiter" // the line that ends a here-document
  | "heredoc-word"; // the delimiter word after << (its quoting decides whether the body expands)

/** Characters that mean nothing in an unquoted shell word (shellQuote leaves a word of only these bare). */
export const SHELL_BARE = /^[A-Za-z0-9_@%+=:,./-]$/;

interface Frame {
  /** normal: commands; dq: inside "…"; param: inside ${…}; backtick: inside `…` */
  type: "normal" | "dq" | "param" | "backtick";
  /** Plain ( ) nesting inside a $( … ) frame. */
  parens: number;
  /** This normal frame was opened by $( and is closed by its matching ). */
  closesWithParen: boolean;
  braces: number;
}

/** Lexes a bash script; returns the context of every character (UTF-16 index) and any structural problem. */
export function lexShell(text: string): { ctx: ShellContext[]; problems: string[] } {
  const ctx: ShellContext[] = new Array<ShellContext>(text.length);
  const problems: string[] = [];
  const stack: Frame[] = [{ type: "normal", parens: 0, closesWithParen: false, braces: 0 }];
  const pending: { delimiter: string; quoted: boolean; stripTabs: boolean }[] = [];
  let i = 0;
  const top = (): Frame => stack[stack.length - 1]!;
  const set = (from: number, to: number, c: ShellContext): void => {
    for (let k = from; k < to; k++) ctx[k] = c;
  };
  /** Whether position i starts a word (for comments): after a blank, an operator or the start. */
  const wordStart = (at: number): boolean => at === 0 || /[\s;&|()<>]/.test(text[at - 1]!);

  const heredocBodies = (): void => {
    // Called just after a newline that ends a command line: the pending here-documents' bodies follow.
    while (pending.length > 0) {
      const h = pending.shift()!;
      for (;;) {
        if (i >= text.length) {
          problems.push(`here-document ${h.delimiter} is not terminated`);
          return;
        }
        const nl = text.indexOf("\n", i);
        const end = nl < 0 ? text.length : nl;
        const line = text.slice(i, end);
        const cmp = h.stripTabs ? line.replace(/^\t+/, "") : line;
        if (cmp === h.delimiter) {
          set(i, end + (nl < 0 ? 0 : 1), "heredoc-delimiter");
          i = end + (nl < 0 ? 0 : 1);
          break;
        }
        set(i, end + (nl < 0 ? 0 : 1), h.quoted ? "heredoc" : "heredoc-expanding");
        i = end + (nl < 0 ? 0 : 1);
      }
    }
  };

  /** Reads a here-document delimiter word at i (after `<<` or `<<-`); returns it and whether it was quoted. */
  const readDelimiter = (): { delimiter: string; quoted: boolean } => {
    while (text[i] === " " || text[i] === "\t") ctx[i++] = "operator";
    let word = "";
    let quoted = false;
    while (i < text.length && !/[\s;&|()<>]/.test(text[i]!)) {
      const ch = text[i]!;
      if (ch === "'" || ch === '"') {
        quoted = true;
        const close = text.indexOf(ch, i + 1);
        if (close < 0) {
          problems.push("unterminated quote in a here-document delimiter");
          set(i, text.length, "heredoc-word");
          i = text.length;
          break;
        }
        word += text.slice(i + 1, close);
        set(i, close + 1, "heredoc-word");
        i = close + 1;
      } else if (ch === "\\") {
        quoted = true;
        word += text[i + 1] ?? "";
        set(i, i + 2, "heredoc-word");
        i += 2;
      } else {
        word += ch;
        ctx[i++] = "heredoc-word";
      }
    }
    return { delimiter: word, quoted };
  };

  /** `$…` at i (text[i] === "$"): pushes a frame or marks a simple expansion. */
  const dollar = (): void => {
    const next = text[i + 1];
    if (next === "(") {
      set(i, i + 2, "expansion");
      i += 2;
      stack.push({ type: "normal", parens: 0, closesWithParen: true, braces: 0 });
    } else if (next === "{") {
      set(i, i + 2, "expansion");
      i += 2;
      stack.push({ type: "param", parens: 0, closesWithParen: false, braces: 0 });
    } else if (next === "'") {
      // ANSI-C quoting: escapes are active; count it all as expansion.
      let k = i + 2;
      while (k < text.length && text[k] !== "'") k += text[k] === "\\" ? 2 : 1;
      if (k >= text.length) problems.push("unterminated $'…'");
      set(i, Math.min(k + 1, text.length), "expansion");
      i = k + 1;
    } else if (next !== undefined && /[A-Za-z_]/.test(next)) {
      let k = i + 1;
      while (k < text.length && /[A-Za-z0-9_]/.test(text[k]!)) k++;
      set(i, k, "expansion");
      i = k;
    } else if (next !== undefined && /[0-9?#@*$!-]/.test(next)) {
      set(i, i + 2, "expansion");
      i += 2;
    } else {
      // A lone $ is literal to bash, but a value should not rely on that.
      ctx[i++] = "expansion";
    }
  };

  while (i < text.length) {
    const f = top();
    const ch = text[i]!;
    if (f.type === "dq") {
      if (ch === '"') {
        ctx[i++] = "dq-quote";
        stack.pop();
      } else if (ch === "\\") {
        const n = text[i + 1];
        if (n !== undefined && /[$`"\\\n]/.test(n)) {
          set(i, i + 2, "escape");
          i += 2;
        } else ctx[i++] = "dq";
      } else if (ch === "$") dollar();
      else if (ch === "`") {
        ctx[i++] = "expansion";
        stack.push({ type: "backtick", parens: 0, closesWithParen: false, braces: 0 });
      } else ctx[i++] = "dq";
      continue;
    }
    if (f.type === "param") {
      if (ch === "}" && f.braces === 0) {
        ctx[i++] = "expansion";
        stack.pop();
      } else if (ch === "{") {
        f.braces++;
        ctx[i++] = "expansion";
      } else if (ch === "}") {
        f.braces--;
        ctx[i++] = "expansion";
      } else if (ch === "\\") {
        set(i, i + 2, "expansion");
        i += 2;
      } else if (ch === "'") {
        const close = text.indexOf("'", i + 1);
        if (close < 0) {
          problems.push("unterminated ' inside ${…}");
          set(i, text.length, "expansion");
          i = text.length;
        } else {
          set(i, close + 1, "expansion");
          i = close + 1;
        }
      } else if (ch === '"') {
        ctx[i++] = "expansion";
        stack.push({ type: "dq", parens: 0, closesWithParen: false, braces: 0 });
      } else if (ch === "$") dollar();
      else ctx[i++] = "expansion";
      continue;
    }
    // normal or backtick frame: commands
    if (f.type === "backtick" && ch === "`") {
      ctx[i++] = "expansion";
      stack.pop();
      continue;
    }
    if (ch === "'") {
      const close = text.indexOf("'", i + 1);
      if (close < 0) {
        problems.push(`unterminated ' at offset ${i}`);
        ctx[i] = "sq-quote";
        set(i + 1, text.length, "sq");
        i = text.length;
      } else {
        ctx[i] = "sq-quote";
        set(i + 1, close, "sq");
        ctx[close] = "sq-quote";
        i = close + 1;
      }
    } else if (ch === '"') {
      ctx[i++] = "dq-quote";
      stack.push({ type: "dq", parens: 0, closesWithParen: false, braces: 0 });
    } else if (ch === "\\") {
      const n = text[i + 1];
      set(i, i + 2, "escape");
      i += 2;
      if (n === undefined) problems.push("a backslash ends the script");
    } else if (ch === "$") dollar();
    else if (ch === "`") {
      ctx[i++] = "expansion";
      stack.push({ type: "backtick", parens: 0, closesWithParen: false, braces: 0 });
    } else if (ch === "#" && wordStart(i)) {
      const nl = text.indexOf("\n", i);
      const end = nl < 0 ? text.length : nl;
      set(i, end, "comment");
      i = end;
    } else if (ch === "<" && text[i + 1] === "<" && text[i + 2] === "<") {
      // A here-string, not a here-document.
      set(i, i + 3, "operator");
      i += 3;
    } else if (ch === "<" && text[i + 1] === "<") {
      const strip = text[i + 2] === "-";
      set(i, i + (strip ? 3 : 2), "operator");
      i += strip ? 3 : 2;
      const d = readDelimiter();
      pending.push({ ...d, stripTabs: strip });
    } else if (ch === "(") {
      ctx[i++] = "operator";
      f.parens++;
    } else if (ch === ")") {
      if (f.parens > 0) {
        f.parens--;
        ctx[i++] = "operator";
      } else if (f.closesWithParen) {
        ctx[i++] = "expansion";
        stack.pop();
      } else ctx[i++] = "operator"; // a case pattern's )
    } else if (ch === "\n") {
      ctx[i++] = "operator";
      heredocBodies();
    } else if (/[\s;&|<>]/.test(ch)) ctx[i++] = "operator";
    else ctx[i++] = "word";
  }
  if (stack.length > 1) problems.push(`the script ends inside ${stack.map((s) => s.type).join(" > ")}`);
  if (pending.length > 0) problems.push("a here-document has no body");
  return { ctx, problems };
}

/** How shellQuote writes a value's single quotes inside a single-quoted word. */
function sqEncoded(value: string): string {
  return value.replace(/'/g, `'\\''`);
}

/** Every index at which `needle` occurs in `hay`. */
export function occurrences(hay: string, needle: string): number[] {
  const out: number[] = [];
  if (needle === "") return out;
  for (let at = hay.indexOf(needle); at >= 0; at = hay.indexOf(needle, at + 1)) out.push(at);
  return out;
}

/**
 * Where `value` occurs in `script` outside a place where it is plain data. Looks for the value as written and as
 * shellQuote writes it inside '…' (each ' as '\''). A character is fine inside '…', in a quoted here-document, in
 * a comment, as literal text inside "…", or as a bare word character; a ' of the value is fine as '\''.
 */
export function shellSplices(script: string, value: string, lexed = lexShell(script)): string[] {
  const { ctx } = lexed;
  const problems: string[] = [];
  const forms = [...new Set([value, sqEncoded(value)])];
  const encoded = sqEncoded(value);
  // The value as written can overlap its encoded form (`a'` is a prefix of `a'\''`): those are checked encoded.
  const encodedAt = encoded === value ? [] : occurrences(script, encoded);
  const insideEncoded = (at: number): boolean =>
    encodedAt.some((e) => at < e + encoded.length && e < at + value.length);
  for (const form of forms) {
    for (const at of occurrences(script, form)) {
      if (form !== encoded && insideEncoded(at)) continue;
      let k = at;
      const bad: string[] = [];
      for (const ch of value) {
        // A code point may be two UTF-16 units; they share a context.
        if (form !== value && ch === "'") {
          const ok =
            script.slice(k, k + 4) === `'\\''` &&
            ctx[k] === "sq-quote" &&
            ctx[k + 1] === "escape" &&
            ctx[k + 3] === "sq-quote";
          if (!ok) bad.push(`' as ${ctx[k]}`);
          k += 4;
          continue;
        }
        const c = ctx[k];
        const fine =
          c === "sq" ||
          c === "heredoc" ||
          (c === "comment" && ch !== "\n") ||
          (c === "dq" && ch !== "\n") ||
          (c === "heredoc-expanding" && !/[$`\\]/.test(ch)) ||
          (c === "word" && SHELL_BARE.test(ch));
        if (!fine) bad.push(`${JSON.stringify(ch)} as ${c}`);
        k += ch.length;
      }
      if (bad.length > 0)
        problems.push(
          `at offset ${at} (${JSON.stringify(script.slice(Math.max(0, at - 30), at + form.length + 30))}): ${[...new Set(bad)].slice(0, 4).join(", ")}`,
        );
    }
  }
  return problems;
}

/** Words bash treats specially in command position: a skeleton keeps them. */
const RESERVED = new Set([
  "if",
  "then",
  "else",
  "elif",
  "fi",
  "case",
  "esac",
  "for",
  "select",
  "while",
  "until",
  "do",
  "done",
  "in",
  "function",
  "time",
  "coproc",
]);

/**
 * The script with everything inert blanked: the content of '…' words and quoted here-document bodies, literal text
 * inside "…", and unquoted words made only of bare characters (not reserved words; `=` kept, it makes an
 * assignment). Two scripts with the same skeleton parse the same way, so a syntax check of one stands for both.
 */
export function shellSkeleton(script: string, lexed = lexShell(script)): string {
  let out = "";
  let run: string | null = null;
  let word = "";
  const flushWord = (): void => {
    if (word === "") return;
    out += RESERVED.has(word) ? word : word.replace(/[^=]+/g, "\u0002");
    word = "";
  };
  const ctx = (k: number): ShellContext | undefined => lexed.ctx[k];
  for (let k = 0; k < script.length; k++) {
    const c = lexed.ctx[k];
    const ch = script[k]!;
    if (c === "word" && SHELL_BARE.test(ch)) {
      word += ch;
      run = null;
      continue;
    }
    if (c === "word") {
      // A word with a glob or other character: keep it whole.
      out += word + ch;
      word = "";
      run = null;
      continue;
    }
    flushWord();
    if (c === "heredoc-word" || c === "heredoc-delimiter") {
      // The delimiter's text does not change the parse (the body around it is blanked too); its quoting does.
      if (ch === "'" || ch === '"' || ch === "\\" || ch === "\n") out += ch;
      else if (ctx(k - 1) !== c) out += "\u0004";
      run = null;
      continue;
    }
    if (c === "sq" || c === "heredoc" || c === "dq") {
      if (run !== c) out += c === "dq" ? "\u0003" : "\u0001";
      run = c;
    } else {
      run = null;
      out += ch;
    }
  }
  flushWord();
  return out;
}

/** One decoded shell word and where it came from, for finding commands such as `xe_put`. */
export interface ShellWord {
  text: string;
  start: number;
  end: number;
  /** The word contained an expansion ($…, `…`): its text is not what the shell sees. */
  expands: boolean;
}

/**
 * The words of a script in order, each command ending in a `;`/newline/`|`/`&` word. Decodes quoting; expansions
 * are kept as written (and flagged). Good enough to find `printf '%s' WORD | xe_put MODE PATH`.
 */
export function shellWords(script: string, lexed = lexShell(script)): ShellWord[] {
  const { ctx } = lexed;
  const words: ShellWord[] = [];
  let cur: ShellWord | null = null;
  const flush = (): void => {
    if (cur) words.push(cur);
    cur = null;
  };
  // An escape is a backslash and the character after it, both marked "escape": keep the second.
  let escaping = false;
  for (let k = 0; k < script.length; k++) {
    const c = ctx[k]!;
    const ch = script[k]!;
    if (c !== "escape") escaping = false;
    if (c === "operator" || c === "comment" || c === "heredoc" || c === "heredoc-delimiter") {
      flush();
      if (c === "operator" && /[;\n|&]/.test(ch))
        words.push({ text: ch, start: k, end: k + 1, expands: false });
      continue;
    }
    if (c === "heredoc-expanding") continue;
    cur ??= { text: "", start: k, end: k, expands: false };
    cur.end = k + 1;
    if (c === "sq" || c === "dq" || c === "word") cur.text += ch;
    else if (c === "escape") {
      if (escaping) cur.text += ch === "\n" ? "" : ch;
      escaping = !escaping;
    } else if (c === "expansion") {
      cur.expands = true;
      cur.text += ch;
    }
  }
  flush();
  return words;
}

/**
 * The scripts inside a script that another shell runs: the word after `bash -c` / `sh -c`. Their values are
 * interpreted again, so they are checked again.
 */
export function innerScripts(script: string, lexed = lexShell(script)): string[] {
  const words = shellWords(script, lexed);
  const out: string[] = [];
  for (let k = 0; k + 2 < words.length; k++) {
    if (/^(\/bin\/|\/usr\/bin\/)?(ba)?sh$/.test(words[k]!.text) && words[k + 1]!.text === "-c")
      out.push(words[k + 2]!.text);
  }
  return out;
}

// --- xl.cfg(5) ----------------------------------------------------------------------------------------------

export type ConfigContext = "string" | "string-quote" | "comment" | "token";

/**
 * Lexes an xl.cfg file as libxlu does: `#` comments, "…" and '…' strings in which a backslash escapes the next
 * character, everything else tokens (names, numbers, `=`, `[`, `]`, `,`, `;`, blanks).
 */
export function lexXlCfg(text: string): { ctx: ConfigContext[]; problems: string[] } {
  const ctx: ConfigContext[] = new Array<ConfigContext>(text.length);
  const problems: string[] = [];
  let i = 0;
  while (i < text.length) {
    const ch = text[i]!;
    if (ch === "#") {
      while (i < text.length && text[i] !== "\n") ctx[i++] = "comment";
    } else if (ch === '"' || ch === "'") {
      ctx[i++] = "string-quote";
      while (i < text.length && text[i] !== ch) {
        if (text[i] === "\n") {
          problems.push(`newline inside a string at offset ${i}`);
          break;
        }
        if (text[i] === "\\") ctx[i++] = "string";
        ctx[i++] = "string";
      }
      if (text[i] === ch) ctx[i++] = "string-quote";
      else problems.push("unterminated string");
    } else ctx[i++] = "token";
  }
  return { ctx, problems };
}

/**
 * Lexes VCL: `#` and `//` comments to the end of the line, `/* … *\/` comments, "…" strings (no escapes, no
 * newlines), long strings {"…"}, inline C C{ … }C (active), everything else tokens.
 */
export function lexVcl(text: string): { ctx: ConfigContext[]; problems: string[] } {
  const ctx: ConfigContext[] = new Array<ConfigContext>(text.length);
  const problems: string[] = [];
  let i = 0;
  while (i < text.length) {
    const ch = text[i]!;
    if (ch === "#" || (ch === "/" && text[i + 1] === "/")) {
      while (i < text.length && text[i] !== "\n") ctx[i++] = "comment";
    } else if (ch === "/" && text[i + 1] === "*") {
      const close = text.indexOf("*/", i + 2);
      const end = close < 0 ? text.length : close + 2;
      if (close < 0) problems.push("unterminated /* comment");
      for (; i < end; i++) ctx[i] = "comment";
    } else if (ch === "{" && text[i + 1] === '"') {
      const close = text.indexOf('"}', i + 2);
      const end = close < 0 ? text.length : close;
      if (close < 0) problems.push("unterminated long string");
      ctx[i] = ctx[i + 1] = "string-quote";
      for (i += 2; i < end; i++) ctx[i] = "string";
      if (close >= 0) {
        ctx[i] = ctx[i + 1] = "string-quote";
        i += 2;
      }
    } else if (ch === '"') {
      ctx[i++] = "string-quote";
      while (i < text.length && text[i] !== '"' && text[i] !== "\n") ctx[i++] = "string";
      if (text[i] === '"') ctx[i++] = "string-quote";
      else problems.push(`unterminated string at offset ${i}`);
    } else if (ch === "C" && text[i + 1] === "{") {
      problems.push(`inline C at offset ${i}`);
      ctx[i++] = "token";
    } else ctx[i++] = "token";
  }
  return { ctx, problems };
}

/** Characters that mean nothing as part of a config token (a name, a number, a path). */
const CONFIG_BARE = /^[A-Za-z0-9_.\-/:]$/;

/**
 * Where `value` (as written, or as `forms` encode it, e.g. JSON) occurs outside a string or a comment of a config
 * file lexed by `lex`. A token character is fine when it is a plain name/number/path character.
 */
export function configSplices(
  text: string,
  value: string,
  lex: (t: string) => { ctx: ConfigContext[] },
  forms: readonly string[] = [],
): string[] {
  const { ctx } = lex(text);
  const problems: string[] = [];
  for (const form of new Set([value, ...forms])) {
    for (const at of occurrences(text, form)) {
      const bad: string[] = [];
      for (let k = at; k < at + form.length; k++) {
        const c = ctx[k];
        const ch = text[k]!;
        const fine =
          c === "string" || (c === "comment" && ch !== "\n") || (c === "token" && CONFIG_BARE.test(ch));
        if (!fine) bad.push(`${JSON.stringify(ch)} as ${c}`);
      }
      if (bad.length > 0)
        problems.push(
          `at offset ${at} (${JSON.stringify(text.slice(Math.max(0, at - 30), at + form.length + 30))}): ${[...new Set(bad)].slice(0, 4).join(", ")}`,
        );
    }
  }
  return problems;
}

/**
 * The file with string contents and comments dropped (their delimiters kept): two files with the same skeleton
 * have the same structure. `normalise` may rewrite the result (e.g. VCL's `==` and `~` are the same shape).
 */
export function configSkeleton(
  text: string,
  lex: (t: string) => { ctx: ConfigContext[] },
  normalise: (skeleton: string) => string = (x) => x,
): string {
  const { ctx } = lex(text);
  let out = "";
  for (let k = 0; k < text.length; k++) {
    const c = ctx[k]!;
    if (c === "string") continue;
    if (c === "comment") {
      if (ctx[k - 1] !== "comment") out += "#";
      continue;
    }
    out += text[k];
  }
  return normalise(out);
}

// --- systemd unit files -------------------------------------------------------------------------------------

/**
 * A systemd drop-in as systemd reads it: `[Section]`, `Key=Value` lines, `#`/`;` comments, and for Exec lines the
 * argument words (split at blanks, "…"/'…' quoting, `%` specifiers, `$VAR` expansion, `\` escapes). Returns each
 * setting with its words, and problems for what it cannot read.
 */
export function parseSystemdUnit(text: string): {
  settings: { key: string; value: string; words: string[]; active: string[] }[];
  problems: string[];
} {
  const settings: { key: string; value: string; words: string[]; active: string[] }[] = [];
  const problems: string[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#") || line.startsWith(";") || /^\[[A-Za-z]+\]$/.test(line)) continue;
    if (line.endsWith("\\")) problems.push(`line continuation: ${JSON.stringify(line)}`);
    const m = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(line);
    if (!m) {
      problems.push(`not a setting: ${JSON.stringify(line)}`);
      continue;
    }
    const value = m[2]!;
    const words: string[] = [];
    const active: string[] = [];
    if (/^Exec/.test(m[1]!)) {
      for (const w of value.split(/[ \t]+/).filter((x) => x !== "")) {
        words.push(w);
        if (/["'\\$%;]/.test(w)) active.push(w);
      }
    }
    settings.push({ key: m[1]!, value, words, active });
  }
  return { settings, problems };
}

// --- Line-based files written into a guest -------------------------------------------------------------------

/**
 * The shape of a line-based file: per line, its first word and how many blank-separated fields it has; for a file of
 * free text (a host name, key lines with comments) only how many lines.
 */
export function lineShape(text: string, freeText = false): string[] {
  return text.split("\n").map((l) => {
    if (freeText) return "line";
    const fields = l
      .trim()
      .split(/\s+/)
      .filter((f) => f !== "");
    return `${fields[0] ?? ""}/${fields.length}`;
  });
}
