"""Broken, hostile or huge images: a clear error or a warning, never a traceback or a hang, and only
header sectors are read."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from reconciler.adapters.inspect import (
    CountingReader,
    FileReader,
    InspectError,
    PartitionTable,
    inspect_disk,
    inspect_image,
)
from reconciler.core.volumes import Filesystem
from reconciler.lab.images import GiB, MiB, PartSpec

from .conftest import patch

TiB = 1 << 40


def _mbr(entries: list[tuple[int, int, int]]) -> bytes:
    """An MBR sector with (type, first LBA, sector count) entries."""
    sector = bytearray(512)
    for i, (ptype, first, count) in enumerate(entries):
        struct.pack_into("<B3xB3xII", sector, 446 + 16 * i, 0, ptype, first, count)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def test_a_zero_length_image_is_a_clear_error(tmp_path):
    with pytest.raises(InspectError, match="empty"):
        inspect_image(_sparse(tmp_path / "empty.img", 0))


def test_an_image_shorter_than_a_sector_is_a_clear_error(tmp_path):
    path = tmp_path / "tiny.img"
    path.write_bytes(b"\x55\xaa" * 100)
    with pytest.raises(InspectError, match="truncated"):
        inspect_image(path)


def test_a_missing_image_and_a_directory_are_clear_errors(tmp_path):
    with pytest.raises(InspectError, match="No such file"):
        inspect_image(tmp_path / "missing.img")
    with pytest.raises(InspectError, match="directory"):
        inspect_image(tmp_path)


def test_garbage_at_lba_0_is_no_table_with_a_warning(tmp_path):
    path = tmp_path / "garbage.img"
    path.write_bytes(bytes(range(256)) * 4096)
    layout = inspect_image(path)
    assert layout.table is PartitionTable.NONE
    assert layout.partitions == ()
    assert "no recognised partition table" in layout.warnings[0]


def test_a_gpt_image_truncated_in_its_middle_warns_about_the_partitions_it_cut(make_image, tmp_path):
    path = make_image("cut.img", GiB, "gpt", [PartSpec(400 * MiB, "ext4"), PartSpec(400 * MiB, "ntfs")])
    with path.open("r+b") as f:
        f.truncate(300 * MiB)
    layout = inspect_image(path)
    # the primary header is intact; partition 1 is cut, partition 2 starts past the end
    assert layout.partitions[0].filesystem is Filesystem.EXT4
    assert layout.partitions[0].length == 299 * MiB
    assert layout.partitions[1].length == 0
    assert any("extends past the end" in w for w in layout.warnings)
    assert any("starts past the end" in w for w in layout.warnings)


def test_mbr_partitions_pointing_past_the_end_are_clamped_with_a_warning(tmp_path):
    path = _sparse(tmp_path / "past.img", 64 * MiB)
    patch(path, 0, _mbr([(0x07, 2048, 2**32 - 1), (0x83, 2**31, 100)]))
    layout = inspect_image(path)
    assert [p.length for p in layout.partitions] == [64 * MiB - MiB, 0]
    assert len(layout.warnings) == 2


def test_a_loop_in_the_ebr_chain_stops_with_a_warning(tmp_path):
    path = _sparse(tmp_path / "loop.img", 64 * MiB)
    patch(path, 0, _mbr([(0x05, 2048, 100_000)]))
    # EBR 1 -> EBR 2 -> EBR 1 (links are relative to the extended partition's start)
    patch(path, 2048 * 512, _mbr([(0x83, 2048, 1000), (0x05, 4096, 4096)]))
    patch(path, (2048 + 4096) * 512, _mbr([(0x83, 2048, 1000), (0x05, 0 + 1, 1)]))
    patch(path, (2048 + 1) * 512, _mbr([(0x83, 2048, 1000), (0x05, 4096, 4096)]))
    layout = inspect_image(path)
    assert any("loop in the EBR chain" in w for w in layout.warnings)
    assert 2 <= len(layout.partitions) <= 4


def test_an_ebr_chain_pointing_to_itself_stops_at_once(tmp_path):
    path = _sparse(tmp_path / "self.img", 64 * MiB)
    patch(path, 0, _mbr([(0x05, 2048, 100_000)]))
    patch(path, 2048 * 512, _mbr([(0x83, 2048, 1000), (0x05, 0, 0)]))  # link 0: end of chain
    assert len(inspect_image(path).partitions) == 1
    patch(path, 2048 * 512, _mbr([(0x83, 2048, 1000), (0x0F, 0, 5)]))
    layout = inspect_image(path)
    assert len(layout.partitions) == 1


def test_an_invalid_ebr_ends_the_chain_with_a_warning(tmp_path):
    path = _sparse(tmp_path / "badebr.img", 64 * MiB)
    patch(path, 0, _mbr([(0x83, 2048, 1000), (0x05, 4096, 100_000)]))
    layout = inspect_image(path)
    assert [p.index for p in layout.partitions] == [1]
    assert "invalid EBR" in layout.warnings[0]


def test_a_corrupt_primary_gpt_header_falls_back_to_the_backup_with_a_warning(make_image):
    path = make_image("gpt.img", GiB, "gpt", [PartSpec(100 * MiB, "ext4"), PartSpec(100 * MiB, "ntfs")])
    healthy = inspect_image(path)
    patch(path, 512 + 24, b"\xff" * 8)  # breaks the header CRC
    layout = inspect_image(path)
    assert layout.partitions == healthy.partitions
    assert "primary GPT header is corrupt (header CRC32 mismatch)" in layout.warnings[0]


def test_a_corrupt_primary_partition_array_falls_back_to_the_backup(make_image):
    path = make_image("gpt.img", GiB, "gpt", [PartSpec(100 * MiB, "ext4")])
    patch(path, 1024, b"garbage!" * 8)
    layout = inspect_image(path)
    assert layout.partitions[0].filesystem is Filesystem.EXT4
    assert "partition entry array CRC32 mismatch" in layout.warnings[0]


def test_both_gpt_headers_corrupt_is_a_gpt_disk_with_no_partitions_and_a_warning(make_image):
    path = make_image("gpt.img", GiB, "gpt", [PartSpec(100 * MiB, "ext4")])
    patch(path, 512 + 24, b"\xff" * 8)
    patch(path, GiB - 512 + 24, b"\xff" * 8)
    layout = inspect_image(path)
    assert (layout.table, layout.partitions) == (PartitionTable.GPT, ())
    assert "GPT unreadable" in layout.warnings[0]


def test_a_gpt_header_claiming_a_huge_entry_array_is_refused_without_reading_it(make_image):
    path = make_image("gpt.img", GiB, "gpt", [PartSpec(100 * MiB, "ext4")])
    with path.open("r+b") as f:
        f.seek(512)
        header = bytearray(f.read(92))
    struct.pack_into("<II", header, 80, 2**32 - 1, 2**16)  # entries x entry size
    struct.pack_into("<I", header, 16, 0)
    struct.pack_into("<I", header, 16, zlib.crc32(bytes(header)))
    patch(path, 512, bytes(header))
    with FileReader(path) as file:
        reader = CountingReader(file)
        layout = inspect_disk(reader, str(path))
    assert "implausible partition entry array" in layout.warnings[0]
    assert layout.partitions[0].filesystem is Filesystem.EXT4  # from the backup header
    assert reader.bytes_read < 256 * 1024


def test_a_2_tib_sparse_image_is_inspected_by_reading_only_its_headers(make_image):
    specs = [PartSpec(GiB, "ntfs"), PartSpec(GiB, "ext4"), PartSpec(TiB, "raw"), PartSpec(GiB, "refs")]
    path = make_image("huge.img", 2 * TiB, "gpt", specs)
    with FileReader(path) as file:
        reader = CountingReader(file)
        layout = inspect_disk(reader, str(path))
    assert [p.filesystem for p in layout.partitions] == [Filesystem.NTFS, Filesystem.EXT4, None, Filesystem.REFS]
    assert layout.warnings == ()
    # headers only: a few KiB per partition plus the tables, whatever the disk's size
    assert reader.bytes_read < 128 * 1024
    assert reader.reads < 40


def test_an_mbr_without_partitions_is_an_empty_mbr_table(make_image):
    layout = inspect_image(make_image("blank.img", 64 * MiB, "mbr"))
    assert (layout.table, layout.partitions, layout.warnings) == (PartitionTable.MBR, (), ())


def test_a_gpt_without_partitions_is_an_empty_gpt_table(make_image):
    layout = inspect_image(make_image("blank.img", 64 * MiB, "gpt"))
    assert (layout.table, layout.partitions, layout.warnings) == (PartitionTable.GPT, (), ())
