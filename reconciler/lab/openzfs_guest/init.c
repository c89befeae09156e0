/* PID 1 of the OpenZFS lab VM's initramfs. The host has no busybox, so this is the whole initramfs
 * userland: load the modules needed to reach the host's root over 9p (listed in /modules/order), mount it
 * read-only under a tmpfs overlay (a writable root that costs no disk image), chroot into it and hand
 * over to the guest script named by the kernel parameter reconciler_guest=PATH. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "reconciler-init: %s: %s\n", what, strerror(errno));
    sync();
    reboot(RB_POWER_OFF);
    _exit(1);
}

static void load(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "/modules/%s.ko", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die(path);
    if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) die(path);
    close(fd);
}

int main(void) {
    mkdir("/dev", 0755);
    mkdir("/proc", 0755);
    if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL)) die("mount /dev");
    if (mount("proc", "/proc", "proc", 0, NULL)) die("mount /proc");
    FILE *order = fopen("/modules/order", "r");
    if (!order) die("/modules/order");
    char line[128];
    while (fgets(line, sizeof line, order)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0]) load(line);
    }
    fclose(order);
    mkdir("/lower", 0755);
    mkdir("/rw", 0755);
    mkdir("/newroot", 0755);
    /* msize: 9p's default (8 KiB) makes every read of the host's binaries a crawl under TCG. */
    if (mount("hostroot", "/lower", "9p", MS_RDONLY, "trans=virtio,version=9p2000.L,msize=524288,cache=loose"))
        die("mount 9p hostroot");
    if (mount("tmpfs", "/rw", "tmpfs", 0, "mode=0755")) die("mount tmpfs");
    mkdir("/rw/upper", 0755);
    mkdir("/rw/work", 0755);
    if (mount("overlay", "/newroot", "overlay", 0, "lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work"))
        die("mount overlay");
    umount2("/proc", MNT_DETACH);
    if (mount("/dev", "/newroot/dev", NULL, MS_MOVE, NULL)) die("move /dev");
    if (chdir("/newroot") || chroot(".") || chdir("/")) die("chroot");
    const char *guest = getenv("reconciler_guest");
    if (!guest) { errno = EINVAL; die("no reconciler_guest= on the kernel command line"); }
    char *argv[] = {"/bin/sh", (char *)guest, NULL};
    /* The kernel hands unknown name=value parameters to init as its environment: keep them for the script. */
    setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
    setenv("HOME", "/root", 1);
    execv("/bin/sh", argv);
    die("exec guest script");
    return 1;
}
