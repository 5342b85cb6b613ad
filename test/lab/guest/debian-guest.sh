#!/usr/bin/env bash
# Runs INSIDE a dom0 lab machine: a full Debian 12 guest by debootstrap into an LV, from the lab's local
# package source (no internet), booted as a PV guest with the dom0's kernel and initrd.
#
#   npm run lab -- ssh dom0 bash -s deb1 10.99.0.30 < test/lab/guest/debian-guest.sh
#
# Args: NAME (LV and domain name, default deb1), IP on xenbr0 (default 10.99.0.30), LV size (default 2G).
# Slow under emulation: debootstrap alone took 8-9 minutes on an idle machine (FIELD-NOTES §10) and 29
# minutes with other emulated machines running; the guest's first boot to SSH a few minutes more.
# Prints "debian guest NAME up at IP" once the guest answers SSH from dom0 with dom0's root key.
set -euo pipefail
name="${1:-deb1}"
ip="${2:-10.99.0.30}"
size="${3:-2G}"
mirror=http://10.0.2.100:3142/debian
kver="$(uname -r)"
lv="/dev/vg0/$name"
t0=$SECONDS
step() { echo "[$((SECONDS - t0))s] $*"; }

[[ -f /root/.ssh/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
lvs "vg0/$name" >/dev/null 2>&1 || lvcreate -q -y -L "$size" -n "$name" vg0
mkfs.ext4 -q -F -L "$name" "$lv"
mnt="$(mktemp -d)"
mount "$lv" "$mnt"
trap 'umount "$mnt" 2>/dev/null || true' EXIT
step "debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=systemd-sysv,udev,openssh-server,iproute2,iputils-ping,kmod \
  bookworm "$mnt" "$mirror" >/tmp/debootstrap-"$name".log 2>&1 || { tail -20 /tmp/debootstrap-"$name".log; exit 1; }
step "configuring"
echo "$name" >"$mnt/etc/hostname"
echo "/dev/xvda / ext4 rw,noatime,errors=remount-ro 0 1" >"$mnt/etc/fstab"
printf '[Match]\nName=eth0\n\n[Network]\nAddress=%s/24\nGateway=10.99.0.1\n' "$ip" >"$mnt/etc/systemd/network/10-eth0.network"
chroot "$mnt" systemctl enable systemd-networkd.service >/dev/null 2>&1
install -d -m 700 "$mnt/root/.ssh"
install -m 600 /root/.ssh/id_ed25519.pub "$mnt/root/.ssh/authorized_keys"
# The guest boots the dom0's kernel: give it that kernel's Xen front-end modules.
for m in drivers/net/xen-netfront.ko drivers/block/xen-blkfront.ko; do
  install -D "/lib/modules/$kver/kernel/$m" "$mnt/lib/modules/$kver/kernel/$m"
done
depmod -b "$mnt" "$kver"
printf 'xen-netfront\nxen-blkfront\n' >>"$mnt/etc/modules"
printf 'Acquire::http::Proxy "http://10.0.2.100:3142/";\n' >"$mnt/etc/apt/apt.conf.d/01xen-estate-lab"
echo "deb http://deb.debian.org/debian bookworm main" >"$mnt/etc/apt/sources.list"
# Pin the guest's host key (made by openssh-server's postinst during debootstrap).
echo "$ip $(cut -d' ' -f1-2 "$mnt/etc/ssh/ssh_host_ed25519_key.pub")" >"/root/.ssh/known_hosts_$name"
umount "$mnt"
trap - EXIT

cat >"/etc/xen/$name.cfg" <<CFG
name = "$name"
type = "pv"
kernel = "/boot/vmlinuz-$kver"
ramdisk = "/boot/initrd.img-$kver"
extra = "root=/dev/xvda ro console=hvc0 net.ifnames=0"
# Debian's 38 MB initrd needs about 768 MB to unpack (FIELD-NOTES §10).
memory = 768
vcpus = 1
disk = [ "format=raw, vdev=xvda, access=rw, target=$lv" ]
vif = [ "bridge=xenbr0" ]
on_poweroff = "destroy"
CFG
step "xl create"
xl create -q "/etc/xen/$name.cfg"
# A full systemd boot under emulation takes minutes; wait up to 15.
deadline=$((SECONDS + 900))
while ((SECONDS < deadline)); do
  if ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=/root/.ssh/known_hosts_$name" -o ConnectTimeout=5 \
    "root@$ip" true 2>/dev/null; then
    step "debian guest $name up at $ip"
    exit 0
  fi
  sleep 5
done
echo "guest $name did not answer SSH; see: xl console $name" >&2
exit 1
