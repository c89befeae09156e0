"""`reconciler verify` and `reconciler backups`: digests recorded at backup time are checked against the
snapshot's images, partition tables parse, results land on the snapshot, and the chain lists them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.adapters.zfs.backups import BackupRepository
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.lab.images import MiB, PartSpec, build_image
from reconciler.restore.locate import VERIFIED, VERIFY_RESULT, read_backups
from reconciler.restore.verify import verify_after_backup
from tests.integration.restore_world import (
    RUN1,
    RUN2,
    VM_NAME,
    World,
    disk_records,
    mountpoint,
    reconciler,
    take_backup,
    world_fixture,  # noqa: F401  (the session fixture `world`)
)

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("restore")]  # one shared backup world
UUID = "50cccccc-0000-4000-8000-000000000001"


def small_vm(zfs_dataset: str, name: str = "db-01") -> tuple[BackupRepository, str, dict[int, Path]]:
    repo = BackupRepository(CliZfsDriver(), f"{zfs_dataset}/repo")
    dataset = repo.pair(UUID, name, "vm-5", "vc", "gold")
    image = mountpoint(dataset) / "disk-2000.raw"
    build_image(image, 48 * MiB, "gpt", [PartSpec(32 * MiB, "ext4", files=(("data.txt", b"precious\n"),))], seed=3)
    return repo, dataset, {2000: image}


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_good_backup_verifies_and_the_result_is_recorded_on_the_snapshot(world: World) -> None:
    result = reconciler("verify", VM_NAME, "--backup", RUN1, "--repository", world.repository)
    assert "verify-result: ok" in result.stdout
    backup = next(b for b in read_backups(CliZfsDriver(), world.dataset) if b.run_id == RUN1)
    assert backup.verify_result == "ok" and backup.verified and backup.verified.endswith("Z")


def test_a_corrupted_backup_fails_verify_with_a_clear_message(zfs_dataset: str) -> None:
    repo, dataset, images = small_vm(zfs_dataset)
    records = disk_records(images)  # the digest the pipeline recorded from what it read …
    flip_byte(images[2000], 20 * MiB + 123)  # … and then the image on the pool went bad
    take_backup(repo, dataset, RUN1, images, records)
    result = reconciler("verify", "db-01", "--repository", repo.parent, check=False)
    assert result.returncode == 1
    assert "differs from the recorded" in result.stdout and "corrupt" in result.stdout
    snapshot = read_backups(CliZfsDriver(), dataset)[0]
    assert snapshot.verify_result is not None and snapshot.verify_result.startswith("failed: disk 2000 checksum")


def test_a_backup_without_a_recorded_digest_says_so(zfs_dataset: str) -> None:
    repo, dataset, images = small_vm(zfs_dataset)
    take_backup(repo, dataset, RUN1, images, disk_records(images, digests=False))
    result = reconciler("verify", "db-01", "--json", "--repository", repo.parent)
    report = json.loads(result.stdout)
    checksum = next(c for c in report["checks"] if c["what"] == "checksum")
    assert checksum["outcome"] == "skipped" and "no digest was recorded" in checksum["detail"]
    assert report["ok"] and report["result"] == "ok"


def test_an_unreadable_image_fails_verify_and_a_damaged_table_is_reported(zfs_dataset: str) -> None:
    repo, dataset, images = small_vm(zfs_dataset)
    with images[2000].open("r+b") as f:
        f.seek(512 + 16)  # the primary GPT header's CRC
        f.write(b"\xff\xff\xff\xff")
    take_backup(repo, dataset, RUN1, images)
    images[2000].write_bytes(b"")  # the next backup holds an empty image
    take_backup(repo, dataset, RUN2, images, [{"key": 2000, "capacity": 48 * MiB}])
    damaged = json.loads(reconciler("verify", "db-01", "--backup", RUN1, "--json", "--repository", repo.parent).stdout)
    partitions = next(c for c in damaged["checks"] if c["what"] == "partitions")
    assert partitions["outcome"] == "ok" and "primary GPT header is corrupt" in partitions["detail"]
    result = reconciler("verify", "db-01", "--backup", RUN2, "--json", "--repository", repo.parent, check=False)
    assert result.returncode == 1
    empty = next(c for c in json.loads(result.stdout)["checks"] if c["what"] == "partitions")
    assert empty["outcome"] == "failed" and "empty (zero-length) image" in empty["detail"]


def test_verify_after_backup_is_callable_by_the_pipeline(zfs_dataset: str) -> None:
    repo, dataset, images = small_vm(zfs_dataset)
    take_backup(repo, dataset, RUN1, images)
    report = verify_after_backup(CliZfsDriver(), dataset, RUN1)
    assert report.ok
    props = CliZfsDriver().list_snapshots(dataset, (VERIFIED, VERIFY_RESULT))[0].properties
    assert props[VERIFY_RESULT] == "ok"


def test_backups_lists_the_chain_with_held_and_verified(world: World) -> None:
    reconciler("verify", VM_NAME, "--backup", RUN2, "--repository", world.repository)
    reconciler("backups", VM_NAME, "--hold", RUN1, "--tag", "legal", "--repository", world.repository)
    try:
        chain = json.loads(reconciler("backups", VM_NAME, "--json", "--repository", world.repository).stdout)
        rows = {row["runId"]: row for row in chain["backups"]}
        assert rows[RUN1]["held"] and not rows[RUN2]["held"]
        assert rows[RUN2]["verifyResult"] == "ok"
        assert rows[RUN1]["kind"] == "full" and rows[RUN2]["kind"] == "incremental"
        assert all(row["complete"] for row in rows.values())
        table = reconciler("backups", VM_NAME, "--repository", world.repository).stdout
        assert RUN1 in table and "held" in table
    finally:
        reconciler("backups", VM_NAME, "--release", RUN1, "--tag", "legal", "--repository", world.repository)
    chain = json.loads(reconciler("backups", VM_NAME, "--json", "--repository", world.repository).stdout)
    assert not any(row["held"] for row in chain["backups"])


def test_releasing_a_hold_that_is_not_there_is_a_clear_error(world: World) -> None:
    result = reconciler("backups", VM_NAME, "--release", RUN1, "--tag", "nope", "--repository", world.repository,
                        check=False)
    assert result.returncode == 1 and result.stderr.startswith("Error:")


def test_the_repository_is_found_from_the_policy_set(world: World, tmp_path: Path) -> None:
    (tmp_path / "repository.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Repository\nmetadata: {name: pool}\n"
        f"spec: {{dataset: {world.repository}, driver: cli}}\n"
    )
    chain = json.loads(reconciler("backups", VM_NAME, "--json", "--policies", str(tmp_path)).stdout)
    assert [row["runId"] for row in chain["backups"]] == [RUN1, RUN2]


def test_a_backup_missing_a_recorded_disk_image_fails_verify(zfs_dataset: str) -> None:
    repo, dataset, images = small_vm(zfs_dataset)
    records = [*disk_records(images), {"key": 2001, "capacity": MiB, "sha256": None}]
    take_backup(repo, dataset, RUN1, images, records)
    result = reconciler("verify", "db-01", "--repository", repo.parent, check=False)
    assert result.returncode == 1 and "records disk 2001 but has no disk-2001.raw" in result.stdout
    assert read_backups(CliZfsDriver(), dataset)[0].verify_result.startswith("failed:")
