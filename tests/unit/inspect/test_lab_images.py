"""The lab's disk builders make real, sparse images that the file systems' own tools accept."""

from __future__ import annotations

import subprocess

import pytest

from reconciler.adapters.inspect import PartitionTable, inspect_image
from reconciler.core.volumes import Filesystem
from reconciler.lab.images import (
    DEFAULT_SIZE,
    LAYOUTS,
    GiB,
    ImageBuildError,
    MiB,
    PartSpec,
    build_image,
    build_lab_disk,
)

from .conftest import extract

EXPECTED_FILESYSTEMS = {
    "linux-ext4": [Filesystem.FAT32, Filesystem.EXT4],
    "windows-ntfs": [Filesystem.FAT32, None, Filesystem.NTFS, Filesystem.NTFS],
    "windows-ntfs-refs": [Filesystem.FAT32, None, Filesystem.NTFS, Filesystem.REFS],
    "windows-dynamic": [None, None, Filesystem.NTFS],
    "rds-upd": [Filesystem.NTFS],
    "empty": [],
}


@pytest.fixture(scope="module")
def lab_disks(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lab-disks")
    disks = {}
    for layout in LAYOUTS:
        disks[layout] = directory / f"{layout}.img"
        build_lab_disk(disks[layout], layout)
    return disks


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_lab_layout_is_a_sparse_4_gib_disk_with_the_expected_volumes(lab_disks, layout):
    path = lab_disks[layout]
    assert path.stat().st_size == DEFAULT_SIZE
    assert path.stat().st_blocks * 512 < 64 * MiB  # sparse: little data on a 4 GiB disk
    disk = inspect_image(path)
    assert [p.filesystem for p in disk.partitions] == EXPECTED_FILESYSTEMS[layout]
    assert disk.warnings == ()
    assert disk.table is (PartitionTable.NONE if layout == "empty" else PartitionTable.GPT)


def test_the_linux_disk_holds_real_files_that_debugfs_reads(lab_disks, tmp_path):
    root = inspect_image(lab_disks["linux-ext4"]).partitions[1]
    part = extract(lab_disks["linux-ext4"], root.start, root.length, tmp_path / "root.img")
    subprocess.run(["e2fsck", "-n", "-f", str(part)], check=True, capture_output=True)
    out = subprocess.run(["debugfs", "-R", "cat /etc/hostname", str(part)], capture_output=True, check=True)
    assert out.stdout == b"lab-linux\n"
    fstab = subprocess.run(["debugfs", "-R", "cat /etc/fstab", str(part)], capture_output=True, check=True)
    efi = inspect_image(lab_disks["linux-ext4"]).partitions[0]
    assert f"UUID={root.serial} / ext4".encode() in fstab.stdout  # mountable whatever the disk order
    assert f"UUID={efi.serial} /boot/efi vfat".encode() in fstab.stdout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_lab_layout_fits_the_smallest_lab_disk_of_1_gib(tmp_path, layout):
    build_lab_disk(tmp_path / "small.img", layout, GiB)
    assert [p.filesystem for p in inspect_image(tmp_path / "small.img").partitions] == EXPECTED_FILESYSTEMS[layout]


def test_two_disks_of_one_layout_get_different_serials(tmp_path):
    build_lab_disk(tmp_path / "a.img", "linux-ext4")
    build_lab_disk(tmp_path / "b.img", "linux-ext4")
    a, b = (inspect_image(tmp_path / name).partitions for name in ("a.img", "b.img"))
    assert {p.serial for p in a}.isdisjoint(p.serial for p in b)


def test_the_windows_disk_holds_real_files_that_ntfs_3g_reads(lab_disks, tmp_path):
    system = inspect_image(lab_disks["windows-ntfs"]).partitions[2]
    part = extract(lab_disks["windows-ntfs"], system.start, system.length, tmp_path / "c.img")
    out = subprocess.run(["ntfscat", str(part), "README.txt"], capture_output=True, check=True)
    assert out.stdout.startswith(b"reconciler lab")


def test_the_rds_disk_holds_user_profile_disks(lab_disks, tmp_path):
    store = inspect_image(lab_disks["rds-upd"]).partitions[0]
    part = extract(lab_disks["rds-upd"], store.start, store.length, tmp_path / "upd.img")
    out = subprocess.run(["ntfsls", str(part)], capture_output=True, check=True, text=True)
    assert sum(name.startswith("UVHD-") and name.endswith(".vhdx") for name in out.stdout.split()) == 3


def test_ntfs_directories_are_written_through_ntfs_3g(make_image, tmp_path):
    files = (("System Volume Information/Dedup/", b""), ("Shares/UVHD-S-1-5-21-1.vhdx", b"vhdxfile"))
    path = make_image("dirs.img", 256 * MiB, "gpt", [PartSpec(128 * MiB, "ntfs", files=files)])
    volume = inspect_image(path).partitions[0]
    part = extract(path, volume.start, volume.length, tmp_path / "v.img")
    out = subprocess.run(["ntfscat", str(part), "Shares/UVHD-S-1-5-21-1.vhdx"], capture_output=True, check=True)
    assert out.stdout == b"vhdxfile"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: build_image(p, GiB, "apm"), "unknown partition table"),
        (lambda p: build_image(p, GiB, "gpt", [PartSpec(MiB, "zfs")]), "unknown fs 'zfs'"),
        (lambda p: build_image(p, GiB, "gpt", [PartSpec(2 * GiB, "raw")]), "offers only"),
        (lambda p: build_image(p, GiB, "none", [PartSpec(MiB), PartSpec(MiB)]), "at most one"),
        (lambda p: build_image(p, GiB, "gpt", [PartSpec(0)]), "size must be positive"),
        (lambda p: build_image(p, GiB, "gpt", [PartSpec(64 * MiB, "ldm")]), "LDM metadata partition"),
        (lambda p: build_lab_disk(p, "windows-95"), "unknown lab disk layout"),
        (lambda p: build_lab_disk(p, "windows-ntfs", 100 * MiB), "at least 1 GiB"),
    ],
)
def test_impossible_specs_are_clear_errors(tmp_path, call, message):
    with pytest.raises(ImageBuildError, match=message):
        call(tmp_path / "bad.img")
