#!/usr/bin/env bash
# Builds what the OpenZFS lab VM boots (reconciler/lab/openzfs_vm.py), into a machine-wide cache:
#   $RECONCILER_OPENZFS_CACHE (default /var/cache/reconciler-lab)/openzfs-<kernel>-<zfs version>/
#     modules/        zfs.ko & co., built by DKMS (Debian contrib zfs-dkms) for the installed Debian kernel
#     root/           zfsutils-linux, libzfs*, python3-pyzfs, openssh-server unpacked with dpkg-deb -x: they
#                     are never installed on the host (zfsutils-linux conflicts with zfs-fuse, and a host sshd
#                     would be a service nobody asked for); the VM copies them over its overlay root
#     initramfs.cpio  a static PID 1 (reconciler/lab/openzfs_guest/init.c) and the 9p/virtio/overlay modules
#     vmlinuz         the kernel QEMU boots: the Debian linux-image in /boot
# Idempotent; with everything built it runs no apt and takes well under a second. Machine-wide (not
# .lab/) because the DKMS build takes minutes and every clone/worktree on the machine can share it.
# Nothing is loaded into the host's kernel.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${RECONCILER_OPENZFS_CACHE:-/var/cache/reconciler-lab}
INIT_SRC=reconciler/lab/openzfs_guest/init.c
# The initramfs' modules, in load order (modinfo -F depends): what it takes to mount the host's root over
# 9p under a tmpfs overlay. Everything else is loaded from the mounted root by the guest script.
BOOT_MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
              netfs fscache 9pnet 9pnet_virtio 9p overlay)
USERLAND=(zfsutils-linux libzfs4linux libnvpair3linux libuutil3linux libzpool5linux python3-pyzfs)
SSHD=(openssh-server libwrap0)
# Host packages: QEMU to boot the VM, cffi because pyzfs runs in the VM on the host's own python3 (9p root).
HOST_PACKAGES=(qemu-system-x86 python3-cffi cpio gcc libc6-dev)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { echo "build-openzfs-cache: $*" >&2; }

kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$kernel" ]; then
  log "no Debian kernel in /boot (scripts/install-system-packages.sh installs linux-image-amd64)"
  exit 1
fi
kver=${kernel#/boot/vmlinuz-}

up_to_date() {  # $1 = cache dir
  [ -f "$1/.complete" ] && [ -f "$1/initramfs.cpio" ] && [ "$1/initramfs.cpio" -nt "$INIT_SRC" ] \
    && [ -x "$1/root/usr/sbin/sshd" ] && [ -f "$1/modules/zfs.ko" ] && [ -f "$1/vmlinuz" ]
}
host_ready() {
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
}

for dir in "$BASE"/openzfs-"$kver"-*/; do
  if [ -d "$dir" ] && up_to_date "${dir%/}" && host_ready; then
    log "cached: ${dir%/}"
    exit 0
  fi
done

$SUDO mkdir -p "$BASE"
exec 9>"$BASE/.build.lock"
flock 9  # two worktrees running `make setup` at once build once

apt_install() {
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@"
}

# ---- host packages: contrib source, DKMS, headers ----------------------------------------------------
if ! grep -rqsE '^(Components:.*\bcontrib\b|deb .*\bcontrib\b)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  log "adding Debian contrib (zfs-dkms, zfsutils-linux and python3-pyzfs live there)"
  $SUDO tee /etc/apt/sources.list.d/reconciler-contrib.sources >/dev/null <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $SUDO apt-get update -qq
fi
needed=()
for p in "${HOST_PACKAGES[@]}" dkms "linux-headers-$kver" zfs-dkms; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || needed+=("$p")
done
if [ ${#needed[@]} -gt 0 ]; then
  log "installing ${needed[*]} (zfs-dkms compiles zfs.ko: a few minutes)"
  apt-cache policy zfs-dkms | grep -q 'Candidate: [0-9]' || $SUDO apt-get update -qq
  # --no-install-recommends: zfs-dkms recommends zfsutils-linux, which would remove zfs-fuse.
  apt_install "${needed[@]}"
fi
zver=$(dpkg-query -W -f='${Version}' zfs-dkms)
upstream=${zver%%-*}
cache="$BASE/openzfs-$kver-$zver"
$SUDO mkdir -p "$cache/modules" "$cache/root" "$cache/debs"

# ---- kernel modules ---------------------------------------------------------------------------------
dkms_dir="/lib/modules/$kver/updates/dkms"
if [ ! -f "$dkms_dir/zfs.ko" ]; then
  log "DKMS: building zfs $upstream for $kver"
  $SUDO dkms install "zfs/$upstream" -k "$kver"
fi
$SUDO cp -p "$dkms_dir"/{spl,znvpair,zcommon,icp,zavl,zlua,zzstd,zunicode,zfs}.ko "$cache/modules/"

# ---- userland, unpacked (never installed) -------------------------------------------------------------
for p in "${USERLAND[@]}" "${SSHD[@]}"; do
  case $p in openssh-server|libwrap0) spec=$p ;; *) spec="$p=$zver" ;; esac  # pin ZFS to the module's version
  if ! ls "$cache/debs/${p}_"*.deb >/dev/null 2>&1; then
    log "downloading $spec"
    (cd "$cache/debs" && $SUDO apt-get download -q "$spec")
  fi
  $SUDO dpkg-deb -x "$cache/debs/${p}_"*.deb "$cache/root"
done

# ---- kernel and initramfs ----------------------------------------------------------------------------
$SUDO cp -p "$kernel" "$cache/vmlinuz"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tree/modules"
gcc -static -O2 -Wall -o "$work/tree/init" "$INIT_SRC"
for m in "${BOOT_MODULES[@]}"; do
  cp "$(modinfo -k "$kver" -n "$m")" "$work/tree/modules/$m.ko"
  echo "$m" >> "$work/tree/modules/order"
done
(cd "$work/tree" && find . -mindepth 1 | cpio -o -H newc --quiet) > "$work/initramfs.cpio"
$SUDO mv "$work/initramfs.cpio" "$cache/initramfs.cpio"
$SUDO touch "$cache/.complete"
log "built: $cache"
