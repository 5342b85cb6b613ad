# Shared helpers for the lab image recipes. Sourced, not run.
# The cache layout (see test/lab/README.md):
#   $LAB_CACHE/base-<hash>/rootfs     debootstrapped Debian 12 with the dom0 packages (hash of debootstrap.sh + packages.txt)
#   $LAB_CACHE/<recipe-hash>/         finished images (hash of every file in test/lab/images/)
set -euo pipefail

LAB_IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
XEN_ESTATE_CACHE="${XEN_ESTATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xen-estate}"
LAB_CACHE="$XEN_ESTATE_CACHE/lab"
# The host's Debian mirror (deb.debian.org unless LAB_MIRROR says otherwise).
LAB_MIRROR="${LAB_MIRROR:-http://deb.debian.org/debian}"
LAB_SUITE=bookworm

# Hash of the given files (paths relative to LAB_IMAGES_DIR), 16 hex digits.
lab_hash_files() {
  (cd "$LAB_IMAGES_DIR" && sha256sum -- "$@") | sha256sum | cut -c1-16
}

# Hash of the whole recipe: every file under test/lab/images, in byte order.
lab_recipe_hash() {
  local files
  mapfile -t files < <(cd "$LAB_IMAGES_DIR" && find . -type f ! -name '*~' -printf '%P\n' | LC_ALL=C sort)
  lab_hash_files "${files[@]}"
}

lab_base_hash() {
  lab_hash_files debootstrap.sh packages.txt
}

log() { printf '[lab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# The start every image recipe shares. `lab_image_begin KIND [--force]` sets $hash (the recipe hash) and $out
# (the finished image's directory: $LAB_CACHE/KIND-<hash>, or $LAB_CACHE/<hash> for an empty KIND); when that is
# already built, prints it and ends the script. Otherwise checks for root and sets $start.
lab_image_begin() {
  hash="$(lab_recipe_hash)"
  out="$LAB_CACHE/${1:+$1-}$hash"
  if [[ "${2:-}" == "--force" ]]; then rm -rf "$out"; fi
  if [[ -f "$out/done" ]]; then
    echo "$out"
    exit 0
  fi
  [[ $EUID -eq 0 ]] || { echo "building the ${1:-dom0} image needs root (debootstrap, chroot, file ownership)" >&2; exit 1; }
  start=$SECONDS
}

# `lab_copy_base WHAT`: a private copy of the debootstrapped base in $work/rootfs ($R), removed on exit unless
# moved to $out; sets $kver to its newest kernel.
lab_copy_base() {
  base_rootfs="$(bash "$LAB_IMAGES_DIR/debootstrap.sh")"
  work="$out.tmp.$$"
  trap 'rm -rf "$work"' EXIT
  rm -rf "$out"
  mkdir -p "$work"
  R="$work/rootfs"
  log "copying the base rootfs for $1"
  cp -a "$base_rootfs" "$R"
  kver="$(ls "$R/lib/modules" | sort -V | tail -1)"
}

# `lab_keys ROLE`: the test client key ($work/id_ed25519) and the machine's host key ($work/ssh_host_ed25519_key).
lab_keys() {
  ssh-keygen -q -t ed25519 -N '' -C xen-estate-lab-client -f "$work/id_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C "xen-estate-lab-$1" -f "$work/ssh_host_ed25519_key"
}
