#!/bin/sh
# Runs as PID 1's successor inside the OpenZFS lab VM, on a tmpfs overlay of the host's root (see init.c).
# Kernel parameters arrive as environment variables: reconciler_cache (the unpacked OpenZFS userland and
# the DKMS modules), reconciler_ssh (the lab's key directory on the host). Ends by exec'ing sshd: from
# then on the host drives the VM like any remote appliance, over ssh.
set -eu
t0=$(cut -d" " -f1 /proc/uptime)
say() { echo "reconciler-guest: $*" > /dev/console; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
# /tmp stays the overlay's (writable, in RAM): the host's lab state dirs under it must stay visible.

# Debian is merged-/usr: the debs' /sbin, /lib and /bin trees go under /usr (cp over a symlink fails).
root="$reconciler_cache/root"
for d in bin sbin lib; do
  [ ! -d "$root/$d" ] || cp -a "$root/$d/." "/usr/$d/"
done
cp -a "$root/usr/." /usr/
cp -a "$root/etc/." /etc/
ldconfig  # pyzfs finds libzfs_core.so.3 through ld.so.cache (ctypes.util.find_library)

for m in spl znvpair zcommon icp zavl zlua zzstd zunicode zfs; do
  insmod "$reconciler_cache/modules/$m.ko"
done
modprobe virtio_blk
modprobe virtio_net
# No udev here: wait for the pool disk's node instead.
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done

ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0

hostname openzfs-lab
echo "sshd:x:998:65534::/run/sshd:/usr/sbin/nologin" >> /etc/passwd
# root gets an empty home and dash: the host's /root/.bashrc (pyenv, cargo) costs seconds per command
# under TCG and would put another python3 first on PATH.
mkdir -p -m 0700 /run/root
sed -i 's|^root:.*|root:x:0:0:root:/run/root:/bin/sh|' /etc/passwd
mkdir -p -m 0755 /run/sshd
cat > /run/sshd_config <<CONF
Port 22
ListenAddress 0.0.0.0
HostKey $reconciler_ssh/host_ed25519
AuthorizedKeysFile $reconciler_ssh/id_ed25519.pub
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PidFile /run/sshd.pid
Subsystem sftp internal-sftp
MaxSessions 64
MaxStartups 64
CONF
say "ready for sshd ($(cat /proc/uptime | cut -d' ' -f1) s after boot)"
exec /usr/sbin/sshd -D -e -f /run/sshd_config
