"""The disks of one VM together: duplicate GUIDs/serials and multi-disk LDM groups, then verdicts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from reconciler.adapters.inspect.model import DYNAMIC_KINDS, DiskLayout, Partition, PartitionKind
from reconciler.core.volumes import NO_EXCLUSIONS, VolumeFacts, VolumeVerdict, decide, holes
from reconciler.policy.model import Exclusions


@dataclass(frozen=True)
class DeepFacts:
    """What deep inspection (libguestfs) learnt about one volume."""

    upd: bool = False
    dedup: bool = False
    mount_points: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartitionReport:
    partition: Partition
    facts: VolumeFacts
    verdict: VolumeVerdict


@dataclass(frozen=True)
class DiskReport:
    layout: DiskLayout
    partitions: tuple[PartitionReport, ...]
    holes: tuple[tuple[int, int], ...]  # (start, length) of the byte ranges a backup does not read
    warnings: tuple[str, ...] = field(default=())


# (disk index, partition index) -> deep facts
DeepResults = Mapping[tuple[int, int], DeepFacts]


def _duplicates(layouts: Sequence[DiskLayout]) -> dict[tuple[int, int], str]:
    """Later occurrences of a GPT partition GUID or a volume serial, with what they duplicate."""
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    found: dict[tuple[int, int], str] = {}
    for disk, layout in enumerate(layouts):
        for part in layout.partitions:
            keys = [("GPT partition GUID", part.guid)]
            if part.filesystem is not None:
                keys.append((f"{part.filesystem} volume serial", part.serial))
            for what, value in keys:
                if not value or not value.strip("0-"):
                    continue
                first = seen.setdefault((what, value.lower()), (disk, part.index))
                if first != (disk, part.index) and (disk, part.index) not in found:
                    found[(disk, part.index)] = (
                        f"partition {part.index} has the same {what} ({value}) as disk {first[0]} partition {first[1]}"
                    )
    return found


def _multi_disk_groups(layouts: Sequence[DiskLayout]) -> set[str]:
    groups = Counter(layout.ldm.disk_group_guid for layout in layouts if layout.ldm is not None)
    return {group for group, disks in groups.items() if disks > 1}


def analyse(
    layouts: Sequence[DiskLayout],
    exclusions: Exclusions = NO_EXCLUSIONS,
    deep: DeepResults | None = None,
) -> tuple[DiskReport, ...]:
    """Verdicts for every partition of every disk of one VM, and each disk's holes."""
    deep = deep or {}
    duplicates = _duplicates(layouts)
    spanning_groups = _multi_disk_groups(layouts)
    reports = []
    for disk, layout in enumerate(layouts):
        in_group = layout.ldm is not None and layout.ldm.disk_group_guid in spanning_groups
        rows = []
        for part in layout.partitions:
            extra = deep.get((disk, part.index), DeepFacts())
            dynamic = part.type in DYNAMIC_KINDS
            facts = VolumeFacts(
                start=part.start,
                length=part.length,
                filesystem=part.filesystem,
                dynamic=dynamic,
                spanned=dynamic and in_group,
                storage_spaces=part.type is PartitionKind.STORAGE_SPACES,
                duplicate=(disk, part.index) in duplicates,
                upd=extra.upd,
                dedup=extra.dedup,
                mount_points=extra.mount_points,
            )
            rows.append(PartitionReport(part, facts, decide(facts, exclusions)))
        warnings = list(layout.warnings) + [message for (d, _), message in sorted(duplicates.items()) if d == disk]
        if in_group:
            warnings.append("dynamic disk shares its LDM disk group with another disk of the VM")
        reports.append(
            DiskReport(
                layout=layout,
                partitions=tuple(rows),
                holes=tuple(holes(((r.facts, r.verdict) for r in rows), keep=layout.metadata)),
                warnings=tuple(warnings),
            )
        )
    return tuple(reports)
