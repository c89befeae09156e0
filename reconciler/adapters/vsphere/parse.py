"""Turn one PropertyCollector retrieval (`RawInventory`) into the planner's observed types. Pure."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from typing import Any

from reconciler.adapters.vsphere.collect import RawInventory, RawObject
from reconciler.adapters.vsphere.fastpc import as_list, wire_type
from reconciler.core.observed import (
    ApiType,
    ConnectionState,
    HostState,
    PowerState,
    ToolsStatus,
    VmDisk,
    VmSnapshot,
    VmState,
)

_TOOLS_RUNNING = {"guestToolsRunning": ToolsStatus.OK}
_DATASTORE_PATH = re.compile(r"^\[(?P<ds>[^\]]*)\]\s*(?P<path>.*)$")


def moref_id(value: Any) -> str:
    """`vim.Folder:group-v3` or a ManagedObject → `group-v3`."""
    return value._moId if hasattr(value, "_moId") else str(value).rsplit(":", 1)[-1].strip("'")


def datastore_of(file_name: str) -> str:
    match = _DATASTORE_PATH.match(file_name or "")
    return match.group("ds") if match else ""


def hardware_version(version: str | None) -> int:
    """`vmx-13` → 13; an unreadable version counts as 0 (treated as too old for CBT)."""
    match = re.fullmatch(r"vmx-(\d+)", version or "")
    return int(match.group(1)) if match else 0


def license_edition(licenses: tuple[tuple[str, str], ...]) -> str | None:
    """The edition that decides support: an evaluation or free licence anywhere wins, as it limits the API."""
    keys = [key for key, _ in licenses if key]
    for key in keys:
        if key == "eval" or "free" in key.lower():
            return key
    return keys[0] if keys else None


def _folder_paths(objects: Mapping[str, RawObject]) -> dict[str, str]:
    """Folder MoRef → path below its datacenter's VM folder (`prod/web`); the VM folder itself is `/`."""
    paths: dict[str, str] = {}

    def path_of(moref: str) -> str:
        if moref in paths:
            return paths[moref]
        obj = objects.get(moref)
        parent = moref_id(obj.props["parent"]) if obj and "parent" in obj.props else ""
        parent_obj = objects.get(parent)
        if obj is None or obj.kind != "Folder" or parent_obj is None or parent_obj.kind != "Folder":
            paths[moref] = "/"  # a datacenter's top folder (vm, host) or the root folder
        else:
            above = path_of(parent)
            paths[moref] = (above.rstrip("/") + "/" + obj.props.get("name", moref)).lstrip("/") or "/"
        return paths[moref]

    for moref, obj in objects.items():
        if obj.kind == "Folder":
            path_of(moref)
    return paths


def _walk_snapshots(trees: Any) -> Iterator[Any]:
    for tree in as_list(trees):
        yield tree
        yield from _walk_snapshots(tree.childSnapshotList)


def _snapshots(snapshot_info: Any) -> tuple[VmSnapshot, ...]:
    if snapshot_info is None:
        return ()
    return tuple(
        VmSnapshot(moref=moref_id(node.snapshot), name=node.name, created=_utc(node.createTime))
        for node in _walk_snapshots(snapshot_info.rootSnapshotList)
    )


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _disks(devices: Any) -> tuple[VmDisk, ...]:
    disks = []
    for device in as_list(devices):
        if wire_type(device) != "VirtualDisk":
            continue
        backing = device.backing
        file_name = getattr(backing, "fileName", "") or ""
        capacity = device.capacityInBytes or (device.capacityInKB or 0) * 1024
        change_id = getattr(backing, "changeId", None) or None
        disks.append(VmDisk(device.key, capacity, file_name, datastore_of(file_name), change_id))
    return tuple(sorted(disks, key=lambda d: d.key))


TAGS_ATTRIBUTE = "tags"


def _tags(props: Mapping[str, Any], tag_field: int | None) -> tuple[str, ...]:
    """Tags from the (legacy) `tag` property and from a custom attribute named `tags` holding
    comma-separated `category:tag` values — the attribute is how many shops tag VMs without the vAPI
    tagging service, and what the lab sets."""
    tags = {tag.key for tag in as_list(props.get("tag")) if getattr(tag, "key", None)}
    for value in as_list(props.get("customValue")):
        if tag_field is not None and value.key == tag_field:
            tags.update(t.strip() for t in (getattr(value, "value", "") or "").split(",") if t.strip())
    return tuple(sorted(tags))


def _tools(props: Mapping[str, Any]) -> ToolsStatus:
    running = props.get("guest.toolsRunningStatus")
    if running in _TOOLS_RUNNING:
        return ToolsStatus.OK
    if props.get("guest.toolsVersionStatus2") == "guestToolsNotInstalled":
        return ToolsStatus.NOT_INSTALLED
    return ToolsStatus.NOT_RUNNING


def _management_vnic(props: Mapping[str, Any]) -> str:
    """Device of the vmknic with the `management` service selected (vmk0 when the host does not say)."""
    for config in as_list(props.get("config.virtualNicManagerInfo.netConfig")):
        if getattr(config, "nicType", None) != "management":
            continue
        selected = set(as_list(config.selectedVnic))
        for vnic in as_list(config.candidateVnic):
            if vnic.key in selected and vnic.device:
                return str(vnic.device)
    return "vmk0"


def _mgmt_speed(props: Mapping[str, Any]) -> int | None:
    """Link speed of the management vmknic's uplinks: vmknic → portgroup → vSwitch → its pnics.

    That link carries NBD, so it sets the bandwidth limit; the fastest NIC of the host may be a vMotion or
    storage link. With several uplinks one vmknic uses one at a time, so the slowest counts. When the path
    cannot be followed (a distributed switch, a link down) the slowest linked NIC is taken: a limit too low
    only slows a backup, one too high can starve the host's management traffic.
    """
    speeds = {p.key: p.linkSpeed.speedMb for p in as_list(props.get("config.network.pnic"))
              if getattr(p, "linkSpeed", None) and p.linkSpeed.speedMb}
    device = _management_vnic(props)
    vnic = next((v for v in as_list(props.get("config.network.vnic")) if v.device == device), None)
    portgroup = next((pg for pg in as_list(props.get("config.network.portgroup"))
                      if vnic is not None and vnic.portgroup and getattr(pg.spec, "name", None) == vnic.portgroup),
                     None)
    vswitch = next((vs for vs in as_list(props.get("config.network.vswitch"))
                    if portgroup is not None and vs.key == portgroup.vswitch), None)
    uplinks = [speeds[key] for key in as_list(vswitch.pnic if vswitch else None) if key in speeds]
    if uplinks:
        return min(uplinks)
    return min(speeds.values()) if speeds else None


def to_observed(connection: str, raw: RawInventory) -> tuple[ConnectionState, tuple[VmState, ...]]:
    objects = {obj.moref: obj for obj in raw.objects}
    folders = _folder_paths(objects)
    hosts = {m: o for m, o in objects.items() if o.kind == "HostSystem"}
    edition = license_edition(raw.licenses)
    own_licenses = dict(raw.host_licenses)
    tag_field = next((key for key, name in raw.custom_fields if name == TAGS_ATTRIBUTE), None)
    state = ConnectionState(
        name=connection,
        api_type=ApiType.VCENTER if raw.api_type == "VirtualCenter" else ApiType.ESXI,
        version=raw.version,
        license_edition=edition,
        hosts=tuple(
            HostState(
                name=h.props.get("name", m),
                connection_state=str(h.props.get("runtime.connectionState", "connected")),
                # on vCenter each host has its own licence; on a standalone host the connection's is its own
                license_edition=own_licenses.get(m) if raw.api_type == "VirtualCenter" else edition,
                mgmt_nic_speed_mbps=_mgmt_speed(h.props),
            )
            for m, h in sorted(hosts.items())
        ),
    )
    vms = []
    for moref, obj in sorted(objects.items()):
        props = obj.props
        if obj.kind != "VirtualMachine" or "config.instanceUuid" not in props:
            continue  # a VM without config is being created or is inaccessible: nothing to plan on yet
        host = hosts.get(moref_id(props["runtime.host"])) if props.get("runtime.host") else None
        vms.append(
            VmState(
                connection=connection,
                id=moref,
                instance_uuid=props["config.instanceUuid"],
                name=props.get("name", moref),
                folder=folders.get(moref_id(props.get("parent", "")), "/"),
                host=host.props.get("name", "") if host else "",
                hw_version=hardware_version(props.get("config.version")),
                power_state=PowerState(props.get("runtime.powerState", "poweredOff")),
                tools_status=_tools(props),
                cbt_enabled=bool(props.get("config.changeTrackingEnabled", False)),
                encrypted=bool(props.get("config.keyId")),
                tags=_tags(props, tag_field),
                disks=_disks(props.get("config.hardware.device")),
                snapshots=_snapshots(props.get("snapshot")),
                consolidation_needed=bool(props.get("runtime.consolidationNeeded", False)),
            )
        )
    return state, tuple(vms)
