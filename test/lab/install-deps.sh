#!/usr/bin/env bash
# Installs what the Xen lab needs on a Debian 12 machine (root). Idempotent: does nothing when all
# packages are present. CI calls it before the lab suite.
#   qemu-system-x86, qemu-utils   the emulated machine and its overlays (software emulation: no KVM needed)
#   debootstrap, e2fsprogs        the dom0 rootfs and `mkfs.ext4 -d` (no mount, no loop device)
#   cpio, gzip, xz-utils, zstd    the guest kit's initramfs (and compressed kernel modules)
#   openssh-client                the harness talks to lab machines with the system ssh
#   debian-archive-keyring, wget  debootstrap's needs (it insists on wget)
#   grub-common, grub-pc-bin, fdisk   the bare server's disk: grub-mkimage, BIOS GRUB modules, sfdisk
#   openssh-server, iproute2      the source VPS: sshd in a network namespace
set -euo pipefail
pkgs=(qemu-system-x86 qemu-utils debootstrap e2fsprogs cpio gzip xz-utils zstd openssh-client
  debian-archive-keyring wget ca-certificates grub-common grub-pc-bin fdisk openssh-server iproute2)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "lab dependencies already installed"
  exit 0
fi
[[ $EUID -eq 0 ]] || { echo "run as root: missing ${missing[*]}" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "installed: ${missing[*]}"
