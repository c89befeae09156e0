"""A VM whose disks need consolidation, end to end: the plan shows the diagnostic and a `consolidate`
action, `reconciler apply` (run as the operator runs it) consolidates, and the next plan has nothing left
to consolidate. When consolidation keeps failing, apply says so and exits non-zero, and nothing else is
harmed: the backups still run, no VMware snapshot is left, the flag stays for the next plan.

The vCenter is this module's own vcsim-lab site (the session's sites never see the flag); the pool is the
session's zfs-fuse pool, under a dataset of this module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim

from reconciler.adapters.zfs.base import ZfsError
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.cli.plan import make_plan
from reconciler.core.diagnostics import Code
from reconciler.core.plan import Action, Plan
from reconciler.lab import inventory as inv
from tests.fixtures.vsphere import VsphereSite, start_site
from tests.integration.backup_world import RECONCILER, ApplyRun

# module-scoped worlds build on each other's steps: keep a module on one xdist worker
pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("test_consolidate_apply")]

TANGLED, BYSTANDER = "tangled-01", "bystander-01"
PASSWORD_ENV = "RECONCILER_CONSOLIDATE_TEST_PASSWORD"
START = dt.datetime.now(dt.UTC).replace(microsecond=0)

POLICIES = """\
apiVersion: reconciler/v1
kind: Connection
metadata: {{name: consolidate-vc}}
spec:
  address: {sdk}
  user: {user}
  passwordFrom: {{env: {password_env}}}
  thumbprint: "{thumbprint}"
---
apiVersion: reconciler/v1
kind: Repository
metadata: {{name: consolidate-pool}}
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
spec: {{keepLast: 5}}
---
apiVersion: reconciler/v1
kind: ProtectionPolicy
metadata: {{name: consolidate}}
spec:
  connection: consolidate-vc
  repository: consolidate-pool
  schedule: hourly
  retention: short
  quiesce: preferred
  select:
    names: [{tangled}, {bystander}]
"""


@dataclass
class Site:
    """The module's vCenter, policies and clock: every apply runs 2 h after the previous one."""

    vsphere: VsphereSite
    policies: Path
    state: Path
    dataset: str
    clock: dt.datetime = START

    def env(self) -> dict[str, str]:
        return {**os.environ, PASSWORD_ENV: self.vsphere.endpoints.password, "RECONCILER_RETRY_BACKOFF": "0.2"}

    def iso(self, at: dt.datetime) -> str:
        return at.isoformat().replace("+00:00", "Z")

    def plan(self) -> Plan:
        """The plan `reconciler plan` would show a minute after the last apply."""
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(PASSWORD_ENV, self.vsphere.endpoints.password)
            return make_plan((self.policies,), self.clock + dt.timedelta(minutes=1), self.state)

    def apply(self, *args: str, as_json: bool = True) -> ApplyRun:
        self.clock += dt.timedelta(hours=2)
        command = [RECONCILER, "apply", str(self.policies), "--state-dir", str(self.state), "--auto-approve",
                   "--at", self.iso(self.clock), *(["--json"] if as_json else []), *args]
        done = subprocess.run(command, capture_output=True, text=True, env=self.env(), timeout=300)
        if not as_json:
            return ApplyRun(done.returncode, [], done.stdout + done.stderr)
        events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        return ApplyRun(done.returncode, events, done.stderr)

    def needs_consolidation(self, name: str) -> bool:
        """What vSphere itself says (pyVmomi), not what the lab's control endpoint says."""
        si = self.vsphere.connect()
        try:
            content = si.RetrieveContent()
            view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
            try:
                vm = next(vm for vm in view.view if vm.name == name)
                return bool(vm.runtime.consolidationNeeded)
            finally:
                view.Destroy()
        finally:
            with contextlib.suppress(Exception):
                Disconnect(si)

    def vmware_snapshots(self, name: str) -> list[str]:
        si = self.vsphere.connect()
        try:
            vm = si.content.searchIndex.FindByUuid(None, vm_uuid(name), True, True)
            tree = vm.snapshot.rootSnapshotList if vm.snapshot else []
            return [snapshot.name for snapshot in tree]
        finally:
            with contextlib.suppress(Exception):
                Disconnect(si)


def vm_uuid(name: str) -> str:
    return f"50030000-0000-4000-8000-0000000c1{(TANGLED, BYSTANDER).index(name):03d}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, zpool: Any) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("consolidate-apply")
    vms = tuple(
        inv.VM(name, vm_uuid(name), vm_uuid(name).replace("50030000", "42030000", 1),
               disks=(inv.Disk(2000, 64 << 20),), host="esx-c.lab", cbt=True)
        for name in (TANGLED, BYSTANDER)
    )
    vsphere = start_site(inv.Inventory(mode=inv.Mode.VCENTER, hosts=(inv.Host("esx-c.lab"),), vms=vms),
                         root / "vcsim")
    dataset = f"{zpool.name}/consolidate"
    e = vsphere.endpoints
    policies = root / "policies"
    policies.mkdir()
    (policies / "consolidate.yaml").write_text(POLICIES.format(
        sdk=e.sdk, user=e.username, password_env=PASSWORD_ENV, thumbprint=e.thumbprint_sha256, dataset=dataset,
        tangled=TANGLED, bystander=BYSTANDER))
    try:
        yield Site(vsphere, policies, root / "state", dataset)
    finally:
        vsphere.process.stop()
        with contextlib.suppress(ZfsError):
            CliZfsDriver().destroy_dataset(dataset, recursive=True)


def consolidations(plan: Plan) -> list[str]:
    return [c.vm.name for c in plan.changes if c.action is Action.CONSOLIDATE]


def flagged(plan: Plan) -> list[str]:
    return [d.vm.name for d in plan.diagnostics if d.code is Code.CONSOLIDATION_NEEDED and d.vm is not None]


@pytest.fixture(scope="module")
def first_plan(site: Site) -> Plan:
    site.vsphere.control.set_consolidation_needed(TANGLED)
    return site.plan()


@pytest.fixture(scope="module")
def consolidated(site: Site, first_plan: Plan) -> tuple[ApplyRun, Plan]:
    """Apply the world the first plan saw, then plan again."""
    run = site.apply()
    return run, site.plan()


@pytest.fixture(scope="module")
def failing(site: Site, consolidated: Any) -> Iterator[ApplyRun]:
    """Consolidation needed again, and it keeps failing (a delta disk stays locked)."""
    site.vsphere.control.set_consolidation_needed(TANGLED)
    site.vsphere.control.set_fault("consolidate-fails", vm=TANGLED)
    try:
        yield site.apply()
    finally:
        site.vsphere.control.clear_fault("consolidate-fails")


def test_plan_shows_the_diagnostic_and_a_consolidate_action(first_plan: Plan) -> None:
    assert flagged(first_plan) == [TANGLED]
    assert consolidations(first_plan) == [TANGLED]
    (change,) = [c for c in first_plan.changes if c.action is Action.CONSOLIDATE]
    assert change.policy == "consolidate" and "consolidation" in change.reason


def test_apply_consolidates_the_vm(site: Site, consolidated: tuple[ApplyRun, Plan]) -> None:
    run, _ = consolidated
    assert run.returncode == 0, run.report()
    assert run.done(TANGLED, "consolidate")["result"] == "succeeded"
    assert not site.needs_consolidation(TANGLED)


def test_apply_backs_up_both_vms_alongside(consolidated: tuple[ApplyRun, Plan]) -> None:
    run, _ = consolidated
    for name in (TANGLED, BYSTANDER):
        assert run.done(name)["result"] == "succeeded", run.report()


def test_next_plan_has_nothing_to_consolidate(consolidated: tuple[ApplyRun, Plan]) -> None:
    _, after = consolidated
    assert consolidations(after) == [] and flagged(after) == []


def test_failing_consolidation_fails_the_apply_naming_the_vm(failing: ApplyRun) -> None:
    assert failing.returncode != 0
    done = failing.done(TANGLED, "consolidate")
    assert done["result"] == "failed"
    assert "consolidation failed 3 times" in done["error"] and "lock" in done["error"]
    assert f"apply failed for: {TANGLED}" in failing.stderr
    run_done = [e for e in failing.events if e["event"] == "run-done"]
    assert run_done and run_done[-1]["failed"] == [TANGLED]


def test_failing_consolidation_is_retried_before_giving_up(failing: ApplyRun) -> None:
    notes = failing.notes(TANGLED)
    assert sum("consolidation attempt" in note for note in notes) == 2, notes


def test_failing_consolidation_harms_nothing_else(site: Site, failing: ApplyRun) -> None:
    for name in (TANGLED, BYSTANDER):
        assert failing.done(name)["result"] == "succeeded", failing.report()
        assert site.vmware_snapshots(name) == []
    assert [e for e in failing.events if e["event"] == "action-done" and e["result"] == "failed"] == [
        failing.done(TANGLED, "consolidate")]
    assert site.needs_consolidation(TANGLED) and not site.needs_consolidation(BYSTANDER)


def test_after_a_failed_consolidation_the_next_plan_still_asks_for_it(site: Site, failing: ApplyRun) -> None:
    assert consolidations(site.plan()) == [TANGLED]


def test_human_output_names_the_failure(site: Site, failing: ApplyRun) -> None:
    site.vsphere.control.set_fault("consolidate-fails", vm=TANGLED)
    try:
        run = site.apply("--target", TANGLED, as_json=False)
    finally:
        site.vsphere.control.clear_fault("consolidate-fails")
    assert run.returncode == 1
    assert "consolidation failed 3 times" in run.stderr and f"apply failed for: {TANGLED}" in run.stderr
    assert "Traceback" not in run.stderr
