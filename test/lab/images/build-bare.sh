#!/usr/bin/env bash
# The "bare server": plain Debian 12 (no Xen) on a partitioned disk that boots through its own GRUB
# (BIOS, MBR), as a freshly installed rented server does before xen-estate turns it into a dom0.
#
# Usage: build-bare.sh [--force]
# Prints $LAB_CACHE/bare-<recipe-hash>/, holding disk.img (raw, MBR + one ext4 partition labelled
# bare-root), the client key id_ed25519, the host key ssh_host_ed25519_key.pub, image.json.
# GRUB is installed without grub-install (which wants a mounted block device): core.img from
# grub-mkimage goes to the sectors after the MBR and boot.img into the MBR. Their default blocklists
# (boot.img: core at LBA 1; diskboot: the rest follows, length set by grub-mkimage) fit that layout.
# Needs on the host: grub-mkimage and /usr/lib/grub/i386-pc (grub-common, grub-pc-bin), sfdisk (fdisk).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lab_image_begin bare "${1:-}"
grubdir=/usr/lib/grub/i386-pc
for need in grub-mkimage sfdisk; do
  command -v "$need" >/dev/null || { echo "$need is missing: run test/lab/install-deps.sh" >&2; exit 1; }
done
[[ -f "$grubdir/boot.img" ]] || { echo "$grubdir missing (grub-pc-bin): run test/lab/install-deps.sh" >&2; exit 1; }

lab_copy_base "the bare server"
lab_identity bare

# No Xen and no Varnish on a bare server: their packages are purged, so Dom0Host and VarnishFrontend really install
# them (through the lab's apt proxy; Varnish's libraries and C compiler stay, to keep that install short). Their
# maintainer scripts would try to stop services in the chroot: policy-rc.d forbids that.
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod +x "$R/usr/sbin/policy-rc.d"
chroot "$R" dpkg --purge xen-system-amd64 xen-hypervisor-4.17-amd64 xen-hypervisor-common xen-utils-4.17 \
  xen-utils-common xenstore-utils varnish >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; exit 1; }
rm -f "$R/usr/sbin/policy-rc.d" "$R"/boot/xen-*
echo 'LABEL=bare-root / ext4 rw,noatime,errors=remount-ro 0 0' >"$R/etc/fstab"
: >"$R/etc/resolv.conf"
# Networked like an installimage'd Debian: ifupdown. eth0 (QEMU user network, DHCP) is the uplink Dom0Host moves
# into its bridge; eth1, when QEMU gives one (Lab's secondNic), is the second source address of the firewall test
# and stays outside Dom0Host's files (interfaces.d).
rm -f "$R"/etc/systemd/network/*
chroot "$R" systemctl disable systemd-networkd.service >/dev/null 2>&1 || true
cat >"$R/etc/network/interfaces" <<'CONF'
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
CONF
install -d "$R/etc/network/interfaces.d"
cat >"$R/etc/network/interfaces.d/lab-eth1" <<'CONF'
# The lab's second NIC (QEMU user network 10.0.3.0/24): a second source address for the firewall test.
allow-hotplug eth1
iface eth1 inet static
	address 10.0.3.15/24
CONF
# ifupdown's networking.service waits for DHCP; then ssh may start.
chroot "$R" systemctl enable networking.service >/dev/null 2>&1
# Timers and services that would only cost an emulated machine time. Not Xen's units: a rented server has them
# unmasked, and Dom0Host's reboot into Xen needs xenstored and xenconsoled to start.
for unit in systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer systemd-timesyncd.service; do
  ln -sf /dev/null "$R/etc/systemd/system/$unit"
done
printf 'HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n' \
  >"$R/etc/ssh/sshd_config.d/lab.conf"
cat >"$R/etc/apt/sources.list" <<'CONF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian-security bookworm-security main
CONF
printf 'Acquire::http::Proxy "http://10.0.2.100:3142/";\nAPT::Install-Recommends "false";\n' >"$R/etc/apt/apt.conf.d/01xen-estate-lab"
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb

# What grub-pc leaves on an installed server: /etc/default/grub (update-grub, which Dom0Host runs, reads it) and
# update-grub itself (grub2-common's one-line script; grub-mkconfig is in grub-common).
cat >"$R/etc/default/grub" <<'CONF'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200 net.ifnames=0"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
CONF
printf '#!/bin/sh\nset -e\nexec grub-mkconfig -o /boot/grub/grub.cfg "$@"\n' >"$R/usr/sbin/update-grub"
chmod +x "$R/usr/sbin/update-grub"

# GRUB: modules on the disk, a hand-written grub.cfg (update-grub needs the mounted system).
install -d "$R/boot/grub/i386-pc"
cp "$grubdir"/*.mod "$grubdir"/*.lst "$R/boot/grub/i386-pc/"
cat >"$R/boot/grub/grub.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
set default=0
menuentry 'Debian GNU/Linux 12 (bare lab server)' {
  search --no-floppy --label --set=root bare-root
  linux /boot/vmlinuz-$kver root=LABEL=bare-root ro console=ttyS0,115200 net.ifnames=0
  initrd /boot/initrd.img-$kver
}
CFG

log "mkfs.ext4 -d and the disk layout"
lab_mkfs bare-root "$work/part.img" 512 128
part_mib=$size_mib
truncate -s $(( (part_mib + 1) * 1024 * 1024 )) "$work/disk.img"
echo 'start=2048, type=83, bootable' | sfdisk -q "$work/disk.img"
dd if="$work/part.img" of="$work/disk.img" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$work/part.img"
grub-mkimage -O i386-pc -d "$grubdir" -o "$work/core.img" -p '(hd0,msdos1)/boot/grub' \
  biosdisk part_msdos ext2 search search_label normal linux serial terminal configfile echo test
core_sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
(( core_sectors < 2047 )) || { echo "core.img too big for the gap before the partition" >&2; exit 1; }
dd if="$grubdir/boot.img" of="$work/disk.img" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$work/disk.img" bs=512 seek=1 conv=notrunc status=none

lab_image_finish "bare server" "\"diskMiB\": $((part_mib + 1))"
