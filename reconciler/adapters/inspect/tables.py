"""MBR (with the EBR chain of logical partitions) and GPT (CRC-checked, backup header fallback)."""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field

from reconciler.adapters.inspect.reader import BlockReader

GPT_SIGNATURE = b"EFI PART"
MBR_EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
MBR_PROTECTIVE_TYPE = 0xEE
MAX_LOGICAL_PARTITIONS = 128  # far beyond any real disk; bounds a corrupt chain
MAX_GPT_ENTRIES_BYTES = 1 << 20  # 128 entries of 128 bytes is 16 KiB; a header asking for more is garbage


@dataclass(frozen=True)
class RawPartition:
    index: int
    start: int  # bytes
    length: int  # bytes
    type_id: str
    guid: str | None = None
    label: str | None = None


@dataclass
class TableScan:
    partitions: list[RawPartition] = field(default_factory=list)
    metadata: list[tuple[int, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    disk_guid: str | None = None


def mbr_entries(sector: bytes) -> list[tuple[int, int, int, int]] | None:
    """The four (status, type, first LBA, sector count) entries, or None when this is no valid MBR."""
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
        return None
    entries = [struct.unpack_from("<B3xB3xII", sector, 446 + 16 * i) for i in range(4)]
    if any(status not in (0x00, 0x80) for status, *_ in entries):
        return None
    return entries


def parse_mbr(reader: BlockReader, sector: bytes, sector_size: int) -> TableScan:
    scan = TableScan(metadata=[(0, sector_size)])
    entries = mbr_entries(sector) or []
    for number, (_status, ptype, first, count) in enumerate(entries, start=1):
        if ptype == 0 or count == 0:
            continue
        if ptype in MBR_EXTENDED_TYPES:
            _walk_ebr_chain(reader, first, sector_size, scan)
            continue
        raw = RawPartition(number, first * sector_size, count * sector_size, f"0x{ptype:02x}")
        scan.partitions.append(raw)
    return scan


def _walk_ebr_chain(reader: BlockReader, extended_lba: int, sector_size: int, scan: TableScan) -> None:
    """Logical partitions: each EBR holds one, relative to itself, and a link relative to the container."""
    seen: set[int] = set()
    ebr_lba = extended_lba
    index = 5
    while True:
        if ebr_lba in seen:
            scan.warnings.append(f"loop in the EBR chain of the extended partition at LBA {ebr_lba}; stopped")
            return
        if len(seen) >= MAX_LOGICAL_PARTITIONS:
            scan.warnings.append(f"more than {MAX_LOGICAL_PARTITIONS} logical partitions; stopped there")
            return
        seen.add(ebr_lba)
        entries = mbr_entries(reader.read(ebr_lba * sector_size, sector_size))
        if entries is None:
            scan.warnings.append(f"invalid EBR at LBA {ebr_lba}; logical partitions after it are ignored")
            return
        scan.metadata.append((ebr_lba * sector_size, sector_size))
        (_, ptype, first, count), (_, link_type, link_first, _) = entries[0], entries[1]
        if ptype != 0 and count != 0:
            start = (ebr_lba + first) * sector_size
            scan.partitions.append(RawPartition(index, start, count * sector_size, f"0x{ptype:02x}"))
            index += 1
        if link_type not in MBR_EXTENDED_TYPES or link_first == 0:
            return
        ebr_lba = extended_lba + link_first


def _crc_ok(header: bytes, header_size: int) -> bool:
    stored = struct.unpack_from("<I", header, 16)[0]
    zeroed = header[:16] + b"\0\0\0\0" + header[20:header_size]
    return zlib.crc32(zeroed) == stored


def _read_gpt(reader: BlockReader, lba: int, sector_size: int) -> tuple[list[RawPartition], str, int] | str:
    """Partitions, disk GUID and the header's backup LBA; or why the header at `lba` is unusable."""
    header = reader.read(lba * sector_size, sector_size)
    if header[:8] != GPT_SIGNATURE:
        return "no GPT signature"
    header_size = struct.unpack_from("<I", header, 12)[0]
    if not 92 <= header_size <= sector_size:
        return f"header size {header_size} is invalid"
    if not _crc_ok(header, header_size):
        return "header CRC32 mismatch"
    my_lba, alternate_lba = struct.unpack_from("<QQ", header, 24)
    disk_guid = str(uuid.UUID(bytes_le=header[56:72]))
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", header, 72)
    if my_lba != lba:
        return f"header claims to be at LBA {my_lba}"
    if entry_size < 128 or entry_size % 8 or count * entry_size > MAX_GPT_ENTRIES_BYTES:
        return f"implausible partition entry array ({count} entries of {entry_size} bytes)"
    array = reader.read(entries_lba * sector_size, count * entry_size)
    if len(array) < count * entry_size:
        return "partition entry array is past the end of the disk"
    if zlib.crc32(array) != entries_crc:
        return "partition entry array CRC32 mismatch"
    partitions = []
    for i in range(count):
        entry = array[i * entry_size : (i + 1) * entry_size]
        if entry[:16] == b"\0" * 16:
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        label = entry[56:128].decode("utf-16-le", "replace").split("\0", 1)[0] or None
        partitions.append(
            RawPartition(
                index=i + 1,
                start=first * sector_size,
                length=max(0, last - first + 1) * sector_size,
                type_id=str(uuid.UUID(bytes_le=entry[:16])).upper(),
                guid=str(uuid.UUID(bytes_le=entry[16:32])),
                label=label,
            )
        )
    return partitions, disk_guid, alternate_lba


def parse_gpt(reader: BlockReader, sector_size: int) -> TableScan:
    scan = TableScan()
    last_lba = reader.size // sector_size - 1
    primary = _read_gpt(reader, 1, sector_size)
    if isinstance(primary, tuple):
        partitions, scan.disk_guid, _ = primary
    else:
        backup = _read_gpt(reader, last_lba, sector_size) if last_lba > 1 else "disk too small"
        if isinstance(backup, str):
            scan.warnings.append(f"GPT unreadable: primary header: {primary}; backup header: {backup}")
            scan.metadata.append((0, 34 * sector_size))
            return scan
        partitions, scan.disk_guid, _ = backup
        scan.warnings.append(f"primary GPT header is corrupt ({primary}); using the backup header at LBA {last_lba}")
    scan.partitions = partitions
    # protective MBR + header + 16 KiB of entries at the start; entries + header at the end
    scan.metadata.append((0, 2 * sector_size + 16384))
    tail = 16384 + sector_size
    scan.metadata.append((max(0, reader.size - tail), min(tail, reader.size)))
    return scan


def find_sector_size(reader: BlockReader) -> int | None:
    """512 or 4096 when a GPT header sits at LBA 1 of that sector size; None when neither has one."""
    for size in (512, 4096):
        if reader.read(size, 8) == GPT_SIGNATURE:
            return size
    return None
