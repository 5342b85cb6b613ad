/**
 * A SIMULATOR of just enough LVM for LvmVolume's scripts (this machine has no device-mapper; the lab runs them on
 * real LVM, test/resources/lvm-volume.lab.test.ts): one volume group vg0 whose volumes are rows in a file
 * (`name origin size tags`, tab-separated, `-` for none), which lvcreate, lvextend, lvchange and lvremove change
 * and lvs answers from; mkfs records what it formatted, and blkid answers from that. Every tool logs its argv next
 * to it. It proves how the scripts and the kind act on LVM's answers and on the state they leave (a retry after a
 * lost answer, a volume made twice), never what LVM itself does.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { hostContext, type Context, type RemoteHost } from "../../provider";
import { withStubs, writeStubs } from "./stub-commands";

/** The extent size of the simulated vg0. */
export const SIM_EXTENT = 4 * 2 ** 20;
/** The size of a volume given without one. */
const DEFAULT_SIZE = 8 * 2 ** 30;

export interface SimVolume {
  name: string;
  origin: string | null;
  sizeBytes: number;
  tags: string[];
}

export interface LvmSimulator {
  ctx: Context;
  /** A host whose scripts see the simulated tools first (for a context of another pool, `withStubs(host, dir)`). */
  dir: string;
  /** The volumes as `name` or `name origin`. */
  rows: () => string[];
  volumes: () => SimVolume[];
  /** The devices mkfs formatted, a line per call. */
  formatted: () => string[];
  argv: (tool: string) => string[][];
}

/** Starts a simulated vg0 holding `rows` (`name` or `name origin`), for the scripts `host` runs. */
export function lvmSimulator(host: RemoteHost, parent: string, rows: string[]): LvmSimulator {
  const d = fs.mkdtempSync(path.join(parent, "lvm-sim-"));
  const table = path.join(d, "rows");
  const formatted = path.join(d, "formatted");
  fs.writeFileSync(
    table,
    rows
      .map((r) => {
        const [name, origin] = r.split(" ");
        return `${name}\t${origin ?? "-"}\t${DEFAULT_SIZE}\t-\n`;
      })
      .join(""),
  );
  fs.writeFileSync(formatted, "");
  writeStubs(d, { udevadm: {}, readlink: { stdout: "/dev/dm-9\n" } });
  const tool = (name: string, body: string) =>
    fs.writeFileSync(
      path.join(d, name),
      [
        "#!/bin/bash",
        `# SIMULATOR (test/support/lvm-sim.ts): stands in for ${name}.`,
        `printf '%s\\0' "$@" >> ${JSON.stringify(path.join(d, `${name}.argv`))}; printf '\\n' >> ${JSON.stringify(path.join(d, `${name}.argv`))}`,
        `table=${JSON.stringify(table)}; formatted=${JSON.stringify(formatted)}`,
        // The row of vg0/<name> (tab-separated), and a way to rewrite the table atomically.
        `row() { awk -F '\\t' -v n="$1" '$1 == n' "$table"; }`,
        `rewrite() { awk -F '\\t' -v OFS='\\t' "$1" "$table" > "$table.new"; mv -f "$table.new" "$table"; }`,
        `last="\${@: -1}"; lv="\${last#vg0/}"`,
        body,
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
  tool(
    "vgs",
    `[ "$last" = vg0 ] || [ "$last" = vg_name ] || { echo "  Volume group \\"$last\\" not found" >&2; exit 5; }\nprintf '  vg0\\n'`,
  );
  tool(
    "lvs",
    [
      `o=; prev=; for x in "$@"; do [ "$prev" != -o ] || o=$x; prev=$x; done`,
      `if [ "$last" = vg0 ]; then`,
      `  case "$o" in`,
      `    lv_name,origin) awk -F '\\t' '{ printf "  %s %s\\n", $1, ($2 == "-" ? "" : $2) }' "$table" ;;`,
      `    lv_name) awk -F '\\t' '{ printf "  %s\\n", $1 }' "$table" ;;`,
      `    *) echo "lvs simulator: unexpected -o $o for vg0" >&2; exit 3 ;;`,
      `  esac; exit 0`,
      `fi`,
      `r=$(row "$lv"); [ -n "$r" ] || { echo "  Failed to find logical volume \\"vg0/$lv\\"" >&2; exit 5; }`,
      `IFS=$'\\t' read -r _ origin size tags <<< "$r"; [ "$origin" != - ] || origin=; [ "$tags" != - ] || tags=`,
      `case "$o" in`,
      `  lv_size,vg_extent_size,origin) echo "  $size ${SIM_EXTENT} $origin" ;;`,
      `  lv_size) echo "  $size" ;;`,
      `  vg_extent_size) echo "  ${SIM_EXTENT}" ;;`,
      `  lv_dm_path) echo "  /dev/mapper/vg0-$lv" ;;`,
      `  lv_tags) echo "  $tags" ;;`,
      `  *) echo "lvs simulator: unexpected -o $o" >&2; exit 3 ;;`,
      `esac`,
    ].join("\n"),
  );
  tool(
    "lvcreate",
    [
      `name=; size=; origin=-; tags=-; snap=0`,
      `while [ $# -gt 0 ]; do case "$1" in`,
      `  --name) name=$2; shift 2 ;;`,
      `  --size) size=\${2%b}; shift 2 ;;`,
      `  --addtag) [ "$tags" = - ] && tags=$2 || tags="$tags,$2"; shift 2 ;;`,
      `  --snapshot) snap=1; shift ;;`,
      `  --) [ "$snap" = 1 ] && origin=\${2#vg0/}; shift 2 ;;`,
      `  *) shift ;;`,
      `esac; done`,
      `[ -z "$(row "$name")" ] || { echo "  Logical Volume \\"$name\\" already exists in volume group \\"vg0\\"" >&2; exit 5; }`,
      `size=$(( (size + ${SIM_EXTENT} - 1) / ${SIM_EXTENT} * ${SIM_EXTENT} ))`,
      `printf '%s\\t%s\\t%s\\t%s\\n' "$name" "$origin" "$size" "$tags" >> "$table"`,
    ].join("\n"),
  );
  tool(
    "lvextend",
    [
      `size=; prev=; for x in "$@"; do [ "$prev" != --size ] || size=\${x%b}; prev=$x; done`,
      `[ -n "$(row "$lv")" ] || exit 5`,
      `rewrite '$1 == "'"$lv"'" { $3 = '"$size"' } { print }'`,
    ].join("\n"),
  );
  tool(
    "lvchange",
    [
      `add=; del=; prev=; for x in "$@"; do [ "$prev" != --addtag ] || add=$x; [ "$prev" != --deltag ] || del=$x; prev=$x; done`,
      `[ -n "$(row "$lv")" ] || { echo "  Failed to find logical volume \\"vg0/$lv\\"" >&2; exit 5; }`,
      // LVM asks before it changes a snapshot (activation, tags), which changes its origin too; with no terminal the
      // answer is no (seen in the lab: the probe's activation of a fresh snapshot).
      `yes=0; for x in "$@"; do case "$x" in --yes|-y) yes=1 ;; esac; done`,
      `if [ "$yes" = 0 ] && [ "$(row "$lv" | cut -f2)" != - ]; then`,
      `  echo "Change of snapshot vg0/$lv will also change its origin. Proceed? [y/n]: [n]" >&2; echo "  Logical volume vg0/$lv not changed." >&2; exit 5`,
      `fi`,
      `if [ -n "$add" ]; then rewrite '$1 == "'"$lv"'" { $4 = ($4 == "-" ? "'"$add"'" : $4 ",'"$add"'") } { print }'; fi`,
      `if [ -n "$del" ]; then rewrite '$1 == "'"$lv"'" { n = split($4, t, ","); s = ""; for (i = 1; i <= n; i++) if (t[i] != "'"$del"'" && t[i] != "-") s = s (s == "" ? "" : ",") t[i]; $4 = (s == "" ? "-" : s) } { print }'; fi`,
    ].join("\n"),
  );
  tool("lvremove", `[ -n "$(row "$lv")" ] || exit 5\nrewrite '$1 != "'"$lv"'"'`);
  tool(
    "blkid",
    [
      // A device holds ext4 (or swap) once mkfs made it; PTTYPE never.
      `fs=$(awk -v d="$last" '$1 == d { t = $2 } END { print t }' "$formatted")`,
      `s=; prev=; for x in "$@"; do [ "$prev" != -s ] || s=$x; prev=$x; done`,
      `case "$s" in`,
      `  TYPE) [ -n "$fs" ] && echo "$fs" || exit 2 ;;`,
      `  UUID) [ -n "$fs" ] && echo 00000000-0000-4000-8000-000000000009 || exit 2 ;;`,
      `  PTTYPE|LABEL) exit 2 ;;`,
      `  "") [ -n "$fs" ] && printf 'TYPE=%s\\nUUID=00000000-0000-4000-8000-000000000009\\n' "$fs" || exit 2 ;;`,
      `esac`,
    ].join("\n"),
  );
  tool("mkfs.ext4", `printf '%s ext4\\n' "$last" >> "$formatted"`);
  tool("mkswap", `printf '%s swap\\n' "$last" >> "$formatted"`);
  for (const t of ["lvconvert", "blkdiscard", "blockdev", "e2fsck", "resize2fs", "e2label", "swaplabel"])
    tool(t, t === "blockdev" ? `echo ${DEFAULT_SIZE}` : "exit 0");
  const argv = (name: string): string[][] =>
    fs.existsSync(path.join(d, `${name}.argv`))
      ? fs
          .readFileSync(path.join(d, `${name}.argv`), "utf8")
          .split("\n")
          .filter(Boolean)
          .map((l) => l.split("\0").filter(Boolean))
      : [];
  const volumes = (): SimVolume[] =>
    fs
      .readFileSync(table, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => {
        const [name, origin, size, tags] = l.split("\t");
        return {
          name: name!,
          origin: origin === "-" ? null : origin!,
          sizeBytes: Number(size),
          tags: tags === "-" || !tags ? [] : tags.split(","),
        };
      });
  return {
    ctx: hostContext(withStubs(host, d)),
    dir: d,
    rows: () => volumes().map((v) => (v.origin ? `${v.name} ${v.origin}` : v.name)),
    volumes,
    formatted: () => fs.readFileSync(formatted, "utf8").split("\n").filter(Boolean),
    argv,
  };
}
