"""The lab can put a VM in "consolidation needed", as vSphere does when a snapshot removal left delta disks
behind, and answers `ConsolidateVMDisks_Task` (which stock vcsim 0.24 lacks) like vSphere: it clears the
flag, or fails while the `consolidate-fails` switch is armed.

pyVmomi observes; the control endpoint only causes. The site is this module's own, so the session's
vCenter never carries a flag another test does not expect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from reconciler.lab import inventory as inv
from reconciler.lab.vcsim import VcsimError
from tests.fixtures.vsphere import VsphereSite, start_site

pytestmark = pytest.mark.lab

TANGLED, BYSTANDER = "tangled-01", "bystander-01"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VsphereSite]:
    root = tmp_path_factory.mktemp("consolidation-site")
    vms = tuple(
        inv.VM(name, f"50030000-0000-4000-8000-0000000c0{n:03d}", f"42030000-0000-4000-8000-0000000c0{n:03d}",
               disks=(inv.Disk(2000, 64 << 20),), host="esx-c.lab", cbt=True)
        for n, name in enumerate((TANGLED, BYSTANDER))
    )
    started = start_site(inv.Inventory(mode=inv.Mode.VCENTER, hosts=(inv.Host("esx-c.lab"),), vms=vms),
                         root / "state")
    try:
        yield started
    finally:
        started.process.stop()


@pytest.fixture
def si(site: VsphereSite) -> Iterator[Any]:
    connection = site.connect()
    try:
        yield connection
    finally:
        with contextlib.suppress(Exception):
            Disconnect(connection)


@pytest.fixture(autouse=True)
def clean_slate(site: VsphereSite) -> Iterator[None]:
    """Every test starts and ends with no flag set and no switch armed."""
    yield
    for fault in site.control.faults():
        site.control.clear_fault(fault["name"])
    for name in (TANGLED, BYSTANDER):
        site.control.set_consolidation_needed(name, False)


def find_vm(si: Any, name: str) -> Any:
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return next(vm for vm in view.view if vm.name == name)
    finally:
        view.Destroy()


def consolidation_needed(si: Any) -> dict[str, bool]:
    """`runtime.consolidationNeeded` of every VM, read through the PropertyCollector as the planner does."""
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(
                obj=view, skip=True,
                selectSet=[vmodl.query.PropertyCollector.TraversalSpec(
                    name="view", path="view", skip=False, type=vim.view.ContainerView)])],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(
                type=vim.VirtualMachine, pathSet=["name", "runtime.consolidationNeeded"])],
        )
        result = content.propertyCollector.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
    finally:
        view.Destroy()
    out = {}
    for obj in result.objects:
        props = {p.name: p.val for p in obj.propSet}
        out[props["name"]] = bool(props.get("runtime.consolidationNeeded", False))
    return out


def consolidate(vm: Any) -> Any:
    """Run ConsolidateVMDisks_Task to its end; returns the finished task (its error when it failed)."""
    task = vm.ConsolidateVMDisks_Task()
    with contextlib.suppress(vim.fault.GenericVmConfigFault):
        WaitForTask(task)
    return task


def test_no_vm_needs_consolidation_at_start(si: Any) -> None:
    assert consolidation_needed(si) == {TANGLED: False, BYSTANDER: False}


def test_the_flag_set_by_the_lab_is_seen_through_the_property_collector(site: VsphereSite, si: Any) -> None:
    site.control.set_consolidation_needed(TANGLED)
    assert consolidation_needed(si) == {TANGLED: True, BYSTANDER: False}
    assert find_vm(si, TANGLED).runtime.consolidationNeeded is True


def test_the_flag_can_be_cleared_again(site: VsphereSite, si: Any) -> None:
    site.control.set_consolidation_needed(TANGLED)
    site.control.set_consolidation_needed(TANGLED, False)
    assert consolidation_needed(si)[TANGLED] is False


def test_consolidate_task_succeeds_and_clears_the_flag(site: VsphereSite, si: Any) -> None:
    site.control.set_consolidation_needed(TANGLED)
    site.control.set_consolidation_needed(BYSTANDER)
    vm = find_vm(si, TANGLED)
    task = consolidate(vm)
    assert task.info.state == vim.TaskInfo.State.success
    assert task.info.entity == vm and task.info.entityName == TANGLED
    assert consolidation_needed(si) == {TANGLED: False, BYSTANDER: True}


def test_consolidating_a_vm_that_needs_none_is_harmless(si: Any) -> None:
    task = consolidate(find_vm(si, TANGLED))
    assert task.info.state == vim.TaskInfo.State.success
    assert consolidation_needed(si)[TANGLED] is False


def test_consolidate_fails_switch_fails_the_task_and_keeps_the_flag(site: VsphereSite, si: Any) -> None:
    site.control.set_consolidation_needed(TANGLED)
    site.control.set_fault("consolidate-fails")
    vm = find_vm(si, TANGLED)
    for _ in range(2):  # without a count the switch stays armed
        task = consolidate(vm)
        assert task.info.state == vim.TaskInfo.State.error
        assert isinstance(task.info.error, vim.fault.GenericVmConfigFault)
        assert "consolidat" in task.info.error.msg
        assert task.info.entity == vm
    assert consolidation_needed(si)[TANGLED] is True


def test_consolidate_fails_switch_honours_its_count(site: VsphereSite, si: Any) -> None:
    site.control.set_consolidation_needed(TANGLED)
    site.control.set_fault("consolidate-fails", count=1)
    vm = find_vm(si, TANGLED)
    assert consolidate(vm).info.state == vim.TaskInfo.State.error
    assert consolidate(vm).info.state == vim.TaskInfo.State.success
    assert consolidation_needed(si)[TANGLED] is False
    assert site.control.faults() == []


def test_consolidate_fails_switch_naming_a_vm_spares_the_others(site: VsphereSite, si: Any) -> None:
    site.control.set_consolidation_needed(BYSTANDER)
    site.control.set_fault("consolidate-fails", vm=TANGLED)
    assert consolidate(find_vm(si, BYSTANDER)).info.state == vim.TaskInfo.State.success
    assert consolidate(find_vm(si, TANGLED)).info.state == vim.TaskInfo.State.error


def test_a_disconnected_host_refuses_to_consolidate(site: VsphereSite, si: Any) -> None:
    site.control.set_fault("host-disconnected", vm=TANGLED)
    task = find_vm(si, TANGLED).ConsolidateVMDisks_Task()
    with pytest.raises(vmodl.fault.HostNotConnected):
        WaitForTask(task)


def test_task_hangs_switch_holds_the_consolidate_task_until_cleared(site: VsphereSite, si: Any) -> None:
    site.control.set_fault("task-hangs", vm=TANGLED, seconds=600)
    try:
        task = find_vm(si, TANGLED).ConsolidateVMDisks_Task()
        assert task.info.state == vim.TaskInfo.State.running
        assert task.info.name.info.wsdlName == "ConsolidateVMDisks_Task"  # pyVmomi resolves the name
    finally:
        site.control.clear_fault("task-hangs")  # releases the hung task
    WaitForTask(task)
    assert task.info.state == vim.TaskInfo.State.success


def test_bad_requests_get_a_clear_error(site: VsphereSite) -> None:
    with pytest.raises(VcsimError, match='no VM named "nobody"'):
        site.control.set_consolidation_needed("nobody")
    with pytest.raises(VcsimError, match="value"):
        site.control._call("PUT", f"/vms/{TANGLED}/consolidation-needed", {"on": True})
