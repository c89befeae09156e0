"""`kill -9` of apply at points along the pipeline (simulated with os._exit at named steps, which skips
every cleanup exactly like SIGKILL), then apply again: it converges, no VMware snapshot or incomplete ZFS
snapshot is left, and the newest backup holds the disk's bytes."""

from __future__ import annotations

import pytest

from tests.integration.backup_world import MiB, World, make_world

# module-scoped worlds build on each other's steps: keep a module on one xdist worker
pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("test_backup_crash")]

VM = "db-01"
KEY = 2001  # 1 GiB: verifying it reads a quarter of what web-01's disk costs
CRASH_POINTS = [
    "after-vm-snapshot",  # the VMware snapshot exists, nothing read yet
    "after-mark-dirty",  # the dataset is dirty, no byte written
    "mid-read",  # half the changed areas are in the image
    "before-fsync",  # everything written, not yet on stable storage
    "zfs-snapshot",  # data synced, no ZFS snapshot yet
    "after-zfs-snapshot",  # backup complete, VMware snapshot not yet removed
    "remove-vm-snapshot",  # the journal says removal started
    "mid-prune",  # one old snapshot destroyed, the others not
]


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory) -> World:
    w = make_world(lab, tmp_path_factory.mktemp("crash"), "apply-crash", (VM,), keep_last=1)
    first = w.apply()
    assert first.returncode == 0, first.report()
    return w


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_apply_killed_at_a_point_converges_on_the_next_run(world: World, point: str) -> None:
    world.control.write(VM, KEY, (600 + CRASH_POINTS.index(point) * 8) * MiB, length=4 * MiB, pattern="random",
                        seed=CRASH_POINTS.index(point))
    expected = world.source_sha(VM, KEY)
    # earlier crashes stopped before pruning: by now most backups are outside keepLast 1
    extra = ("--allow-mass-prune",) if point == "mid-prune" else ()
    if point == "mid-prune":
        assert world.apply(*extra).returncode == 0  # leaves two backups: the next run prunes one
        actions = [a["action"] for a in world.plan(*extra)["actions"]]
        assert "prune" in actions, actions
    crashed = world.apply(*extra, env=world.env(RECONCILER_CRASH_AT=point))
    assert crashed.returncode == 137, crashed.report()  # it did die at that point

    run = world.apply()
    assert run.returncode == 0, run.report()
    assert world.vmware_snapshots(VM) == []
    dataset, snapshots = world.record(VM)
    assert dataset.dirty_run_id is None
    assert all(s.complete for s in snapshots), [s.name for s in snapshots if not s.complete]
    assert world.snapshot_sha(snapshots[-1].name, KEY) == expected
