"""`reconciler apply` and `reconciler status` as an operator meets them: approval, saved plans, the
repository lock, human output, and bad input answered with one clear line."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest

from reconciler.adapters.vsphere import ops
from tests.integration.backup_world import RECONCILER, World, make_world

# module-scoped worlds build on each other's steps: keep a module on one xdist worker
pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("test_apply_cli")]

VM = "app-01"  # CBT off in the lab: its first apply enables it, with the stun cycle


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory) -> World:
    world = make_world(lab, tmp_path_factory.mktemp("cli"), "apply-cli", (VM,))
    # the session lab is shared: another module may have backed the VM up (and so enabled CBT) before
    ops.set_change_tracking(world.session, world.vm_id(VM), False)
    return world


def reconciler(world: World, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECONCILER, *args], capture_output=True, text=True, env=world.env(), input=stdin,
                          timeout=300)


def test_apply_without_a_terminal_or_auto_approve_refuses_and_changes_nothing(world: World) -> None:
    done = reconciler(world, "apply", str(world.policy_dir), "--state-dir", str(world.state_dir), stdin="")
    assert done.returncode == 1
    assert "--auto-approve" in done.stderr and "Traceback" not in done.stderr
    assert "+ pair" in done.stdout  # the plan was shown
    assert world.record(VM)[0] is None


def test_first_apply_pairs_enables_cbt_and_backs_up_with_a_summary(world: World) -> None:
    done = reconciler(world, "apply", str(world.policy_dir), "--state-dir", str(world.state_dir),
                      "--auto-approve", "--at", world.next_time())
    assert done.returncode == 0, done.stdout + done.stderr
    for action in ("pair", "enable-cbt", "backup"):
        assert f"✓ {action} {VM}" in done.stdout
    assert "Run " in done.stdout and "succeeded" in done.stdout  # the summary table
    assert world.vmware_snapshots(VM) == []  # the stun cycle's snapshot is gone too
    (backup,) = world.complete_backups(VM)
    assert backup.kind == "full"


def test_a_saved_plan_is_applied_exactly(world: World, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    at = world.next_time()
    made = reconciler(world, "plan", str(world.policy_dir), "--state-dir", str(world.state_dir), "--at", at,
                      "--out", str(plan_file))
    assert made.returncode == 0, made.stderr
    done = reconciler(world, "apply", str(plan_file), "--state-dir", str(world.state_dir), "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"✓ backup {VM}" in done.stdout


def test_a_saved_plan_is_refused_once_the_world_moved_on(world: World, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    made = reconciler(world, "plan", str(world.policy_dir), "--state-dir", str(world.state_dir),
                      "--at", world.next_time(), "--out", str(plan_file))
    assert made.returncode == 0, made.stderr
    newest = world.complete_backups(VM)[-1].name
    world.driver.hold(newest, "operator")  # someone holds a backup: the observed world differs
    try:
        done = reconciler(world, "apply", str(plan_file), "--state-dir", str(world.state_dir), "--auto-approve")
    finally:
        world.driver.release(newest, "operator")
    assert done.returncode == 1
    assert "changed since this plan was made" in done.stderr and "plan" in done.stderr


def test_a_saved_plan_is_refused_when_the_policies_changed_since_and_nothing_is_done(
        world: World, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    made = reconciler(world, "plan", str(world.policy_dir), "--state-dir", str(world.state_dir),
                      "--at", world.next_time(), "--out", str(plan_file))
    assert made.returncode == 0, made.stderr
    assert "1 backup" in made.stdout  # a backup is due: applying would make snapshots
    before = [s.name for s in world.record(VM)[1]]
    world.write_policies(quiesce="off")  # what the reviewed plan would run with has changed
    try:
        done = reconciler(world, "apply", str(plan_file), "--state-dir", str(world.state_dir), "--auto-approve")
    finally:
        world.write_policies(quiesce="preferred")
    assert done.returncode == 1
    assert "the policies changed since this plan was made" in done.stderr and "run `reconciler plan" in done.stderr
    assert "Traceback" not in done.stderr
    assert [s.name for s in world.record(VM)[1]] == before  # no ZFS snapshot
    assert world.vmware_snapshots(VM) == []  # no VMware snapshot


def test_a_saved_plan_still_applies_when_the_policies_were_only_reformatted(world: World, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    made = reconciler(world, "plan", str(world.policy_dir), "--state-dir", str(world.state_dir),
                      "--at", world.next_time(), "--out", str(plan_file))
    assert made.returncode == 0, made.stderr
    # the digest is of the loaded desired state: a comment changes nothing that runs
    rest = world.policy_dir / "rest.yaml"
    rest.write_text("# reviewed by the change board\n" + rest.read_text())
    try:
        done = reconciler(world, "apply", str(plan_file), "--state-dir", str(world.state_dir), "--auto-approve")
    finally:
        world.write_policies()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"✓ backup {VM}" in done.stdout


def test_a_second_applier_on_the_same_repository_is_refused_naming_the_holder(world: World) -> None:
    lock_dir = world.state_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / "test-pool.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"run": "20260101T000000Z-abcdef", "pid": 4242, "host": "backup-01"}).encode())
        done = reconciler(world, "apply", str(world.policy_dir), "--state-dir", str(world.state_dir),
                          "--auto-approve", "--at", world.next_time())
    finally:
        os.close(fd)
    assert done.returncode == 1
    assert "another apply is running on repository 'test-pool'" in done.stderr
    assert "pid 4242 on backup-01" in done.stderr


def test_json_output_is_one_event_per_line(world: World) -> None:
    run = world.apply()
    assert run.returncode == 0, run.report()
    kinds = [e["event"] for e in run.events]
    assert kinds[0] == "run-started" and kinds[-1] == "run-done"
    assert "disk-started" in kinds and "action-done" in kinds


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["apply", "/nonexistent/policies", "--auto-approve"], "nonexistent"),
        (["apply", "{plan}", "--auto-approve"], "not a saved plan"),
    ],
)
def test_bad_input_gets_one_clear_line(world: World, tmp_path: Path, args: list[str], message: str) -> None:
    bad_plan = tmp_path / "bad.json"
    bad_plan.write_text("{not json")
    args = [a.replace("{plan}", str(bad_plan)) for a in args]
    done = reconciler(world, *args, "--state-dir", str(world.state_dir))
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr


def test_status_shows_the_vm_its_last_backup_and_when_the_next_is_due(world: World) -> None:
    while len(world.complete_backups(VM)) < 2:  # on its own, e.g. when xdist split the module: make a chain
        made = reconciler(world, "apply", str(world.policy_dir), "--state-dir", str(world.state_dir),
                          "--auto-approve", "--at", world.next_time())
        assert made.returncode == 0, made.stdout + made.stderr
    done = reconciler(world, "status", str(world.policy_dir), "--state-dir", str(world.state_dir))
    assert done.returncode == 0, done.stderr
    assert VM in done.stdout and "ok" in done.stdout
    rows = json.loads(reconciler(world, "status", str(world.policy_dir), "--state-dir", str(world.state_dir),
                                 "--json").stdout)
    (row,) = rows
    assert row["vm"] == VM and row["chain_length"] >= 2 and row["last_backup"] and row["next_due"]
