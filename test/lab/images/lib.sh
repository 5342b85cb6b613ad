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
