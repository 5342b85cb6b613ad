#!/usr/bin/env bash
# Stage 1 of the dom0 image: debootstrap Debian 12 with the packages in packages.txt into
# $LAB_CACHE/base-<hash>/rootfs. Slow (~2-3 min); cached by the hash of this file and packages.txt.
# Usage: debootstrap.sh            prints the rootfs path on stdout
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

base="$LAB_CACHE/base-$(lab_base_hash)"
if [[ -f "$base/done" ]]; then
  echo "$base/rootfs"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: run test/lab/install-deps.sh" >&2; exit 1; }
rm -rf "$base"
mkdir -p "$base"
include="$(grep -v '^\s*#' "$LAB_IMAGES_DIR/packages.txt" | grep -v '^\s*$' | paste -sd, -)"
log "debootstrap $LAB_SUITE into $base/rootfs (packages: $include)"
start=$SECONDS

if ! debootstrap --arch=amd64 --variant=minbase --include="$include" \
  "$LAB_SUITE" "$base/rootfs" "$LAB_MIRROR" >"$base/debootstrap.log" 2>&1; then
  tail -40 "$base/debootstrap.log" >&2
  echo "debootstrap failed; full log in $base/debootstrap.log" >&2
  exit 1
fi
echo "$((SECONDS - start))" >"$base/seconds"
touch "$base/done"
log "debootstrap done in $((SECONDS - start)) s"
echo "$base/rootfs"
