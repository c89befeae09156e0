#!/usr/bin/env bash
# Installs the Debian 12 packages the product, the lab and the tests need. Idempotent: apt runs only when
# something is missing. python3-pyzfs is not installed here: it comes from contrib, drags in
# zfsutils-linux (which conflicts with zfs-fuse) and needs /dev/zfs, which a machine without the OpenZFS
# kernel module never has; the pyzfs driver is used on real appliances (see README).
set -euo pipefail

PACKAGES=(
  # vSphere lab: vcsim is built from govmomi's Debian sources
  golang-go golang-github-vmware-govmomi-dev
  # ZFS in user space, NBD server and client
  zfs-fuse nbdkit libnbd-bin python3-libnbd
  # deep inspection (libguestfs needs a kernel image for its appliance)
  python3-guestfs libguestfs-tools linux-image-amd64
  # building real disk images in tests
  gdisk ntfs-3g xfsprogs btrfs-progs lvm2 cryptsetup-bin dosfstools exfatprogs qemu-utils
  fdisk fuse3 e2fsprogs  # sfdisk writes the tables; fusermount for NTFS directories via ntfs-3g
  # off-site replication lab: a real sshd on 127.0.0.1 in front of a second pool
  openssh-server openssh-client
  # the venv and the journal's CLI
  python3-venv sqlite3
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
