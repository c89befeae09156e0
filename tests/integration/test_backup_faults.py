"""Every lab fault switch against `reconciler apply`: a clear report, retries where retrying is right, never
a complete backup without its data, never our VMware snapshot left behind (or listed by the next plan),
and the next apply converges to an exact backup."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.backup_world import MiB, World, make_world

# module-scoped worlds build on each other's steps: keep a module on one xdist worker
pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("test_backup_faults")]

VM = "db-01"
KEY = 2001  # 1 GiB: verifying it reads a quarter of what web-01's disk costs


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory) -> World:
    w = make_world(lab, tmp_path_factory.mktemp("faults"), "apply-faults", (VM,))
    # 1 % of esx-02's 10 GbE: ~12 MB/s, so a 32 MiB change takes long enough to arm a fault mid-transfer
    connections = w.policy_dir / "connections.yaml"
    text = connections.read_text()
    connections.write_text(text.replace("  user: user\n", "  user: user\n  nbdBandwidthShare: 1\n", 1))
    first = w.apply()
    assert first.returncode == 0, first.report()
    return w


@pytest.fixture(autouse=True)
def no_faults_left(world: World) -> Iterator[None]:
    world.clear_faults()
    yield
    world.clear_faults()


def backups(world: World) -> set[str]:
    """Names of the complete backups (a run may also prune old ones: compare with `<=`)."""
    return {b.name for b in world.complete_backups(VM)}


def converges(world: World) -> None:
    """The next apply succeeds, removes whatever was left, and its backup is the disk byte for byte."""
    expected = world.source_sha(VM, KEY)
    run = world.apply()
    assert run.returncode == 0, run.report()
    assert world.vmware_snapshots(VM) == []
    dataset, _ = world.record(VM)
    assert dataset.dirty_run_id is None
    assert world.snapshot_sha(world.complete_backups(VM)[-1].name, KEY) == expected


def test_quiesce_failure_with_preferred_falls_back_to_a_crash_consistent_snapshot(world: World) -> None:
    world.control.set_fault("quiesce-fails", vm=VM, count=1)
    run = world.apply()
    assert run.returncode == 0, run.report()
    assert "crash-consistent" in run.done(VM)["summary"]
    assert any("quiescing failed" in note and "crash-consistent" in note for note in run.notes(VM))
    assert world.vmware_snapshots(VM) == []


def test_quiesce_failure_with_required_takes_no_backup_and_says_why(world: World) -> None:
    world.write_policies(quiesce="required")
    try:
        world.control.set_fault("quiesce-fails", vm=VM)
        before = backups(world)
        run = world.apply()
        assert run.returncode == 1
        assert VM in run.stderr
        assert "quiesce is required" in run.done(VM)["error"]
        assert backups(world) <= before
        assert world.record(VM)[0].dirty_run_id is None  # nothing was written
        assert world.vmware_snapshots(VM) == []
    finally:
        world.write_policies(quiesce="preferred")
    world.clear_faults()
    converges(world)


def test_a_snapshot_create_failure_is_retried(world: World) -> None:
    world.control.set_fault("snapshot-create-fails", vm=VM, count=1)
    run = world.apply()
    assert run.returncode == 0, run.report()
    assert any("snapshot attempt 1 failed" in note for note in run.notes(VM))
    assert world.vmware_snapshots(VM) == []


def test_a_snapshot_that_cannot_be_created_fails_the_backup_clearly(world: World) -> None:
    world.control.set_fault("snapshot-create-fails", vm=VM)
    before = backups(world)
    run = world.apply()
    assert run.returncode == 1
    assert "SnapshotFault" in run.done(VM)["error"]
    assert backups(world) <= before and world.vmware_snapshots(VM) == []
    world.clear_faults()
    converges(world)


def test_a_snapshot_remove_failure_is_retried(world: World) -> None:
    world.control.set_fault("snapshot-remove-fails", vm=VM, count=1)
    run = world.apply()
    assert run.returncode == 0, run.report()
    assert any("removing VMware snapshot" in note for note in run.notes(VM))
    assert world.vmware_snapshots(VM) == []


def test_a_snapshot_that_cannot_be_removed_is_reported_and_removed_by_the_next_apply(world: World) -> None:
    world.control.set_fault("snapshot-remove-fails", vm=VM)
    run = world.apply()
    assert run.done(VM)["result"] == "succeeded"  # the backup itself is complete and exact
    assert any("could not be removed" in note for note in run.notes(VM))
    assert len(world.vmware_snapshots(VM)) == 1
    world.clear_faults()
    plan = world.plan()
    assert "remove-vm-snapshot" in [a["action"] for a in plan["actions"] if a["vm"]["name"] == VM]
    run = world.apply()
    assert run.done(VM, "remove-vm-snapshot")["result"] == "succeeded", run.report()
    assert world.vmware_snapshots(VM) == []


def test_a_session_that_expires_mid_backup_is_renewed_without_restarting(world: World) -> None:
    world.control.write(VM, KEY, 200 * MiB, length=32 * MiB, pattern="random", seed=21)
    expected = world.source_sha(VM, KEY)

    def expire(event: dict, _: object) -> None:
        if event["event"] == "disk-started":
            world.control.set_fault("session-expires", count=1)

    run = world.apply_watching(expire)
    assert run.returncode == 0, run.report()
    assert world.snapshot_sha(world.complete_backups(VM)[-1].name, KEY) == expected
    assert world.vmware_snapshots(VM) == []


def test_a_read_error_mid_stream_is_retried_and_the_image_is_exact(world: World) -> None:
    world.control.write(VM, KEY, 300 * MiB, length=32 * MiB, pattern="random", seed=22)
    expected = world.source_sha(VM, KEY)
    armed = []

    def fail_one_read(event: dict, _: object) -> None:
        # armed once the transfer starts: volume inspection reads the disk's headers before it
        if event["event"] == "disk-started" and not armed:
            armed.append(world.control.set_fault("disk-read-error", vm=VM, count=1, after_bytes=64 * 1024))

    run = world.apply_watching(fail_one_read)
    assert run.returncode == 0, run.report()
    assert any("transfer attempt 1 failed" in note for note in run.notes(VM))
    assert world.snapshot_sha(world.complete_backups(VM)[-1].name, KEY) == expected


def test_a_disk_that_cannot_be_read_leaves_no_complete_backup_and_the_next_apply_repairs(world: World) -> None:
    world.control.write(VM, KEY, 400 * MiB, length=MiB, pattern="random", seed=23)
    world.control.set_fault("disk-read-error", vm=VM)
    before = backups(world)
    run = world.apply()
    assert run.returncode == 1
    assert "read" in run.done(VM)["error"]
    assert backups(world) <= before  # no snapshot marked complete without all its data
    dataset, _ = world.record(VM)
    assert dataset.dirty_run_id is not None
    assert world.vmware_snapshots(VM) == []
    world.clear_faults()
    assert [a["action"] for a in world.plan()["actions"] if a["vm"]["name"] == VM][:1] == ["repair"]
    converges(world)


def test_a_host_disconnected_mid_backup_is_reported_and_the_next_apply_converges(world: World) -> None:
    world.control.write(VM, KEY, 500 * MiB, length=32 * MiB, pattern="random", seed=24)

    def disconnect(event: dict, _: object) -> None:
        if event["event"] == "disk-started":
            world.control.set_fault("host-disconnected", vm=VM)

    run = world.apply_watching(disconnect)
    # the data was read from the snapshot; removing the snapshot needs the host
    assert any("HostNotConnected" in note for note in run.notes(VM)), run.report()
    world.clear_faults()
    converges(world)


def test_a_task_that_hangs_past_the_timeout_is_reported_and_leaves_nothing_behind(world: World) -> None:
    world.control.set_fault("task-hangs", vm=VM, count=1, seconds=8)
    before = backups(world)
    run = world.apply("--task-timeout", "2")
    assert run.returncode == 1
    assert "after 2 s" in run.done(VM)["error"]
    assert backups(world) <= before
    assert world.vmware_snapshots(VM) == []
    world.clear_faults()
    converges(world)


def test_ctrl_c_mid_transfer_stops_removes_the_vmware_snapshot_and_the_next_apply_converges(world: World) -> None:
    # 128 MiB at the world's ~12 MB/s lasts ~10 s: ample time for the signal to arrive mid-transfer
    world.control.write(VM, KEY, 700 * MiB, length=128 * MiB, pattern="random", seed=25)
    interrupted = []

    def interrupt(event: dict, process: subprocess.Popen) -> None:
        if event["event"] == "disk-progress" and not interrupted:
            interrupted.append(True)
            process.send_signal(signal.SIGINT)

    before = backups(world)
    run = world.apply_watching(interrupt)
    assert interrupted and run.returncode == 1, run.report()
    assert "interrupted" in run.done(VM)["error"]
    assert backups(world) <= before
    assert world.vmware_snapshots(VM) == []
    converges(world)
