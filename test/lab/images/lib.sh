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

# `lab_identity NAME`: the machine's name (/etc/hostname, /etc/hosts), its host key (a fresh ed25519 pair in
# $work/ssh_host_ed25519_key, the only one in $R/etc/ssh) and the test client key ($work/id_ed25519, in root's
# authorized_keys in $R).
lab_identity() {
  ssh-keygen -q -t ed25519 -N '' -C xen-estate-lab-client -f "$work/id_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C "xen-estate-lab-$1" -f "$work/ssh_host_ed25519_key"
  echo "$1" >"$R/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$1" >"$R/etc/hosts"
  rm -f "$R"/etc/ssh/ssh_host_*
  install -m 600 "$work/ssh_host_ed25519_key" "$R/etc/ssh/ssh_host_ed25519_key"
  install -m 644 "$work/ssh_host_ed25519_key.pub" "$R/etc/ssh/ssh_host_ed25519_key.pub"
  install -d -m 700 "$R/root/.ssh"
  install -m 600 "$work/id_ed25519.pub" "$R/root/.ssh/authorized_keys"
}

# `lab_mkfs LABEL FILE SPARE_MIB ALIGN_MIB`: an ext4 filesystem in FILE holding $R (which it then removes), with
# SPARE_MIB free beyond what $R uses, rounded up to ALIGN_MIB; sets $size_mib.
lab_mkfs() {
  local used_mib
  used_mib=$(du -sm "$R" | cut -f1)
  size_mib=$(( (used_mib + $3 + $4 - 1) / $4 * $4 ))
  mkfs.ext4 -q -F -L "$1" -E root_owner=0:0 -d "$R" "$2" "${size_mib}M"
  rm -rf "$R"
}

# The end every image recipe shares. `lab_image_finish WHAT [FIELD…]` writes $work/image.json (the fields every
# image has: recipe hash, kernel, the host key's fingerprint from $work/ssh_host_ed25519_key.pub, build time; then
# each FIELD, a ready `"name": value` pair), moves $work to $out, marks it done and prints it.
lab_image_finish() {
  local what="$1" field fingerprint
  shift
  fingerprint="$(ssh-keygen -lf "$work/ssh_host_ed25519_key.pub" | awk '{print $2}')"
  {
    printf '{\n  "recipeHash": "%s",\n  "kernelVersion": "%s",\n' "$hash" "$kver"
    for field in "$@"; do printf '  %s,\n' "$field"; done
    printf '  "hostKeyFingerprint": "%s",\n  "builtAt": "%s",\n  "buildSeconds": %d\n}\n' \
      "$fingerprint" "$(date -u +%FT%TZ)" $((SECONDS - start))
  } >"$work/image.json"
  mv "$work" "$out"
  trap - EXIT
  touch "$out/done"
  log "$what image ready in $((SECONDS - start)) s: $out (host key $fingerprint)"
  echo "$out"
}
