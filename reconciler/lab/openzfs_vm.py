"""Real OpenZFS (kernel module 2.1, Debian contrib) in a small QEMU VM that the host drives over ssh.

The host's kernel cannot load zfs.ko, so the lab boots the Debian kernel from /boot under QEMU (TCG) with
the DKMS-built modules. The VM has no disk image of its own: its root is the host's root over 9p,
read-only, under a tmpfs overlay (reconciler/lab/openzfs_guest/), so the host's python3 and this very
package are there too. The OpenZFS userland and sshd are unpacked debs copied over that overlay
(scripts/build-openzfs-cache.sh builds all of it). The pool is a virtio disk backed by a sparse file.

The host reaches the VM the way an operator reaches a real appliance: `ssh root@127.0.0.1 -p PORT` over a
user-mode network, with a key pair and a pinned host key generated per VM, and one multiplexed connection
so each command costs a channel, not a handshake. The VM reaches the host's 127.0.0.1 as 10.0.2.2 (QEMU's
user-mode gateway): a reconciler running inside it, as on an appliance, reaches the lab's vCenter there.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

CACHE_BASE = Path(os.environ.get("RECONCILER_OPENZFS_CACHE", "/var/cache/reconciler-lab"))
GUEST_DIR = Path(__file__).with_name("openzfs_guest")
QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 240.0  # TCG on 2 shared cores: ~25 s idle, several times that under a loaded test run


class OpenZfsVmError(RuntimeError):
    pass


@dataclass(frozen=True)
class OpenZfsCache:
    """One build of scripts/build-openzfs-cache.sh: a kernel, its zfs modules, the userland."""

    path: Path

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initramfs(self) -> Path:
        return self.path / "initramfs.cpio"

    @property
    def version(self) -> str:
        return self.path.name.removeprefix("openzfs-")


def find_cache(base: Path = CACHE_BASE) -> OpenZfsCache | None:
    """The newest complete build, or None."""
    builds = sorted(p.parent for p in base.glob("openzfs-*/.complete"))
    for path in reversed(builds):
        cache = OpenZfsCache(path)
        if cache.kernel.is_file() and cache.initramfs.is_file() and (path / "modules" / "zfs.ko").is_file():
            return cache
    return None


def unavailable_reason() -> str | None:
    """None when the OpenZFS VM can boot here, else why not (shown in skipped tests)."""
    if find_cache() is None:
        return (f"the OpenZFS lab VM is not built in {CACHE_BASE} "
                "(run `bash scripts/build-openzfs-cache.sh`; `make setup` does)")
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (Debian qemu-system-x86)"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "ssh/ssh-keygen are not installed (Debian openssh-client)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OpenZfsVm:
    """`with OpenZfsVm(state_dir) as vm: vm.run(["zpool", "list"])` — a booted VM with sshd listening.

    Everything lives in `state_dir` (keys, the pool disk, the serial console log); `stop` kills QEMU, so
    the pool is scratch: a new VM starts with an empty disk."""

    def __init__(self, state_dir: str | os.PathLike[str], *, memory_mb: int = 1536, cpus: int = 2,
                 disk_size: int = 8 << 30, cache: OpenZfsCache | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.disk_size = disk_size
        self.cache = cache or find_cache()
        self.port = 0
        self.boot_seconds: float | None = None
        self._qemu: subprocess.Popen[bytes] | None = None
        self.ssh_dir = self.state_dir / "ssh"
        self.disk = self.state_dir / "pool.img"
        self.console_log = self.state_dir / "console.log"

    def __repr__(self) -> str:
        return f"OpenZfsVm(port={self.port}, state_dir={str(self.state_dir)!r})"

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = BOOT_TIMEOUT) -> OpenZfsVm:
        if self.cache is None:
            raise OpenZfsVmError(unavailable_reason() or "OpenZFS lab VM not built")
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._make_keys()
        self._make_disk()
        self.port = _free_port()
        self._known_hosts()
        guest = GUEST_DIR / "guest.sh"
        append = " ".join([
            "console=ttyS0", "panic=-1", "quiet",
            f"reconciler_guest={guest}", f"reconciler_cache={self.cache.path}", f"reconciler_ssh={self.ssh_dir}",
        ])
        argv = [
            QEMU, "-accel", "tcg", "-m", str(self.memory_mb), "-smp", str(self.cpus),
            "-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults", "-serial", f"file:{self.console_log}",
            "-kernel", str(self.cache.kernel), "-initrd", str(self.cache.initramfs), "-append", append,
            # multidevs=remap: the host's root spans several filesystems; without it inode numbers collide.
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-drive", f"file={self.disk},if=virtio,format=raw,cache=unsafe",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device", "virtio-net-pci,netdev=n0",
        ]
        self._qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, start_new_session=True)
        try:
            self._wait_for_ssh(started + timeout)
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Close the ssh master and kill QEMU (the pool disk is scratch, so no clean shutdown is owed)."""
        if self._qemu is None:
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([*self._ssh_base(), "-O", "exit", "root@127.0.0.1"], capture_output=True, timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._qemu.pid, signal.SIGTERM)
        try:
            self._qemu.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._qemu.pid, signal.SIGKILL)
            self._qemu.wait(timeout=10)
        if self._qemu.stderr is not None:
            self._qemu.stderr.close()
        self._qemu = None

    def __enter__(self) -> OpenZfsVm:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._qemu is not None and self._qemu.poll() is None

    # ---- driving it --------------------------------------------------------------------------------
    @property
    def ssh(self) -> list[str]:
        """The prefix that runs one shell command line in the VM: `[*vm.ssh, "zpool list"]`."""
        return [*self._ssh_base(), "root@127.0.0.1", "--"]

    def run(self, args: list[str] | str, *, check: bool = True, input: bytes | str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `args` (an argv, quoted for the remote shell, or a shell line) in the VM."""
        line = args if isinstance(args, str) else shlex.join(args)
        result = subprocess.run([*self.ssh, line], input=input, capture_output=True, timeout=timeout,
                                check=False, text=not isinstance(input, bytes))
        out = result.stdout if isinstance(result.stdout, str) else result.stdout.decode(errors="replace")
        err = result.stderr if isinstance(result.stderr, str) else result.stderr.decode(errors="replace")
        completed = subprocess.CompletedProcess(result.args, result.returncode, out, err)
        if check and result.returncode != 0:
            raise OpenZfsVmError(f"in the OpenZFS VM, `{line}` exited {result.returncode}: {err.strip()}")
        return completed

    def read_bytes(self, path: str) -> bytes:
        result = subprocess.run([*self.ssh, shlex.join(["cat", "--", path])], capture_output=True,
                                timeout=300, check=False)
        if result.returncode != 0:
            raise OpenZfsVmError(f"in the OpenZFS VM, cannot read {path}: {result.stderr.decode().strip()}")
        return result.stdout

    def write_bytes(self, path: str, data: bytes) -> None:
        self.run(f"cat > {shlex.quote(path)}", input=data)

    def create_pool(self, name: str, *props: str) -> str:
        """`zpool create` on the VM's virtio disk (partition 1: without udev, ZFS cannot wait for the
        partition it would make of a whole disk). Returns the pool's name."""
        options = [arg for prop in props for arg in ("-O", prop)]
        self.run(["zpool", "create", "-f", "-o", "cachefile=none", "-m", f"/{name}", *options, name, "/dev/vda1"])
        return name

    # ---- pieces ------------------------------------------------------------------------------------
    def _ssh_base(self) -> list[str]:
        return [
            "ssh", "-F", "none", "-p", str(self.port), "-i", str(self.ssh_dir / "id_ed25519"),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.ssh_dir / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={self.ssh_dir / 'control'}",
            "-o", "ControlPersist=yes", "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=30",
        ]

    def _make_keys(self) -> None:
        self.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in ("id_ed25519", "host_ed25519"):
            if not (self.ssh_dir / name).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"reconciler-lab-{name}",
                                "-f", str(self.ssh_dir / name)], check=True, capture_output=True)

    def _known_hosts(self) -> None:
        """Pin the VM's host key: the client never accepts an unknown key (StrictHostKeyChecking=yes)."""
        key = (self.ssh_dir / "host_ed25519.pub").read_text().split()
        (self.ssh_dir / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n")

    def _make_disk(self) -> None:
        """A fresh sparse disk with one GPT partition for the pool."""
        self.disk.unlink(missing_ok=True)
        with self.disk.open("wb") as f:
            f.truncate(self.disk_size)
        subprocess.run(["sfdisk", "--quiet", str(self.disk)], input="label: gpt\n,,\n", text=True,
                       check=True, capture_output=True)

    def _wait_for_ssh(self, deadline: float) -> None:
        delay = 0.5
        while time.monotonic() < deadline:
            assert self._qemu is not None
            if self._qemu.poll() is not None:
                stderr = self._qemu.stderr.read().decode(errors="replace") if self._qemu.stderr else ""
                raise OpenZfsVmError(f"QEMU exited {self._qemu.returncode}: {stderr.strip()}\n{self._console_tail()}")
            if b"ready for sshd" in self._console():
                probe = subprocess.run([*self.ssh, "true"], capture_output=True, timeout=60, check=False)
                if probe.returncode == 0:
                    return
            time.sleep(delay)
        raise OpenZfsVmError(f"the OpenZFS VM did not answer ssh within the boot timeout\n{self._console_tail()}")

    def _console(self) -> bytes:
        try:
            return self.console_log.read_bytes()
        except FileNotFoundError:
            return b""

    def _console_tail(self, lines: int = 25) -> str:
        text = self._console().decode(errors="replace").splitlines()
        return "console:\n" + "\n".join(text[-lines:])
