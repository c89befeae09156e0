"""The inspection step of a backup (DESIGN.md §5.3): which byte ranges of each disk are not read.

Before any disk is read, the partition tables and file-system headers of every disk are read from the
VMware snapshot over NBD (only header sectors), analysed across the VM's disks and judged under the
policy's `exclusions`. Each disk's holes — excluded or unsupported volumes, never partition tables, LDM
databases or gaps — are then left unread. Inspection never fails a backup: a disk it cannot read is
backed up whole, with a warning.

What was found is recorded on the ZFS snapshot as `reconciler:volumes` (compact JSON): the findings the
next plan shows as `excluded-volume` / `unsupported-volume`, and a digest of each disk's holes. An
incremental only continues a disk whose holes are the same as in its base backup; when they changed (a
volume newly excluded or no longer excluded, a disk repartitioned) that disk is read in full, because an
incremental would otherwise keep stale bytes in a now-excluded range or leave a now-included one empty.
Forcing a full read is simpler and safer than punching holes, which zfs-fuse and some ZFS versions do not
support; it costs one full read per policy change.

Thin backups (`skipFreeBlocks`): over the same connection, the allocation map of every volume with a
reader (ext2/3/4, NTFS, swap; `adapters.inspect.allocation`) is read too; the free blocks of volumes
that are backed up become each disk's `free` ranges, which `core.thin` turns into what to read and what
to punch. They are not holes: the hole digest, and so the "read in full" rule above, ignores them.

Optional deep inspection (libguestfs) runs after a backup that read a disk in full, and only when the
policy excludes what headers cannot show (`upd`, `dedup`, `mountPoints`): on the backup's images, never
the production VM. Its facts are recorded as `reconciler:deep`; the next backup decides with them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reconciler.adapters.inspect import DiskReport, InspectError, NbdReader, PartitionReport, analyse, inspect_disk
from reconciler.adapters.inspect.allocation import Allocation, AllocationMap, read_volume_allocations
from reconciler.adapters.inspect.model import DiskLayout
from reconciler.adapters.inspect.vm import DeepFacts
from reconciler.adapters.nbd.client import NbdClient, NbdClientError
from reconciler.adapters.nbd.server import Listen, NbdkitError, NbdkitServer
from reconciler.adapters.zfs.backups import PREFIX, VOLUMES_PROPERTY, BackupSnapshotRecord
from reconciler.adapters.zfs.base import MAX_USER_PROPERTY_BYTES
from reconciler.adapters.zfs.volumes import (  # noqa: F401 - re-exported for the pipeline and tests
    FORMAT_VERSION,
    NO_HOLES_DIGEST,
    DiskInspection,
    RecordedDisk,
    decode,
    encode,
    holes_digest,
    recorded_holes,
    volume_findings,
)
from reconciler.core.extents import Range, normalise
from reconciler.core.thin import ThinVolume
from reconciler.core.volumes import Verdict, findings
from reconciler.policy.model import Exclusions

DEEP_PROPERTY = PREFIX + "deep"
# disk key -> partition index -> what deep inspection (libguestfs) found on that volume
DeepByKey = Mapping[int, Mapping[int, DeepFacts]]
# disk key -> partition index -> its allocation map (or why it was not read)
AllocationsByKey = Mapping[int, Mapping[int, Allocation]]


@dataclass(frozen=True)
class Inspection:
    """What inspection decided for every disk of one VM."""

    disks: tuple[DiskInspection, ...]
    # what it was decided from: kept to decide again once deep inspection has learnt more
    layouts: tuple[tuple[int, DiskLayout | str], ...] = field(default=(), compare=False, repr=False)
    deep: DeepByKey | None = field(default=None, compare=False, repr=False)  # None: no deep facts recorded yet

    def of(self, key: int) -> DiskInspection:
        return next((d for d in self.disks if d.key == key), DiskInspection(key))

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(f"disk {d.key}: {w}" for d in self.disks for w in d.warnings)


def volume_name(report: PartitionReport) -> str:
    part = report.partition
    return f"partition {part.index} ({part.label})" if part.label else f"partition {part.index}"


# ---- pure: layouts → decisions ---------------------------------------------------------------------------
def decide_disks(
    layouts: Sequence[tuple[int, DiskLayout | str]], exclusions: Exclusions, deep: DeepByKey | None = None,
    allocations: AllocationsByKey | None = None,
) -> Inspection:
    """Pure: per disk key, its layout (or why it could not be read) → holes and findings.

    A disk that could not be inspected is read whole; the others are analysed together (duplicate GUIDs
    and LDM groups span disks). `deep` adds what deep inspection of an earlier backup found; `allocations`
    (thin backups) the free blocks of the volumes that are backed up."""
    readable = [(key, layout) for key, layout in layouts if isinstance(layout, DiskLayout)]
    by_index = {(index, part): facts for index, (key, _) in enumerate(readable)
                for part, facts in (deep or {}).get(key, {}).items()}
    reports: dict[int, DiskReport] = dict(zip(
        (key for key, _ in readable), analyse([layout for _, layout in readable], exclusions, by_index), strict=True
    ))
    disks = []
    for key, layout in layouts:
        report = reports.get(key)
        if report is None:
            disks.append(DiskInspection(key, warnings=(f"not inspected, backed up whole: {layout}",)))
            continue
        free, thin = _thin(report, (allocations or {}).get(key, {}))
        disks.append(DiskInspection(
            key=key,
            holes=tuple(normalise(report.holes, size=report.layout.size)),
            findings=findings(key, ((volume_name(p), p.verdict) for p in report.partitions)),
            warnings=report.warnings,
            skipped=tuple(p.partition.index for p in report.partitions if p.verdict.verdict is not Verdict.BACKUP),
            free=free,
            thin=thin,
        ))
    return Inspection(tuple(disks), tuple(layouts), deep)


def _thin(report: DiskReport, allocations: Mapping[int, Allocation]
          ) -> tuple[tuple[Range, ...], tuple[ThinVolume, ...]]:
    """Free ranges and per-volume findings of the volumes this backup reads (skipped ones are holes)."""
    free: list[Range] = []
    volumes = []
    for row in report.partitions:
        found = allocations.get(row.partition.index)
        if found is None or row.verdict.verdict is not Verdict.BACKUP:
            continue
        if isinstance(found, AllocationMap):
            free += found.free
            volumes.append(ThinVolume(volume_name(row), found.length, allocated=found.allocated_bytes))
        else:
            volumes.append(ThinVolume(volume_name(row), row.partition.length, declined=found.reason))
    return tuple(normalise(free, size=report.layout.size)), tuple(volumes)


# ---- I/O: read the headers over NBD ----------------------------------------------------------------------
SourceFor = Callable[[Path], Any]  # run dir -> an nbdkit source serving one disk of the VMware snapshot


def inspect_vm(disks: Sequence[tuple[int, SourceFor]], exclusions: Exclusions, run_dir_for: Callable[[int], Path],
               deep: DeepByKey | None = None, thin: bool = False, quiesced: bool = True) -> Inspection:
    """Read each disk's headers (and, `thin`, its volumes' allocation maps) from the snapshot's NBD export
    (the same nbdkit source the copy uses) and decide. Never raises for what a disk contains: a failure
    leaves that disk to be read whole."""
    layouts: list[tuple[int, DiskLayout | str]] = []
    allocations: dict[int, dict[int, Allocation]] = {}
    for key, source_for in disks:
        run_dir = run_dir_for(key)
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            server = NbdkitServer(source_for(run_dir), Listen(socket=run_dir / "nbd.sock"),
                                  log_path=run_dir / "nbdkit.log", exit_with_parent=True)
            with server, NbdClient.open(server.uri) as client:
                reader = NbdReader(client.handle)
                layout = inspect_disk(reader, f"disk {key}")
                layouts.append((key, layout))
                if thin:
                    allocations[key] = read_volume_allocations(reader, layout, quiesced)
        except (InspectError, NbdClientError, NbdkitError, OSError) as exc:
            layouts.append((key, str(exc)))
        except Exception as exc:  # a parser bug on odd headers must not fail the backup
            layouts.append((key, f"inspection failed ({type(exc).__name__}: {exc})"))
        finally:
            for leftover in ("cookie", "password", "nbdkit.log"):
                (run_dir / leftover).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # something unexpected left behind: kept for a post-mortem
                run_dir.rmdir()
    return decide_disks(layouts, exclusions, deep, allocations)


def changed_holes(inspection: Inspection, recorded: Mapping[int, str], key: int) -> bool:
    """True when this disk's holes differ from its base backup's: it must then be read in full."""
    return inspection.of(key).holes_digest != recorded.get(key, NO_HOLES_DIGEST)


# ---- optional deep inspection (libguestfs) of the backup image -----------------------------------------
def needs_deep(exclusions: Exclusions) -> bool:
    """Only these exclusions depend on what is inside a volume; the rest are decided from the headers."""
    return exclusions.upd or exclusions.dedup or bool(exclusions.mount_points)


def encode_deep(facts: DeepByKey, limit: int = MAX_USER_PROPERTY_BYTES) -> str:
    """Compact JSON: `{"v": 1, "disks": {"2000": [[partition, upd, dedup, [mount points]], …]}}`."""
    def document(max_mounts: int | None) -> str:
        return json.dumps({"v": FORMAT_VERSION, "disks": {
            str(key): [[part, f.upd, f.dedup, list(f.mount_points[:max_mounts])] for part, f in sorted(parts.items())]
            for key, parts in sorted(facts.items())}}, separators=(",", ":"), ensure_ascii=False)

    for max_mounts in (None, 4, 1, 0):
        text = document(max_mounts)
        if len(text.encode()) <= limit:
            break
    return text


def decode_deep(text: str | None) -> dict[int, dict[int, DeepFacts]]:
    """Tolerant: anything unreadable is "no deep facts" (the volume is then judged on its headers)."""
    if not text:
        return {}
    try:
        data = json.loads(text)
        return {int(key): {int(part): DeepFacts(bool(upd), bool(dedup), tuple(map(str, mounts)))
                           for part, upd, dedup, mounts in parts}
                for key, parts in data["disks"].items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def recorded_deep(snapshots: Iterable[BackupSnapshotRecord]) -> dict[int, dict[int, DeepFacts]] | None:
    """The deep facts of the newest complete backup that has them (snapshots listed oldest first); None
    when no backup was deep-inspected yet."""
    found: dict[int, dict[int, DeepFacts]] | None = None
    for snap in snapshots:
        if snap.complete and snap.deep is not None:
            found = decode_deep(snap.deep)  # finding nothing is a result too: older facts are outdated
    return found


def deep_inspect(images: Sequence[tuple[int, Path]], skipped: Mapping[int, Sequence[int]],
                 previous: DeepByKey) -> tuple[dict[int, dict[int, DeepFacts]], tuple[str, ...]]:
    """Deep facts of the backup's images, read-only (never the production VM).

    A volume this backup skipped is a hole in the image, so nothing can be learnt from it: its facts are
    carried over from `previous` (or it would be read again next time, and skipped again after that).
    Raises InspectError when libguestfs cannot run."""
    from reconciler.adapters.inspect.deep import Appliance  # libguestfs only where it is wanted

    with Appliance([path for _, path in images]) as appliance:
        report = appliance.inspect()
    found: dict[int, dict[int, DeepFacts]] = {}
    for index, (key, _) in enumerate(images):
        parts = {part: facts for (disk, part), facts in report.volumes.items() if disk == index}
        for part in skipped.get(key, ()):
            if part in previous.get(key, {}):
                parts[part] = previous[key][part]
        if parts:
            found[key] = parts
    return found, report.warnings


def deep_record(inspection: Inspection, exclusions: Exclusions, images: Sequence[tuple[int, Path]]
                ) -> tuple[dict[str, str], tuple[str, ...]]:
    """After a backup: deep-inspect its images and return the snapshot properties to set — the deep facts
    (the next backup's holes come from them) and the volume findings decided again with them (the next
    plan shows them) — and deep inspection's warnings. The recorded hole digests stay those of what this
    backup really skipped."""
    facts, warnings = deep_inspect(images, {d.key: d.skipped for d in inspection.disks}, inspection.deep or {})
    again = decide_disks(inspection.layouts, exclusions, facts)
    updated = Inspection(tuple(replace(d, findings=again.of(d.key).findings) for d in inspection.disks))
    return {DEEP_PROPERTY: encode_deep(facts), VOLUMES_PROPERTY: encode(updated.disks)}, warnings
