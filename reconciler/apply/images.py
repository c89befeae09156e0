"""The live images in a VM's dataset: where they are, how they are opened, what they continue from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from reconciler.adapters.zfs.backups import BackupRepository, VmDatasetRecord


@dataclass(frozen=True)
class BaseDisk:
    """A disk as the newest complete backup holding it recorded it: what an incremental continues."""

    snapshot: str
    change_id: str | None
    capacity: int | None


def image_path(mountpoint: Path, disk_key: int) -> Path:
    return mountpoint / f"disk-{disk_key}.raw"


def vm_dataset(repository: BackupRepository, instance_uuid: str) -> VmDatasetRecord | None:
    dataset = repository.dataset_for(instance_uuid)
    record = repository.read()
    return next((d for d in record.datasets if d.dataset == dataset), None)


def disk_bases(repository: BackupRepository, dataset: str) -> dict[int, BaseDisk]:
    """Per disk key, the newest complete backup's record of it (snapshots are listed oldest first)."""
    bases: dict[int, BaseDisk] = {}
    for snap in repository.read().snapshots_of(dataset):
        if snap.complete:
            for disk in snap.disks:
                bases[disk.key] = BaseDisk(snap.name, disk.change_id, disk.capacity)
    return bases


def open_image(path: Path, capacity: int, *, fresh: bool) -> int:
    """A writable descriptor on the image; `fresh` empties it first (a full backup: a new sparse file of
    the disk's capacity; the previous backup's bytes live on in its ZFS snapshot)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fresh:
            os.ftruncate(fd, 0)
        os.ftruncate(fd, capacity)
    except OSError:
        os.close(fd)
        raise
    return fd
