"""Parsers of `zfs` output, on captured zfs-fuse output and OpenZFS samples of its documented format."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.adapters.zfs import parse
from reconciler.adapters.zfs.backups import BackupSnapshotRecord, recognise_unlabelled, snapshot_record
from reconciler.adapters.zfs.base import SnapshotInfo, ZfsError, check_property, split_snapshot_name
from reconciler.adapters.zfs.cli import _chunks

DATA = Path(__file__).parent / "data"
VM = "5012a3c4-0000-4000-8000-00000000abcd"
USER_PROPS = ["reconciler:managed", "reconciler:run-id", "reconciler:status", "reconciler:disks",
              "reconciler:dirty", "reconciler:vm-name"]


def listing(sample: str) -> parse.Objects:
    return parse.parse_get_output((DATA / sample).read_text())


def test_zfs_fuse_listing_splits_datasets_from_snapshots():
    datasets = parse.datasets_from_objects(listing("zfs-fuse-get-repository.txt"), USER_PROPS)
    snapshots = parse.snapshots_from_objects(listing("zfs-fuse-get-repository.txt"), USER_PROPS)
    assert [d.name for d in datasets] == ["capture/agentless", f"capture/agentless/{VM}"]
    assert [s.short_name for s in snapshots] == ["reconciler-20260101T020000Z-a1b2c3", "manual"]


def test_zfs_fuse_dataset_numbers_mountpoint_and_own_properties():
    vm = parse.datasets_from_objects(listing("zfs-fuse-get-repository.txt"), USER_PROPS)[1]
    assert vm.used == 114688 and vm.referenced == 114688
    assert vm.mountpoint == f"/var/lib/reconciler-lab/mnt/capture/agentless/{VM}"
    assert vm.properties == {"reconciler:managed": "true", "reconciler:dirty": "20260102T030000Z-0f0f0f",
                             "reconciler:vm-name": "web 01"}


def test_snapshot_does_not_take_on_properties_inherited_from_its_dataset():
    backup, manual = parse.snapshots_from_objects(listing("zfs-fuse-get-repository.txt"), USER_PROPS)
    assert "reconciler:dirty" not in backup.properties
    assert "reconciler:vm-name" not in backup.properties
    assert manual.properties == {}  # its inherited reconciler:managed=true does not make it ours


def test_zfs_fuse_snapshot_creation_and_hold_count():
    backup, manual = parse.snapshots_from_objects(listing("zfs-fuse-get-repository.txt"), USER_PROPS)
    assert backup.created == 1796003136
    assert (backup.userrefs, manual.userrefs) == (0, 1)


def test_json_property_with_spaces_survives_parsing():
    backup = parse.snapshots_from_objects(listing("zfs-fuse-get-repository.txt"), USER_PROPS)[0]
    assert backup.properties["reconciler:disks"] == (
        '[{"key":2000,"changeId":"52 3c 7e/17","capacity":4294967296,'
        '"backing":"[ds1] web-01/web-01.vmdk","sha256":null}]'
    )


def test_openzfs_received_properties_count_as_the_objects_own():
    snap = parse.snapshots_from_objects(listing("openzfs-get-snapshots.txt"), USER_PROPS)[0]
    assert "reconciler:disks" in snap.properties
    assert snap.userrefs == 2 and snap.created == 1767232800
    vm = parse.datasets_from_objects(listing("openzfs-get-datasets.txt"), USER_PROPS)[1]
    assert vm.properties == {"reconciler:managed": "true", "reconciler:vm-name": "web 01"}


def test_openzfs_foreign_snapshot_is_not_ours_even_with_inherited_managed():
    foreign = parse.snapshots_from_objects(listing("openzfs-get-snapshots.txt"), USER_PROPS)[1]
    record = snapshot_record(foreign)
    assert not record.managed and not record.complete


def test_legacy_mountpoint_is_no_path():
    legacy = parse.datasets_from_objects(listing("openzfs-get-datasets.txt"), [])[2]
    assert legacy.name == "tank/agentless/legacy" and legacy.mountpoint is None


def test_native_properties_requested_by_the_caller_are_returned():
    datasets = parse.datasets_from_objects(listing("openzfs-get-datasets.txt"), ["mountpoint"])
    assert datasets[0].properties == {"mountpoint": "/tank/agentless"}


def test_dialect_openzfs_from_zfs_version_and_zfs_fuse_from_its_refusal():
    assert parse.parse_dialect(0, (DATA / "openzfs-version.txt").read_text()) == parse.OPENZFS
    assert parse.parse_dialect(2, "") == parse.ZFS_FUSE


def test_garbled_output_is_a_clear_error_not_a_traceback():
    with pytest.raises(ZfsError, match="unexpected line 1"):
        parse.parse_get_output("tank\tused\n")


def test_human_readable_numbers_are_refused_with_a_hint():
    with pytest.raises(ZfsError, match="-p"):
        parse.datasets_from_objects(parse.parse_get_output("t\ttype\tfilesystem\t-\nt\tused\t1.5G\t-\n"), [])


def test_single_value_expects_exactly_one_line():
    assert parse.parse_single_value("1031045120\n") == "1031045120"
    with pytest.raises(ZfsError):
        parse.parse_single_value("")


@pytest.mark.parametrize("name", ["tank/ds", "@snap", "tank/ds@"])
def test_split_snapshot_name_rejects_what_is_not_a_snapshot(name):
    with pytest.raises(ZfsError, match="not a snapshot name"):
        split_snapshot_name(name)


@pytest.mark.parametrize(("prop", "value"), [("a b:c", "1"), ("x:y", "a\nb"), ("x:y", "é" * 5000)])
def test_check_property_rejects_values_that_cannot_be_stored_or_listed(prop, value):
    with pytest.raises(ZfsError):
        check_property(prop, value)


def test_long_name_lists_are_split_below_the_command_line_limit():
    names = [f"tank/agentless/{n:036d}" for n in range(10_000)]
    chunks = _chunks(names, max_bytes=100_000)
    assert [n for chunk in chunks for n in chunk] == names
    assert all(sum(len(n) + 1 for n in chunk) <= 100_000 for chunk in chunks)
    assert _chunks([]) == []


def _unlabelled(name: str, **props: str) -> BackupSnapshotRecord:
    return snapshot_record(SnapshotInfo(f"tank/agentless/{VM}@{name}", f"tank/agentless/{VM}", 1, 0, props))


def test_a_snapshot_named_for_the_dirty_run_is_our_unlabelled_backup() -> None:
    snap = recognise_unlabelled(_unlabelled("reconciler-20260102T030000Z-0f0f0f", **{"reconciler:kind": "full"}),
                                "20260102T030000Z-0f0f0f")
    assert snap.ours and snap.unlabelled and not snap.complete


def test_a_snapshot_named_for_a_run_the_journal_shows_unfinished_is_ours() -> None:
    snap = recognise_unlabelled(_unlabelled("reconciler-20260101T010000Z-aaaaaa"), None,
                                lambda run_id: run_id == "20260101T010000Z-aaaaaa")
    assert snap.ours and not snap.complete


@pytest.mark.parametrize("name", ["manual", "reconciler-20260101T010000Z-bbbbbb", "reconciler-not-a-run-id"])
def test_any_other_unlabelled_snapshot_stays_foreign(name: str) -> None:
    snap = recognise_unlabelled(_unlabelled(name), "20260102T030000Z-0f0f0f", lambda run_id: False)
    assert not snap.ours
