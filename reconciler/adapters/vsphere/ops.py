"""vSphere operations a backup needs: snapshots, CBT, changed areas, tasks. Every call goes through
`VsphereSession.call` so an expired session is renewed without restarting the work."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from pyVmomi import vim, vmodl

from reconciler.adapters.vsphere.parse import datastore_of, moref_id
from reconciler.adapters.vsphere.session import VsphereError, VsphereSession
from reconciler.core.extents import Range

TASK_POLL_SECONDS = 0.5
DEFAULT_TASK_TIMEOUT = 30 * 60.0
# vSphere answers QueryChangedDiskAreas for part of the disk at a time; a guard against a server that
# never advances (it must return length > 0 until the capacity is covered).
MAX_CBT_CALLS = 1_000_000


class TaskFailed(VsphereError):
    def __init__(self, what: str, fault: str, message: str) -> None:
        super().__init__(f"{what}: {fault}: {message}" if message else f"{what}: {fault}")
        self.fault = fault
        self.message = message


class TaskTimeout(VsphereError):
    pass


class ChangeIdInvalid(VsphereError):
    """The change ID is from before a CBT reset, or unknown: the disk needs a full backup."""


@dataclass(frozen=True)
class SnapshotDisk:
    key: int
    backing: str  # "[ds] dir/name-000001.vmdk": the frozen disk as of the snapshot
    datastore: str
    capacity: int
    change_id: str | None


def _vm(si: vim.ServiceInstance, moref: str) -> vim.VirtualMachine:
    return vim.VirtualMachine(moref, si._stub)


def _snapshot(si: vim.ServiceInstance, moref: str) -> vim.vm.Snapshot:
    return vim.vm.Snapshot(moref, si._stub)


def fault_name(fault: Any) -> str:
    return type(fault).__name__.rsplit(".", 1)[-1] if fault is not None else "unknown fault"


def wait_task(
    session: VsphereSession,
    start: Callable[[vim.ServiceInstance], vim.Task],
    what: str,
    *,
    timeout: float = DEFAULT_TASK_TIMEOUT,
) -> Any:
    """Start a task and wait for it; its result, or TaskFailed with vSphere's fault, or TaskTimeout."""
    try:
        task_id = session.call(lambda si: moref_id(start(si)))
    except vim.fault.VimFault as fault:
        raise TaskFailed(what, fault_name(fault), fault.msg or "") from None
    except vmodl.MethodFault as fault:
        raise TaskFailed(what, fault_name(fault), fault.msg or "") from None
    deadline = time.monotonic() + timeout
    while True:
        info = session.call(lambda si: vim.Task(task_id, si._stub).info)
        if info.state == vim.TaskInfo.State.success:
            return info.result
        if info.state == vim.TaskInfo.State.error:
            raise TaskFailed(what, fault_name(info.error), getattr(info.error, "msg", "") or "")
        if time.monotonic() > deadline:
            _cancel(session, task_id)
            raise TaskTimeout(f"{what}: still {info.state} after {timeout:.0f} s; cancelled")
        time.sleep(TASK_POLL_SECONDS)


def _cancel(session: VsphereSession, task_id: str) -> None:
    # not cancelable or already done: the timeout is what we report
    with contextlib.suppress(vmodl.MethodFault, VsphereError):
        session.call(lambda si: vim.Task(task_id, si._stub).CancelTask())


def create_snapshot(
    session: VsphereSession, vm_id: str, name: str, *, quiesce: bool, timeout: float = DEFAULT_TASK_TIMEOUT
) -> str:
    """A snapshot without memory; quiesced through VMware Tools when asked. Returns its MoRef id."""
    result = wait_task(
        session,
        lambda si: _vm(si, vm_id).CreateSnapshot_Task(
            name=name, description="made by reconciler; removed when its backup ends", memory=False,
            quiesce=quiesce,
        ),
        f"create snapshot {name} of {vm_id}",
        timeout=timeout,
    )
    return moref_id(result)


def remove_snapshot(session: VsphereSession, snapshot_id: str, *, timeout: float = DEFAULT_TASK_TIMEOUT) -> None:
    wait_task(
        session,
        lambda si: _snapshot(si, snapshot_id).RemoveSnapshot_Task(removeChildren=False, consolidate=True),
        f"remove snapshot {snapshot_id}",
        timeout=timeout,
    )


def consolidate_disks(session: VsphereSession, vm_id: str, *, timeout: float = DEFAULT_TASK_TIMEOUT) -> None:
    wait_task(session, lambda si: _vm(si, vm_id).ConsolidateVMDisks_Task(), f"consolidate disks of {vm_id}",
              timeout=timeout)


def set_change_tracking(
    session: VsphereSession, vm_id: str, enabled: bool, *, timeout: float = DEFAULT_TASK_TIMEOUT
) -> None:
    spec = vim.vm.ConfigSpec(changeTrackingEnabled=enabled)
    wait_task(session, lambda si: _vm(si, vm_id).ReconfigVM_Task(spec=spec), f"reconfigure CBT of {vm_id}",
              timeout=timeout)


def snapshot_disks(session: VsphereSession, snapshot_id: str) -> tuple[SnapshotDisk, ...]:
    """The disks as frozen by a snapshot, each with its change ID at snapshot time."""
    devices = session.call(lambda si: _snapshot(si, snapshot_id).config.hardware.device)
    disks = []
    for device in devices or ():
        if isinstance(device, vim.vm.device.VirtualDisk):
            backing = device.backing
            file_name = getattr(backing, "fileName", "") or ""
            disks.append(
                SnapshotDisk(
                    key=device.key,
                    backing=file_name,
                    datastore=datastore_of(file_name),
                    capacity=device.capacityInBytes or (device.capacityInKB or 0) * 1024,
                    change_id=getattr(backing, "changeId", None) or None,
                )
            )
    return tuple(sorted(disks, key=lambda d: d.key))


def changed_areas(
    session: VsphereSession, vm_id: str, snapshot_id: str, disk_key: int, capacity: int, change_id: str
) -> list[Range]:
    """Areas changed since `change_id` (`*`: every allocated area), over the whole disk.

    One call answers for `DiskChangeInfo.length` bytes from `startOffset` — often less than the rest of
    the disk — so we loop until the capacity is covered.
    """
    areas: list[Range] = []
    offset = 0
    for _ in range(MAX_CBT_CALLS):
        if offset >= capacity:
            return areas
        try:
            info = session.call(
                lambda si, start=offset: _vm(si, vm_id).QueryChangedDiskAreas(
                    snapshot=_snapshot(si, snapshot_id), deviceKey=disk_key, startOffset=start, changeId=change_id
                )
            )
        except (vim.fault.FileFault, vmodl.fault.InvalidArgument) as fault:
            raise ChangeIdInvalid(
                f"disk {disk_key} of {vm_id}: change ID {change_id!r} is no longer valid "
                f"({fault_name(fault)}: {fault.msg or ''}); a full backup of this disk is needed"
            ) from None
        areas.extend(Range(a.start, a.length) for a in info.changedArea or ())
        if info.length <= 0:
            raise VsphereError(f"disk {disk_key} of {vm_id}: QueryChangedDiskAreas made no progress at {offset}")
        offset = info.startOffset + info.length
    raise VsphereError(f"disk {disk_key} of {vm_id}: QueryChangedDiskAreas did not cover the disk")


def datacenter_of(session: VsphereSession, vm_id: str) -> str:
    """The inventory path of the VM's datacenter (for datastore file URLs)."""

    def walk(si: vim.ServiceInstance) -> str:
        obj = _vm(si, vm_id).parent
        names = []
        while obj is not None and not isinstance(obj, vim.Datacenter):
            obj = obj.parent
        if obj is None:
            return "ha-datacenter"
        names.append(obj.name)
        parent = obj.parent
        while isinstance(parent, vim.Folder) and parent.parent is not None:
            names.append(parent.name)
            parent = parent.parent
        return "/".join(reversed(names))

    return session.call(walk)


def datastore_file_url(session: VsphereSession, datacenter: str, datastore_path: str) -> str:
    """The HTTPS URL of a disk's data file (`-flat.vmdk`) in vSphere's datastore file access."""
    datastore = datastore_of(datastore_path)
    path = datastore_path.split("]", 1)[1].strip()
    if path.endswith(".vmdk") and not path.endswith("-flat.vmdk"):
        path = path[: -len(".vmdk")] + "-flat.vmdk"
    ep = session.endpoint
    query = urlencode({"dcPath": datacenter, "dsName": datastore})
    return f"{ep.scheme}://{ep.host}:{ep.port}/folder/{quote(path)}?{query}"


def session_cookie(session: VsphereSession) -> str:
    """The session cookie (`vmware_soap_session=…`) that authorises datastore file access."""
    return session.call(lambda si: si._stub.cookie)


def vm_snapshots(session: VsphereSession, vm_id: str) -> list[tuple[str, str]]:
    """(MoRef id, name) of every snapshot of the VM, depth first; empty when it has none."""

    def walk(si: vim.ServiceInstance) -> list[tuple[str, str]]:
        info = _vm(si, vm_id).snapshot
        found: list[tuple[str, str]] = []
        stack = list(info.rootSnapshotList) if info is not None else []
        while stack:
            tree = stack.pop()
            found.append((moref_id(tree.snapshot), tree.name))
            stack.extend(tree.childSnapshotList or ())
        return found

    return session.call(walk)


def power_state(session: VsphereSession, vm_id: str) -> str:
    return str(session.call(lambda si: _vm(si, vm_id).runtime.powerState))
