"""The inspection step's decisions (pure, on layouts read from real images) and the `reconciler:volumes`
record that carries them from one backup to the next backup and to the next plan."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from reconciler.adapters.inspect import DeepFacts, inspect_image
from reconciler.adapters.observe import volumes_of, with_volumes
from reconciler.adapters.zfs.backups import (
    PREFIX,
    VOLUMES_PROPERTY,
    BackupSnapshotRecord,
    DiskRecord,
    RepositoryRecord,
    VmDatasetRecord,
    snapshot_record,
)
from reconciler.adapters.zfs.base import MAX_USER_PROPERTY_BYTES, SnapshotInfo
from reconciler.apply.inspection import (
    NO_HOLES_DIGEST,
    DiskInspection,
    Inspection,
    changed_holes,
    decide_disks,
    decode,
    decode_deep,
    encode,
    encode_deep,
    holes_digest,
    needs_deep,
    recorded_deep,
    recorded_holes,
    volume_findings,
)
from reconciler.core.extents import Range
from reconciler.core.observed import VmState, VolumeFinding
from reconciler.lab.images import build_lab_disk
from reconciler.policy.model import Exclusions

GiB = 1 << 30
REFS = Range(597688320, 475004928)  # partition 4 of the windows-ntfs-refs layout on 1 GiB


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inspection-images")
    built = {name: root / f"{name}.raw" for name in ("windows-ntfs-refs", "windows-dynamic")}
    for layout, path in built.items():
        build_lab_disk(path, layout, GiB)
    garbage = root / "garbage.raw"
    garbage.write_bytes(os.urandom(1 << 20))
    return {**built, "garbage": garbage}


def test_excluded_refs_volume_is_a_hole_and_a_finding(images) -> None:
    decided = decide_disks([(2000, inspect_image(images["windows-ntfs-refs"]))], Exclusions(refs=True))
    disk = decided.of(2000)
    assert disk.holes == (REFS,)
    assert disk.findings == (VolumeFinding(2000, "partition 4 (Data)", True, "refs"),)


def test_nothing_is_a_hole_when_the_policy_excludes_nothing(images) -> None:
    decided = decide_disks([(2000, inspect_image(images["windows-ntfs-refs"]))], Exclusions())
    assert decided.of(2000) == DiskInspection(2000)


def test_an_uninspectable_disk_is_read_whole_with_a_warning_and_the_others_still_decided(images) -> None:
    decided = decide_disks(
        [(2000, "cannot connect to nbd+unix://: refused"), (2001, inspect_image(images["windows-ntfs-refs"]))],
        Exclusions(refs=True),
    )
    assert decided.of(2000).holes == () and decided.of(2001).holes == (REFS,)
    assert decided.warnings == ("disk 2000: not inspected, backed up whole: cannot connect to nbd+unix://: refused",)


def test_a_garbage_table_excludes_nothing_and_says_why(images) -> None:
    decided = decide_disks([(2000, inspect_image(images["garbage"]))], Exclusions(refs=True, dynamic_disk=True))
    assert decided.of(2000).holes == ()
    assert decided.warnings  # shown as notes in the run output


def test_two_dynamic_disks_of_one_group_are_unsupported_whatever_the_policy(images) -> None:
    layout = inspect_image(images["windows-dynamic"])
    decided = decide_disks([(2000, layout), (2001, layout)], Exclusions())
    for key in (2000, 2001):
        assert ("partition 3 (LDM data partition)", False, "spanned") in [
            (f.volume, f.excluded, f.reason) for f in decided.of(key).findings]


def test_partition_tables_and_the_ldm_database_are_never_holes(images) -> None:
    layout = inspect_image(images["windows-dynamic"])
    holes = decide_disks([(2000, layout)], Exclusions(dynamic_disk=True)).of(2000).holes
    for start, length in layout.metadata:
        assert all(start + length <= h.offset or start >= h.end for h in holes)


# ---- the reconciler:volumes record -------------------------------------------------------------------
def test_the_record_round_trips_findings_and_hole_digests(images) -> None:
    decided = decide_disks([(2000, inspect_image(images["windows-ntfs-refs"]))], Exclusions(refs=True))
    (disk,) = decode(encode(decided.disks))
    assert disk.key == 2000 and disk.findings == decided.of(2000).findings
    assert disk.holes_digest == holes_digest([REFS])


def test_the_record_fits_a_zfs_property_however_many_volumes_are_found() -> None:
    many = tuple(VolumeFinding(2000 + d, f"partition {i} ({'x' * 60})", False, "duplicate-guid")
                 for d in range(16) for i in range(128))
    disks = tuple(DiskInspection(2000 + d, tuple(Range(i * 4096, 512) for i in range(1, 129)),
                                 tuple(f for f in many if f.disk == 2000 + d), ("w" * 500,) * 50)
                  for d in range(16))
    text = encode(disks)
    assert len(text.encode()) <= MAX_USER_PROPERTY_BYTES
    decoded = decode(text)
    assert [d.holes_digest for d in decoded] == [d.holes_digest for d in disks]  # digests are never dropped
    assert all(entry.get("leftOut") for entry in json.loads(text)["disks"])


@pytest.mark.parametrize("text", ["{", "[]", '{"disks": 3}', '{"disks": [{"nokey": 1}]}', "null"])
def test_an_unreadable_record_means_nothing_recorded_and_is_reported(text: str) -> None:
    problems: list[str] = []
    assert decode(text, problems) == ()
    assert problems and "reconciler:volumes" in problems[0]


def snapshot(name: str, volumes: str | None, *, complete: bool = True, keys: tuple[int, ...] = (2000,),
             dataset: str = "tank/vm") -> BackupSnapshotRecord:
    props = {PREFIX + "managed": "true", PREFIX + "status": "complete" if complete else "",
             PREFIX + "disks": json.dumps([{"key": k} for k in keys])}
    if volumes is not None:
        props[VOLUMES_PROPERTY] = volumes
    return snapshot_record(SnapshotInfo(name=f"{dataset}@{name}", dataset=dataset, created=0, userrefs=0,
                                        properties=props))


def test_the_zfs_record_carries_the_volumes_property() -> None:
    record = snapshot("reconciler-a", '{"v":1,"disks":[]}')
    assert record.volumes == '{"v":1,"disks":[]}'
    assert snapshot("reconciler-b", None).volumes is None


def test_an_incremental_continues_only_a_disk_whose_holes_are_unchanged() -> None:
    refs_excluded = Inspection((DiskInspection(2000, (REFS,)), DiskInspection(2001)))
    recorded = recorded_holes([
        snapshot("reconciler-old", None, keys=(2000, 2001)),  # before inspection existed: read everything
        snapshot("reconciler-new", encode(refs_excluded.disks), keys=(2000, 2001)),
        snapshot("reconciler-broken", encode(()), complete=False, keys=(2000, 2001)),
    ])
    assert not changed_holes(refs_excluded, recorded, 2000)
    assert changed_holes(Inspection((DiskInspection(2000),)), recorded, 2000)  # ReFS no longer excluded
    assert changed_holes(Inspection((DiskInspection(2001, (REFS,)),)), recorded, 2001)  # newly excluded


def test_a_backup_from_before_inspection_counts_as_having_no_holes() -> None:
    recorded = recorded_holes([snapshot("reconciler-old", None)])
    assert recorded == {2000: NO_HOLES_DIGEST}
    assert not changed_holes(Inspection((DiskInspection(2000),)), recorded, 2000)
    assert changed_holes(Inspection((DiskInspection(2000, (REFS,)),)), recorded, 2000)


# ---- observe: the next plan shows what the last backup found --------------------------------------------
def dataset(uuid: str) -> VmDatasetRecord:
    return VmDatasetRecord(dataset=f"tank/{uuid}", instance_uuid=uuid, vm_name=None, vm_id=None, connection=None,
                           policy=None, managed=True, retired=False, dirty_run_id=None, mountpoint=None, used=0,
                           referenced=0)


def test_observe_takes_the_findings_of_each_vms_newest_complete_backup() -> None:
    old = Inspection((DiskInspection(2000, (REFS,), (VolumeFinding(2000, "partition 4", True, "refs"),)),))
    new = Inspection((DiskInspection(2000, (REFS,), (VolumeFinding(2000, "partition 4", False, "spanned"),)),))
    record = RepositoryRecord("tank", True, (dataset("u1"), dataset("u2")), (
        snapshot("reconciler-1", encode(old.disks), dataset="tank/u1"),
        snapshot("reconciler-2", encode(new.disks), dataset="tank/u1"),
        snapshot("reconciler-3", encode(old.disks), dataset="tank/u1", complete=False),
        snapshot("reconciler-4", None, dataset="tank/u2"),
    ))
    found = volumes_of(record)
    assert found == {"u1": (VolumeFinding(2000, "partition 4", False, "spanned"),), "u2": ()}
    assert volume_findings(record.snapshots[1]) == found["u1"]
    vms = (VmState("vc", "vm-1", "u1", "a"), VmState("vc", "vm-2", "u2", "b"), VmState("vc", "vm-3", "u3", "c"))
    assert [vm.volumes for vm in with_volumes(vms, found)] == [found["u1"], (), ()]


def test_disk_records_are_untouched_by_the_volumes_property() -> None:
    record = snapshot("reconciler-1", "not json")
    assert record.disks == (DiskRecord(2000, None, None, None, None),)
    assert volume_findings(record) == ()


# ---- deep inspection facts (reconciler:deep) -----------------------------------------------------------
def test_deep_facts_from_an_earlier_backup_exclude_a_user_profile_disk_volume(images, tmp_path) -> None:
    rds = tmp_path / "rds.raw"
    build_lab_disk(rds, "rds-upd", GiB)
    layout = inspect_image(rds)
    (part,) = layout.partitions
    assert decide_disks([(2000, layout)], Exclusions(upd=True)).of(2000).holes == ()  # the headers cannot tell
    decided = decide_disks([(2000, layout)], Exclusions(upd=True), {2000: {1: DeepFacts(upd=True)}})
    assert decided.of(2000).holes == (Range(part.start, part.length),)
    assert decided.of(2000).skipped == (1,)
    assert [(f.reason, f.excluded) for f in decided.of(2000).findings] == [("upd", True)]


def test_deep_facts_round_trip_and_fit_a_zfs_property() -> None:
    facts = {2000: {1: DeepFacts(upd=True), 2: DeepFacts(mount_points=("C:", "/"))}, 2001: {3: DeepFacts(dedup=True)}}
    assert decode_deep(encode_deep(facts)) == facts
    crowded = {2000 + d: {p: DeepFacts(mount_points=tuple(f"D:\\{'m' * 40}{i}" for i in range(20)))
                          for p in range(1, 40)} for d in range(4)}
    text = encode_deep(crowded)
    assert len(text.encode()) <= MAX_USER_PROPERTY_BYTES
    assert set(decode_deep(text)) == set(crowded)


@pytest.mark.parametrize("text", [None, "", "{", '{"disks": []}', '{"disks": {"2000": [[1]]}}'])
def test_unreadable_deep_facts_are_none(text: str | None) -> None:
    assert decode_deep(text) == {}


def test_the_newest_complete_backup_with_deep_facts_is_used() -> None:
    def with_deep(name: str, facts: dict, complete: bool = True) -> BackupSnapshotRecord:
        record = snapshot(name, None, complete=complete)
        return dataclasses.replace(record, deep=encode_deep(facts) if facts else None)

    older, newer = {2000: {1: DeepFacts(upd=True)}}, {2000: {2: DeepFacts(dedup=True)}}
    assert recorded_deep([with_deep("a", older), with_deep("b", newer), with_deep("c", {}),
                          with_deep("d", older, complete=False)]) == newer
    nothing_found = dataclasses.replace(snapshot("e", None), deep=encode_deep({}))
    assert recorded_deep([with_deep("a", older), nothing_found]) == {}
    assert recorded_deep([with_deep("a", {})]) is None  # never deep-inspected


def test_only_content_based_exclusions_need_deep_inspection() -> None:
    assert not needs_deep(Exclusions(refs=True, dynamic_disk=True, lvm=True, bitlocker=True))
    assert needs_deep(Exclusions(upd=True)) and needs_deep(Exclusions(dedup=True))
    assert needs_deep(Exclusions(mount_points=("D:\\Temp",)))
