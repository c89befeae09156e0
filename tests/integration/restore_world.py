"""A backup world for the restore and verify tests, made with the ZFS contract (DESIGN.md §3) on the
session's zfs-fuse pool: one VM with an NTFS disk and an ext4 disk, backed up, changed, backed up again.

The source's bytes at the time of the first backup are kept aside (sparse copies), so a restore can be
compared with what the VM held then.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.adapters.checksum import image_digest
from reconciler.adapters.zfs.backups import BackupRepository, backup_properties
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.lab.images import BASIC_DATA, MiB, PartSpec, build_image
from reconciler.lab.zfs import ZfsFusePool
from reconciler.restore.export import sparse_copy

UUID = "50111111-2222-4333-8444-555555555555"
VM_NAME = "file-server"
RUN1 = "20260101T020000Z-aaaaa1"
RUN2 = "20260102T020000Z-bbbbb2"
NTFS_KEY, EXT4_KEY = 2000, 2001
DISK_SIZE = 96 * MiB
MARKER = "restore-me.txt"


def content(version: int, fs: str) -> bytes:
    return f"version {version} of the {fs} volume's file\n".encode()


def build_disks(directory: Path, version: int) -> dict[int, Path]:
    """The VM's two disks as they are at `version`: a GPT disk with an NTFS data volume, and a GPT disk
    with an ext4 root; each volume holds MARKER with version-specific content."""
    ntfs = directory / f"disk-{NTFS_KEY}.raw"
    ext4 = directory / f"disk-{EXT4_KEY}.raw"
    for path in (ntfs, ext4):
        path.unlink(missing_ok=True)
    build_image(ntfs, DISK_SIZE, "gpt", [
        PartSpec(16 * MiB, "raw", type_guid="E3C9E316-0B5C-4DB8-817D-F92DF00215AE", label="MSR"),
        PartSpec(64 * MiB, "ntfs", type_guid=BASIC_DATA, label="Data",
                 files=((MARKER, content(version, "ntfs")), ("README.txt", b"data volume\r\n"))),
    ], seed=1)
    build_image(ext4, DISK_SIZE, "gpt", [
        PartSpec(80 * MiB, "ext4", label="root",
                 files=((f"home/user/{MARKER}", content(version, "ext4")), ("etc/hostname", b"file-server\n"))),
    ], seed=2)
    return {NTFS_KEY: ntfs, EXT4_KEY: ext4}


def disk_records(images: dict[int, Path], digests: bool = True) -> list[dict[str, object]]:
    return [
        {"key": key, "changeId": f"52 00/{key}", "capacity": path.stat().st_size,
         "backing": f"[ds1] {VM_NAME}/{VM_NAME}_{i}.vmdk", "sha256": image_digest(path)[0] if digests else None}
        for i, (key, path) in enumerate(sorted(images.items()))
    ]


def mountpoint(dataset: str) -> Path:
    out = subprocess.run(["zfs", "get", "-H", "-o", "value", "mountpoint", dataset], capture_output=True,
                         text=True, check=True).stdout.strip()
    return Path(out)


def take_backup(repo: BackupRepository, dataset: str, run_id: str, images: dict[int, Path],
                records: Sequence[dict[str, object]] | None = None, kind: str = "full") -> str:
    records = list(records) if records is not None else disk_records(images)
    size = sum(p.stat().st_size for p in images.values())
    return repo.complete_backup(dataset, run_id, backup_properties(
        kind, f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}T02:00:00Z", records, size, size // 4))


@dataclass(frozen=True)
class World:
    repository: str  # parent dataset
    dataset: str  # the VM's dataset
    live: Path  # its mountpoint (the live images)
    then: Path  # sparse copies of the images as they were at RUN1
    first_backup_done_at: float  # epoch seconds, just after RUN1 was taken


_worlds: dict[str, World] = {}


@pytest.fixture(scope="session", name="world")
def world_fixture(zpool: ZfsFusePool, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Built once per pool: each test module that imports this fixture gets its own fixture definition
    (pytest keys fixtures by the module that holds them), so the world itself is cached here."""
    if zpool.name not in _worlds:
        _worlds[zpool.name] = _build_world(zpool, tmp_path_factory)
    return _worlds[zpool.name]


def _build_world(zpool: ZfsFusePool, tmp_path_factory: pytest.TempPathFactory) -> World:
    driver = CliZfsDriver()
    parent = f"{zpool.name}/restore-repo"
    repo = BackupRepository(driver, parent)
    dataset = repo.pair(UUID, VM_NAME, "vm-77", "lab-vcenter", "gold")
    live = mountpoint(dataset)
    then = tmp_path_factory.mktemp("source-at-run1")
    images = build_disks(live, 1)
    for path in images.values():
        sparse_copy(path, then / path.name)
    take_backup(repo, dataset, RUN1, images)
    done = time.time()
    time.sleep(1.1)  # file times written by the next build are later than `done`
    images = build_disks(live, 2)
    take_backup(repo, dataset, RUN2, images, kind="incremental")
    return World(parent, dataset, live, then, done)


def reconciler(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would; no traceback may ever reach the user."""
    result = subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True,
                            timeout=600)
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def children(dataset: str) -> list[str]:
    out = subprocess.run(["zfs", "list", "-H", "-o", "name", "-r", dataset], capture_output=True, text=True,
                         check=True).stdout.split()
    return [name for name in out if name != dataset]


def same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512

