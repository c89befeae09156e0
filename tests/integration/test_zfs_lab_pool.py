"""The lab's zfs-fuse pool: one shared daemon, pools that come and go without disturbing each other."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from reconciler.adapters.zfs.base import ZfsError
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.lab.zfs import (
    TEST_POOL_PREFIX,
    ZfsFusePool,
    _read_pid,
    daemon_running,
    imported_pools,
    reap_orphan_test_pools,
)

pytestmark = pytest.mark.lab


def _pid_of_a_finished_process() -> int:
    child = multiprocessing.get_context("spawn").Process(target=int)
    child.start()
    child.join(60)
    return child.pid


def test_second_pool_comes_and_goes_while_the_session_pool_keeps_working(zpool, tmp_path):
    other = ZfsFusePool(f"{TEST_POOL_PREFIX}{os.getpid()}-extra", tmp_path, size="256M")
    with other:
        assert other.running and other.mountpoint.is_dir()
        assert {zpool.name, other.name} <= set(imported_pools())
    assert other.name not in imported_pools()
    assert not (tmp_path / "zfs" / other.name).exists()
    # the daemon stays up for the session pool, which still works
    assert daemon_running() and zpool.running
    CliZfsDriver().create_dataset(f"{zpool.name}/after-other-pool")
    CliZfsDriver().destroy_dataset(f"{zpool.name}/after-other-pool")


def test_kept_pool_is_imported_again_with_its_data(zpool, tmp_path):
    name = f"{TEST_POOL_PREFIX}{os.getpid()}-kept"
    pool = ZfsFusePool(name, tmp_path, size="256M").start()
    try:
        (pool.mountpoint / "marker").write_text("still here")
        pool.stop(keep=True)
        assert name not in imported_pools() and pool.vdev.exists()
        pool.start()
        assert (pool.mountpoint / "marker").read_text() == "still here"
    finally:
        pool.stop()
    assert not pool.vdev.exists()


def test_starting_an_already_running_pool_is_harmless(zpool):
    again = ZfsFusePool(zpool.name, zpool.state_dir)
    assert again.start().running


def test_test_pool_of_a_dead_process_is_reaped(zpool, tmp_path):
    orphan = ZfsFusePool(f"{TEST_POOL_PREFIX}{_pid_of_a_finished_process()}-0", tmp_path, size="256M")
    orphan.start()
    try:
        assert orphan.name in reap_orphan_test_pools()
        assert orphan.name not in imported_pools()
        assert zpool.name in imported_pools()
    finally:
        orphan.stop()




def test_stale_pidfile_naming_an_unrelated_process_is_ignored(tmp_path):
    pidfile = tmp_path / "zfs-fuse.pid"
    pidfile.write_text(str(os.getpid()))  # alive, but not a zfs-fuse: never to be signalled
    assert _read_pid(pidfile) is None
    pidfile.write_text("garbage")
    assert _read_pid(pidfile) is None


@pytest.mark.parametrize("name", ["1pool", "mirror", "has space", "a/b", ""])
def test_invalid_pool_names_are_refused(name, tmp_path):
    with pytest.raises(ZfsError, match="invalid pool name"):
        ZfsFusePool(name, tmp_path)
