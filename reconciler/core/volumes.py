"""Which volumes of a VM's disks a backup reads: pure verdicts from inspected facts and a policy's exclusions.

A verdict is one of:

* `backup`       the volume's bytes are read;
* `exclude`      the policy's `exclusions` chose to skip it: its byte range stays a hole in the image;
* `unsupported`  skipped whatever the policy says, because a per-disk image of it would not restore
  to a usable volume, or because its identity is ambiguous:
    - `storage-spaces`: a Storage Spaces pool member holds slabs of virtual disks striped across
      several physical disks, in a format we cannot interpret;
    - `spanned`: the disk is one of several dynamic (LDM) disks of the same disk group, so its
      volumes may span, stripe or mirror across disks; the headers alone cannot prove they do not;
    - `duplicate-guid`: the partition GUID or volume serial is also on an earlier disk of the VM (a
      cloned disk); Windows keeps only the first one online, so the first occurrence is backed up and
      the later ones are not.

Excludable (backed up unless the policy excludes them): `refs`, `dynamic-disk` (a lone dynamic disk:
its simple volumes are plain byte ranges), `upd`, `lvm`, `bitlocker` (copied encrypted), `dedup`, and
`mount-point` (a volume mounted at one of `exclusions.mount_points`).

Partition tables, LDM databases and the gaps between partitions are never holes: only the byte range
of a skipped partition is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from reconciler.core.observed import VolumeFinding
from reconciler.policy.model import Exclusions


class Filesystem(StrEnum):
    NTFS = "ntfs"
    REFS = "refs"
    FAT12 = "fat12"
    FAT16 = "fat16"
    FAT32 = "fat32"
    EXFAT = "exfat"
    EXT2 = "ext2"
    EXT3 = "ext3"
    EXT4 = "ext4"
    XFS = "xfs"
    BTRFS = "btrfs"
    SWAP = "swap"
    LVM2 = "lvm2"
    BITLOCKER = "bitlocker"


class Verdict(StrEnum):
    BACKUP = "backup"
    EXCLUDE = "exclude"
    UNSUPPORTED = "unsupported"


class Reason(StrEnum):
    REFS = "refs"
    DYNAMIC_DISK = "dynamic-disk"
    UPD = "upd"
    LVM = "lvm"
    BITLOCKER = "bitlocker"
    DEDUP = "dedup"
    MOUNT_POINT = "mount-point"
    STORAGE_SPACES = "storage-spaces"
    DUPLICATE_GUID = "duplicate-guid"
    SPANNED = "spanned"


NO_EXCLUSIONS = Exclusions()
UNSUPPORTED_REASONS = frozenset({Reason.STORAGE_SPACES, Reason.SPANNED, Reason.DUPLICATE_GUID})


@dataclass(frozen=True)
class VolumeFacts:
    """What inspection learnt about one partition; `start`/`length` are byte offsets on its disk."""

    start: int
    length: int
    filesystem: Filesystem | None = None
    dynamic: bool = False  # on an LDM dynamic disk
    spanned: bool = False  # on one of several dynamic disks of one disk group
    storage_spaces: bool = False
    duplicate: bool = False  # GUID or serial already seen on an earlier disk of the VM
    upd: bool = False  # holds User Profile Disks (UVHD-*.vhdx); known only from deep inspection
    dedup: bool = False  # Windows deduplication enabled; known only from deep inspection
    mount_points: tuple[str, ...] = ()  # drive letters / mount paths; known only from deep inspection


@dataclass(frozen=True)
class VolumeVerdict:
    verdict: Verdict
    reason: Reason | None = None  # None exactly when the verdict is `backup`


def _unsupported_reason(facts: VolumeFacts) -> Reason | None:
    if facts.storage_spaces:
        return Reason.STORAGE_SPACES
    if facts.spanned:
        return Reason.SPANNED
    if facts.duplicate:
        return Reason.DUPLICATE_GUID
    return None


def _normalise_mount_point(path: str) -> str:
    """`D:`, `d:\\` and `D:/` are one drive; `/home/` and `/home` one directory."""
    path = path.replace("\\", "/")
    if len(path) >= 2 and path[1] == ":":
        path = path[0].upper() + path[1:]
    return path.rstrip("/") or "/"


def _excluded_reason(facts: VolumeFacts, exclusions: Exclusions) -> Reason | None:
    excluded_mounts = {_normalise_mount_point(m) for m in exclusions.mount_points}
    # The first matching rule names the reason; the order only matters for display.
    rules = (
        (exclusions.refs and facts.filesystem is Filesystem.REFS, Reason.REFS),
        (exclusions.dynamic_disk and facts.dynamic, Reason.DYNAMIC_DISK),
        (exclusions.bitlocker and facts.filesystem is Filesystem.BITLOCKER, Reason.BITLOCKER),
        (exclusions.lvm and facts.filesystem is Filesystem.LVM2, Reason.LVM),
        (exclusions.upd and facts.upd, Reason.UPD),
        (exclusions.dedup and facts.dedup, Reason.DEDUP),
        (any(_normalise_mount_point(m) in excluded_mounts for m in facts.mount_points), Reason.MOUNT_POINT),
    )
    return next((reason for matches, reason in rules if matches), None)


def decide(facts: VolumeFacts, exclusions: Exclusions = NO_EXCLUSIONS) -> VolumeVerdict:
    """The verdict for one partition: unsupported reasons win over the policy, then the policy decides."""
    if (reason := _unsupported_reason(facts)) is not None:
        return VolumeVerdict(Verdict.UNSUPPORTED, reason)
    if (reason := _excluded_reason(facts, exclusions)) is not None:
        return VolumeVerdict(Verdict.EXCLUDE, reason)
    return VolumeVerdict(Verdict.BACKUP)


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted `(start, end)` ranges, overlapping or touching ones merged."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _subtract(ranges: list[tuple[int, int]], keep: list[tuple[int, int]]) -> list[tuple[int, int]]:
    result = []
    for start, end in ranges:
        cursor = start
        for keep_start, keep_end in keep:
            if keep_end <= cursor or keep_start >= end:
                continue
            if keep_start > cursor:
                result.append((cursor, keep_start))
            cursor = max(cursor, keep_end)
        if cursor < end:
            result.append((cursor, end))
    return result


def holes(
    volumes: Iterable[tuple[VolumeFacts, VolumeVerdict]], keep: Iterable[tuple[int, int]] = ()
) -> list[tuple[int, int]]:
    """Byte ranges `(start, length)` of one disk NOT to read, sorted and merged.

    `keep` lists `(start, length)` ranges that are read even inside a skipped partition: partition
    tables, EBRs and the LDM database an MBR dynamic partition covers.
    """
    skipped = _merge(
        (facts.start, facts.start + facts.length) for facts, verdict in volumes if verdict.verdict is not Verdict.BACKUP
    )
    kept = _merge((start, start + length) for start, length in keep)
    return [(start, end - start) for start, end in _subtract(skipped, kept)]


def findings(disk: int, verdicts: Iterable[tuple[str, VolumeVerdict]]) -> tuple[VolumeFinding, ...]:
    """What the plan shows for one disk: a finding per volume that is not backed up.

    `verdicts` pairs a display name for the volume ("partition 2", "D:", a GUID) with its verdict.
    """
    return tuple(
        VolumeFinding(disk, volume, verdict.verdict is Verdict.EXCLUDE, str(verdict.reason))
        for volume, verdict in verdicts
        if verdict.verdict is not Verdict.BACKUP
    )
