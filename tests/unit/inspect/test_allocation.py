"""The allocation readers against real file systems made by their own tools: ext2/3/4 by mke2fs -d and
debugfs (checked against dumpe2fs's free-block lists), NTFS by mkntfs, ntfscp and ntfs-3g (checked
against $Bitmap as ntfscat reads it)."""

from __future__ import annotations

import os
import random
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.adapters.inspect.allocation import (
    AllocationMap,
    Declined,
    data_runs,
    read_allocation,
    read_ext_allocation,
    read_ntfs_allocation,
    set_bit_runs,
)
from reconciler.adapters.inspect.layout import inspect_image
from reconciler.adapters.inspect.reader import CountingReader, FileReader
from reconciler.core.extents import Range, normalise
from reconciler.lab.images import PartSpec
from tests.unit.inspect.conftest import MakeImage, patch

MiB = 1 << 20


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def ext_image(tmp_path: Path, size: int, *mke2fs: str, files: dict[str, int] | None = None,
              remove: tuple[str, ...] = ()) -> Path:
    """An ext file system made by mke2fs -d from random files of the given sizes, some then removed by debugfs."""
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    rng = random.Random(size)
    for name, length in (files or {}).items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(rng.randbytes(length))
    image = tmp_path / "fs.img"
    image.unlink(missing_ok=True)
    run("mke2fs", "-q", "-F", *mke2fs, "-d", str(tree), str(image), f"{size // 1024}k")
    for name in remove:
        run("debugfs", "-w", "-R", f"rm /{name}", str(image))
    return image


def dumpe2fs_free(image: Path) -> list[Range]:
    """Free byte ranges as e2fsprogs sees them (it builds uninitialised groups' bitmaps itself)."""
    out = run("dumpe2fs", str(image))
    block = int(re.search(r"^Block size:\s+(\d+)", out, re.M).group(1))
    ranges = []
    for line in re.findall(r"^\s+Free blocks: (.*)$", out, re.M):
        for item in filter(None, (p.strip() for p in line.split(","))):
            first, _, last = item.partition("-")
            ranges.append(Range(int(first) * block, (int(last or first) - int(first) + 1) * block))
    return normalise(ranges)


def read(image: Path) -> AllocationMap | Declined:
    with FileReader(image) as reader:
        return read_ext_allocation(reader, 0)


FILES = {"keep.bin": 3 * MiB, "gone.bin": 20 * MiB, "dir/small.txt": 5000, "dir/gone-too.bin": 7 * MiB}
REMOVED = ("gone.bin", "dir/gone-too.bin")


@pytest.mark.parametrize("options", [
    pytest.param(("-t", "ext4"), id="ext4-defaults-flex_bg-64bit-uninit"),
    pytest.param(("-t", "ext4", "-b", "4096"), id="ext4-4k-blocks"),
    pytest.param(("-t", "ext4", "-b", "1024", "-O", "^64bit"), id="ext4-32bit-descriptors"),
    pytest.param(("-t", "ext4", "-O", "meta_bg,^resize_inode"), id="ext4-meta_bg"),
    pytest.param(("-t", "ext4", "-O", "sparse_super2"), id="ext4-sparse_super2"),
    pytest.param(("-t", "ext4", "-O", "^flex_bg"), id="ext4-without-flex_bg"),
    pytest.param(("-t", "ext4", "-O", "^metadata_csum,uninit_bg"), id="ext4-uninit_bg-gdt_csum"),
    pytest.param(("-t", "ext3",), id="ext3"),
    pytest.param(("-t", "ext2", "-O", "^sparse_super,^resize_inode"), id="ext2-superblock-in-every-group"),
])
def test_ext_free_blocks_are_exactly_those_dumpe2fs_lists(tmp_path: Path, options: tuple[str, ...]) -> None:
    image = ext_image(tmp_path, 300 * MiB, *options, files=FILES, remove=REMOVED)
    found = read(image)
    assert isinstance(found, AllocationMap), found
    assert list(found.free) == dumpe2fs_free(image)
    assert found.allocated_bytes + sum(r.length for r in found.free) == image.stat().st_size


def test_ext_blocks_freed_by_debugfs_rm_become_free(tmp_path: Path) -> None:
    before = read(ext_image(tmp_path, 200 * MiB, "-t", "ext4", files=FILES))
    after = read(ext_image(tmp_path, 200 * MiB, "-t", "ext4", files=FILES, remove=REMOVED))
    assert isinstance(before, AllocationMap) and isinstance(after, AllocationMap)
    freed = before.allocated_bytes - after.allocated_bytes
    assert 27 * MiB <= freed <= 27 * MiB + 64 * 1024  # the two files, plus at most their extent blocks


def test_ext_volume_inside_a_partition_table_gives_disk_offsets(make_image: MakeImage, tmp_path: Path) -> None:
    files = (("data.bin", random.Random(1).randbytes(4 * MiB)),)
    image = make_image("disk.raw", 200 * MiB, "gpt", [PartSpec(150 * MiB, "ext4", files=files)])
    part = inspect_image(image).partitions[0]
    with FileReader(image) as reader:
        found = read_allocation(reader, part.filesystem, part.start, part.length)
    assert isinstance(found, AllocationMap)
    assert found.start == part.start and found.length == part.length
    assert all(part.start <= r.offset and r.end <= part.end for r in found.used)
    assert 4 * MiB < found.allocated_bytes < 20 * MiB  # the file plus inode tables and journal


def test_ext_reader_reads_only_metadata(tmp_path: Path) -> None:
    image = ext_image(tmp_path, 1024 * MiB, "-t", "ext4", files={"big.bin": 30 * MiB})
    with FileReader(image) as inner:
        counting = CountingReader(inner)
        assert isinstance(read_ext_allocation(counting, 0), AllocationMap)
    assert counting.bytes_read <= 256 * 1024  # descriptors + 8 groups' bitmaps, nothing of the files
    assert counting.reads <= 8  # flex_bg bitmaps are consecutive: read together, not one per group


def test_ext_partition_larger_than_file_system_keeps_its_tail(tmp_path: Path) -> None:
    image = ext_image(tmp_path, 64 * MiB, "-t", "ext4")
    with image.open("r+b") as f:
        f.truncate(80 * MiB)
    found = read(image)
    assert isinstance(found, AllocationMap)
    assert found.used[-1].end == 80 * MiB and found.used[-1].offset <= 64 * MiB


def _superblock_field(image: Path, offset: int, fmt: str, value: int) -> None:
    patch(image, 1024 + offset, struct.pack(fmt, value))


def _incompat(image: Path) -> int:
    with image.open("rb") as f:
        f.seek(1024 + 0x60)
        return struct.unpack("<I", f.read(4))[0]


def test_ext_journal_needing_recovery_declines(tmp_path: Path) -> None:
    image = ext_image(tmp_path, 64 * MiB, "-t", "ext4")
    run("debugfs", "-w", "-R", "feature needs_recovery", str(image))
    found = read(image)
    assert isinstance(found, Declined) and "recovery" in found.reason


def test_ext_unknown_incompat_feature_declines(tmp_path: Path) -> None:
    image = ext_image(tmp_path, 64 * MiB, "-t", "ext4")
    _superblock_field(image, 0x60, "<I", _incompat(image) | 0x80000000)
    found = read(image)
    assert isinstance(found, Declined) and "unknown" in found.reason


def test_ext_bigalloc_declines(tmp_path: Path) -> None:
    image = ext_image(tmp_path, 256 * MiB, "-t", "ext4", "-b", "4096", "-O", "bigalloc", "-C", "65536")
    found = read(image)
    assert isinstance(found, Declined) and "bigalloc" in found.reason


def test_ext_errors_state_declines(tmp_path: Path) -> None:
    image = ext_image(tmp_path, 64 * MiB, "-t", "ext4")
    _superblock_field(image, 0x3A, "<H", 0x2)
    assert isinstance(read(image), Declined)


def test_ext_bitmap_disagreeing_with_its_free_count_declines(tmp_path: Path) -> None:
    image = ext_image(tmp_path, 64 * MiB, "-t", "ext4", "-b", "4096", files={"a.bin": MiB})
    out = run("dumpe2fs", str(image))
    bitmap = int(re.search(r"Block bitmap at (\d+)", out).group(1))
    with image.open("rb") as f:
        f.seek(bitmap * 4096 + 1000)
        byte = f.read(1)[0]
    patch(image, bitmap * 4096 + 1000, bytes([byte ^ 0x10]))  # one block flipped, counts untouched
    found = read(image)
    assert isinstance(found, Declined) and "group 0" in found.reason


def test_ext_truncated_image_declines(tmp_path: Path) -> None:
    image = ext_image(tmp_path, 64 * MiB, "-t", "ext4")
    with image.open("r+b") as f:
        f.truncate(4096)
    assert isinstance(read(image), Declined)


def test_not_a_file_system_declines(tmp_path: Path) -> None:
    image = tmp_path / "zeros.img"
    image.write_bytes(bytes(MiB))
    with FileReader(image) as reader:
        assert isinstance(read_ext_allocation(reader, 0), Declined)
        assert isinstance(read_ntfs_allocation(reader, 0), Declined)
        assert isinstance(read_allocation(reader, "xfs", 0, MiB), Declined)


# ---- pure helpers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("bitmap", "nbits", "runs"), [
    (b"\x00\x00", 16, []),
    (b"\xff\xff", 16, [(0, 16)]),
    (b"\xff\xff", 12, [(0, 12)]),
    (b"\x01\x80", 16, [(0, 1), (15, 1)]),
    (b"\xf0\xff\x0f", 24, [(4, 16)]),
    (b"\x05\x00\xff", 24, [(0, 1), (2, 1), (16, 8)]),
    (b"\xff\xff", 0, []),
])
def test_set_bit_runs_are_lsb_first_and_merged(bitmap: bytes, nbits: int, runs: list[tuple[int, int]]) -> None:
    assert list(set_bit_runs(bitmap, nbits)) == runs


def test_set_bit_runs_match_a_bit_by_bit_reading() -> None:
    rng = random.Random(7)
    data = bytes(rng.choice((0, 0xFF, rng.randrange(256))) for _ in range(4096))
    bits = [i for i in range(len(data) * 8 - 5) if data[i // 8] >> (i % 8) & 1]
    expanded = [b for start, n in set_bit_runs(data, len(data) * 8 - 5) for b in range(start, start + n)]
    assert expanded == bits


def test_data_runs_decode_relative_signed_offsets_and_sparse_runs() -> None:
    # 0x21: 1-byte length 0x18, 2-byte offset 0x5634; 0x11: length 0x10, offset -0x10 (0xF0); 0x01: sparse
    runs = bytes([0x21, 0x18, 0x34, 0x56, 0x11, 0x10, 0xF0, 0x01, 0x05, 0x00])
    assert list(data_runs(runs)) == [(0x5634, 0x18), (0x5634 - 0x10, 0x10), (None, 5)]


# ---- NTFS -----------------------------------------------------------------------------------------------
needs_fuse = pytest.mark.skipif(not (os.path.exists("/dev/fuse") and shutil.which("ntfs-3g")),
                                reason="ntfs-3g and /dev/fuse are needed to delete files on NTFS")


def ntfs_image(tmp_path: Path, size: int, files: dict[str, int], *mkntfs: str) -> Path:
    image = tmp_path / "ntfs.img"
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(size)
    run("mkntfs", "-F", "-Q", "-q", *mkntfs, str(image))
    rng = random.Random(size)
    for name, length in files.items():
        source = tmp_path / "source"
        source.write_bytes(rng.randbytes(length))
        run("ntfscp", "-q", str(image), str(source), name)
    return image


def ntfs_delete(image: Path, names: tuple[str, ...], mountpoint: Path) -> None:
    """Delete through ntfs-3g, the NTFS driver Linux users really write with."""
    mountpoint.mkdir(exist_ok=True)
    daemon = subprocess.Popen(["ntfs-3g", "-o", "no_detach", str(image), str(mountpoint)])
    try:
        for _ in range(200):
            if os.path.ismount(mountpoint):
                break
            time.sleep(0.05)
        assert os.path.ismount(mountpoint), "ntfs-3g did not mount"
        for name in names:
            (mountpoint / name).unlink()
    finally:
        subprocess.run(["fusermount", "-u", str(mountpoint)], check=False)
        daemon.wait(timeout=60)


def ntfscat_used(image: Path) -> list[Range]:
    """Used clusters from $Bitmap as libntfs reads it (ntfscat of inode 6), cluster size from ntfsinfo."""
    bitmap = subprocess.run(["ntfscat", "-f", "-i", "6", str(image)], capture_output=True, check=True).stdout
    info = run("ntfsinfo", "-m", "-f", str(image))
    cluster = int(re.search(r"Cluster Size:\s+(\d+)", info).group(1))
    clusters = int(re.search(r"Volume Size in Clusters:\s+(\d+)", info).group(1))
    return normalise(Range(c * cluster, n * cluster) for c, n in set_bit_runs(bitmap, clusters))


def read_ntfs(image: Path) -> AllocationMap | Declined:
    with FileReader(image) as reader:
        return read_ntfs_allocation(reader, 0)


@pytest.mark.parametrize("options", [pytest.param((), id="4k-clusters"), pytest.param(("-c", "512"), id="512-clusters"),
                                     pytest.param(("-c", "65536"), id="64k-clusters")])
def test_ntfs_used_clusters_are_exactly_bitmap_as_libntfs_reads_it(tmp_path: Path, options: tuple[str, ...]) -> None:
    image = ntfs_image(tmp_path, 200 * MiB, {"a.bin": 5 * MiB, "b.bin": 12 * MiB}, *options)
    found = read_ntfs(image)
    assert isinstance(found, AllocationMap), found
    used = ntfscat_used(image)
    last = used[-1].end
    # besides $Bitmap's clusters, only the slack after the last cluster (the backup boot sector) is kept
    assert [r for r in found.used if r.end <= last] == [r for r in used if r.end <= last]
    assert found.used[-1].end == image.stat().st_size
    assert 17 * MiB < found.allocated_bytes < 30 * MiB


@needs_fuse
def test_ntfs_clusters_freed_by_ntfs3g_become_free(tmp_path: Path) -> None:
    image = ntfs_image(tmp_path, 200 * MiB, {"keep.bin": 3 * MiB, "gone.bin": 40 * MiB})
    before = read_ntfs(image)
    ntfs_delete(image, ("gone.bin",), tmp_path / "mnt")
    after = read_ntfs(image)
    assert isinstance(before, AllocationMap) and isinstance(after, AllocationMap), (before, after)
    assert 40 * MiB <= before.allocated_bytes - after.allocated_bytes <= 40 * MiB + 64 * 1024
    assert [r for r in after.used if r.end <= ntfscat_used(image)[-1].end] == \
        [r for r in ntfscat_used(image) if r.end <= after.used[-1].offset]


def test_ntfs_volume_inside_a_partition_table(make_image: MakeImage) -> None:
    files = (("data.bin", random.Random(2).randbytes(6 * MiB)),)
    image = make_image("disk.raw", 300 * MiB, "gpt", [PartSpec(200 * MiB, "ntfs", files=files)])
    part = inspect_image(image).partitions[0]
    with FileReader(image) as reader:
        found = read_allocation(reader, part.filesystem, part.start, part.length)
    assert isinstance(found, AllocationMap), found
    assert all(part.start <= r.offset and r.end <= part.end for r in found.used)
    assert 6 * MiB < found.allocated_bytes < 20 * MiB


def test_ntfs_dirty_volume_declines(tmp_path: Path) -> None:
    image = ntfs_image(tmp_path, 64 * MiB, {})
    assert isinstance(read_ntfs(image), AllocationMap)
    _set_ntfs_dirty(image)
    seen = subprocess.run(["ntfsinfo", "-m", "-f", str(image)], capture_output=True, text=True)
    assert "Volume Flags: 0x0001" in seen.stdout or "dirty" in seen.stdout + seen.stderr  # libntfs sees it too
    found = read_ntfs(image)
    assert isinstance(found, Declined) and "dirty" in found.reason


def _set_ntfs_dirty(image: Path) -> None:
    """Flip VOLUME_IS_DIRTY in $Volume's $VOLUME_INFORMATION (MFT record 3), fixups respected."""
    data = bytearray(image.read_bytes()[: 64 * MiB])
    bps, spc = struct.unpack_from("<HB", data, 0x0B)
    (mft_lcn,) = struct.unpack_from("<Q", data, 0x30)
    (per_record,) = struct.unpack_from("<b", data, 0x40)
    cluster = bps * spc
    size = per_record * cluster if per_record > 0 else 1 << -per_record
    offset = mft_lcn * cluster + 3 * size
    record = data[offset : offset + size]
    (attr,) = struct.unpack_from("<H", record, 0x14)
    while True:
        kind, length = struct.unpack_from("<II", record, attr)
        if kind == 0x70:
            (value,) = struct.unpack_from("<H", record, attr + 0x14)
            flags_at = attr + value + 0x0A
            break
        attr += length
    assert flags_at % bps < bps - 2  # not in a sector's last two bytes (those hold the fixup)
    patch(image, offset + flags_at, struct.pack("<H", struct.unpack_from("<H", record, flags_at)[0] | 1))


def test_ntfs_torn_mft_record_declines(tmp_path: Path) -> None:
    image = ntfs_image(tmp_path, 64 * MiB, {})
    data = image.read_bytes()[:4096]
    bps, spc = struct.unpack_from("<HB", data, 0x0B)
    (mft_lcn,) = struct.unpack_from("<Q", data, 0x30)
    record6 = mft_lcn * bps * spc + 6 * 1024
    patch(image, record6 + bps - 2, b"\xde\xad")  # the first sector's update sequence number
    found = read_ntfs(image)
    assert isinstance(found, Declined) and "record 6" in found.reason


# ---- swap -----------------------------------------------------------------------------------------------
def test_swap_keeps_only_its_header_and_mkswap_accepts_it_again(tmp_path: Path) -> None:
    image = tmp_path / "swap.img"
    with image.open("wb") as f:
        f.truncate(64 * MiB)
    run("mkswap", str(image))
    with FileReader(image) as reader:
        found = read_allocation(reader, "swap", 0, 64 * MiB)
    assert isinstance(found, AllocationMap) and found.used == (Range(0, 65536),)


def test_swap_holding_a_hibernation_image_is_read_whole(tmp_path: Path) -> None:
    image = tmp_path / "swap.img"
    with image.open("wb") as f:
        f.truncate(8 * MiB)
    run("mkswap", str(image))
    patch(image, 4086, b"S1SUSPEND\0")
    with FileReader(image) as reader:
        found = read_allocation(reader, "swap", 0, 8 * MiB)
    assert isinstance(found, Declined) and "hibernation" in found.reason
