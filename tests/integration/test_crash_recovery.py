"""What a `kill -9` can leave behind, set up exactly, and what the next apply makes of it: our snapshot cut
off before it was labelled is recognised and removed by repair; someone else's snapshot stops repair with a
clear message; our orphaned VMware snapshot is removed whatever else fails."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reconciler.adapters.vsphere import ops
from reconciler.adapters.zfs.backups import PREFIX, BackupRepository
from tests.integration.backup_world import MiB, World, make_world

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("test_crash_recovery")]

VM = "app-01"
KEY = 2000
KILLED = "20261204T101500Z-0badc0"  # the run id of the apply that was killed


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory) -> World:
    w = make_world(lab, tmp_path_factory.mktemp("recovery"), "crash-recovery", (VM,), keep_last=3)
    first = w.apply()
    assert first.returncode == 0, first.report()
    return w


def left_by_a_killed_backup(world: World, run_id: str, snapshot_props: dict[str, str], dirty: str | None) -> str:
    """What apply leaves when killed between `zfs snapshot` and its labels: the image marked dirty (by
    `dirty`, normally the same run), a snapshot with only some of its properties, our VMware snapshot."""
    dataset, _ = world.record(VM)
    world.control.write(VM, KEY, 40 * MiB, length=2 * MiB, pattern="random", seed=len(run_id) + len(snapshot_props))
    if dirty is not None:
        BackupRepository(world.driver, world.dataset).mark_dirty(dataset.dataset, dirty)
    name = f"{dataset.dataset}@reconciler-{run_id}"
    world.driver.snapshot(name, snapshot_props)
    ops.create_snapshot(world.session, world.vm_id(VM), f"reconciler-{run_id}", quiesce=False)
    return name


def assert_converged(world: World) -> None:
    assert world.vmware_snapshots(VM) == []
    dataset, snapshots = world.record(VM)
    assert dataset.dirty_run_id is None
    assert [s.name for s in snapshots if not s.complete] == []
    assert world.snapshot_sha(snapshots[-1].name, KEY) == world.source_sha(VM, KEY)


def test_a_snapshot_cut_off_before_its_labels_is_ours_and_repair_removes_it(world: World) -> None:
    half = left_by_a_killed_backup(world, KILLED, {PREFIX + "kind": "incremental"}, dirty=KILLED)

    plan = {a["action"]: a for a in world.plan()["actions"]}
    assert plan["repair"]["snapshots"] == [half.partition("@")[2]]
    assert plan["remove-vm-snapshot"]["snapshots"] == [f"reconciler-{KILLED}"]

    run = world.apply()
    assert run.returncode == 0, run.report()
    assert "removed 1 incomplete snapshot(s) of ours" in run.done(VM, "repair")["summary"]
    assert half not in [s.name for s in world.record(VM)[1]]
    assert_converged(world)


def test_a_snapshot_named_for_a_run_the_journal_shows_unfinished_is_ours(world: World) -> None:
    # the journal knows the run, whose process is gone without finishing it; the dirty mark names a later one
    journal = world.state_dir / "journal.db"
    started = subprocess.run([sys.executable, "-c", "import sys; from reconciler.adapters.journal.sqlite import "
                              "SqliteJournal; SqliteJournal(sys.argv[1]).start_run(sys.argv[2], 'apply')",
                              str(journal), "20261204T111500Z-0cafe1"], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    half = left_by_a_killed_backup(world, "20261204T111500Z-0cafe1", {}, dirty="20261204T121500Z-0d00d2")

    run = world.apply()
    assert run.returncode == 0, run.report()
    assert half not in [s.name for s in world.record(VM)[1]]
    assert_converged(world)


def test_a_foreign_snapshot_stops_repair_clearly_and_our_vmware_snapshot_is_still_removed(world: World) -> None:
    dataset, _ = world.record(VM)
    left_by_a_killed_backup(world, "20261204T131500Z-0eeee3", {}, dirty="20261204T131500Z-0eeee3")
    world.driver.snapshot(f"{dataset.dataset}@before-upgrade")  # an operator's, made after ours

    run = world.apply()
    assert run.returncode != 0
    repair = run.done(VM, "repair")
    assert repair["result"] == "failed"
    assert "not made by reconciler" in repair["error"] and "@before-upgrade" in repair["error"], repair
    assert "apply again" in repair["error"]
    assert run.done(VM, "remove-vm-snapshot")["result"] == "succeeded"
    assert world.vmware_snapshots(VM) == []  # never left on the VM, whatever repair did
    assert run.done(VM)["result"] == "skipped"

    world.driver.destroy_snapshot(f"{dataset.dataset}@before-upgrade")  # the operator moves it away
    again = world.apply()
    assert again.returncode == 0, again.report()
    assert_converged(world)
