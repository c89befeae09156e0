"""The disks of one VM together: verdicts and holes on real images, for every case of issue 6."""

from __future__ import annotations

import subprocess
import uuid

from reconciler.adapters.inspect import DeepFacts, PartitionKind, analyse, inspect_image
from reconciler.core.volumes import Filesystem, Reason, Verdict
from reconciler.lab.images import (
    STORAGE_SPACES,
    GiB,
    MiB,
    PartSpec,
    build_lab_disk,
)
from reconciler.policy.model import Exclusions

GROUP = str(uuid.UUID(int=42, version=4))


def _verdicts(report) -> list[tuple[str, str | None]]:
    return [(str(r.verdict.verdict), r.verdict.reason and str(r.verdict.reason)) for r in report.partitions]


def test_ntfs_and_refs_vm_backs_up_ntfs_and_holes_refs_when_excluded(tmp_path):
    build_lab_disk(tmp_path / "d.img", "windows-ntfs-refs")
    layout = inspect_image(tmp_path / "d.img")
    [report] = analyse([layout], Exclusions(refs=True))
    assert _verdicts(report) == [("backup", None)] * 3 + [("exclude", "refs")]
    refs = layout.partitions[3]
    assert report.holes == ((refs.start, refs.length),)


def test_without_exclusions_every_volume_of_a_plain_vm_is_backed_up_and_nothing_is_a_hole(tmp_path):
    build_lab_disk(tmp_path / "d.img", "windows-ntfs-refs")
    [report] = analyse([inspect_image(tmp_path / "d.img")])
    assert {r.verdict.verdict for r in report.partitions} == {Verdict.BACKUP}
    assert report.holes == ()


def test_a_gpt_dynamic_disk_is_excludable_and_its_ldm_database_is_never_a_hole(tmp_path):
    build_lab_disk(tmp_path / "dyn.img", "windows-dynamic")
    layout = inspect_image(tmp_path / "dyn.img")
    assert [p.type for p in layout.partitions] == [
        PartitionKind.LDM_METADATA,
        PartitionKind.MSR,
        PartitionKind.LDM_DATA,
    ]
    assert layout.partitions[2].filesystem is Filesystem.NTFS  # the simple volume inside
    assert layout.ldm is not None and layout.ldm.database == (MiB, MiB)
    [kept] = analyse([layout])
    assert _verdicts(kept) == [("backup", None)] * 3
    [report] = analyse([layout], Exclusions(dynamic_disk=True))
    assert _verdicts(report) == [("backup", None), ("backup", None), ("exclude", "dynamic-disk")]
    data = layout.partitions[2]
    assert report.holes == ((data.start, data.length),)


def test_an_mbr_dynamic_disk_keeps_its_ldm_database_inside_the_excluded_0x42_partition(make_image):
    size = GiB
    # like Windows: the 0x42 partition runs to the end of the disk, over the LDM database (last MiB)
    path = make_image("mbr-dyn.img", size, "mbr", [PartSpec(size - MiB, "ldm")], ldm_disk_group=GROUP)
    layout = inspect_image(path)
    [part] = layout.partitions
    assert (part.type, part.type_id, part.filesystem) == (PartitionKind.LDM, "0x42", Filesystem.NTFS)
    assert layout.ldm.disk_group_guid == GROUP
    [report] = analyse([layout], Exclusions(dynamic_disk=True))
    assert _verdicts(report) == [("exclude", "dynamic-disk")]
    assert report.holes == ((MiB, size - 2 * MiB),)


def test_two_dynamic_disks_of_one_disk_group_are_spanned_and_unsupported(make_image):
    specs = [PartSpec(GiB - MiB, "ldm")]
    first = inspect_image(make_image("a.img", GiB, "mbr", specs, ldm_disk_group=GROUP))
    second = inspect_image(make_image("b.img", GiB, "mbr", specs, ldm_disk_group=GROUP))
    other = inspect_image(make_image("c.img", GiB, "mbr", specs))  # its own disk group
    reports = analyse([first, second, other], Exclusions(dynamic_disk=False))
    assert [_verdicts(r) for r in reports] == [
        [("unsupported", "spanned")],
        [("unsupported", "spanned")],
        [("backup", None)],
    ]
    assert "shares its LDM disk group" in reports[0].warnings[-1]


def test_a_storage_spaces_member_is_unsupported_even_with_no_exclusions(make_image):
    path = make_image("ss.img", GiB, "gpt", [PartSpec(512 * MiB, "raw", type_guid=STORAGE_SPACES)])
    [report] = analyse([inspect_image(path)])
    assert report.partitions[0].partition.type is PartitionKind.STORAGE_SPACES
    assert _verdicts(report) == [("unsupported", "storage-spaces")]


def test_a_cloned_disk_duplicates_guids_and_serials_and_only_the_first_copy_is_backed_up(tmp_path):
    build_lab_disk(tmp_path / "orig.img", "windows-ntfs")
    subprocess.run(["cp", "--sparse=always", tmp_path / "orig.img", tmp_path / "clone.img"], check=True)
    original, clone = analyse([inspect_image(tmp_path / "orig.img"), inspect_image(tmp_path / "clone.img")])
    assert {r.verdict.verdict for r in original.partitions} == {Verdict.BACKUP}
    assert _verdicts(clone) == [("unsupported", "duplicate-guid")] * 4
    assert "same GPT partition GUID" in clone.warnings[0]
    assert len(clone.holes) == 1  # the four partitions are adjacent: one hole, GPT kept
    assert clone.holes[0][0] == MiB


def test_equal_volume_serials_on_mbr_disks_are_duplicates_too(make_image):
    spec = [PartSpec(64 * MiB, "ntfs")]
    first = inspect_image(make_image("a.img", 128 * MiB, "mbr", spec, seed=1))
    second = inspect_image(make_image("b.img", 128 * MiB, "mbr", spec, seed=1))
    assert first.partitions[0].serial == second.partitions[0].serial
    reports = analyse([first, second])
    assert _verdicts(reports[1]) == [("unsupported", "duplicate-guid")]
    assert "ntfs volume serial" in reports[1].warnings[0]


def test_lvm_and_bitlocker_volumes_are_excluded_only_by_their_own_flag(make_image):
    specs = [PartSpec(64 * MiB, "lvm"), PartSpec(64 * MiB, "bitlocker"), PartSpec(64 * MiB, "ext4")]
    layout = inspect_image(make_image("mixed.img", GiB, "gpt", specs))
    [lvm_only] = analyse([layout], Exclusions(lvm=True))
    assert _verdicts(lvm_only) == [("exclude", "lvm"), ("backup", None), ("backup", None)]
    [both] = analyse([layout], Exclusions(lvm=True, bitlocker=True))
    assert _verdicts(both) == [("exclude", "lvm"), ("exclude", "bitlocker"), ("backup", None)]
    assert both.holes == ((MiB, 128 * MiB),)


def test_deep_facts_drive_upd_dedup_and_mount_point_verdicts(tmp_path):
    build_lab_disk(tmp_path / "w.img", "windows-ntfs")
    layout = inspect_image(tmp_path / "w.img")
    deep = {
        (0, 3): DeepFacts(dedup=True, mount_points=("C:",)),
        (0, 4): DeepFacts(upd=True, mount_points=("E:",)),
    }
    [report] = analyse([layout], Exclusions(upd=True, dedup=True), deep)
    assert _verdicts(report)[2:] == [("exclude", "dedup"), ("exclude", "upd")]
    [report] = analyse([layout], Exclusions(mount_points=("e:\\",)), deep)
    assert _verdicts(report)[2:] == [("backup", None), ("exclude", "mount-point")]
    assert report.partitions[3].verdict.reason is Reason.MOUNT_POINT
