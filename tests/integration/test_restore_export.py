"""`reconciler restore --export`: the bytes of an older backup come back exactly, sparse, from a clone that
is gone afterwards; bad requests get one clear line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.adapters.zfs.backups import BackupRepository
from reconciler.adapters.zfs.cli import CliZfsDriver
from tests.integration.restore_world import (
    EXT4_KEY,
    NTFS_KEY,
    RUN1,
    RUN2,
    UUID,
    VM_NAME,
    World,
    allocated,
    children,
    reconciler,
    same_bytes,
    world_fixture,  # noqa: F401  (the session fixture `world`)
)

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("restore")]  # one shared backup world


def test_restoring_the_older_backup_gives_the_bytes_the_source_had_then(world: World, tmp_path: Path) -> None:
    result = reconciler("restore", VM_NAME, "--backup", RUN1, "--export", str(tmp_path),
                        "--repository", world.repository)
    for key in (NTFS_KEY, EXT4_KEY):
        exported = tmp_path / f"{VM_NAME}-disk-{key}.raw"
        assert str(exported) in result.stdout
        assert same_bytes(exported, world.then / f"disk-{key}.raw")
        assert not same_bytes(exported, world.live / f"disk-{key}.raw"), "the source changed after RUN1"


def test_raw_export_keeps_holes(world: World, tmp_path: Path) -> None:
    reconciler("restore", UUID, "--export", str(tmp_path), "--repository", world.repository)
    exported = tmp_path / f"{VM_NAME}-disk-{EXT4_KEY}.raw"
    assert same_bytes(exported, world.live / f"disk-{EXT4_KEY}.raw")  # latest = RUN2 = the live images
    assert allocated(exported) < exported.stat().st_size // 2


def test_qcow2_export_holds_the_same_disk(world: World, tmp_path: Path) -> None:
    reconciler("restore", VM_NAME, "--backup", RUN1, "--export", str(tmp_path), "--format", "qcow2",
               "--repository", world.repository)
    exported = tmp_path / f"{VM_NAME}-disk-{NTFS_KEY}.qcow2"
    compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2",
                              str(world.then / f"disk-{NTFS_KEY}.raw"), str(exported)], capture_output=True, text=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr


def test_a_time_selects_the_newest_backup_taken_at_or_before_it(world: World, tmp_path: Path) -> None:
    reconciler("restore", VM_NAME, "--backup", "2026-01-01T12:00:00Z", "--export", str(tmp_path),
               "--repository", world.repository)
    assert same_bytes(tmp_path / f"{VM_NAME}-disk-{NTFS_KEY}.raw", world.then / f"disk-{NTFS_KEY}.raw")


def test_restore_leaves_the_snapshot_untouched_and_no_clone_behind(world: World, tmp_path: Path) -> None:
    driver = CliZfsDriver()
    snapshots_before = [s.name for s in driver.list_snapshots(world.dataset)]
    reconciler("restore", VM_NAME, "--export", str(tmp_path), "--repository", world.repository)
    assert [s.name for s in driver.list_snapshots(world.dataset)] == snapshots_before
    assert children(world.dataset) == []


def test_keep_clone_keeps_the_clone_and_names_it(world: World, tmp_path: Path) -> None:
    result = reconciler("restore", VM_NAME, "--backup", RUN2, "--export", str(tmp_path), "--keep-clone",
                        "--repository", world.repository)
    kept = children(world.dataset)
    try:
        assert len(kept) == 1 and kept[0] in result.stderr
    finally:
        for name in kept:
            CliZfsDriver().destroy_dataset(name)


def test_export_refuses_to_overwrite(world: World, tmp_path: Path) -> None:
    (tmp_path / f"{VM_NAME}-disk-{NTFS_KEY}.raw").write_bytes(b"mine")
    result = reconciler("restore", VM_NAME, "--export", str(tmp_path), "--repository", world.repository, check=False)
    assert result.returncode == 1 and "refusing to overwrite" in result.stderr
    assert (tmp_path / f"{VM_NAME}-disk-{NTFS_KEY}.raw").read_bytes() == b"mine"
    assert children(world.dataset) == []


@pytest.mark.parametrize(
    ("vm", "backup", "message"),
    [
        ("no-such-vm", "latest", "unknown VM 'no-such-vm'"),
        (VM_NAME, "20250101T000000Z-000000", "backup '20250101T000000Z-000000' not found"),
        (VM_NAME, "2020-01-01", "no complete backup at or before"),
    ],
)
def test_bad_requests_get_one_clear_line(world: World, tmp_path: Path, vm: str, backup: str, message: str) -> None:
    result = reconciler("restore", vm, "--backup", backup, "--export", str(tmp_path),
                        "--repository", world.repository, check=False)
    assert result.returncode == 1
    assert message in result.stderr


def test_an_ambiguous_name_and_a_chain_without_backups_are_explained(world: World, zfs_dataset: str,
                                                                     tmp_path: Path) -> None:
    repo = BackupRepository(CliZfsDriver(), f"{zfs_dataset}/repo")
    repo.pair("50aaaaaa-0000-4000-8000-000000000001", "twin", "vm-1", "vc", "gold")
    repo.pair("50aaaaaa-0000-4000-8000-000000000002", "twin", "vm-2", "vc", "gold")
    ambiguous = reconciler("restore", "twin", "--export", str(tmp_path), "--repository", repo.parent, check=False)
    assert ambiguous.returncode == 1 and "ambiguous" in ambiguous.stderr
    empty = reconciler("restore", "vm-1", "--export", str(tmp_path), "--repository", repo.parent, check=False)
    assert empty.returncode == 1 and "has no complete backup" in empty.stderr


def test_choosing_no_restore_mode_is_a_usage_error(world: World) -> None:
    result = reconciler("restore", VM_NAME, "--repository", world.repository, check=False)
    assert result.returncode == 2 and "choose exactly one" in result.stderr
