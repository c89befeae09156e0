"""The backup contract in ZFS (DESIGN.md §3) on a real pool: what apply writes, observe reads back."""

from __future__ import annotations

import pytest

from reconciler.adapters.zfs import cli as cli_module
from reconciler.adapters.zfs.backups import (
    BackupRepository,
    backup_properties,
    snapshot_name,
)
from reconciler.adapters.zfs.base import ZfsError
from reconciler.adapters.zfs.cli import CliZfsDriver

pytestmark = pytest.mark.lab

UUID = "5012a3c4-0000-4000-8000-00000000abcd"
RUN1 = "20260101T020000Z-a1b2c3"
RUN2 = "20260102T020000Z-d4e5f6"
DISKS = [{"key": 2000, "changeId": "52 3c 7e/17", "capacity": 4294967296,
          "backing": "[ds1] web-01/web-01.vmdk", "sha256": None}]


@pytest.fixture
def repo(zfs_dataset: str) -> BackupRepository:
    return BackupRepository(CliZfsDriver(), f"{zfs_dataset}/agentless")


def props(kind: str = "full") -> dict[str, str]:
    return backup_properties(kind, "2026-01-01T02:00:00Z", DISKS, 4294967296, 1048576)


def test_missing_repository_reads_as_empty_not_as_an_error(repo):
    record = repo.read()
    assert not record.exists and record.datasets == () and record.snapshots == ()


def test_paired_vm_reads_back_with_its_identity(repo):
    dataset = repo.pair(UUID, "web 01", "vm-42", "vc1", "gold")
    (vm,) = repo.read().datasets
    assert (vm.dataset, vm.instance_uuid, vm.vm_name, vm.vm_id) == (dataset, UUID, "web 01", "vm-42")
    assert (vm.connection, vm.policy, vm.managed, vm.retired, vm.dirty_run_id) == ("vc1", "gold", True,
                                                                                   False, None)


def test_completed_backup_is_a_complete_snapshot_with_every_property(repo):
    dataset = repo.pair(UUID, "web 01", "vm-42", "vc1", "gold")
    repo.mark_dirty(dataset, RUN1)
    name = repo.complete_backup(dataset, RUN1, props())
    record = repo.read()
    (snap,) = record.snapshots_of(dataset)
    assert snap.name == name == snapshot_name(dataset, RUN1)
    assert snap.complete and snap.managed and not snap.held
    assert (snap.run_id, snap.kind, snap.vm_created) == (RUN1, "full", "2026-01-01T02:00:00Z")
    assert snap.disks[0].change_id == "52 3c 7e/17" and snap.disks[0].key == 2000
    assert (snap.bytes_read, snap.bytes_written, snap.problems) == (4294967296, 1048576, ())
    assert record.datasets[0].dirty_run_id is None  # cleared once the snapshot is complete


def test_interrupted_backup_leaves_the_dataset_dirty(repo):
    dataset = repo.pair(UUID, "web 01", "vm-42", "vc1", "gold")
    repo.complete_backup(dataset, RUN1, props())
    repo.mark_dirty(dataset, RUN2)
    record = repo.read()
    assert record.datasets[0].dirty_run_id == RUN2
    # the dirty mark is the dataset's, not something the earlier backup snapshot carries
    assert [s.run_id for s in record.snapshots] == [RUN1]


def test_snapshot_without_status_complete_is_not_a_backup(repo):
    dataset = repo.pair(UUID, "web 01", "vm-42", "vc1", "gold")
    repo.driver.snapshot(f"{dataset}@reconciler-{RUN1}", {"reconciler:managed": "true"})
    repo.driver.snapshot(f"{dataset}@by-hand")
    snaps = repo.read().snapshots
    assert [(s.managed, s.complete) for s in snaps] == [(True, False), (False, False)]


def test_hold_shows_as_held(repo):
    dataset = repo.pair(UUID, "web 01", "vm-42", "vc1", "gold")
    name = repo.complete_backup(dataset, RUN1, props())
    repo.driver.hold(name, "operator")
    try:
        assert repo.read().snapshots[0].held
    finally:
        repo.driver.release(name, "operator")


def test_retire_keeps_data_and_pair_again_readopts(repo):
    dataset = repo.pair(UUID, "web 01", "vm-42", "vc1", "gold")
    repo.complete_backup(dataset, RUN1, props())
    repo.retire(dataset)
    assert repo.read().datasets[0].retired
    repo.pair(UUID, "web 01", "12", "esx1", "gold")
    record = repo.read()
    assert not record.datasets[0].retired and record.datasets[0].vm_id == "12"
    assert len(record.snapshots) == 1


def test_rebind_changes_the_address_not_the_identity(repo):
    dataset = repo.pair(UUID, "web 01", "12", "esx1", "gold")
    repo.rebind(dataset, "vm-9463", "vc1")
    (vm,) = repo.read().datasets
    assert (vm.instance_uuid, vm.vm_id, vm.connection) == (UUID, "vm-9463", "vc1")


def test_reading_a_repository_costs_the_same_commands_for_one_vm_or_many(repo, monkeypatch):
    calls = []
    real_run = cli_module.run

    def counting_run(args, **kwargs):
        calls.append(args[1])
        return real_run(args, **kwargs)

    monkeypatch.setattr(cli_module, "run", counting_run)
    repo.driver.dialect  # noqa: B018 - detected once, before counting
    counts = []
    for n in range(4):
        uuid = f"5012a3c4-0000-4000-8000-{n:012x}"
        repo.complete_backup(repo.pair(uuid, f"vm{n}", f"vm-{n}", "vc1", "gold"), RUN1, props())
        calls.clear()
        record = repo.read()
        counts.append(len(calls))
        assert len(record.datasets) == n + 1 and len(record.snapshots) == n + 1
    assert len(set(counts)) == 1 and counts[0] <= 3  # zfs-fuse: list names + get them + get snapshots


def test_bad_run_id_and_kind_are_refused_before_touching_zfs(repo):
    with pytest.raises(ZfsError, match="invalid run id"):
        snapshot_name("tank/x", "yesterday")
    with pytest.raises(ZfsError, match="invalid backup kind"):
        backup_properties("differential", "2026-01-01T00:00:00Z", [], 0, 0)
    with pytest.raises(ZfsError, match="invalid instanceUuid"):
        repo.dataset_for("../etc")
