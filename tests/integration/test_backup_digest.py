"""Digests recorded at backup time, cheaply: each disk's `bsha256-64m:` digest is kept up to date from a
leaves file beside the image (captured by the same ZFS snapshot), so an incremental re-reads only the
blocks it touched; the recorded digest always equals the digest of the image read back from the snapshot.
With `verify: after-backup`, every backup is verified at once and a failure fails the VM's result while
the (complete) snapshot stays, flagged. `apply --metrics-textfile` leaves node_exporter a textfile."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.adapters.checksum import ALGORITHM, image_digest, leaves_path
from reconciler.restore.locate import read_backups
from tests.integration.backup_world import RECONCILER, MiB, World, make_world

pytestmark = pytest.mark.lab

VM = "web-01"
KEY = 2000
GiB = 1024 * MiB


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory) -> World:
    world = make_world(lab, tmp_path_factory.mktemp("digest"), "apply-digest", (VM,))
    rest = world.policy_dir / "rest.yaml"
    rest.write_text(rest.read_text() + "  verify: after-backup\n")  # into the ProtectionPolicy's spec
    return world


def live_image(world: World) -> Path:
    dataset, _ = world.record(VM)
    return Path(dataset.mountpoint) / f"disk-{KEY}.raw"


def newest(world: World):  # type: ignore[no-untyped-def]
    return world.complete_backups(VM)[-1]


def recorded_digest(backup) -> str:  # type: ignore[no-untyped-def]
    (disk,) = [d for d in backup.disks if d.key == KEY]
    assert disk.sha256 and disk.sha256.startswith(ALGORITHM + ":"), backup.disks
    return disk.sha256


def snapshot_digest(world: World, snapshot: str) -> tuple[str, bool]:
    """(digest of the image as the snapshot holds it, whether the snapshot holds the leaves file too)"""
    with world.snapshot_files(snapshot) as files:
        image = files / f"disk-{KEY}.raw"
        return image_digest(image)[0], leaves_path(image).is_file()


def verify_cli(world: World, run_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECONCILER, "verify", VM, "--backup", run_id, "--repository", world.dataset],
                          capture_output=True, text=True, env=world.env(), timeout=300)


@pytest.fixture(scope="module")
def full(world: World, tmp_path_factory):  # type: ignore[no-untyped-def]
    textfile = tmp_path_factory.mktemp("metrics") / "reconciler.prom"
    run = world.apply("--metrics-textfile", str(textfile))
    assert run.returncode == 0, run.report()
    return run, newest(world), textfile


def test_a_full_backup_records_the_digest_of_the_image_its_snapshot_holds(world: World, full) -> None:
    _, backup, _ = full
    assert backup.kind == "full"
    digest, has_leaves = snapshot_digest(world, backup.name)
    assert recorded_digest(backup) == digest
    assert has_leaves  # the next incremental continues from exactly this state


def test_verify_after_backup_checks_the_backup_and_records_ok_on_its_snapshot(world: World, full) -> None:
    run, backup, _ = full
    assert run.done(VM)["verify_result"] == "ok"
    (found,) = [b for b in read_backups(world.driver, backup.dataset) if b.record.name == backup.name]
    assert found.verify_result == "ok" and found.verified


def test_reconciler_verify_passes_on_a_fresh_backup(world: World, full) -> None:
    _, backup, _ = full
    done = verify_cli(world, backup.run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verify-result: ok" in done.stdout


def test_apply_writes_the_metrics_textfile_at_the_end_of_the_run(full) -> None:
    _, _, textfile = full
    text = textfile.read_text()
    assert 'reconciler_backup_last_success_timestamp_seconds{' in text and f'vm="{VM}"' in text
    assert 'reconciler_backups_total{result="succeeded"} 1.0' in text


@pytest.fixture(scope="module")
def incremental(world: World, full, tmp_path_factory):  # type: ignore[no-untyped-def]
    world.control.write(VM, KEY, 300 * MiB + 4096, length=MiB, pattern="random", seed=21)
    textfile = tmp_path_factory.mktemp("metrics-env") / "reconciler.prom"
    run = world.apply(env=world.env(RECONCILER_METRICS_TEXTFILE=str(textfile)))
    assert run.returncode == 0, run.report()
    return run, newest(world), textfile


def test_an_incremental_records_the_digest_of_its_snapshots_image(world: World, full, incremental) -> None:
    _, before, _ = full
    run, backup, _ = incremental
    assert backup.kind == "incremental" and run.done(VM)["bytes_read"] <= 2 * MiB
    assert recorded_digest(backup) == snapshot_digest(world, backup.name)[0] != recorded_digest(before)
    (disk_done,) = [e for e in run.events if e["event"] == "disk-done" and e.get("vm") == VM]
    assert disk_done["digest_bytes_read"] == 64 * MiB  # one 64 MiB block of the 4 GiB image, not all of it


def test_the_metrics_textfile_path_can_come_from_the_environment(incremental) -> None:
    _, _, textfile = incremental
    assert f'vm="{VM}"' in textfile.read_text()


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_damaged_or_missing_leaves_file_falls_back_to_a_full_recompute(world: World, incremental,
                                                                          damage: str) -> None:
    leaves = leaves_path(live_image(world))
    if damage == "corrupt":
        leaves.write_bytes(b"\x00" * 100)
    else:
        leaves.unlink()
    world.control.write(VM, KEY, GiB + 12345, length=64 * 1024, pattern="random", seed=len(damage))
    run = world.apply()
    assert run.returncode == 0, run.report()
    backup = newest(world)
    digest, has_leaves = snapshot_digest(world, backup.name)
    assert recorded_digest(backup) == digest and has_leaves


def test_a_flipped_byte_fails_verify_after_backup_and_the_flagged_snapshot_stays(world: World,
                                                                                  incremental) -> None:
    image = live_image(world)
    with image.open("r+b") as handle:  # the pool's copy goes bad where no backup will write again
        handle.seek(3 * GiB + 5)
        handle.write(b"\xa5")
    world.control.write(VM, KEY, 200 * MiB, length=64 * 1024, pattern="random", seed=99)
    run = world.apply()
    assert run.returncode == 1
    done = run.done(VM)
    assert done["result"] == "failed" and "verification failed" in done["error"], done
    backup = newest(world)  # complete: it is a backup, just a bad one
    (found,) = [b for b in read_backups(world.driver, backup.dataset) if b.record.name == backup.name]
    assert found.verify_result and found.verify_result.startswith("failed:") and "checksum" in found.verify_result
    again = verify_cli(world, backup.run_id)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert "corrupt" in again.stdout + again.stderr
