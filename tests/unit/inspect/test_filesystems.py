"""Every supported file system and volume format, made by its real tool (or byte-exactly from its
specification where Linux cannot make it), is identified from its on-disk signature, with its serial."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconciler.adapters.inspect import FileReader, PartitionKind, PartitionTable, inspect_disk, inspect_image
from reconciler.adapters.inspect.signatures import probe
from reconciler.core.volumes import Filesystem
from reconciler.lab.images import GiB, MiB, PartSpec, lvm2_pv_header

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DOS_SERIAL = re.compile(r"^[0-9A-F]{4}-[0-9A-F]{4}$")
NT_SERIAL = re.compile(r"^[0-9A-F]{16}$")
LVM_UUID = re.compile(r"^\w{6}(-\w{4}){5}-\w{6}$")

CASES = [
    ("ntfs", 64 * MiB, Filesystem.NTFS, NT_SERIAL),
    ("refs", 64 * MiB, Filesystem.REFS, NT_SERIAL),
    ("fat12", 8 * MiB, Filesystem.FAT12, DOS_SERIAL),
    ("fat16", 32 * MiB, Filesystem.FAT16, DOS_SERIAL),
    ("fat32", 64 * MiB, Filesystem.FAT32, DOS_SERIAL),
    ("exfat", 32 * MiB, Filesystem.EXFAT, DOS_SERIAL),
    ("ext4", 32 * MiB, Filesystem.EXT4, UUID),
    ("xfs", 320 * MiB, Filesystem.XFS, UUID),
    ("btrfs", 128 * MiB, Filesystem.BTRFS, UUID),
    ("swap", 16 * MiB, Filesystem.SWAP, UUID),
    ("lvm", 16 * MiB, Filesystem.LVM2, LVM_UUID),
    ("bitlocker", 64 * MiB, Filesystem.BITLOCKER, DOS_SERIAL),
]


@pytest.fixture(scope="module")
def all_filesystems(tmp_path_factory) -> dict[str, Path]:
    """One GPT and one MBR image (with logical partitions) holding every case, built once."""
    from reconciler.lab.images import build_image

    directory = tmp_path_factory.mktemp("filesystems")
    specs = [PartSpec(size, fs, label=fs.upper()) for fs, size, *_ in CASES]
    images = {}
    for table in ("gpt", "mbr"):
        images[table] = directory / f"{table}.img"
        build_image(images[table], 2 * GiB, table, specs, seed=7)
    return images


@pytest.mark.parametrize("table", ["gpt", "mbr"])
@pytest.mark.parametrize(("fs", "size", "expected", "serial"), CASES, ids=[case[0] for case in CASES])
def test_each_file_system_is_identified_with_its_serial(all_filesystems, table, fs, size, expected, serial):
    layout = inspect_image(all_filesystems[table])
    position = [case[0] for case in CASES].index(fs)
    part = layout.partitions[position]
    assert part.filesystem is expected
    assert part.length == size
    assert serial.match(part.serial), part.serial
    assert layout.warnings == ()


def test_mbr_with_more_than_four_partitions_numbers_logicals_from_five(all_filesystems):
    layout = inspect_image(all_filesystems["mbr"])
    assert layout.table is PartitionTable.MBR
    assert [p.index for p in layout.partitions] == [1, 2, 3, *list(range(5, 5 + len(CASES) - 3))]


def test_gpt_partitions_carry_their_guid_and_name(all_filesystems):
    layout = inspect_image(all_filesystems["gpt"])
    assert all(UUID.match(p.guid) for p in layout.partitions)
    assert [p.label for p in layout.partitions] == [fs.upper() for fs, *_ in CASES]
    assert UUID.match(layout.disk_guid)


def test_serials_are_distinct_on_one_disk(all_filesystems):
    layout = inspect_image(all_filesystems["gpt"])
    serials = [p.serial for p in layout.partitions]
    assert len(set(serials)) == len(serials)


@pytest.mark.parametrize("fs", ["ntfs", "ext4", "xfs", "fat32", "refs", "bitlocker"])
def test_a_file_system_at_lba_0_without_a_table_is_one_whole_disk_volume(make_image, fs):
    size = 320 * MiB
    layout = inspect_image(make_image("bare.img", size, "none", [PartSpec(size, fs)]))
    assert layout.table is PartitionTable.NONE
    [part] = layout.partitions
    assert (part.type, part.start, part.length, part.filesystem) == (
        PartitionKind.WHOLE_DISK,
        0,
        size,
        Filesystem(fs),
    )


def test_an_all_zero_disk_has_no_table_no_partitions_and_no_warning(make_image):
    layout = inspect_image(make_image("zero.img", 64 * MiB, "none"))
    assert (layout.table, layout.partitions, layout.warnings) == (PartitionTable.NONE, (), ())


def test_windows_partition_roles_come_from_their_gpt_types(tmp_path):
    from reconciler.lab.images import build_lab_disk

    build_lab_disk(tmp_path / "w.img", "windows-ntfs")
    layout = inspect_image(tmp_path / "w.img")
    assert [(p.type, p.filesystem) for p in layout.partitions] == [
        (PartitionKind.EFI, Filesystem.FAT32),
        (PartitionKind.MSR, None),
        (PartitionKind.BASIC_DATA, Filesystem.NTFS),
        (PartitionKind.RECOVERY, Filesystem.NTFS),
    ]


def test_a_real_pvcreate_label_is_recognised():
    """Captured from `pvcreate` on a loop device over a 64 MiB file (LVM 2.03, Debian 12)."""
    head = (Path(__file__).parent / "data" / "pvcreate-64MiB-head.bin").read_bytes()

    class Bytes:
        size = 64 * MiB

        def read(self, offset: int, length: int) -> bytes:
            return head[offset : offset + length].ljust(min(length, self.size - offset), b"\0")

    found = probe(Bytes(), 0, 64 * MiB)
    assert found.filesystem is Filesystem.LVM2
    assert found.serial == "9h8VHY-aGoR-6LOz-TZ8r-QYHs-5QPX-04Qn6S"


def test_the_byte_exact_lvm_label_matches_what_pvcreate_writes():
    real = (Path(__file__).parent / "data" / "pvcreate-64MiB-head.bin").read_bytes()
    ours = lvm2_pv_header(64 * MiB, "9h8VHYaGoR6LOzTZ8rQYHs5QPX04Qn6S")
    # identical label (CRC included) and metadata-area header; the label's sector 0 is empty in both
    assert ours[512:1024] == real[512:1024]
    assert ours[4096:4608] == real[4096:4608]


def test_the_reader_opens_block_devices_and_files_alike(make_image):
    path = make_image("one.img", 64 * MiB, "gpt", [PartSpec(32 * MiB, "ext4")])
    with FileReader(path) as reader:
        assert reader.size == 64 * MiB
        assert inspect_disk(reader, str(path)).partitions[0].filesystem is Filesystem.EXT4
