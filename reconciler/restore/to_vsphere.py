"""Restore a backup as a new VM: CreateVM_Task with one thin disk per backed-up disk (same capacity),
then each disk's bytes written into its `-flat.vmdk` with an HTTP PUT to vSphere's datastore file access
(`/folder/<path>?dcPath=…&dsName=…`, authorised by the session cookie). The new VM is left powered off."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pyVmomi import vim

from reconciler.adapters.vsphere.ops import TaskFailed, datastore_file_url, session_cookie, wait_task
from reconciler.adapters.vsphere.parse import moref_id
from reconciler.adapters.vsphere.session import (
    ConnectionFailed,
    Endpoint,
    PinnedHTTPSConnection,
    VsphereError,
    VsphereSession,
)
from reconciler.restore.clone import DiskImage
from reconciler.restore.locate import RestoreError

SCSI_UNITS = [u for u in range(16) if u != 7]  # unit 7 is the controller itself
UPLOAD_BLOCK = 1 << 20
GUEST_ID = "otherGuest64"


@dataclass(frozen=True)
class NewDisk:
    key: int  # the backup's disk key this disk restores
    datastore_path: str
    capacity: int


@dataclass(frozen=True)
class NewVm:
    moref: str
    name: str
    datacenter: str
    disks: tuple[NewDisk, ...]


def _datacenters(content: Any) -> list[tuple[str, Any]]:
    """(inventory path, datacenter) of every datacenter, folders included."""
    found, stack = [], [("", content.rootFolder)]
    while stack:
        prefix, folder = stack.pop()
        for child in folder.childEntity:
            path = f"{prefix}/{child.name}".lstrip("/")
            if isinstance(child, vim.Datacenter):
                found.append((path, child))
            elif isinstance(child, vim.Folder):
                stack.append((path, child))
    return found


def _compute_resources(folder: Any) -> list[Any]:
    found, stack = [], [folder]
    while stack:
        for child in stack.pop().childEntity:
            if isinstance(child, vim.ComputeResource):
                found.append(child)
            elif isinstance(child, vim.Folder):
                stack.append(child)
    return found


def _placement(content: Any, datastore: str | None) -> tuple[str, Any, Any, Any]:
    """(datacenter path, datacenter, resource pool, datastore) for the new VM: the named datastore, or
    the one with the most free space."""
    candidates = []
    for path, dc in _datacenters(content):
        for ds in dc.datastore:
            if datastore is None or ds.name == datastore:
                candidates.append((ds.summary.freeSpace or 0, path, dc, ds))
    if not candidates:
        raise RestoreError(f"no datastore named {datastore!r}" if datastore else "the connection has no datastore")
    _, path, dc, ds = max(candidates, key=lambda c: c[0])
    hosts = {moref_id(mount.key) for mount in ds.host}
    resources = _compute_resources(dc.hostFolder)
    usable = [r for r in resources if {moref_id(h) for h in r.host} & hosts] or resources
    if not usable:
        raise RestoreError(f"datacenter {dc.name} has no host or cluster to place a VM on")
    return path, dc, usable[0].resourcePool, ds


def config_spec(name: str, datastore: str, capacities: Sequence[int], memory_mb: int, cpus: int) -> Any:
    """The CreateVM spec: a paravirtual SCSI controller and one thin disk per capacity (bytes)."""
    if len(capacities) > len(SCSI_UNITS):
        raise RestoreError(f"{len(capacities)} disks do not fit on one SCSI controller ({len(SCSI_UNITS)} max)")
    controller = vim.vm.device.ParaVirtualSCSIController(key=-100, busNumber=0, sharedBus="noSharing")
    changes = [vim.vm.device.VirtualDeviceSpec(operation="add", device=controller)]
    for index, capacity in enumerate(capacities):
        disk = vim.vm.device.VirtualDisk(
            key=-(index + 1),
            controllerKey=-100,
            unitNumber=SCSI_UNITS[index],
            capacityInKB=-(-capacity // 1024),
            capacityInBytes=capacity,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent", thinProvisioned=True,
                                                                  fileName=""),
        )
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk))
    return vim.vm.ConfigSpec(
        name=name, guestId=GUEST_ID, memoryMB=memory_mb, numCPUs=cpus,
        files=vim.vm.FileInfo(vmPathName=f"[{datastore}]"), deviceChange=changes,
    )


def create_vm(session: VsphereSession, name: str, images: Sequence[DiskImage], *, datastore: str | None = None,
              memory_mb: int = 1024, cpus: int = 1) -> NewVm:
    """Create the VM (powered off) with disks of the images' capacities; does not write their bytes."""

    def create(si: Any) -> tuple[str, Any]:
        content = si.RetrieveContent()
        path, dc, pool, ds = _placement(content, datastore)
        view = content.viewManager.CreateContainerView(dc.vmFolder, [vim.VirtualMachine], True)
        try:
            if any(vm.name == name for vm in view.view):
                raise RestoreError(f"a VM named {name!r} already exists in {path}: choose another --name")
        finally:
            view.Destroy()
        spec = config_spec(name, ds.name, [image.capacity for image in images], memory_mb, cpus)
        return path, (dc.vmFolder, spec, pool)

    dc_path, (folder, spec, pool) = session.call(create)
    try:
        vm = wait_task(session, lambda si: folder.CreateVM_Task(config=spec, pool=pool), f"create VM {name}")
    except TaskFailed as exc:
        raise RestoreError(str(exc)) from None
    disks = session.call(lambda si: [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)])
    disks.sort(key=lambda d: (d.controllerKey, d.unitNumber))
    if len(disks) != len(images):
        raise RestoreError(f"VM {name} was created with {len(disks)} disks, expected {len(images)}")
    return NewVm(
        moref=moref_id(vm), name=name, datacenter=dc_path,
        disks=tuple(NewDisk(image.key, disk.backing.fileName, image.capacity)
                    for image, disk in zip(images, disks, strict=True)),
    )


def _connection(url: str, thumbprint: str | None) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme == "http":
        return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=300, blocksize=UPLOAD_BLOCK)
    if thumbprint is None:
        return http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=300, blocksize=UPLOAD_BLOCK,
                                           context=ssl.create_default_context())
    # the certificate is pinned by thumbprint (ESXi and vCenter certificates rarely chain to a trusted CA)
    connection = PinnedHTTPSConnection(Endpoint("https", parts.hostname or "", parts.port or 443, parts.path),
                                       thumbprint, timeout=300, blocksize=UPLOAD_BLOCK)
    try:
        connection.connect()
    except ConnectionFailed as exc:
        raise RestoreError(str(exc)) from None
    return connection


def upload_disk(session: VsphereSession, datacenter: str, disk: NewDisk, image: DiskImage,
                thumbprint: str | None = None) -> None:
    """PUT the image's bytes as the disk's flat extent."""
    url = datastore_file_url(session, datacenter, disk.datastore_path)
    parts = urlsplit(url)
    connection = _connection(url, thumbprint)
    try:
        with image.path.open("rb") as body:
            connection.request(
                "PUT", f"{parts.path}?{parts.query}", body=body,
                headers={"Cookie": session_cookie(session), "Content-Type": "application/octet-stream",
                         "Content-Length": str(image.capacity)},
            )
            response = connection.getresponse()
            response.read()
        if response.status not in (200, 201, 204):
            raise RestoreError(f"uploading disk {disk.key} to {disk.datastore_path} failed: HTTP {response.status} "
                               f"{response.reason}")
    except OSError as exc:
        raise RestoreError(f"uploading disk {disk.key} to {disk.datastore_path} failed: {exc}") from None
    finally:
        connection.close()


def restore_to_vsphere(session: VsphereSession, name: str, images: Sequence[DiskImage], *,
                       datastore: str | None = None, thumbprint: str | None = None) -> NewVm:
    """Create the VM and write every disk. On an upload failure the VM stays (its MoRef is in the error)
    so nothing created is lost track of."""
    try:
        vm = create_vm(session, name, images, datastore=datastore)
    except (VsphereError, vim.fault.VimFault) as exc:
        raise RestoreError(f"cannot create VM {name}: {exc}") from None
    by_key = {image.key: image for image in images}
    for disk in vm.disks:
        try:
            upload_disk(session, vm.datacenter, disk, by_key[disk.key], thumbprint)
        except RestoreError as exc:
            raise RestoreError(f"{exc} (VM {vm.name} {vm.moref} was created; delete it or retry)") from None
    return vm
