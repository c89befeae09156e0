"""Deep inspection with libguestfs: what only mounting a volume can tell.

Windows deduplication (its chunk store under `System Volume Information/Dedup`), User Profile Disk stores
(`UVHD-*.vhdx` files), each volume's mount points / drive letters and the guest OS. Disks are added
read-only and raw. One appliance launch costs ~16 s under TCG, so one `Appliance` serves all the disks
of a VM (and, in tests, many VMs' disks at once).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from reconciler.adapters.inspect.model import InspectError
from reconciler.adapters.inspect.vm import DeepFacts

DEDUP_DIRECTORY = "/System Volume Information/Dedup"
UPD_PATTERN = "UVHD-*.vhdx"
UPD_SEARCH_DEPTH = 4  # a UPD store is a share's folder: root or a few levels below it
KVM_CREATE_VM = 0xAE01
DEVICE = re.compile(r"^/dev/sd([a-z]+)(\d*)$")


def _cpu_has_virtualisation() -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return any(line.startswith("flags") and ({"vmx", "svm"} & set(line.split())) for line in cpuinfo)
    except OSError:
        return False


def _kvm_usable() -> bool:
    """/dev/kvm may exist, and even create a VM, on a machine whose CPU lacks VT-x/AMD-V (a sandbox
    or a VM without nested virtualisation); the appliance then dies at launch. Check both."""
    if not _cpu_has_virtualisation():
        return False
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.close(fcntl.ioctl(fd, KVM_CREATE_VM, 0))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def configure_backend() -> None:
    """Without a usable KVM, libguestfs must be told to emulate (TCG), or its launch fails."""
    if "LIBGUESTFS_BACKEND_SETTINGS" not in os.environ and not _kvm_usable():
        os.environ["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"


@dataclass(frozen=True)
class GuestOs:
    root: str  # the root file system's device, as guestfs names it
    type: str  # windows, linux, …
    distro: str
    product_name: str


@dataclass(frozen=True)
class DeepReport:
    volumes: dict[tuple[int, int], DeepFacts] = field(default_factory=dict)  # (disk, partition) -> facts
    operating_systems: tuple[GuestOs, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_json(self) -> str:
        """Compact JSON, small enough for a ZFS user property on the backup's snapshot."""
        return json.dumps(
            {
                "volumes": [
                    [disk, part, facts.upd, facts.dedup, list(facts.mount_points)]
                    for (disk, part), facts in sorted(self.volumes.items())
                ],
                "os": [[o.root, o.type, o.distro, o.product_name] for o in self.operating_systems],
                "warnings": list(self.warnings),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> DeepReport:
        """The inverse of `to_json`; raises InspectError on anything else."""
        try:
            data = json.loads(text)
            volumes = {
                (int(disk), int(part)): DeepFacts(bool(upd), bool(dedup), tuple(map(str, mounts)))
                for disk, part, upd, dedup, mounts in data["volumes"]
            }
            systems = tuple(GuestOs(*map(str, entry)) for entry in data["os"])
            return cls(volumes, systems, tuple(map(str, data["warnings"])))
        except (ValueError, TypeError, KeyError) as exc:
            raise InspectError(f"not a deep inspection record: {exc}") from exc


def _disk_index(letters: str) -> int:
    """sda -> 0, sdz -> 25, sdaa -> 26."""
    index = 0
    for letter in letters:
        index = index * 26 + (ord(letter) - ord("a") + 1)
    return index - 1


def _location(device: str) -> tuple[int, int] | None:
    """(disk index, partition index) of a guestfs device; a whole disk (no table) is partition 1."""
    match = DEVICE.match(device)
    if match is None:
        return None
    return _disk_index(match.group(1)), int(match.group(2) or 1)


class Appliance:
    """A launched libguestfs appliance over some disks; use as a context manager."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        configure_backend()
        import guestfs  # Debian python3-guestfs; imported here so the pure reader never needs it

        self.paths = [os.fspath(p) for p in paths]
        self._g: Any = guestfs.GuestFS(python_return_dict=True)
        try:
            for path in self.paths:
                if not os.path.exists(path):
                    raise InspectError(f"{path}: no such image")
                self._g.add_drive_opts(path, readonly=1, format="raw")
            self._g.launch()
        except RuntimeError as exc:
            self._g.close()
            raise InspectError(f"libguestfs could not start: {exc}") from exc

    def close(self) -> None:
        self._g.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inspect(self, disks: Sequence[int] | None = None) -> DeepReport:
        """Deep facts for the volumes of `disks` (indices into `paths`; all when None)."""
        wanted = set(range(len(self.paths)) if disks is None else disks)
        g = self._g
        mount_points: dict[tuple[int, int], list[str]] = {}
        systems = []
        for root in g.inspect_os():
            location = _location(root)
            if location is None or location[0] not in wanted:
                continue
            systems.append(
                GuestOs(
                    root=root,
                    type=g.inspect_get_type(root),
                    distro=g.inspect_get_distro(root),
                    product_name=g.inspect_get_product_name(root),
                )
            )
            mapped = dict(g.inspect_get_mountpoints(root))
            if g.inspect_get_type(root) == "windows":
                mapped |= {f"{letter}:": dev for letter, dev in g.inspect_get_drive_mappings(root).items()}
            for mount_point, device in mapped.items():
                if (where := _location(device)) is not None:
                    mount_points.setdefault(where, []).append(mount_point)
        volumes, warnings = {}, []
        for device, fstype in self._filesystems().items():
            where = _location(device)
            if where is None or where[0] not in wanted:
                continue
            upd = dedup = False
            if fstype == "ntfs":
                try:
                    upd, dedup = self._windows_features(device)
                except RuntimeError as exc:
                    warnings.append(f"disk {where[0]} partition {where[1]}: cannot mount {fstype}: {exc}")
            points = tuple(sorted(mount_points.get(where, ())))
            if upd or dedup or points:
                volumes[where] = DeepFacts(upd=upd, dedup=dedup, mount_points=points)
        return DeepReport(volumes, tuple(systems), tuple(warnings))

    def _filesystems(self) -> dict[str, str]:
        """Device -> file system type of every partition, and of every disk without partitions.

        Not `list_filesystems`: it also scans for LVM, MD and LDM, several times slower under TCG."""
        g = self._g
        partitions = g.list_partitions()
        partitioned = {g.part_to_dev(p) for p in partitions}
        candidates = partitions + [d for d in g.list_devices() if d not in partitioned]
        found = {}
        for device in candidates:
            try:
                fstype = g.vfs_type(device)
            except RuntimeError:  # nothing blkid recognises
                continue
            if fstype:
                found[device] = fstype
        return found

    def _windows_features(self, device: str) -> tuple[bool, bool]:
        g = self._g
        g.mount_ro(device, "/")
        try:
            try:
                dedup = bool(g.is_dir(g.case_sensitive_path(DEDUP_DIRECTORY)))
            except RuntimeError:  # a path component is missing
                dedup = False
            patterns = ["/" + "*/" * depth + UPD_PATTERN for depth in range(UPD_SEARCH_DEPTH)]
            upd = any(g.glob_expand(pattern) for pattern in patterns)
            return upd, dedup
        finally:
            g.umount_all()
