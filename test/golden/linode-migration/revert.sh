#!/bin/sh
# Written by xen-estate 0.1.0: puts back every file the migration's fixups changed and removes the ones they
# created, newest first, as recorded in MANIFEST beside this script. Run it inside the guest (or with the disk
# mounted: `sh revert.sh /mnt`), then remove this directory.
set -eu
root=${1:-}
here=$(cd "$(dirname "$0")" && pwd)
tac "$here/MANIFEST" | while read -r what path; do
  case "$what" in
    changed) cp -a -- "$here/files$path" "$root$path" && echo "restored $path" ;;
    created) rm -f -- "$root$path" && echo "removed $path" ;;
  esac
done
