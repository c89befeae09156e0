"""One disk: its partition table, what each partition holds, the LDM header of a dynamic disk."""

from __future__ import annotations

import itertools
import os
import struct

from reconciler.adapters.inspect import tables
from reconciler.adapters.inspect.model import (
    DiskLayout,
    InspectError,
    LdmHeader,
    Partition,
    PartitionKind,
    PartitionTable,
)
from reconciler.adapters.inspect.reader import BlockReader, FileReader
from reconciler.adapters.inspect.signatures import has_boot_sector_filesystem, probe

GPT_KINDS = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": PartitionKind.EFI,
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": PartitionKind.MSR,
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": PartitionKind.RECOVERY,
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": PartitionKind.BASIC_DATA,
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": PartitionKind.LINUX,
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": PartitionKind.LINUX_SWAP,
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": PartitionKind.LINUX_LVM,
    "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": PartitionKind.LDM_METADATA,
    "AF9B60A0-1431-4F62-BC68-3311714A69AD": PartitionKind.LDM_DATA,
    "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": PartitionKind.STORAGE_SPACES,
}
MBR_KINDS = {
    0x01: PartitionKind.BASIC_DATA,
    0x04: PartitionKind.BASIC_DATA,
    0x06: PartitionKind.BASIC_DATA,
    0x07: PartitionKind.BASIC_DATA,
    0x0B: PartitionKind.BASIC_DATA,
    0x0C: PartitionKind.BASIC_DATA,
    0x0E: PartitionKind.BASIC_DATA,
    0x27: PartitionKind.RECOVERY,
    0x42: PartitionKind.LDM,
    0x82: PartitionKind.LINUX_SWAP,
    0x83: PartitionKind.LINUX,
    0x8E: PartitionKind.LINUX_LVM,
    0xEF: PartitionKind.EFI,
}
MBR_PRIVHEAD_LBA = 6
LDM_KINDS = frozenset({PartitionKind.LDM, PartitionKind.LDM_METADATA, PartitionKind.LDM_DATA})


def _kind(table: PartitionTable, type_id: str) -> PartitionKind:
    if table is PartitionTable.NONE:
        return PartitionKind.WHOLE_DISK
    if table is PartitionTable.GPT:
        return GPT_KINDS.get(type_id, PartitionKind.OTHER)
    return MBR_KINDS.get(int(type_id, 16), PartitionKind.OTHER)


def parse_privhead(sector: bytes, sector_size: int) -> LdmHeader | None:
    """The LDM PRIVHEAD (disk/group GUIDs as ASCII, sizes big-endian in sectors), None if absent."""
    if sector[:8] != b"PRIVHEAD" or len(sector) < 0x13B:
        return None

    def text(offset: int, size: int) -> str:
        return sector[offset : offset + size].split(b"\0", 1)[0].decode("ascii", "replace")

    config_start, config_size = struct.unpack_from(">QQ", sector, 0x12B)
    return LdmHeader(
        disk_guid=text(0x30, 64),
        disk_group_guid=text(0xB0, 64).lower(),
        disk_group_name=text(0xF0, 32),
        database=(config_start * sector_size, config_size * sector_size),
    )


def _find_privhead(reader: BlockReader, partitions: list[Partition], sector_size: int) -> LdmHeader | None:
    """MBR dynamic disks keep a PRIVHEAD at LBA 6 and copies at the disk's end; GPT ones at the end of
    the LDM metadata partition."""
    places = [MBR_PRIVHEAD_LBA * sector_size, reader.size - sector_size]
    places += [p.end - sector_size for p in partitions if p.type is PartitionKind.LDM_METADATA]
    for offset in places:
        if offset >= 0 and (header := parse_privhead(reader.read(offset, sector_size), sector_size)):
            return header
    return None


def _partition(raw: tables.RawPartition, table: PartitionTable, reader: BlockReader) -> Partition:
    warnings = []
    length = raw.length
    if raw.start >= reader.size:
        warnings.append(f"partition {raw.index} starts past the end of the disk (truncated image?)")
        length = 0
    elif raw.start + raw.length > reader.size:
        warnings.append(f"partition {raw.index} extends past the end of the disk (truncated image?)")
        length = reader.size - raw.start
    found = probe(reader, raw.start, length)
    return Partition(
        index=raw.index,
        start=raw.start,
        length=length,
        type=_kind(table, raw.type_id),
        type_id=raw.type_id,
        filesystem=found.filesystem,
        guid=raw.guid,
        serial=found.serial,
        label=raw.label,
        warnings=tuple(warnings),
    )


def _overlaps(partitions: list[Partition]) -> list[str]:
    ordered = sorted((p for p in partitions if p.length), key=lambda p: p.start)
    return [f"partitions {a.index} and {b.index} overlap" for a, b in itertools.pairwise(ordered) if b.start < a.end]


def _scan_table(reader: BlockReader, lba0: bytes) -> tuple[PartitionTable, tables.TableScan, int]:
    """GPT when a GPT header or a protective MBR says so; MBR when LBA 0 is a valid MBR and not a file
    system's boot sector (both end in 55 AA); otherwise no table, the whole disk one candidate volume."""
    gpt_sector_size = tables.find_sector_size(reader)
    entries = tables.mbr_entries(lba0)
    protective = entries is not None and any(ptype == tables.MBR_PROTECTIVE_TYPE for _, ptype, *_ in entries)
    sector_size = gpt_sector_size or 512
    if gpt_sector_size or protective:
        return PartitionTable.GPT, tables.parse_gpt(reader, sector_size), sector_size
    if entries is not None and not has_boot_sector_filesystem(lba0):
        return PartitionTable.MBR, tables.parse_mbr(reader, lba0, sector_size), sector_size
    scan = tables.TableScan(partitions=[tables.RawPartition(1, 0, reader.size, "none")])
    return PartitionTable.NONE, scan, sector_size


def inspect_disk(reader: BlockReader, path: str = "") -> DiskLayout:
    """The layout of one disk, reading only header sectors. Raises InspectError on an empty disk."""
    if reader.size == 0:
        raise InspectError(f"{path or 'disk'}: empty (zero-length) image")
    if reader.size < 512:
        raise InspectError(f"{path or 'disk'}: truncated: {reader.size} bytes is less than one sector")
    lba0 = reader.read(0, 512)
    table, scan, sector_size = _scan_table(reader, lba0)
    partitions = [_partition(raw, table, reader) for raw in scan.partitions]
    if table is PartitionTable.NONE:
        partitions = [_whole_disk(p) for p in partitions if p.filesystem is not None]
        if not partitions and lba0.strip(b"\0"):
            scan.warnings.append("no recognised partition table or file system at LBA 0")
    ldm = None
    if any(p.type in LDM_KINDS for p in partitions):
        ldm = _find_privhead(reader, partitions, sector_size)
        if ldm is None:
            scan.warnings.append("dynamic disk without a readable LDM PRIVHEAD")
        else:
            scan.metadata.append(ldm.database)
            scan.metadata.append((MBR_PRIVHEAD_LBA * sector_size, sector_size))
    warnings = scan.warnings + [w for p in partitions for w in p.warnings] + _overlaps(partitions)
    return DiskLayout(
        path=path,
        size=reader.size,
        table=table,
        partitions=tuple(partitions),
        metadata=tuple(scan.metadata),
        disk_guid=scan.disk_guid,
        sector_size=sector_size,
        ldm=ldm,
        warnings=tuple(warnings),
    )


def _whole_disk(partition: Partition) -> Partition:
    """No table: the disk is one volume, a file system at LBA 0."""
    return Partition(
        index=1,
        start=0,
        length=partition.length,
        type=PartitionKind.WHOLE_DISK,
        type_id="none",
        filesystem=partition.filesystem,
        serial=partition.serial,
    )


def inspect_image(path: str | os.PathLike[str]) -> DiskLayout:
    """Inspect an image file or block device; every failure to open it becomes an InspectError."""
    name = os.fspath(path)
    if os.path.isdir(name):
        raise InspectError(f"{name}: is a directory, not a disk image")
    try:
        with FileReader(name) as reader:
            return inspect_disk(reader, name)
    except OSError as exc:
        raise InspectError(f"{name}: cannot read: {exc.strerror or exc}") from exc
