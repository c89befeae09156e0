"""Thin backups in the inspection step (pure): free blocks of backed-up volumes become a disk's `free`
ranges, never its holes, so free space changing between backups never forces a full read; excluded
volumes' free space is not counted (they are holes already); the record says what was skipped."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from reconciler.adapters.inspect import inspect_image
from reconciler.adapters.inspect.allocation import AllocationMap, Declined, read_volume_allocations
from reconciler.adapters.inspect.reader import FileReader
from reconciler.apply.inspection import changed_holes, decide_disks, encode
from reconciler.core.extents import Range, intersect, normalise
from reconciler.lab.images import GiB, MiB, PartSpec, build_image, build_lab_disk
from reconciler.policy.model import Exclusions


def _inspected(path: Path, quiesced: bool = True):
    layout = inspect_image(path)
    with FileReader(path) as reader:
        return layout, read_volume_allocations(reader, layout, quiesced)


@pytest.fixture(scope="module")
def refs_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("thin-inspection") / "files.raw"
    build_lab_disk(path, "windows-ntfs-refs", GiB)
    return path


def test_free_blocks_of_read_volumes_are_free_ranges_not_holes(refs_disk: Path) -> None:
    layout, allocations = _inspected(refs_disk)
    thin = decide_disks([(2000, layout)], Exclusions(refs=True), allocations={2000: allocations}).of(2000)
    plain = decide_disks([(2000, layout)], Exclusions(refs=True)).of(2000)
    assert thin.holes == plain.holes and thin.holes_digest == plain.holes_digest
    assert sum(r.length for r in thin.free) > 300 * MiB  # the NTFS volumes are nearly empty
    assert not intersect(list(thin.free), list(thin.holes))  # the excluded ReFS volume is a hole only
    # only the NTFS volume has a reader (the EFI volume is FAT, the MSR raw); ReFS is excluded
    assert [v.volume for v in thin.thin] == ["partition 3 (Windows)"]


def test_free_space_changing_never_forces_a_full_read(tmp_path: Path) -> None:
    def disk(name: str, size: int) -> Path:
        files = (("data.bin", random.Random(name).randbytes(size)),)
        path = tmp_path / f"{name}.raw"
        build_image(path, 200 * MiB, "gpt", [PartSpec(150 * MiB, "ext4", files=files)], seed=1)
        return path

    before, after = _inspected(disk("small", MiB)), _inspected(disk("large", 40 * MiB))
    first = decide_disks([(2000, before[0])], Exclusions(), allocations={2000: before[1]})
    second = decide_disks([(2000, after[0])], Exclusions(), allocations={2000: after[1]})
    assert first.of(2000).free != second.of(2000).free
    assert not changed_holes(second, {2000: first.of(2000).holes_digest}, 2000)


def test_the_record_says_per_volume_what_was_allocated_and_skipped(refs_disk: Path) -> None:
    layout, allocations = _inspected(refs_disk)
    found = decide_disks([(2000, layout)], Exclusions(refs=True), allocations={2000: allocations})
    entry = json.loads(encode(found.disks))["disks"][0]
    assert entry["free"] == sum(r.length for r in found.of(2000).free)
    assert all(t["allocated"] < t["size"] for t in entry["thin"])


def test_ntfs_on_a_crash_consistent_snapshot_is_read_whole(refs_disk: Path) -> None:
    _, allocations = _inspected(refs_disk, quiesced=False)
    ntfs = [a for a in allocations.values() if isinstance(a, Declined)]
    assert ntfs and all("quiesced" in a.reason for a in ntfs)
    layout, _ = _inspected(refs_disk)
    found = decide_disks([(2000, layout)], Exclusions(refs=True), allocations={2000: allocations}).of(2000)
    ntfs_parts = [p for p in layout.partitions if str(p.filesystem) == "ntfs"]
    assert not intersect(list(found.free), normalise(Range(p.start, p.length) for p in ntfs_parts))
    assert any("read whole" in v.describe() for v in found.thin)
    assert not [a for a in allocations.values() if isinstance(a, AllocationMap) and a.filesystem == "ntfs"]
