"""Helper processes we start and stop (nbdkit, vcsim, zfs-fuse), found again from pid files.

Two facts of the machines this runs on shape it: a pid can be recycled, so a process is only ours if
its program name matches; and an init that does not reap orphans leaves zombies that `kill(pid, 0)`
still finds, so liveness is read from /proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def program_name(pid: int) -> str | None:
    """argv[0]'s base name of a live process; None when it is gone or a zombie."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return None
    if not argv0 or not alive(pid):
        return None
    return Path(argv0.decode(errors="replace")).name


def reap(pid: int) -> None:
    """Collect the exit status when the process is our own child, so no zombie lingers."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def terminate(pid: int, is_ours: Callable[[int], bool], timeout: float = 10.0) -> bool:
    """SIGTERM (the process cleans up after itself), SIGKILL after `timeout`; False when it was not
    running (or the pid now belongs to another program)."""
    if not is_ours(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(pid)
        if not is_ours(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    reap(pid)
    return True
