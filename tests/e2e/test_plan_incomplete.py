"""A plan that could not see part of the world says so, and never ends in "the world matches".

Run as the operator runs it, against the lab: the policies' connection takes its password from
RECONCILER_LAB_PASSWORD, which these tests leave unset; a second repository asks for the pyzfs driver,
which cannot run here (no /dev/zfs), so it is unobserved for real too.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.integration.backup_world import RECONCILER, World, make_world

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("test_plan_incomplete")]

VM = "web-01"
MATCHES = "The world matches the policies."
UNSET = "environment variable RECONCILER_LAB_PASSWORD is not set"
PYZFS_POLICY = """\
apiVersion: reconciler/v1
kind: Repository
metadata: {name: kernel-pool}
spec: {dataset: tank/agentless, driver: pyzfs}
---
apiVersion: reconciler/v1
kind: ProtectionPolicy
metadata: {name: kernel}
spec:
  connection: lab-vcenter
  repository: kernel-pool
  schedule: hourly
  retention: short
  select:
    names: [db-01]
"""


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory) -> World:
    return make_world(lab, tmp_path_factory.mktemp("incomplete"), "plan-incomplete", (VM,))


def without_password(world: World) -> dict[str, str]:
    env = world.env()
    env.pop("RECONCILER_LAB_PASSWORD")
    return env


def reconciler(world: World, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [RECONCILER, *args, str(world.policy_dir), "--state-dir", str(world.state_dir)]
    return subprocess.run(command, capture_output=True, text=True, env=env or world.env(), timeout=120)


@pytest.fixture
def kernel_repository(world: World):
    path = world.policy_dir / "kernel.yaml"
    path.write_text(PYZFS_POLICY)
    yield
    os.unlink(path)


def test_plan_without_the_password_says_it_is_incomplete_and_names_the_connection(world: World) -> None:
    done = reconciler(world, "plan", env=without_password(world))
    assert done.returncode == 1, done.stdout + done.stderr
    assert MATCHES not in done.stdout
    assert f"connection-failed: connection 'lab-vcenter': {UNSET}" in done.stdout  # the why, as a diagnostic
    assert done.stdout.rstrip().endswith(
        "No changes in what could be observed. The plan is incomplete: connection 'lab-vcenter' not observed."
    )
    assert "Traceback" not in done.stderr


def test_plan_json_without_the_password_is_marked_incomplete_with_the_reason(world: World) -> None:
    done = reconciler(world, "plan", "--json", env=without_password(world))
    assert done.returncode == 1, done.stderr
    plan = json.loads(done.stdout)
    assert plan["complete"] is False
    assert plan["unobserved"] == {"connections": [{"name": "lab-vcenter", "reason": UNSET}], "repositories": []}
    assert plan["actions"] == []


def test_detailed_exitcode_of_an_incomplete_plan_without_changes_is_1_not_0(world: World) -> None:
    done = reconciler(world, "plan", "--detailed-exitcode", env=without_password(world))
    assert done.returncode == 1, done.stdout + done.stderr


def test_apply_without_the_password_says_the_same_and_exits_1(world: World) -> None:
    done = reconciler(world, "apply", "--auto-approve", env=without_password(world))
    assert done.returncode == 1, done.stdout + done.stderr
    assert MATCHES not in done.stdout
    assert "The plan is incomplete: connection 'lab-vcenter' not observed." in done.stdout
    assert world.record(VM)[0] is None  # nothing was done


def test_apply_json_without_the_password_names_the_connection_on_stderr(world: World) -> None:
    done = reconciler(world, "apply", "--auto-approve", "--json", env=without_password(world))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "apply is incomplete: connection 'lab-vcenter' not observed" in done.stderr


def test_the_complete_plan_is_marked_complete(world: World) -> None:
    plan = world.plan()
    assert plan["complete"] is True
    assert plan["unobserved"] == {"connections": [], "repositories": []}


@pytest.mark.usefixtures("kernel_repository")
def test_an_unobservable_repository_is_listed_and_the_changes_elsewhere_still_planned(world: World) -> None:
    done = reconciler(world, "plan", "--json", "--detailed-exitcode")
    assert done.returncode == 2, done.stderr  # changes for what was observed
    plan = json.loads(done.stdout)
    assert plan["complete"] is False
    [repository] = plan["unobserved"]["repositories"]
    assert repository["name"] == "kernel-pool" and "/dev/zfs does not exist" in repository["reason"]
    assert plan["unobserved"]["connections"] == []
    assert {a["vm"]["name"] for a in plan["actions"]} == {VM}  # db-01's repository was not seen

    human = reconciler(world, "plan")
    assert human.returncode == 0, human.stdout + human.stderr
    summary = human.stdout.rstrip().splitlines()[-1]
    assert summary.startswith("Plan: 1 to pair, 1 backup (1 full, 0 incremental).")
    assert summary.endswith("The plan is incomplete: repository 'kernel-pool' not observed.")


@pytest.mark.usefixtures("kernel_repository")
def test_both_unobserved_kinds_are_named_in_one_line(world: World) -> None:
    done = reconciler(world, "plan", env=without_password(world))
    assert done.returncode == 1
    assert done.stdout.rstrip().endswith(
        "The plan is incomplete: connection 'lab-vcenter' and repository 'kernel-pool' not observed."
    )


@pytest.mark.usefixtures("kernel_repository")
def test_apply_does_what_it_could_see_and_still_exits_1_naming_what_it_could_not(world: World) -> None:
    """Last in this module: it backs web-01 up. Exit 0 would claim the world matches the policies."""
    done = reconciler(world, "apply", "--auto-approve", "--at", world.next_time())
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"✓ backup {VM}" in done.stdout
    assert "apply is incomplete: repository 'kernel-pool' not observed" in done.stderr
    assert len(world.complete_backups(VM)) == 1
