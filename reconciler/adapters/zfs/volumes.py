"""The `reconciler:volumes` snapshot property: what a backup's volume inspection decided, per disk.

Written by the backup pipeline (`reconciler.apply.inspection`), read by observation (the next plan shows
the findings) and by the next backup (an incremental continues a disk only while its holes are
unchanged). Compact JSON, always within ZFS's user-property limit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.adapters.zfs.backups import BackupSnapshotRecord
from reconciler.adapters.zfs.base import MAX_USER_PROPERTY_BYTES
from reconciler.core.extents import Range, normalise
from reconciler.core.observed import VolumeFinding
from reconciler.core.thin import ThinVolume

FORMAT_VERSION = 1


@dataclass(frozen=True)
class DiskInspection:
    key: int
    holes: tuple[Range, ...] = ()
    findings: tuple[VolumeFinding, ...] = ()
    warnings: tuple[str, ...] = ()
    skipped: tuple[int, ...] = ()  # indices of the partitions not read
    # thin backups: free blocks of the volumes that are read. Kept apart from `holes`, whose digest decides
    # whether an incremental may continue: free space changes every backup, and core.thin handles it
    free: tuple[Range, ...] = ()
    thin: tuple[ThinVolume, ...] = ()

    @property
    def holes_digest(self) -> str:
        return holes_digest(self.holes)


def holes_digest(holes: Iterable[Range]) -> str:
    """A short fingerprint of a disk's holes: equal exactly when the same ranges are left unread."""
    text = json.dumps([[r.offset, r.length] for r in normalise(holes)], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


NO_HOLES_DIGEST = holes_digest(())


def encode(disks: Sequence[DiskInspection], limit: int = MAX_USER_PROPERTY_BYTES) -> str:
    """Compact JSON within ZFS's property limit: findings and warnings are trimmed (with a count of what
    was left out) before a disk's hole digest, which the next incremental depends on, is ever dropped."""
    def document(max_items: int | None) -> str:
        entries = []
        for disk in disks:
            items = [{"volume": f.volume, "excluded": f.excluded, "reason": f.reason} for f in disk.findings]
            warnings = list(disk.warnings)
            entry: dict[str, Any] = {"key": disk.key, "holes": disk.holes_digest,
                                     "skipped": sum(r.length for r in disk.holes)}
            if max_items is not None:
                left_out = max(0, len(items) - max_items) + max(0, len(warnings) - max_items)
                items, warnings = items[:max_items], [w[:200] for w in warnings[:max_items]]
                if left_out:
                    entry["leftOut"] = left_out
            if items:
                entry["findings"] = items
            thin = [{"volume": t.volume, "size": t.size, "allocated": t.allocated} if t.allocated is not None
                    else {"volume": t.volume, "size": t.size, "declined": (t.declined or "")[:200]}
                    for t in disk.thin]
            if thin and max_items != 0:
                entry["thin"] = thin[:max_items]
                entry["free"] = sum(r.length for r in disk.free)
            if warnings:
                entry["warnings"] = warnings
            entries.append(entry)
        return json.dumps({"v": FORMAT_VERSION, "disks": entries}, separators=(",", ":"), ensure_ascii=False)

    for max_items in (None, 16, 4, 1, 0):
        text = document(max_items)
        if len(text.encode()) <= limit:
            return text
    return text  # only hole digests left: ~70 bytes a disk, always within the limit for any real VM


@dataclass(frozen=True)
class RecordedDisk:
    """One disk as a backup recorded its inspection."""

    key: int
    holes_digest: str
    findings: tuple[VolumeFinding, ...] = ()


def decode(text: str | None, problems: list[str] | None = None) -> tuple[RecordedDisk, ...]:
    """Pure and tolerant: a missing or unreadable property is "nothing recorded" (plus a problem)."""
    if not text:
        return ()
    try:
        data = json.loads(text)
        disks = []
        for entry in data["disks"]:
            key = int(entry["key"])
            disks.append(RecordedDisk(
                key=key,
                holes_digest=str(entry.get("holes") or NO_HOLES_DIGEST),
                findings=tuple(VolumeFinding(key, str(f["volume"]), bool(f["excluded"]), str(f["reason"]))
                               for f in entry.get("findings", ())),
            ))
        return tuple(disks)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        if problems is not None:
            problems.append(f"reconciler:volumes is not a valid volume record ({exc}): {text[:80]!r}")
        return ()


def recorded_holes(snapshots: Iterable[BackupSnapshotRecord]) -> dict[int, str]:
    """Per disk key, the hole digest of the newest complete backup holding that disk (listed oldest first).
    A backup from before volume inspection recorded nothing: it read everything, so it has no holes."""
    digests: dict[int, str] = {}
    for snap in snapshots:
        if snap.complete:
            recorded = {d.key: d.holes_digest for d in decode(snap.volumes)}
            for disk in snap.disks:
                digests[disk.key] = recorded.get(disk.key, NO_HOLES_DIGEST)
    return digests


def volume_findings(snap: BackupSnapshotRecord) -> tuple[VolumeFinding, ...]:
    return tuple(f for disk in decode(snap.volumes) for f in disk.findings)
