"""The backup pipeline on the lab, end to end through `reconciler apply`: full then incremental backups
whose images are the VM's disks byte for byte at each snapshot, holes kept, only changed areas read, and
never a VMware snapshot left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.backup_world import MiB, World, make_world, stored_beyond_source

# module-scoped worlds build on each other's steps: keep a module on one xdist worker
pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("test_backup_pipeline")]

VM, OTHER = "web-01", "db-01"


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory) -> World:
    return make_world(lab, tmp_path_factory.mktemp("pipeline"), "apply-pipeline", (VM, OTHER))


@pytest.fixture(scope="module")
def first(world: World):
    """The first apply: pairs both VMs and takes their full backups."""
    expected = {(VM, 2000): world.source_sha(VM, 2000), (OTHER, 2000): world.source_sha(OTHER, 2000),
                (OTHER, 2001): world.source_sha(OTHER, 2001)}
    return world.apply(), expected


def test_first_apply_pairs_and_takes_full_backups(first) -> None:
    run, _ = first
    assert run.returncode == 0, run.report()
    for vm in (VM, OTHER):
        assert run.done(vm, "pair")["result"] == "succeeded"
        done = run.done(vm)
        assert (done["result"], done["kind"]) == ("succeeded", "full")


def test_full_backup_images_equal_the_disks_at_snapshot_time(world: World, first) -> None:
    _, expected = first
    for (vm, key), sha in expected.items():
        (backup,) = world.complete_backups(vm)
        assert world.snapshot_sha(backup.name, key) == sha, f"{vm} disk {key}"


def test_full_backup_keeps_the_source_holes(world: World, first) -> None:
    (backup,) = world.complete_backups(VM)
    with world.snapshot_files(backup.name) as files:
        assert stored_beyond_source(files / "disk-2000.raw", Path(world.disk(VM, 2000)["file"])) == 0


def test_a_backup_records_change_ids_and_sizes_in_its_snapshot(world: World, first) -> None:
    (backup,) = world.complete_backups(OTHER)
    assert backup.kind == "full" and backup.status == "complete"
    assert [d.key for d in backup.disks] == [2000, 2001]
    assert all(d.change_id and d.capacity for d in backup.disks)
    assert backup.bytes_read and backup.bytes_read >= backup.bytes_written


def test_no_vmware_snapshot_is_left_after_a_backup(world: World, first) -> None:
    assert world.vmware_snapshots(VM) == [] and world.vmware_snapshots(OTHER) == []


@pytest.fixture(scope="module")
def incremental(world: World, first):
    world.control.write(VM, 2000, 100 * MiB, length=MiB, pattern="random", seed=11)
    expected = world.source_sha(VM, 2000)
    return world.apply(), expected


def test_an_incremental_reads_only_the_changed_areas(incremental) -> None:
    run, _ = incremental
    assert run.returncode == 0, run.report()
    done = run.done(VM)
    assert done["kind"] == "incremental"
    assert MiB <= done["bytes_read"] <= MiB + 128 * 1024  # the changed MiB, rounded to CBT blocks
    assert run.done(OTHER)["bytes_read"] == 0  # nothing changed there


def test_incremental_image_equals_the_disk_and_the_full_is_unchanged(world: World, first, incremental) -> None:
    _, before = first
    _, after = incremental
    full, incr = world.complete_backups(VM)
    assert incr.kind == "incremental"
    assert world.snapshot_sha(incr.name, 2000) == after
    assert world.snapshot_sha(full.name, 2000) == before[(VM, 2000)]


def test_a_zeroed_area_becomes_a_hole_again_in_the_next_incremental(world: World, incremental) -> None:
    world.control.write(VM, 2000, 100 * MiB, length=MiB, pattern="zero")
    expected = world.source_sha(VM, 2000)
    run = world.apply()
    assert run.returncode == 0, run.report()
    newest = world.complete_backups(VM)[-1]
    with world.snapshot_files(newest.name) as files:
        from tests.integration.backup_world import sha256

        assert sha256(files / "disk-2000.raw") == expected
        assert stored_beyond_source(files / "disk-2000.raw", Path(world.disk(VM, 2000)["file"])) == 0


def test_a_cbt_reset_makes_that_backup_full_and_still_exact(world: World, incremental) -> None:
    world.control.reset_cbt(OTHER)
    world.control.write(OTHER, 2001, 3 * MiB, length=MiB, pattern="random", seed=5)
    expected = world.source_sha(OTHER, 2001)
    run = world.apply()
    assert run.returncode == 0, run.report()
    assert run.done(OTHER)["kind"] == "full"
    assert world.snapshot_sha(world.complete_backups(OTHER)[-1].name, 2001) == expected


def test_retention_prunes_beyond_keep_last_and_keeps_the_newest(world: World, incremental) -> None:
    runs = [world.apply() for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[-1].report()
    assert runs[-1].done(VM, "prune")["result"] == "succeeded"
    backups = world.complete_backups(VM)
    # retention (keepLast: 3) counts this run's backup: what it pushes out goes in the same apply
    assert len(backups) == world.keep_last
    assert backups[-1].name == runs[-1].done(VM, "backup")["snapshot"]
    assert world.vmware_snapshots(VM) == []


def test_status_lists_each_vm_with_its_last_backup_and_chain(world: World, incremental) -> None:
    import json
    import subprocess

    from tests.integration.backup_world import RECONCILER

    done = subprocess.run([RECONCILER, "status", str(world.policy_dir), "--state-dir", str(world.state_dir),
                           "--json"], capture_output=True, text=True, check=True, env=world.env())
    rows = {r["vm"]: r for r in json.loads(done.stdout)}
    assert set(rows) == {VM, OTHER}
    assert rows[VM]["state"] == "ok" and rows[VM]["chain_length"] >= 1 and rows[VM]["next_due"]
