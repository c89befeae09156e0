"""`plan` against the lab: each action and diagnostic appears for the situation that causes it.

One world is set up once — a simulated vCenter, a standalone ESXi host, an old vCenter, a zfs-fuse pool
with chains in every state — and planned through the real pipeline (load → observe → plan), as
`reconciler plan` does. A second plan after changing the world covers what needs a before and after.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from pyVim.task import WaitForTask

from reconciler.adapters.vsphere.collect import collect_inventory
from reconciler.adapters.vsphere.parse import to_observed
from reconciler.adapters.vsphere.session import VsphereSession
from reconciler.adapters.zfs.backups import BackupRepository, backup_properties
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.cli.plan import make_plan
from reconciler.core.plan import Action, Plan
from reconciler.lab import inventory as inv
from tests.fixtures.vsphere import start_site

# module-scoped worlds build on each other's steps: keep a module on one xdist worker
pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("test_plan_lab")]

PASSWORD_ENV = "RECONCILER_TEST_LAB_PASSWORD"
AT = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)  # foreign snapshots are old by then
UUID = {
    "web-01": "50030000-0000-4000-8000-000000000101",
    "db-01": "50030000-0000-4000-8000-000000000102",
    "app-01": "50030000-0000-4000-8000-0000000001a1",
    "legacy-01": "50030000-0000-4000-8000-000000000104",
    "ghost": "50030000-0000-4000-8000-00000000dead",
}


def connection(name: str, address: str, thumbprint: str) -> str:
    return f"""apiVersion: reconciler/v1
kind: Connection
metadata: {{name: {name}}}
spec:
  address: {address}
  user: user
  passwordFrom: {{env: {PASSWORD_ENV}}}
  thumbprint: "{thumbprint}"
---
"""


def policy(name: str, conn: str, select: str, quiesce: str = "preferred") -> str:
    return f"""apiVersion: reconciler/v1
kind: ProtectionPolicy
metadata: {{name: {name}}}
spec:
  connection: {conn}
  repository: pool
  schedule: hourly
  retention: short
  quiesce: {quiesce}
  select: {select}
---
"""


def common(dataset: str) -> str:
    return f"""apiVersion: reconciler/v1
kind: Repository
metadata: {{name: pool}}
spec: {{dataset: {dataset}, driver: cli}}
---
apiVersion: reconciler/v1
kind: Schedule
metadata: {{name: hourly}}
spec:
  timezone: UTC
  rules:
    - every: 1h
---
apiVersion: reconciler/v1
kind: Retention
metadata: {{name: short}}
spec: {{keepLast: 4}}
"""


def run_id(at: dt.datetime, n: int) -> str:
    return f"{at:%Y%m%dT%H%M%SZ}-{n:06x}"


@pytest.fixture(scope="module")
def old_vcenter(tmp_path_factory):
    """A vSphere 5.5 vCenter with a 2 TiB disk: outside the supported versions, and a disk too big for NBD."""
    root = tmp_path_factory.mktemp("old-vcenter")
    inventory = inv.Inventory(
        mode=inv.Mode.VCENTER,
        version="5.5.0",
        hosts=(inv.Host("esx-old.lab"),),
        vms=(inv.VM("big-01", "50030000-0000-4000-8000-0000000005b1", "42030000-0000-4000-8000-0000000005b1",
                    disks=(inv.Disk(2000, 2 * 2**40),), host="esx-old.lab", cbt=True),),
    )
    site = start_site(inventory, root / "state")
    yield site
    site.process.stop()


@pytest.fixture(scope="module")
def world(vcenter, esxi, old_vcenter, zpool, tmp_path_factory):
    """Policies, chains and VMware snapshots for every case; returns (policy dir, vcenter, dataset)."""
    os.environ[PASSWORD_ENV] = "pass"
    dataset = f"{zpool.name}/plan"
    e, s, o = vcenter.endpoints, esxi.endpoints, old_vcenter.endpoints
    policies = tmp_path_factory.mktemp("policies")
    (policies / "world.yaml").write_text(
        connection("vc", e.sdk, e.thumbprint_sha256)
        + connection("esx", s.sdk, s.thumbprint_sha256)
        + connection("old", o.sdk, o.thumbprint_sha256)
        + connection("offline", "https://127.0.0.1:1/sdk", e.thumbprint_sha256)
        + connection("impostor", e.sdk, ":".join(["AB"] * 32))
        + policy("prod", "vc", "{names: [web-01, db-01, app-01, legacy-01, vault-01]}")
        + policy("infra", "vc", "{names: [appliance-01]}", quiesce="required")
        + policy("dupe", "vc", "{folders: [prod/db]}")
        + policy("standalone", "esx", "{names: [file-01]}")
        + policy("ghosts", "vc", f"{{instanceUuids: [{UUID['ghost']}]}}")
        + policy("legacy-site", "old", "{names: ['*']}")
        + policy("unreachable", "offline", "{names: ['*']}")
        + policy("spoofed", "impostor", "{names: ['*']}")
        + common(dataset)
    )

    with VsphereSession(e.sdk, e.username, e.password, thumbprint=e.thumbprint_sha256) as session:
        _, vms = to_observed("vc", collect_inventory(session))
    web = next(vm for vm in vms if vm.name == "web-01")
    assert web.disks[0].change_id, "the lab must show each disk's current change ID"

    repo = BackupRepository(CliZfsDriver(), dataset)
    disk = {"key": 2000, "changeId": web.disks[0].change_id, "capacity": web.disks[0].capacity,
            "backing": web.disks[0].backing}
    web_ds = repo.pair(UUID["web-01"], "web-01", web.id, "vc", "prod")
    for n, age in enumerate([dt.timedelta(days=d) for d in (5, 4, 3, 2, 1)] + [dt.timedelta(hours=2)]):
        created = AT - age
        repo.complete_backup(web_ds, run_id(created, n), backup_properties(
            "full" if n == 0 else "incremental", created.isoformat(), [disk], 0, 0))
    app_ds = repo.pair(UUID["app-01"], "app-01", "vm-999", "esx", "prod")  # recorded on the standalone host
    repo.mark_dirty(app_ds, run_id(AT - dt.timedelta(hours=3), 1))  # and a backup there was interrupted
    repo.pair(UUID["ghost"], "ghost-01", "vm-404", "vc", "ghosts")  # a VM that left the inventory

    si = vcenter.connect()
    snaps = []
    for name, snapshot_name in (("web-01", "reconciler-20260101T000000Z-0badc0"), ("legacy-01", "nightly-veeam")):
        vm = si.content.searchIndex.FindByUuid(None, UUID[name], True, True)
        task = vm.CreateSnapshot_Task(name=snapshot_name, description="", memory=False, quiesce=False)
        WaitForTask(task)
        snaps.append(task.info.result)
    yield policies, vcenter, dataset
    for snap in snaps:
        WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False))
    os.environ.pop(PASSWORD_ENV, None)


@pytest.fixture(scope="module")
def plan(world, tmp_path_factory) -> Plan:
    policies, _, _ = world
    return make_plan((policies,), AT, tmp_path_factory.mktemp("state"))


def actions(plan: Plan, vm: str) -> dict[Action, object]:
    return {c.action: c for c in plan.changes if c.vm.name == vm}


def codes(plan: Plan, vm: str | None = None) -> set[str]:
    return {d.code.value for d in plan.diagnostics if vm is None or (d.vm is not None and d.vm.name == vm)}


def test_new_vm_is_paired_and_gets_a_full_backup(plan):
    legacy = actions(plan, "legacy-01")
    assert Action.PAIR in legacy
    assert legacy[Action.BACKUP].kind.value == "full"


def test_hardware_version_below_7_means_every_backup_is_full(plan):
    assert "hw-version-below-7" in codes(plan, "legacy-01")
    assert Action.ENABLE_CBT not in actions(plan, "legacy-01")


def test_vm_with_cbt_off_gets_cbt_enabled(plan):
    assert Action.ENABLE_CBT in actions(plan, "app-01")


def test_moved_vm_is_rebound_keeping_its_chain(plan):
    rebind = actions(plan, "app-01")[Action.REBIND]
    assert (rebind.before.connection, rebind.before.id) == ("esx", "vm-999")
    assert rebind.after.connection == "vc" and rebind.after.id.startswith("vm-")
    assert Action.PAIR not in actions(plan, "app-01")


def test_due_vm_with_a_continuing_chain_gets_an_incremental(plan):
    backup = actions(plan, "web-01")[Action.BACKUP]
    assert backup.kind.value == "incremental"
    assert [d.mode.value for d in backup.disks] == ["incremental"]


def test_backups_outside_retention_are_pruned_oldest_first(plan, world):
    prunes = [c for c in plan.changes if c.vm.name == "web-01" and c.action is Action.PRUNE]
    now = [c for c in prunes if not c.after_backup]
    later = [c for c in prunes if c.after_backup]
    # 6 backups, keepLast 4: two go now; the planned backup pushes out one more, pruned only once it exists
    assert len(now) == 1 and len(now[0].snapshots) == 2
    assert len(later) == 1 and len(later[0].snapshots) == 1
    assert max(now[0].snapshots) < later[0].snapshots[0]
    assert all(name.startswith("reconciler-") for c in prunes for name in c.snapshots)


def test_dirty_dataset_is_repaired_and_its_next_backup_is_full(plan):
    app = actions(plan, "app-01")
    assert Action.REPAIR in app
    assert app[Action.BACKUP].kind.value == "full"


def test_vm_claimed_by_two_policies_is_a_conflict_and_not_backed_up(plan):
    assert "policy-conflict" in codes(plan, "db-01")
    assert Action.BACKUP not in actions(plan, "db-01")


def test_our_leftover_vmware_snapshot_is_removed(plan):
    remove = actions(plan, "web-01")[Action.REMOVE_VM_SNAPSHOT]
    assert remove.snapshots == ("reconciler-20260101T000000Z-0badc0",)


def test_old_snapshot_of_another_tool_is_reported(plan):
    assert "foreign-snapshot" in codes(plan, "legacy-01")


def test_encrypted_vm_is_reported_and_never_backed_up(plan):
    assert "encrypted-vm" in codes(plan, "vault-01")
    assert Action.BACKUP not in actions(plan, "vault-01")


def test_required_quiesce_without_tools_blocks_the_backup(plan):
    assert "tools-not-running" in codes(plan, "appliance-01")
    assert Action.BACKUP not in actions(plan, "appliance-01")


def test_free_esxi_licence_is_unsupported(plan):
    assert "unsupported-license" in codes(plan)
    assert Action.BACKUP not in actions(plan, "file-01")


def test_vm_that_left_the_inventory_keeps_its_chain(plan):
    assert "vm-not-found" in codes(plan)
    assert not [c for c in plan.changes if c.vm.instance_uuid == UUID["ghost"] and c.action is Action.UNPAIR]


def test_unreachable_connection_and_wrong_pin_are_diagnosed(plan):
    messages = {d.code.value: d.message for d in plan.diagnostics}
    assert "connection-failed" in messages and "offline" in messages["connection-failed"]
    assert "thumbprint-mismatch" in messages and "impostor" in messages["thumbprint-mismatch"]


def test_old_vsphere_and_huge_nbd_disks_are_diagnosed(plan):
    assert "unsupported-vsphere-version" in codes(plan)
    assert "nbd-large-disk" in codes(plan, "big-01")


def test_plan_round_trips_through_json(plan):
    assert Plan.from_json(plan.to_json()) == plan


def test_after_cbt_reset_and_a_dropped_policy(world, tmp_path_factory):
    """Second plan: CBT of web-01 reset → full with cbt-reset; legacy-01 no longer selected → unpair."""
    policies, vcenter, dataset = world
    BackupRepository(CliZfsDriver(), dataset).pair(UUID["legacy-01"], "legacy-01", "vm-x", "vc", "prod")
    text = (policies / "world.yaml").read_text()
    (policies / "world.yaml").write_text(text.replace("legacy-01, vault-01", "vault-01"))
    vcenter.control.reset_cbt("web-01")
    try:
        second = make_plan((policies,), AT, tmp_path_factory.mktemp("state2"))
    finally:
        (policies / "world.yaml").write_text(text)
    assert "cbt-reset" in codes(second, "web-01")
    assert actions(second, "web-01")[Action.BACKUP].kind.value == "full"
    assert Action.UNPAIR in actions(second, "legacy-01")


def test_plan_command_renders_and_saves(world, tmp_path):
    from click.testing import CliRunner

    from reconciler.cli.main import cli

    policies, _, _ = world
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(cli, ["plan", str(policies), "--at", AT.isoformat(), "--out", str(out),
                                      "--state-dir", str(tmp_path), "--detailed-exitcode"])
    assert result.exit_code == 2, result.output
    assert "Plan:" in result.output and "web-01" in result.output
    assert Plan.from_json(Path(out).read_text()).changes
