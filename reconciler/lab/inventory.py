"""The lab's vSphere inventory: which hosts and VMs a simulated vCenter or ESXi host serves.

Written in YAML by people (`reconciler/lab/inventories/*.yaml`), handed to `vcsim-lab` as JSON.
Disk images may be given relative to an image directory chosen at load time (the lab builds them there).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

INVENTORY_DIR = Path(__file__).parent / "inventories"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class InventoryError(ValueError):
    """An inventory file that cannot be used, with the place and the reason."""


class Mode(StrEnum):
    VCENTER = "vcenter"
    ESXI = "esxi"


class Tools(StrEnum):
    OK = "toolsOk"
    NOT_RUNNING = "toolsNotRunning"
    NOT_INSTALLED = "toolsNotInstalled"


class PowerState(StrEnum):
    ON = "poweredOn"
    OFF = "poweredOff"


@dataclass(frozen=True)
class Host:
    name: str
    nic_speed_mb: int = 10000
    license: str = ""  # the host's own licence edition on a vCenter (default: a paid ESXi edition)
    connection_state: str = "connected"
    # per physical NIC (`vmnic0`: the management uplink in vcsim), over nic_speed_mb; 0 = link down
    nic_speeds_mb: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nicSpeedMb": self.nic_speed_mb,
            "nicSpeedsMb": dict(self.nic_speeds_mb),
            "license": self.license,
            "connectionState": self.connection_state,
        }


@dataclass(frozen=True)
class Disk:
    key: int
    capacity: int
    image: Path | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"key": self.key, "capacity": self.capacity}
        if self.image is not None:
            data["image"] = str(self.image)
        return data


@dataclass(frozen=True)
class VM:
    name: str
    instance_uuid: str
    uuid: str
    disks: tuple[Disk, ...]
    folder: str = ""
    host: str = ""
    hardware_version: int = 14
    power_state: PowerState = PowerState.ON
    tools: Tools = Tools.OK
    encrypted: bool = False
    tags: tuple[str, ...] = ()
    cbt: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "folder": self.folder,
            "host": self.host,
            "instanceUuid": self.instance_uuid,
            "uuid": self.uuid,
            "hardwareVersion": self.hardware_version,
            "powerState": str(self.power_state),
            "tools": str(self.tools),
            "encrypted": self.encrypted,
            "tags": list(self.tags),
            "cbt": self.cbt,
            "disks": [d.to_json() for d in self.disks],
        }


@dataclass(frozen=True)
class Inventory:
    mode: Mode
    hosts: tuple[Host, ...]
    vms: tuple[VM, ...] = field(default=())
    version: str = "7.0.3"
    license_edition: str = "vcenter-standard"

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": str(self.mode),
            "version": self.version,
            "licenseEdition": self.license_edition,
            "hosts": [h.to_json() for h in self.hosts],
            "vms": [v.to_json() for v in self.vms],
        }

    def write_json(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    def vm(self, name: str) -> VM:
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(name)


def load(path: Path | str, image_dir: Path | str | None = None) -> Inventory:
    """Read an inventory YAML file; relative disk `image` paths resolve against `image_dir`."""
    path = Path(path)
    try:
        data = YAML(typ="safe").load(path.read_text())
    except OSError as err:
        raise InventoryError(f"{path}: cannot read ({err.strerror})") from err
    except YAMLError as err:
        raise InventoryError(f"{path}: not valid YAML: {err}") from err
    return parse(data, where=str(path), image_dir=Path(image_dir) if image_dir else None)


def default(mode: Mode | str, image_dir: Path | str | None = None) -> Inventory:
    """One of the lab's two default inventories (`vcenter` or `esxi`)."""
    return load(INVENTORY_DIR / f"{Mode(mode)}.yaml", image_dir)


def parse(data: Any, *, where: str = "inventory", image_dir: Path | None = None) -> Inventory:
    if not isinstance(data, Mapping):
        raise InventoryError(f"{where}: expected a mapping at the top level")
    try:
        mode = Mode(_get(data, "mode", str, where))
    except ValueError as err:
        raise InventoryError(f"{where}: mode must be 'vcenter' or 'esxi'") from err
    hosts = tuple(_host(h, f"{where}: hosts[{i}]") for i, h in enumerate(_get(data, "hosts", list, where)))
    if not hosts:
        raise InventoryError(f"{where}: at least one host is required")
    if mode is Mode.ESXI and len(hosts) != 1:
        raise InventoryError(f"{where}: an esxi inventory has exactly one host")
    host_names = [h.name for h in hosts]
    vms = tuple(
        _vm(v, f"{where}: vms[{i}]", host_names, i, image_dir) for i, v in enumerate(_get(data, "vms", list, where, []))
    )
    _unique([v.name for v in vms], "VM name", where)
    _unique([v.instance_uuid.lower() for v in vms], "instanceUuid", where)
    return Inventory(
        mode=mode,
        hosts=hosts,
        vms=vms,
        version=str(_get(data, "version", str, where, "7.0.3")),
        license_edition=_get(data, "licenseEdition", str, where, "vcenter-standard"),
    )


def _get(data: Mapping[str, Any], key: str, kind: type, where: str, fallback: Any = ...) -> Any:
    if key not in data:
        if fallback is ...:
            raise InventoryError(f"{where}: missing {key!r}")
        return fallback
    value = data[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise InventoryError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _unique(values: list[str], what: str, where: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise InventoryError(f"{where}: duplicate {what} {value!r}")
        seen.add(value)


def _host(data: Any, where: str) -> Host:
    if not isinstance(data, Mapping):
        raise InventoryError(f"{where}: expected a mapping")
    return Host(
        name=_get(data, "name", str, where),
        nic_speed_mb=_get(data, "nicSpeedMb", int, where, 10000),
        license=_get(data, "license", str, where, ""),
        connection_state=_get(data, "connectionState", str, where, "connected"),
        nic_speeds_mb=_nic_speeds(_get(data, "nicSpeedsMb", Mapping, where, {}), where),
    )


def _nic_speeds(data: Mapping[str, Any], where: str) -> tuple[tuple[str, int], ...]:
    for device, speed in data.items():
        if not isinstance(device, str) or isinstance(speed, bool) or not isinstance(speed, int) or speed < 0:
            raise InventoryError(f"{where}: nicSpeedsMb maps NIC names to Mb/s, got {device!r}: {speed!r}")
    return tuple(sorted(data.items()))


def _uuid(data: Mapping[str, Any], key: str, where: str, fallback: str) -> str:
    value = _get(data, key, str, where, fallback)
    if not _UUID.match(value):
        raise InventoryError(f"{where}: {key!r} is not a UUID: {value!r}")
    return value


def _vm(data: Any, where: str, hosts: list[str], index: int, image_dir: Path | None) -> VM:
    if not isinstance(data, Mapping):
        raise InventoryError(f"{where}: expected a mapping")
    name = _get(data, "name", str, where)
    where = f"{where} ({name})"
    host = _get(data, "host", str, where, hosts[index % len(hosts)])
    if host not in hosts:
        raise InventoryError(f"{where}: unknown host {host!r} (hosts: {', '.join(hosts)})")
    try:
        power = PowerState(_get(data, "powerState", str, where, "poweredOn"))
        tools = Tools(_get(data, "tools", str, where, "toolsOk"))
    except ValueError as err:
        raise InventoryError(f"{where}: {err}") from err
    disk_list = _get(data, "disks", list, where, [])
    disks = tuple(_disk(d, f"{where}: disks[{i}]", i, image_dir) for i, d in enumerate(disk_list))
    _unique([str(d.key) for d in disks], "disk key", where)
    return VM(
        name=name,
        instance_uuid=_uuid(data, "instanceUuid", where, f"50{index:06x}-0000-4000-8000-{index:012x}"),
        uuid=_uuid(data, "uuid", where, f"42{index:06x}-0000-4000-8000-{index:012x}"),
        disks=disks,
        folder=_get(data, "folder", str, where, ""),
        host=host,
        hardware_version=_get(data, "hardwareVersion", int, where, 14),
        power_state=power,
        tools=tools,
        encrypted=_get(data, "encrypted", bool, where, False),
        tags=tuple(_get(data, "tags", list, where, [])),
        cbt=_get(data, "cbt", bool, where, False),
    )


def _disk(data: Any, where: str, index: int, image_dir: Path | None) -> Disk:
    if not isinstance(data, Mapping):
        raise InventoryError(f"{where}: expected a mapping")
    capacity = _get(data, "capacity", int, where)
    if capacity <= 0 or capacity % 1024:
        raise InventoryError(f"{where}: capacity must be a positive multiple of 1024, got {capacity}")
    image = _get(data, "image", str, where, None) if "image" in data else None
    image_path = None
    if image is not None:
        image_path = Path(image)
        if not image_path.is_absolute():
            if image_dir is None:
                raise InventoryError(f"{where}: relative image {image!r} needs an image directory")
            image_path = image_dir / image_path
    return Disk(key=_get(data, "key", int, where, 2000 + index), capacity=capacity, image=image_path)


def scaled(count: int, *, hosts: int = 3, disk_capacity: int = 1 << 30) -> Inventory:
    """A vCenter inventory of `count` generated VMs (scale tests: loading, PropertyCollector paging)."""
    host_list = tuple(Host(f"esx-{i + 1:02d}.scale.lab") for i in range(hosts))
    vms = tuple(
        VM(
            name=f"vm-{i:04d}",
            instance_uuid=f"5003{i:04x}-0000-4000-8000-{i:012x}",
            uuid=f"4203{i:04x}-0000-4000-8000-{i:012x}",
            disks=(Disk(2000, disk_capacity),),
            folder=f"scale/group-{i % 10}",
            host=host_list[i % hosts].name,
            tags=(f"group:{i % 10}",),
        )
        for i in range(count)
    )
    return Inventory(mode=Mode.VCENTER, hosts=host_list, vms=vms)


PLACEHOLDER_OFFSETS = (0, 1 << 20)


def placeholder_signature(vm: str, disk_key: int) -> bytes:
    """The bytes a placeholder image holds at each of `PLACEHOLDER_OFFSETS`."""
    return f"reconciler-lab:{vm}:{disk_key}\n".encode()


def write_placeholder_images(inventory: Inventory) -> tuple[Path, ...]:
    """Create each missing disk image as a sparse file holding a known signature at a few offsets.

    Stands in until real images (partition tables, file systems) are built by `reconciler.lab.images`;
    existing files are left alone.
    """
    written: list[Path] = []
    for vm in inventory.vms:
        for disk in vm.disks:
            if disk.image is None or disk.image.exists():
                continue
            disk.image.parent.mkdir(parents=True, exist_ok=True)
            with disk.image.open("wb") as image:
                image.truncate(disk.capacity)
                for offset in PLACEHOLDER_OFFSETS:
                    image.seek(offset)
                    image.write(placeholder_signature(vm.name, disk.key))
            written.append(disk.image)
    return tuple(written)
