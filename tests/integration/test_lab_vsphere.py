"""The simulated vSphere behaves like vSphere where a backup product depends on it.

pyVmomi is the only client: every behaviour is observed through the vSphere API (plus the datastore's
HTTP file access, which is how disk bytes are read), and the lab's control endpoint only causes things.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.client import IncompleteRead
from typing import Any
from urllib.error import HTTPError

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from reconciler.lab.inventory import placeholder_signature
from tests.fixtures.vsphere import VsphereSite

pytestmark = pytest.mark.lab

KIB64 = 64 * 1024
GIB = 1 << 30


# -- helpers -----------------------------------------------------------------------------------------


def find_vm(si: Any, name: str) -> Any:
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        for vm in view.view:
            if vm.name == name:
                return vm
    finally:
        view.Destroy()
    raise LookupError(name)


def disk_backing(entity_config: Any, key: int) -> Any:
    for device in entity_config.hardware.device:
        if isinstance(device, vim.vm.device.VirtualDisk) and device.key == key:
            return device.backing
    raise LookupError(key)


@contextmanager
def snapshot(vm: Any, name: str = "lab-test", quiesce: bool = False) -> Iterator[Any]:
    task = vm.CreateSnapshot_Task(name=name, description="", memory=False, quiesce=quiesce)
    WaitForTask(task)
    snap = task.info.result
    try:
        yield snap
    finally:
        WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False))


def changed_areas(vm: Any, snap: Any, key: int, change_id: str, capacity: int) -> tuple[list[tuple[int, int]], int]:
    """All areas of a disk, looping on startOffset as a client must; returns (areas, number of calls)."""
    areas: list[tuple[int, int]] = []
    offset, calls = 0, 0
    while offset < capacity:
        info = vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=offset, changeId=change_id)
        calls += 1
        areas += [(a.start, a.length) for a in info.changedArea]
        assert info.startOffset == offset and info.length > 0
        offset = info.startOffset + info.length
    return areas, calls


def read_range(url: str, offset: int, length: int) -> bytes:
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-{offset + length - 1}"})
    with urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=30) as response:
        assert response.status == 206
        return response.read()


def set_cbt(vm: Any, enabled: bool) -> None:
    WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=enabled)))


@pytest.fixture
def si(vcenter: VsphereSite) -> Iterator[Any]:
    from pyVim.connect import Disconnect

    connection = vcenter.connect()
    yield connection
    with contextlib.suppress(vim.fault.NotAuthenticated):  # a test may expire the session on purpose
        Disconnect(connection)


@pytest.fixture
def fault_switch(vcenter: VsphereSite) -> Iterator[Any]:
    """Arms faults for one test and always disarms them afterwards."""
    armed: list[str] = []

    def arm(name: str, **params: Any) -> None:
        vcenter.control.set_fault(name, **params)
        armed.append(name)

    yield arm
    for name in armed:
        vcenter.control.clear_fault(name)


# -- inventory ---------------------------------------------------------------------------------------


def test_inventory_vms_carry_identity_folder_tags_and_hardware(si: Any, vcenter: VsphereSite) -> None:
    web = find_vm(si, "web-01")
    assert web.config.instanceUuid == "50030000-0000-4000-8000-000000000101"
    assert web.config.uuid == "42030000-0000-4000-8000-000000000101"
    assert web._moId == vcenter.endpoints.vm("web-01").moref
    assert (web.parent.name, web.parent.parent.name) == ("web", "prod")
    assert web.runtime.host.name == "esx-01.lab"
    assert web.config.version == "vmx-14"
    assert web.config.changeTrackingEnabled is True
    fields = si.RetrieveContent().customFieldsManager.field
    tags_field = next(f.key for f in fields if f.name == "tags")
    assert {v.key: v.value for v in web.customValue}[tags_field] == "env:prod,tier:web"
    assert find_vm(si, "legacy-01").config.version == "vmx-04"
    assert find_vm(si, "vault-01").config.keyId.keyId
    assert web.config.keyId is None
    appliance = find_vm(si, "appliance-01")
    assert appliance.guest.toolsStatus == "toolsNotInstalled"
    assert appliance.guest.toolsRunningStatus == "guestToolsNotRunning"
    assert web.guest.toolsRunningStatus == "guestToolsRunning"


def rest_call(site: VsphereSite, method: str, path: str, body: Any = None, session: str = "") -> Any:
    """vCenter's vAPI REST (tags live there, not in the SOAP API); basic auth when there is no session."""
    headers = {"Content-Type": "application/json"}
    if session:
        headers["vmware-api-session-id"] = session
    else:
        headers["Authorization"] = "Basic " + base64.b64encode(b"user:pass").decode()
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(site.endpoints.base_url + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=30) as response:
        return json.loads(response.read() or b"null")["value"]


def test_tags_are_attached_in_the_vapi_tagging_service(vcenter: VsphereSite) -> None:
    session = rest_call(vcenter, "POST", "/rest/com/vmware/cis/session")
    vm = {"id": vcenter.endpoints.vm("db-01").moref, "type": "VirtualMachine"}
    path = "/rest/com/vmware/cis/tagging/tag-association?~action=list-attached-tags"
    attached = set()
    for tag_id in rest_call(vcenter, "POST", path, {"object_id": vm}, session):
        tag = rest_call(vcenter, "GET", f"/rest/com/vmware/cis/tagging/tag/id:{tag_id}", session=session)
        category_path = f"/rest/com/vmware/cis/tagging/category/id:{tag['category_id']}"
        attached.add(f"{rest_call(vcenter, 'GET', category_path, session=session)['name']}:{tag['name']}")
    assert attached == {"env:prod", "tier:db"}


def test_hosts_report_licence_edition_and_nic_speed(si: Any) -> None:
    content = si.RetrieveContent()
    assert [lic.editionKey for lic in content.licenseManager.licenses] == ["vcenter-standard"]
    assert content.about.apiType == "VirtualCenter" and content.about.version == "7.0.3"
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
    speeds = {h.name: {p.linkSpeed.speedMb for p in h.config.network.pnic} for h in view.view}
    assert speeds == {"esx-01.lab": {10000}, "esx-02.lab": {10000}, "esx-03.lab": {1000}}


def test_disk_bytes_are_served_over_the_datastore_http_access(vcenter: VsphereSite, si: Any) -> None:
    web = find_vm(si, "web-01")
    url = vcenter.endpoints.flat_url(disk_backing(web.config, 2000).fileName)
    signature = placeholder_signature("web-01", 2000)
    assert read_range(url, 1 << 20, len(signature)) == signature


# -- CBT ---------------------------------------------------------------------------------------------


def test_cbt_areas_after_writes_are_exactly_the_written_blocks(vcenter: VsphereSite, si: Any) -> None:
    vm = find_vm(si, "db-01")
    with snapshot(vm) as before:
        base = disk_backing(before.config, 2001).changeId
        vcenter.control.write("db-01", 2001, 100, data=b"x" * 10)
        vcenter.control.write("db-01", 2001, 5 * KIB64 - 1, data=b"yz")  # straddles two blocks
        vcenter.control.write("db-01", 2001, 512 << 20, length=3 * KIB64 + 1, pattern="random", seed=7)
        with snapshot(vm) as after:
            areas, _ = changed_areas(vm, after, 2001, base, GIB)
    assert areas == [(0, KIB64), (4 * KIB64, 2 * KIB64), (512 << 20, 4 * KIB64)]


def test_change_id_advances_with_writes_and_is_shown_on_the_snapshot_disk(vcenter: VsphereSite, si: Any) -> None:
    vm = find_vm(si, "db-01")
    with snapshot(vm) as first:
        epoch, _, seq = disk_backing(first.config, 2000).changeId.rpartition("/")
        vcenter.control.write("db-01", 2000, 0, data=b"new")
        with snapshot(vm) as second:
            later = disk_backing(second.config, 2000).changeId
            assert later == f"{epoch}/{int(seq) + 1}"
            # the snapshot's disk is the frozen copy, not the live disk
            assert disk_backing(second.config, 2000).fileName != disk_backing(vm.config, 2000).fileName
            assert vm.QueryChangedDiskAreas(second, 2000, 0, later).changedArea == []


def test_star_lists_the_allocated_areas(vcenter: VsphereSite, si: Any) -> None:
    vm = find_vm(si, "app-01")
    set_cbt(vm, True)
    try:
        with snapshot(vm) as snap:
            areas, _ = changed_areas(vm, snap, 2000, "*", GIB)
    finally:
        set_cbt(vm, False)
    # the placeholder image holds a signature at 0 and at 1 MiB, nothing else
    assert areas == [(0, KIB64), (1 << 20, KIB64)]


def test_a_large_disk_is_answered_in_several_calls(si: Any) -> None:
    vm = find_vm(si, "web-01")
    with snapshot(vm) as snap:
        areas, calls = changed_areas(vm, snap, 2000, "*", 4 * GIB)
    assert calls == 4
    assert (0, KIB64) in areas


def test_cbt_reset_invalidates_earlier_change_ids(vcenter: VsphereSite, si: Any) -> None:
    vm = find_vm(si, "web-01")
    with snapshot(vm) as before:
        old = disk_backing(before.config, 2000).changeId
    vcenter.control.reset_cbt("web-01")
    with snapshot(vm) as snap:
        fresh = disk_backing(snap.config, 2000).changeId
        assert fresh.rpartition("/")[0] != old.rpartition("/")[0]
        with pytest.raises(vim.fault.FileFault):
            vm.QueryChangedDiskAreas(snap, 2000, 0, old)
        assert vm.QueryChangedDiskAreas(snap, 2000, 0, fresh).changedArea == []


def test_unknown_change_id_is_refused(si: Any) -> None:
    vm = find_vm(si, "web-01")
    with snapshot(vm) as snap:
        epoch = disk_backing(snap.config, 2000).changeId.rpartition("/")[0]
        for bogus in (f"{epoch}/999999", "not-a-change-id", "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/1"):
            with pytest.raises(vim.fault.FileFault):
                vm.QueryChangedDiskAreas(snap, 2000, 0, bogus)


def test_disabling_cbt_stops_queries_and_reenabling_starts_a_new_epoch(si: Any) -> None:
    vm = find_vm(si, "app-01")
    set_cbt(vm, True)
    with snapshot(vm) as snap:
        old = disk_backing(snap.config, 2000).changeId
    set_cbt(vm, False)
    assert vm.config.changeTrackingEnabled is False
    with snapshot(vm) as snap, pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(snap, 2000, 0, "*")
    set_cbt(vm, True)
    try:
        with snapshot(vm) as snap:
            assert disk_backing(snap.config, 2000).changeId.rpartition("/")[0] != old.rpartition("/")[0]
            with pytest.raises(vim.fault.FileFault):
                vm.QueryChangedDiskAreas(snap, 2000, 0, old)
    finally:
        set_cbt(vm, False)


def test_hardware_version_below_7_cannot_track_changes(si: Any) -> None:
    vm = find_vm(si, "legacy-01")
    set_cbt(vm, True)
    try:
        with snapshot(vm) as snap, pytest.raises(vim.fault.FileFault):
            vm.QueryChangedDiskAreas(snap, 2000, 0, "*")
    finally:
        set_cbt(vm, False)


# -- snapshots ---------------------------------------------------------------------------------------


def test_snapshot_bytes_stay_frozen_while_the_vm_writes(vcenter: VsphereSite, si: Any) -> None:
    vm = find_vm(si, "db-01")
    offset = 300 << 20
    vcenter.control.write("db-01", 2000, offset, data=b"before-snapshot")
    with snapshot(vm) as snap:
        vcenter.control.write("db-01", 2000, offset, data=b"AFTER--SNAPSHOT")
        frozen_url = vcenter.endpoints.flat_url(disk_backing(snap.config, 2000).fileName)
        live_url = vcenter.endpoints.flat_url(disk_backing(vm.config, 2000).fileName)
        assert read_range(frozen_url, offset, 15) == b"before-snapshot"
        assert read_range(live_url, offset, 15) == b"AFTER--SNAPSHOT"
    with pytest.raises(HTTPError):  # removing the snapshot removes its frozen copy
        read_range(frozen_url, offset, 15)


# -- faults ------------------------------------------------------------------------------------------


def test_quiesce_without_running_tools_fails_like_vsphere(si: Any) -> None:
    vm = find_vm(si, "appliance-01")
    with pytest.raises(vim.fault.ToolsUnavailable):
        WaitForTask(vm.CreateSnapshot_Task("q", "", False, True))
    with snapshot(vm, quiesce=False):
        pass


def test_quiesce_fails_switch(si: Any, fault_switch: Any) -> None:
    fault_switch("quiesce-fails", vm="web-01")
    vm = find_vm(si, "web-01")
    with pytest.raises(vim.fault.ApplicationQuiesceFault):
        WaitForTask(vm.CreateSnapshot_Task("q", "", False, True))
    with snapshot(vm, quiesce=False):  # an unquiesced snapshot still works
        pass
    assert vm.snapshot is None


def test_snapshot_create_fails_switch_names_one_vm(si: Any, fault_switch: Any) -> None:
    fault_switch("snapshot-create-fails", vm="web-01")
    with pytest.raises(vim.fault.SnapshotFault):
        WaitForTask(find_vm(si, "web-01").CreateSnapshot_Task("s", "", False, False))
    with snapshot(find_vm(si, "db-01")):
        pass


def test_snapshot_remove_fails_once(si: Any, fault_switch: Any) -> None:
    fault_switch("snapshot-remove-fails", count=1)
    vm = find_vm(si, "web-01")
    task = vm.CreateSnapshot_Task("r", "", False, False)
    WaitForTask(task)
    with pytest.raises(vim.fault.GenericVmConfigFault):
        WaitForTask(task.info.result.RemoveSnapshot_Task(False))
    WaitForTask(task.info.result.RemoveSnapshot_Task(False))
    assert vm.snapshot is None


def test_session_expires_switch_really_ends_the_session(vcenter: VsphereSite, si: Any, fault_switch: Any) -> None:
    content = si.RetrieveContent()
    fault_switch("session-expires", count=1)
    with pytest.raises(vim.fault.NotAuthenticated):
        content.rootFolder.childEntity  # noqa: B018 - a property read is a SOAP call
    with pytest.raises(vim.fault.NotAuthenticated):
        content.rootFolder.childEntity  # noqa: B018 - still gone: re-login is needed
    fresh = vcenter.connect()
    assert fresh.RetrieveContent().rootFolder.childEntity


def test_task_hangs_switch_keeps_tasks_running_until_cleared(vcenter: VsphereSite, si: Any) -> None:
    vcenter.control.set_fault("task-hangs", vm="web-01", seconds=600)
    try:
        vm = find_vm(si, "web-01")
        task = vm.CreateSnapshot_Task("h", "", False, False)
        assert task.info.state == "running"
    finally:
        vcenter.control.clear_fault("task-hangs")  # releases the hung tasks
    WaitForTask(task)
    assert task.info.state == "success"
    WaitForTask(task.info.result.RemoveSnapshot_Task(False))


def test_disk_read_error_switch_cuts_a_read_mid_stream(vcenter: VsphereSite, si: Any, fault_switch: Any) -> None:
    url = vcenter.endpoints.flat_url(disk_backing(find_vm(si, "web-01").config, 2000).fileName)
    fault_switch("disk-read-error", vm="web-01", afterBytes=4096, count=1)
    with pytest.raises(IncompleteRead):
        read_range(url, 0, 1 << 20)
    assert len(read_range(url, 0, 1 << 20)) == 1 << 20  # count=1: the next read is whole
    fault_switch("disk-read-error", vm="web-01")
    with pytest.raises(HTTPError):
        read_range(url, 0, 4096)


def test_host_disconnected_switch_fails_snapshot_operations(si: Any, fault_switch: Any) -> None:
    vm = find_vm(si, "db-01")
    fault_switch("host-disconnected", vm="db-01")
    assert vm.runtime.host.runtime.connectionState == "disconnected"
    with pytest.raises(vmodl.fault.HostNotConnected):
        WaitForTask(vm.CreateSnapshot_Task("d", "", False, False))


def test_host_reconnects_when_the_switch_is_cleared(vcenter: VsphereSite, si: Any) -> None:
    vcenter.control.set_fault("host-disconnected", vm="db-01")
    vcenter.control.clear_fault("host-disconnected")
    vm = find_vm(si, "db-01")
    assert vm.runtime.host.runtime.connectionState == "connected"
    with snapshot(vm):
        pass


# -- identity across sites ---------------------------------------------------------------------------


def test_esxi_to_vcenter_keeps_instance_uuid_with_a_new_moref(vcenter: VsphereSite, esxi: VsphereSite) -> None:
    standalone = esxi.connect()
    content = standalone.RetrieveContent()
    assert content.about.apiType == "HostAgent"
    assert [lic.editionKey for lic in content.licenseManager.licenses] == ["esxi-free"]
    on_host = find_vm(standalone, "app-01")
    in_vcenter = find_vm(vcenter.connect(), "app-01")
    assert on_host.config.instanceUuid == in_vcenter.config.instanceUuid
    assert on_host._moId != in_vcenter._moId
