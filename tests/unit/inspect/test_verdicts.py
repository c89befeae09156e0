"""The pure verdict rules (reconciler.core.volumes): a table of facts × exclusions → verdict, and holes."""

from __future__ import annotations

import pytest

from reconciler.core.observed import VolumeFinding
from reconciler.core.volumes import (
    Filesystem,
    Reason,
    Verdict,
    VolumeFacts,
    VolumeVerdict,
    decide,
    findings,
    holes,
)
from reconciler.policy.model import Exclusions

EVERYTHING = Exclusions(
    refs=True, dynamic_disk=True, upd=True, lvm=True, bitlocker=True, dedup=True, mount_points=("D:",)
)
NTFS = VolumeFacts(0, 100, Filesystem.NTFS)


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (VolumeFacts(0, 100, Filesystem.REFS), Reason.REFS),
        (VolumeFacts(0, 100, Filesystem.NTFS, dynamic=True), Reason.DYNAMIC_DISK),
        (VolumeFacts(0, 100, Filesystem.NTFS, upd=True), Reason.UPD),
        (VolumeFacts(0, 100, Filesystem.LVM2), Reason.LVM),
        (VolumeFacts(0, 100, Filesystem.BITLOCKER), Reason.BITLOCKER),
        (VolumeFacts(0, 100, Filesystem.NTFS, dedup=True), Reason.DEDUP),
        (VolumeFacts(0, 100, Filesystem.NTFS, mount_points=("D:",)), Reason.MOUNT_POINT),
    ],
)
def test_excludable_volumes_are_backed_up_unless_the_policy_excludes_them(facts, reason):
    assert decide(facts, Exclusions()) == VolumeVerdict(Verdict.BACKUP)
    assert decide(facts, EVERYTHING) == VolumeVerdict(Verdict.EXCLUDE, reason)


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (VolumeFacts(0, 100, None, storage_spaces=True), Reason.STORAGE_SPACES),
        (VolumeFacts(0, 100, Filesystem.NTFS, dynamic=True, spanned=True), Reason.SPANNED),
        (VolumeFacts(0, 100, Filesystem.NTFS, duplicate=True), Reason.DUPLICATE_GUID),
    ],
)
def test_unsupported_volumes_are_skipped_whatever_the_policy_says(facts, reason):
    for exclusions in (Exclusions(), EVERYTHING):
        assert decide(facts, exclusions) == VolumeVerdict(Verdict.UNSUPPORTED, reason)


def test_unsupported_wins_over_an_exclusion_that_also_matches():
    facts = VolumeFacts(0, 100, Filesystem.REFS, duplicate=True)
    assert decide(facts, Exclusions(refs=True)).verdict is Verdict.UNSUPPORTED


def test_an_exclusion_only_applies_to_its_own_kind_of_volume():
    assert decide(NTFS, Exclusions(refs=True, lvm=True, bitlocker=True)) == VolumeVerdict(Verdict.BACKUP)


@pytest.mark.parametrize(
    ("volume", "excluded"),
    [("D:", "d:\\"), ("D:", "D:/"), ("/home", "/home/"), ("C:/Users", "c:\\Users")],
)
def test_mount_point_exclusions_ignore_drive_letter_case_and_trailing_separators(volume, excluded):
    facts = VolumeFacts(0, 100, Filesystem.NTFS, mount_points=(volume,))
    assert decide(facts, Exclusions(mount_points=(excluded,))).reason is Reason.MOUNT_POINT


def test_a_mount_point_exclusion_does_not_match_a_parent_or_a_sibling():
    facts = VolumeFacts(0, 100, Filesystem.EXT4, mount_points=("/home",))
    assert decide(facts, Exclusions(mount_points=("/", "/home2"))).verdict is Verdict.BACKUP


def _skip(start: int, length: int) -> tuple[VolumeFacts, VolumeVerdict]:
    return VolumeFacts(start, length), VolumeVerdict(Verdict.EXCLUDE, Reason.REFS)


def _keep(start: int, length: int) -> tuple[VolumeFacts, VolumeVerdict]:
    return VolumeFacts(start, length), VolumeVerdict(Verdict.BACKUP)


def test_holes_are_the_skipped_partitions_only():
    assert holes([_keep(0, 10), _skip(10, 10), _keep(30, 5), _skip(40, 10)]) == [(10, 10), (40, 10)]


def test_adjacent_skipped_partitions_merge_into_one_hole():
    assert holes([_skip(20, 10), _skip(10, 10)]) == [(10, 20)]


def test_metadata_inside_a_skipped_partition_is_still_read():
    # an MBR dynamic disk's 0x42 partition covers the LDM database at the disk's end
    assert holes([_skip(0, 100)], keep=[(90, 10), (0, 1)]) == [(1, 89)]


def test_no_holes_when_everything_is_backed_up():
    assert holes([_keep(0, 10), _keep(10, 10)]) == []


def test_empty_partitions_make_no_hole():
    assert holes([_skip(10, 0)]) == []


def test_findings_list_only_the_volumes_a_backup_skips_for_the_plan():
    verdicts = [
        ("partition 1", VolumeVerdict(Verdict.BACKUP)),
        ("D:", VolumeVerdict(Verdict.EXCLUDE, Reason.REFS)),
        ("partition 3", VolumeVerdict(Verdict.UNSUPPORTED, Reason.SPANNED)),
    ]
    assert findings(1, verdicts) == (
        VolumeFinding(1, "D:", excluded=True, reason="refs"),
        VolumeFinding(1, "partition 3", excluded=False, reason="spanned"),
    )
