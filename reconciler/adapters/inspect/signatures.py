"""File systems and volume formats identified from their on-disk signatures, plus their serial numbers.

Each probe reads at most two 4 KiB blocks of a partition: its start (boot sector, ext/LVM/swap headers)
and 64 KiB in (the Btrfs superblock).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from reconciler.adapters.inspect.reader import BlockReader
from reconciler.core.volumes import Filesystem

HEAD_SIZE = 4096
BTRFS_SUPERBLOCK = 0x10000
BITLOCKER_GUID = uuid.UUID("4967d63b-2e29-4ad8-8399-f6a339e3d001")


@dataclass(frozen=True)
class Probe:
    filesystem: Filesystem | None
    serial: str | None = None


def _uuid(raw: bytes) -> str | None:
    return None if raw.strip(b"\0") == b"" else str(uuid.UUID(bytes=raw))


def _dos_serial(raw: bytes) -> str:
    value = struct.unpack("<I", raw)[0]
    return f"{value >> 16:04X}-{value & 0xFFFF:04X}"


def _fat(head: bytes) -> Probe | None:
    """FAT12/16/32 from the BPB; the type comes from the cluster count, as the specification says."""
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        return None
    bytes_per_sector, sectors_per_cluster, reserved, fats, root_entries, total16 = struct.unpack_from(
        "<HBHBHH", head, 11
    )
    (fat16_size,) = struct.unpack_from("<H", head, 22)
    total32, fat32_size = struct.unpack_from("<II", head, 32)
    if bytes_per_sector not in (512, 1024, 2048, 4096) or sectors_per_cluster == 0 or fats == 0:
        return None
    if sectors_per_cluster & (sectors_per_cluster - 1) or reserved == 0:
        return None
    if head[0] not in (0xEB, 0xE9):
        return None
    fat_size = fat16_size or fat32_size
    total = total16 or total32
    root_sectors = (root_entries * 32 + bytes_per_sector - 1) // bytes_per_sector
    data_sectors = total - reserved - fats * fat_size - root_sectors
    if fat_size == 0 or data_sectors <= 0:
        return None
    clusters = data_sectors // sectors_per_cluster
    if fat16_size == 0:
        return Probe(Filesystem.FAT32, _dos_serial(head[0x43:0x47]))
    kind = Filesystem.FAT12 if clusters < 4085 else Filesystem.FAT16
    return Probe(kind, _dos_serial(head[0x27:0x2B]))


def _ext(head: bytes) -> Probe | None:
    sb = head[1024:2048]
    if len(sb) < 0x78 or sb[0x38:0x3A] != b"\x53\xef":
        return None
    compat, incompat, _ro_compat = struct.unpack_from("<III", sb, 0x5C)
    if incompat & (0x40 | 0x80 | 0x200):  # extents, 64bit, flex_bg: only ext4 sets them
        kind = Filesystem.EXT4
    elif compat & 0x4:  # has_journal
        kind = Filesystem.EXT3
    else:
        kind = Filesystem.EXT2
    return Probe(kind, _uuid(sb[0x68:0x78]))


def _lvm2(head: bytes) -> Probe | None:
    """The LVM2 label may sit in any of the first four sectors; pv_header follows at its offset."""
    for sector in range(4):
        label = head[sector * 512 : (sector + 1) * 512]
        if label[:8] == b"LABELONE" and label[24:32] == b"LVM2 001":
            offset = struct.unpack_from("<I", label, 20)[0]
            raw = label[offset : offset + 32].decode("ascii", "replace")
            parts = (raw[0:6], raw[6:10], raw[10:14], raw[14:18], raw[18:22], raw[22:26], raw[26:32])
            return Probe(Filesystem.LVM2, "-".join(parts))
    return None


def probe(reader: BlockReader, start: int, length: int) -> Probe:
    """Identify what a partition holds (`Probe(None)` when nothing known is found)."""
    if length <= 0:
        return Probe(None)
    head = reader.read(start, min(HEAD_SIZE, length))
    oem = head[3:11]
    if oem == b"NTFS    ":
        return Probe(Filesystem.NTFS, f"{struct.unpack_from('<Q', head, 0x48)[0]:016X}")
    if oem == b"ReFS\0\0\0\0" and head[16:20] == b"FSRS":
        return Probe(Filesystem.REFS, f"{struct.unpack_from('<Q', head, 0x38)[0]:016X}")
    if oem == b"-FVE-FS-":
        return Probe(Filesystem.BITLOCKER, _dos_serial(head[0x43:0x47]))
    if oem == b"EXFAT   ":
        return Probe(Filesystem.EXFAT, _dos_serial(head[0x64:0x68]))
    if head[:4] == b"XFSB":
        return Probe(Filesystem.XFS, _uuid(head[32:48]))
    if head[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return Probe(Filesystem.SWAP, _uuid(head[1036:1052]))
    for found in (_lvm2(head), _ext(head), _fat(head)):
        if found is not None:
            return found
    if length >= BTRFS_SUPERBLOCK + HEAD_SIZE:
        sb = reader.read(start + BTRFS_SUPERBLOCK, HEAD_SIZE)
        if sb[0x40:0x48] == b"_BHRfS_M":
            return Probe(Filesystem.BTRFS, _uuid(sb[0x20:0x30]))
    return Probe(None)


def has_boot_sector_filesystem(head: bytes) -> bool:
    """True when LBA 0 is a file system's boot sector rather than an MBR (both end in 55 AA)."""
    return head[3:11] in (b"NTFS    ", b"ReFS\0\0\0\0", b"-FVE-FS-", b"EXFAT   ") or _fat(head) is not None
