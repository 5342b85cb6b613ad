#!/usr/bin/env bash
# The guest kit: the dom0's own Debian kernel plus a tiny busybox initramfs that loads
# xen-blkfront and xen-netfront for exactly that kernel, configures eth0 from the kernel command
# line and serves a known string over HTTP. Boots in seconds even under emulation.
#
# Usage: build-kit.sh ROOTFS OUTDIR     writes OUTDIR/vmlinuz, OUTDIR/initrd.gz, OUTDIR/example.cfg
#
# Guest kernel command line (xl.cfg `extra=`):
#   xe.ip=10.99.0.10/24   address for eth0 (none: eth0 stays up without an address)
#   xe.gw=10.99.0.1       default route
#   xe.name=NAME          hostname, also in the HTTP answer
# HTTP on port 80: /          "xen-estate-kit ok name=NAME"
#                  /disks     "xvda:SECTORS ..." for every xvd* disk seen
#                  /xvda      the first 64 bytes of /dev/xvda (NULs dropped), to prove the disk is the one you gave
#                  /cgi-bin/reach?HOST:PORT   "reach HOST:PORT ok|failed": a TCP connect from the guest (e.g. through NAT)
# Root filesystem image: OUTDIR/rootfs.tar.gz is a tiny busybox userland for xen-estate's image install. When
# /dev/xvda holds an ext4 filesystem with an executable /sbin/init, the initramfs switches to it; that init
# configures eth0 from /etc/network/interfaces (as the install writes it) and answers
# "xen-estate-image ok name=HOSTNAME" on / (plus /cgi-bin/reach). OUTDIR/rootfs-boot.tar.gz is that userland with
# the kit's kernel and initramfs at /vmlinuz and /initrd.img, for guests booting through pvgrub2.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rootfs="$1"
out="$2"
kver="$(ls "$rootfs/lib/modules" | sort -V | tail -1)"
[[ -n "$kver" ]] || { echo "no kernel modules in $rootfs" >&2; exit 1; }
[[ -x "$rootfs/bin/busybox" ]] || { echo "$rootfs/bin/busybox missing (install busybox-static)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"/{bin,sbin,dev,proc,sys,tmp,www,etc,mnt,lib/modules}
cp "$rootfs/bin/busybox" "$tmp/bin/busybox"

# Modules and their dependencies in load order (dependencies first), from the kernel's modules.dep.
moddir="$rootfs/lib/modules/$kver"
declare -A seen=()
order=()
add_module() {
  local name="$1" line path deps i
  line="$(grep -E "/${name}\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" | head -1)"
  [[ -n "$line" ]] || { echo "module $name not found for $kver" >&2; exit 1; }
  path="${line%%:*}"
  read -r -a deps <<<"${line#*:}"
  # modules.dep lists a module's dependencies so that the last one must be loaded first.
  for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
    local dep
    dep="$(basename "${deps[$i]}")"
    dep="${dep%%.ko*}"
    add_module "$dep"
  done
  [[ -n "${seen[$path]:-}" ]] && return 0
  seen[$path]=1
  local base
  base="$(basename "$path")"
  case "$path" in
    *.ko.xz) xz -dc "$moddir/$path" >"$tmp/lib/modules/${base%.xz}"; base="${base%.xz}" ;;
    *.ko.zst) zstd -qdc "$moddir/$path" >"$tmp/lib/modules/${base%.zst}"; base="${base%.zst}" ;;
    *.ko.gz) gzip -dc "$moddir/$path" >"$tmp/lib/modules/${base%.gz}"; base="${base%.gz}" ;;
    *) cp "$moddir/$path" "$tmp/lib/modules/$base" ;;
  esac
  order+=("$base")
}
add_module xen-blkfront
add_module xen-netfront
add_module ext4
# ext4 asks the crypto API for crc32c at mount time (a soft dependency, not in modules.dep).
if grep -qE "/crc32c_generic\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep"; then add_module crc32c_generic; fi
printf '%s\n' "${order[@]}" >"$tmp/etc/modules.order"

reach_cgi='#!/bin/sh
echo "Content-Type: text/plain"
echo
t="$QUERY_STRING"
if nc -w 5 "${t%:*}" "${t##*:}" </dev/null >/dev/null 2>&1; then echo "reach $t ok"; else echo "reach $t failed"; fi'
mkdir -p "$tmp/www/cgi-bin"
printf '%s\n' "$reach_cgi" >"$tmp/www/cgi-bin/reach"
chmod +x "$tmp/www/cgi-bin/reach"

cat >"$tmp/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
say() { echo "kit: $*" >/dev/console; }
for m in $(cat /etc/modules.order); do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done
# An installed root filesystem on xvda takes over.
i=0
while [ ! -b /dev/xvda ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /newroot
if [ -b /dev/xvda ] && mount -t ext4 /dev/xvda /newroot 2>/dev/null; then
  if [ -x /newroot/sbin/init ]; then
    say "switching to the root filesystem on xvda"
    umount /sys /proc
    mount --move /dev /newroot/dev 2>/dev/null || umount /dev
    exec switch_root /newroot /sbin/init
  fi
  umount /newroot
fi
ip=""; gw=""; name=kit
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    xe.ip=*) ip="${arg#xe.ip=}" ;;
    xe.gw=*) gw="${arg#xe.gw=}" ;;
    xe.name=*) name="${arg#xe.name=}" ;;
  esac
done
hostname "$name"
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  [ -n "$ip" ] && ip addr add "$ip" dev eth0
  [ -n "$gw" ] && ip route add default via "$gw"
else
  say "no eth0 after 10 s"
fi
i=0
while [ ! -e /sys/block/xvda ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
disks=""
for d in /sys/block/xvd*; do
  [ -e "$d" ] && disks="$disks ${d##*/}:$(cat "$d/size")"
done
echo "xen-estate-kit ok name=$name" >/www/index.html
echo "${disks# }" >/www/disks
[ -b /dev/xvda ] && dd if=/dev/xvda bs=64 count=1 2>/dev/null | tr -d '\000' >/www/xvda
httpd -p 80 -h /www
say "ready name=$name ip=$ip disks=${disks# }"
while true; do sleep 3600; done
INIT
chmod +x "$tmp/init"

# What the kernel runs when Xen asks the guest to power off or reboot (`xl shutdown`, xendomains at the dom0's
# shutdown): /sbin/poweroff or /sbin/reboot. PID 1 here is a shell script, which ignores the signals busybox's
# poweroff sends to init, so this acts at once; without it a guest never stops and every shutdown waits for its
# deadline (xendomains' 5 minutes at each dom0 reboot).
power_off() {
  local f
  for f in poweroff reboot; do
    printf '#!/bin/busybox sh\n/bin/busybox sync\nexec /bin/busybox %s -f\n' "$f" >"$1/sbin/$f"
    chmod +x "$1/sbin/$f"
  done
}
power_off "$tmp"

# The root filesystem image for image installs.
img="$(mktemp -d)"
trap 'rm -rf "$tmp" "$img"' EXIT
mkdir -p "$img"/{bin,sbin,dev,proc,sys,tmp,etc/network,www/cgi-bin,root}
cp "$rootfs/bin/busybox" "$img/bin/busybox"
printf '%s\n' "$reach_cgi" >"$img/www/cgi-bin/reach"
chmod +x "$img/www/cgi-bin/reach"
cat >"$img/sbin/init" <<'IMGINIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
export PATH=/bin
name=$(cat /etc/hostname 2>/dev/null || echo image)
hostname "$name"
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set eth0 up
# The install writes ifupdown syntax: an address with its prefix, then a gateway (or on-link routes).
addr=$(sed -n 's/^[[:space:]]*address[[:space:]]*//p' /etc/network/interfaces | head -n1)
gw=$(sed -n 's/^[[:space:]]*gateway[[:space:]]*//p' /etc/network/interfaces | head -n1)
[ -n "$addr" ] && ip addr add "$addr" dev eth0
if [ -n "$gw" ]; then ip route add default via "$gw"; else
  sed -n 's/^[[:space:]]*up ip route add //p' /etc/network/interfaces | while read -r r; do ip route add $r; done
fi
echo "xen-estate-image ok name=$name" >/www/index.html
httpd -p 80 -h /www
echo "image: ready name=$name addr=$addr" >/dev/console
while true; do sleep 3600; done
IMGINIT
chmod +x "$img/sbin/init"
power_off "$img"

mkdir -p "$out"
(cd "$img" && tar --numeric-owner --owner=0 --group=0 -czf "$out/rootfs.tar.gz" .)
(cd "$tmp" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -9 >"$out/initrd.gz"
cp "$rootfs/boot/vmlinuz-$kver" "$out/vmlinuz"
echo "$kver" >"$out/kernel-version"
# The same userland carrying its own kernel and initramfs at /vmlinuz and /initrd.img (where Debian's kernel
# package links them), for guests that boot through pvgrub2 from their own disk.
cp "$out/vmlinuz" "$img/vmlinuz"
cp "$out/initrd.gz" "$img/initrd.img"
(cd "$img" && tar --numeric-owner --owner=0 --group=0 -czf "$out/rootfs-boot.tar.gz" .)
cat >"$out/example.cfg" <<'CFG'
# A busybox kit guest: boots in seconds, answers HTTP on port 80 with "xen-estate-kit ok name=kit1".
name = "kit1"
type = "pv"
kernel = "/var/lib/xen-estate/kits/busybox/vmlinuz"
ramdisk = "/var/lib/xen-estate/kits/busybox/initrd.gz"
extra = "console=hvc0 xe.ip=10.99.0.10/24 xe.gw=10.99.0.1 xe.name=kit1"
memory = 192
vcpus = 1
disk = [ "format=raw, vdev=xvda, access=rw, target=/dev/vg0/kit1" ]
vif = [ "bridge=xenbr0, mac=00:16:3e:99:00:10" ]
on_poweroff = "destroy"
on_crash = "destroy"
CFG
log "guest kit for $kver: $(du -h "$out/initrd.gz" | cut -f1) initramfs, modules: ${order[*]}"
