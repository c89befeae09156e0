"""A real ZFS pool in a sparse file, on zfs-fuse: what the lab and the tests back up into.

zfs-fuse's `zfs`/`zpool` commands reach the daemon through a fixed socket (/var/run/zfs/zfs_socket), so
there is exactly one daemon per machine, shared by every lab and test worker. Everyone who uses it goes
through this module, which serialises start/stop with a machine-wide lock: the daemon is started when
missing and stopped only when no pool at all remains imported (and only if we started it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from reconciler.adapters import processes
from reconciler.adapters.zfs.base import ZfsError
from reconciler.adapters.zfs.runner import BUSY_DELAYS, run

DAEMON_DIR = Path(os.environ.get("RECONCILER_ZFS_FUSE_DIR", "/run/reconciler-zfs-fuse"))
TEST_POOL_PREFIX = "rtest-"
_POOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,200}$")
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 20.0


class ZfsFusePool:
    """`with ZfsFusePool("reconciler-lab", state_dir) as pool:` — a pool mounted at `pool.mountpoint`.

    Creating imports the pool instead when its vdev file is already there (a lab restarted with
    `keep=True`), so data survives `lab down`/`lab up`."""

    def __init__(self, name: str, state_dir: str | os.PathLike[str], size: str = "4G") -> None:
        if not _POOL_NAME.match(name) or name in ("mirror", "raidz", "spare", "log", "cache"):
            raise ZfsError(f"invalid pool name {name!r} (letters, digits, _.:- ; starting with a letter)")
        self.name = name
        self.state_dir = Path(state_dir).resolve()
        self.size = size
        self.vdev_dir = self.state_dir / "zfs" / name
        self.vdev = self.vdev_dir / "vdev.img"
        self.mountpoint = self.state_dir / "mnt" / name

    def __repr__(self) -> str:
        return f"ZfsFusePool({self.name!r}, mountpoint={str(self.mountpoint)!r})"

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> ZfsFusePool:
        with daemon_lock():
            ensure_daemon()
            if self.name in imported_pools():
                return self
            self.vdev_dir.mkdir(parents=True, exist_ok=True)
            if self.vdev.exists():
                run(["zpool", "import", "-d", str(self.vdev_dir), "-o", "cachefile=none", self.name])
            else:
                _truncate(self.vdev, self.size)
                # cachefile=none: a restarted daemon must not resurrect pools whose files are gone.
                run(["zpool", "create", "-o", "cachefile=none", "-m", str(self.mountpoint), self.name, str(self.vdev)])
        return self

    def stop(self, keep: bool = False) -> None:
        """Destroy the pool and its files (or, with `keep`, export it and keep the vdev for next time);
        stop the daemon when no pool is left."""
        with daemon_lock():
            if daemon_running() and self.name in imported_pools():
                verb = "export" if keep else "destroy"
                _retry_busy(["zpool", verb, "-f", self.name])
            if not keep:
                shutil.rmtree(self.vdev_dir, ignore_errors=True)
                with contextlib.suppress(OSError):
                    self.mountpoint.rmdir()
            stop_daemon_if_idle()

    @property
    def running(self) -> bool:
        return daemon_running() and self.name in imported_pools()

    def __enter__(self) -> ZfsFusePool:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ---- the one daemon --------------------------------------------------------------------------------
@contextlib.contextmanager
def daemon_lock() -> Iterator[None]:
    DAEMON_DIR.mkdir(parents=True, exist_ok=True)
    with open(DAEMON_DIR / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def daemon_running() -> bool:
    """The daemon answers on its socket (whoever started it)."""
    return run(["zpool", "list", "-H", "-o", "name"], check=False).returncode == 0


def imported_pools() -> list[str]:
    return [line for line in run(["zpool", "list", "-H", "-o", "name"]).stdout.splitlines() if line]


def ensure_daemon() -> None:
    """Start zfs-fuse unless it runs. Call with `daemon_lock()` held."""
    if daemon_running():
        return
    pidfile = DAEMON_DIR / "zfs-fuse.pid"
    old = _read_pid(pidfile)
    if old is not None and processes.alive(old):
        _wait_gone(old)  # a daemon still shutting down holds zfs-fuse's own lock
    pidfile.unlink(missing_ok=True)
    if shutil.which("zfs-fuse") is None:
        raise ZfsError("zfs-fuse is not installed (run scripts/install-system-packages.sh)")
    run(["zfs-fuse", "--pidfile", str(pidfile)])
    deadline = time.monotonic() + _START_TIMEOUT
    while not daemon_running():
        if time.monotonic() > deadline:
            raise ZfsError(f"zfs-fuse did not come up within {_START_TIMEOUT:.0f} s (is /dev/fuse there?)")
        time.sleep(0.1)


def stop_daemon_if_idle() -> bool:
    """Stop the daemon if we started it and no pool is imported. Call with `daemon_lock()` held."""
    pid = _read_pid(DAEMON_DIR / "zfs-fuse.pid")
    if pid is None or not processes.alive(pid):
        (DAEMON_DIR / "zfs-fuse.pid").unlink(missing_ok=True)
        return False
    if daemon_running() and imported_pools():
        return False
    os.kill(pid, signal.SIGTERM)
    _wait_gone(pid)
    (DAEMON_DIR / "zfs-fuse.pid").unlink(missing_ok=True)
    return True


def reap_orphan_test_pools() -> list[str]:
    """Destroy test pools (`rtest-<pid>-<n>`) whose test process died without cleaning up."""
    reaped = []
    with daemon_lock():
        if not daemon_running():
            return reaped
        for name in imported_pools():
            match = re.match(rf"^{TEST_POOL_PREFIX}(\d+)-", name)
            if match and not processes.alive(int(match.group(1))):
                with contextlib.suppress(ZfsError):
                    _retry_busy(["zpool", "destroy", "-f", name])
                    reaped.append(name)
    return reaped


def _read_pid(pidfile: Path) -> int | None:
    """The daemon's pid from our pidfile, if that process is still a zfs-fuse (a stale pidfile may name
    a pid since reused by an unrelated process, which we must never signal)."""
    try:
        pid = int(pidfile.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "zfs-fuse" else None


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + _STOP_TIMEOUT
    while processes.alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
            return
        time.sleep(0.1)


def _retry_busy(args: list[str]) -> None:
    for delay in (*BUSY_DELAYS, None):
        try:
            run(args)
            return
        except ZfsError as error:
            if delay is None or "busy" not in error.stderr:
                raise
            time.sleep(delay)


def _truncate(path: Path, size: str) -> None:
    try:
        subprocess.run(["truncate", "-s", size, str(path)], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise ZfsError(f"cannot create the pool file {path} of size {size}", exc.cmd, exc.stderr) from exc
