"""File-level restore and deep verification through libguestfs: a file written into the source's NTFS and
ext4 volumes before a backup comes back from that backup, with its time, although the source changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.restore_world import (
    MARKER,
    RUN1,
    VM_NAME,
    World,
    content,
    reconciler,
    world_fixture,  # noqa: F401  (the session fixture `world`)
)

pytestmark = [pytest.mark.lab, pytest.mark.guestfs, pytest.mark.xdist_group("restore")]


def test_files_written_before_the_backup_come_back_with_their_times(world: World, tmp_path: Path) -> None:
    # one libguestfs launch per command (~16 s), so both volumes in one call: the NTFS file by its Windows
    # spelling (any case, backslashes), found on whichever volume has it; the ext4 home directory by volume
    result = reconciler("restore", VM_NAME, "--backup", RUN1, "--files", f"\\{MARKER.upper()}",
                        "--files", "sdb1:/home/user", "--to", str(tmp_path), "--repository", world.repository)
    assert "sda2:/" in result.stdout and "sdb1:/home/user" in result.stdout
    ntfs_file, ext4_file = tmp_path / MARKER, tmp_path / "user" / MARKER
    assert ntfs_file.read_bytes() == content(1, "ntfs")
    assert ext4_file.read_bytes() == content(1, "ext4")
    # written before RUN1 (and not stamped by the restore): the source's times came along
    assert ntfs_file.stat().st_mtime <= world.first_backup_done_at
    assert ext4_file.stat().st_mtime <= world.first_backup_done_at


def test_deep_verify_mounts_every_backed_up_file_system(world: World) -> None:
    report = json.loads(reconciler("verify", VM_NAME, "--backup", RUN1, "--deep", "--json",
                                   "--repository", world.repository).stdout)
    mounted = [c for c in report["checks"] if c["what"].startswith("filesystem")]
    assert {c["what"].split()[1] for c in mounted} == {"/dev/sda2", "/dev/sdb1"}
    assert all(c["outcome"] == "ok" for c in mounted)
    assert report["result"] == "ok"


def test_list_shows_a_volume_s_files_with_their_sizes(world: World) -> None:
    listing = reconciler("restore", VM_NAME, "--backup", RUN1, "--files", "sdb1:/home/user", "--list",
                         "--repository", world.repository).stdout
    line = next(line for line in listing.splitlines() if line.startswith(f"sdb1:/home/user/{MARKER}"))
    assert line.split("\t")[1:3] == ["file", str(len(content(1, "ext4")))]
