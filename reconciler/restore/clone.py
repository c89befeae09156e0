"""A writable ZFS clone of one backup snapshot: every restore reads from it, never from the snapshot, so a
restore can neither change a backup nor keep it from being pruned longer than it runs.

The clone lives below the VM's dataset (`<dataset>/restore-<run id>-<token>`), where `read_repository`
(which lists only the repository's direct children) never mistakes it for a VM. While it exists, ZFS
refuses to destroy its origin snapshot, which is exactly what a running restore needs.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from reconciler.adapters.zfs import ZfsDriver, ZfsError
from reconciler.restore.locate import Backup, RestoreError

CLONE_PREFIX = "restore-"
MOUNT_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class DiskImage:
    key: int
    path: Path
    capacity: int  # bytes: the image's size (the disk's capacity)
    recorded_sha256: str | None


def image_name(key: int) -> str:
    return f"disk-{key}.raw"


class BackupClone:
    """Context manager: clone on enter, destroy on exit unless `keep`."""

    def __init__(self, driver: ZfsDriver, backup: Backup, *, keep: bool = False) -> None:
        self.driver = driver
        self.backup = backup
        self.keep = keep
        dataset = backup.record.dataset
        self.name = f"{dataset}/{CLONE_PREFIX}{backup.run_id}-{secrets.token_hex(3)}"
        self.mountpoint: Path | None = None

    def __enter__(self) -> BackupClone:
        try:
            self.driver.clone(self.backup.record.name, self.name)
            info = self.driver.list_datasets(self.name)
        except ZfsError as exc:
            self._destroy_quietly()
            raise RestoreError(f"cannot clone {self.backup.record.name}: {exc}") from None
        mountpoint = next((d.mountpoint for d in info if d.name == self.name), None)
        if not mountpoint or mountpoint in ("none", "legacy", "-"):
            self._destroy_quietly()
            raise RestoreError(f"clone {self.name} has no mountpoint ({mountpoint!r}); cannot read its images")
        self.mountpoint = Path(mountpoint)
        try:
            self._wait_mounted()
        except BaseException:  # Ctrl-C while mounting: __exit__ will not run, so clean up here
            self._destroy_quietly()
            raise
        return self

    def _wait_mounted(self) -> None:
        # zfs-fuse mounts asynchronously: the images appear a moment after `zfs clone` returns
        assert self.mountpoint is not None
        deadline = time.monotonic() + MOUNT_WAIT_SECONDS
        while time.monotonic() < deadline:
            if os.path.ismount(self.mountpoint) and any(self.mountpoint.glob("disk-*.raw")):
                return
            time.sleep(0.05)

    def images(self) -> tuple[DiskImage, ...]:
        """The backup's disk images in the clone, in the order the backup recorded its disks."""
        assert self.mountpoint is not None, "use BackupClone as a context manager"
        recorded = {d.key: d for d in self.backup.record.disks}
        keys = list(recorded) or sorted(
            int(p.name[len("disk-"):-len(".raw")]) for p in self.mountpoint.glob("disk-*.raw")
            if p.name[len("disk-"):-len(".raw")].isdigit()
        )
        if not keys:
            raise RestoreError(f"backup {self.backup.record.name} holds no disk images")
        images = []
        for key in keys:
            path = self.mountpoint / image_name(key)
            if not path.is_file():
                raise RestoreError(f"backup {self.backup.record.name} records disk {key} but has no {path.name}")
            disk = recorded.get(key)
            images.append(DiskImage(key, path, path.stat().st_size, disk.sha256 if disk else None))
        return tuple(images)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.keep:
            self._destroy_quietly(raise_errors=exc is None)

    def _destroy_quietly(self, raise_errors: bool = False) -> None:
        try:
            if self.driver.exists(self.name):
                self.driver.destroy_dataset(self.name)
        except ZfsError as exc:
            message = f"could not destroy the restore clone {self.name}: {exc}"
            if raise_errors:
                raise RestoreError(message) from None
            print(f"warning: {message}", file=sys.stderr)  # another error is already on its way up
