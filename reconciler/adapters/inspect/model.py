"""What the pure reader finds on a disk: frozen values, byte offsets throughout."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reconciler.core.volumes import Filesystem


class InspectError(Exception):
    """The image cannot be inspected at all (missing, empty, unreadable); message is for the user."""


class PartitionTable(StrEnum):
    GPT = "gpt"
    MBR = "mbr"
    NONE = "none"


class PartitionKind(StrEnum):
    """The role a partition's type code declares (the on-disk contents are in `Partition.filesystem`)."""

    EFI = "efi"
    MSR = "msr"
    RECOVERY = "recovery"
    BASIC_DATA = "basic-data"
    LINUX = "linux"
    LINUX_SWAP = "linux-swap"
    LINUX_LVM = "linux-lvm"
    LDM = "ldm"  # MBR type 0x42: the whole dynamic disk
    LDM_METADATA = "ldm-metadata"
    LDM_DATA = "ldm-data"
    STORAGE_SPACES = "storage-spaces"
    WHOLE_DISK = "whole-disk"  # no partition table: a file system at LBA 0
    OTHER = "other"


DYNAMIC_KINDS = frozenset({PartitionKind.LDM, PartitionKind.LDM_DATA})


@dataclass(frozen=True)
class Partition:
    index: int  # 1-based; MBR logical partitions are 5, 6, … as Linux numbers them
    start: int
    length: int
    type: PartitionKind
    type_id: str  # the raw type: a GPT type GUID, or "0x07" for MBR
    filesystem: Filesystem | None = None
    guid: str | None = None  # GPT unique partition GUID
    serial: str | None = None  # volume serial number / file system UUID / LVM PV UUID
    label: str | None = None  # GPT partition name
    warnings: tuple[str, ...] = ()

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class LdmHeader:
    """The PRIVHEAD of an LDM dynamic disk: which disk group it belongs to."""

    disk_guid: str
    disk_group_guid: str
    disk_group_name: str
    database: tuple[int, int]  # (start, length) in bytes of the LDM database, kept in every backup


@dataclass(frozen=True)
class DiskLayout:
    path: str
    size: int
    table: PartitionTable
    partitions: tuple[Partition, ...] = ()
    metadata: tuple[tuple[int, int], ...] = ()  # (start, length) of tables, EBRs, LDM database
    disk_guid: str | None = None
    sector_size: int = 512
    ldm: LdmHeader | None = None
    warnings: tuple[str, ...] = ()
