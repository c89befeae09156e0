"""End to end on the lab: `reconciler apply` backs a VM up, the source changes, the next apply takes an
incremental; restoring the first backup gives the disk as it was then, the latest as it is now."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reconciler.lab.lab import Lab
from tests.integration.backup_world import RECONCILER, MiB, World, make_world, sha256

pytestmark = pytest.mark.lab
VM = "web-01"


@pytest.fixture(scope="module")
def backed_up(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> tuple[World, dict[str, str]]:
    """Two applies with a change in between; the disk's SHA-256 at each backup, by run id."""
    world = make_world(lab, tmp_path_factory.mktemp("restore-e2e"), "restore-e2e", (VM,))
    shas = []
    for step in range(2):
        if step:
            world.control.write(VM, 2000, 300 * MiB, length=2 * MiB, pattern="random", seed=23)
        shas.append(world.source_sha(VM, 2000))
        run = world.apply()
        assert run.returncode == 0, run.report()
    runs = [b.run_id for b in world.complete_backups(VM)]
    assert len(runs) == 2
    return world, dict(zip(runs, shas, strict=True))


def cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([RECONCILER, *args, "--policies", str(world.policy_dir)], capture_output=True,
                            text=True, env=world.env(), timeout=600)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    return result


def test_each_backup_restores_the_disk_as_it_was_then(backed_up: tuple[World, dict[str, str]], tmp_path: Path) -> None:
    world, shas = backed_up
    for run_id, expected in shas.items():
        target = tmp_path / run_id
        cli(world, "restore", VM, "--backup", run_id, "--export", str(target))
        assert sha256(target / f"{VM}-disk-2000.raw") == expected


def test_backups_lists_the_chain_apply_made_and_verify_passes(backed_up: tuple[World, dict[str, str]]) -> None:
    world, shas = backed_up
    chain = json.loads(cli(world, "backups", VM, "--json").stdout)
    assert [row["runId"] for row in chain["backups"]] == list(shas)
    assert [row["kind"] for row in chain["backups"]] == ["full", "incremental"]
    report = json.loads(cli(world, "verify", VM, "--json").stdout)
    assert report["ok"]
