/**
 * Who holds a block device: a Xen guest (through its block backend), a mount in the host, active swap. Every
 * step that could hurt a disk in use (format, fsck, resize, relabel, install, removal) asks first; a question
 * that cannot be answered (xenstore failing) is an error, never "nobody".
 */

/**
 * Shell functions for scripts:
 * - `xe_holder DEV` sets `$holder` to the name of the domain whose block backend holds DEV (resolved with
 *   `readlink -f`), or to "" when none does; the script fails when xenstore cannot be asked. On a host without
 *   Xen's tools no domain can hold anything.
 * - `xe_mounted DEV` sets `$mounted` to where DEV is mounted in this host, or "".
 * - `xe_swapping DEV` succeeds when DEV is active swap.
 */
export const DEVICE_HOLDER_FUNCTIONS = [
  `xe_holder() {`,
  `  local want out line d p`,
  `  holder=""`,
  `  want=$(readlink -f -- "$1")`,
  `  command -v xenstore-ls >/dev/null 2>&1 || return 0`,
  `  for kind in vbd vbd3 qdisk; do`,
  `    if ! out=$(xenstore-ls -f "/local/domain/0/backend/$kind" 2>&1); then`,
  `      case "$out" in *"No such file or directory"*|*ENOENT*) continue ;; esac`,
  `      xe_say "cannot ask xenstore which guest holds $1 (so it is not used): $out"; exit 1`,
  `    fi`,
  `    while IFS= read -r line; do`,
  `      case "$line" in */params\\ =\\ *) ;; *) continue ;; esac`,
  `      d=\${line#/local/domain/0/backend/$kind/}; d=\${d%%/*}`,
  `      p=\${line#* = \\"}; p=\${p%\\"}`,
  `      if [ "$(readlink -f -- "$p" 2>/dev/null || echo "$p")" = "$want" ]; then`,
  `        holder=$(xl domname "$d" 2>/dev/null || echo "domain $d"); return 0`,
  `      fi`,
  `    done <<< "$out"`,
  `  done`,
  `}`,
  `xe_mounted() { mounted=$(findmnt -rn -o TARGET -S "$(readlink -f -- "$1")" | head -n1 || true); }`,
  `xe_swapping() { swapon --show=NAME --noheadings --raw | grep -qxF -- "$(readlink -f -- "$1")"; }`,
].join("\n");
