#!/usr/bin/env bash
# The dom0 lab image: Debian 12 + Xen 4.17 booted by QEMU straight from multiboot (no GRUB).
#
# Usage: build-dom0.sh [--force]
# Prints the image directory, $LAB_CACHE/<recipe-hash>/, holding:
#   xen, vmlinuz, initrd.img        for QEMU -kernel/-initrd (taken from the rootfs so tools and modules match)
#   dom0.img                        raw ext4 root filesystem (used read-only through a qcow2 overlay)
#   id_ed25519[.pub]                the test client key, in root's authorized_keys
#   ssh_host_ed25519_key.pub        the dom0's fixed host key (its fingerprint is in image.json)
#   kit/                            the busybox guest kit (also in the image at /var/lib/xen-estate/kits/busybox)
#   image.json                      what the harness reads
# Cached: a second run with the same recipe files prints the directory at once.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lab_image_begin "" "${1:-}"
lab_copy_base "the dom0"
xengz="$(ls "$R"/boot/xen-*-amd64.gz | sort -V | tail -1)"
[[ -f "$R/boot/initrd.img-$kver" ]] || chroot "$R" update-initramfs -c -k "$kver" >/dev/null

log "generating keys"
lab_identity dom0

log "configuring the rootfs"
echo '/dev/vda / ext4 rw,noatime,errors=remount-ro 0 0' >"$R/etc/fstab"
# No DNS on purpose: the lab has no internet. apt reaches the host's package source by address.
: >"$R/etc/resolv.conf"

# ssh: only the pinned ed25519 host key (lab_identity), keys only.
cat >"$R/etc/ssh/sshd_config.d/lab.conf" <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
CONF

# Network: eth0 by DHCP from QEMU's user network (10.0.2.15); xenbr0 is a host-only bridge for guests
# (10.99.0.1/24), not bridged to eth0: the lab has no outside network to give guests.
cat >"$R/etc/systemd/network/10-eth0.network" <<'CONF'
[Match]
Name=eth0

[Network]
DHCP=ipv4
CONF
cat >"$R/etc/systemd/network/20-xenbr0.netdev" <<'CONF'
[NetDev]
Name=xenbr0
Kind=bridge

[Bridge]
STP=no
ForwardDelaySec=0
CONF
cat >"$R/etc/systemd/network/20-xenbr0.network" <<'CONF'
[Match]
Name=xenbr0

[Network]
Address=10.99.0.1/24
ConfigureWithoutCarrier=yes
IPForward=yes

[Link]
RequiredForOnline=no
CONF
chroot "$R" systemctl enable systemd-networkd.service >/dev/null 2>&1
for unit in systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-timesyncd.service; do
  ln -sf /dev/null "$R/etc/systemd/system/$unit"
done

# Packages come from the host through QEMU's guestfwd (10.0.2.100:3142 -> the lab's apt proxy).
cat >"$R/etc/apt/sources.list" <<'CONF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
CONF
cat >"$R/etc/apt/apt.conf.d/01xen-estate-lab" <<'CONF'
Acquire::http::Proxy "http://10.0.2.100:3142/";
Acquire::Retries "2";
APT::Install-Recommends "false";
CONF
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb

# Xen: shut guests down rather than save them (FIELD-NOTES §3); no ballooning; default bridge.
sed -i 's/^XENDOMAINS_SAVE=.*/XENDOMAINS_SAVE=/' "$R/etc/default/xendomains"
cat >>"$R/etc/xen/xl.conf" <<'CONF'

# xen-estate lab
autoballoon="off"
vif.default.bridge="xenbr0"
CONF

# vg0 on the blank second disk, ready before sshd answers.
cat >"$R/usr/local/sbin/lab-vg0" <<'SH'
#!/bin/sh
set -eu
[ -b /dev/vdb ] || exit 0
vgs vg0 >/dev/null 2>&1 && exit 0
pvcreate -ff -y /dev/vdb
vgcreate vg0 /dev/vdb
SH
chmod +x "$R/usr/local/sbin/lab-vg0"
cat >"$R/etc/systemd/system/lab-vg0.service" <<'CONF'
[Unit]
Description=xen-estate lab: volume group vg0 on /dev/vdb
After=systemd-udev-settle.service local-fs.target
Before=ssh.service
DefaultDependencies=no

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lab-vg0

[Install]
WantedBy=multi-user.target
CONF
chroot "$R" systemctl enable lab-vg0.service >/dev/null 2>&1

log "building the guest kit"
bash "$LAB_IMAGES_DIR/build-kit.sh" "$R" "$work/kit"
install -d "$R/var/lib/xen-estate/kits/busybox"
cp "$work/kit"/* "$R/var/lib/xen-estate/kits/busybox/"
echo "$hash" >"$R/etc/xen-estate-lab"

log "extracting Xen, kernel and initrd"
gzip -dc "$xengz" >"$work/xen"
cp "$R/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$R/boot/initrd.img-$kver" "$work/initrd.img"

log "mkfs.ext4 -d"
lab_mkfs dom0root "$work/dom0.img" 1536 256

lab_image_finish dom0 "\"xen\": \"$(basename "$xengz" .gz)\"" "\"rootSizeMiB\": $size_mib"
