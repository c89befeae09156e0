"""ZFS adapters: `select_driver` picks libzfs_core (pyzfs) or the `zfs` command behind one interface."""

from __future__ import annotations

import os
from typing import Literal

from reconciler.adapters.zfs.base import DatasetInfo, SnapshotInfo, ZfsDriver, ZfsError

DriverName = Literal["auto", "pyzfs", "cli"]
ZFS_DEVICE = "/dev/zfs"

__all__ = [
    "DatasetInfo",
    "SnapshotInfo",
    "ZfsDriver",
    "ZfsError",
    "pyzfs_unavailable_reason",
    "select_driver",
]


def pyzfs_unavailable_reason() -> str | None:
    """None when the pyzfs driver can run here, else why not (shown to the user and in skipped tests)."""
    if not os.path.exists(ZFS_DEVICE):
        return f"{ZFS_DEVICE} does not exist (the OpenZFS kernel module is not loaded; zfs-fuse has none)"
    try:
        import libzfs_core  # noqa: F401
    except ImportError:
        return "libzfs_core is not importable (install Debian contrib package python3-pyzfs)"
    return None


def select_driver(driver: DriverName | str = "auto") -> ZfsDriver:
    """`auto`: pyzfs where /dev/zfs exists and libzfs_core imports, else the CLI."""
    from reconciler.adapters.zfs.cli import CliZfsDriver

    if driver == "cli":
        return CliZfsDriver()
    if driver not in ("auto", "pyzfs"):
        raise ZfsError(f"unknown ZFS driver {driver!r} (expected auto, pyzfs or cli)")
    reason = pyzfs_unavailable_reason()
    if reason is None:
        from reconciler.adapters.zfs.pyzfs import PyZfsDriver

        return PyZfsDriver()
    if driver == "pyzfs":
        raise ZfsError(f"ZFS driver pyzfs was requested but cannot run here: {reason}; use `driver: cli`")
    return CliZfsDriver()
