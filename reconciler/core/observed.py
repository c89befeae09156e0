"""The observed world: what the adapters (vSphere PropertyCollector, ZFS driver, journal) report.

Plain frozen values, filled once per plan. Sequences are tuples; backups in a chain are kept sorted
oldest first (normalised on construction) so the planner never sorts them again.
Fields marked `volatile` (free-text errors, journal times) do not enter `Observed.fingerprint()`:
they change between two observations of the same world without changing the plan.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

OUR_SNAPSHOT_PREFIX = "reconciler-"
_VOLATILE = {"volatile": True}


class ApiType(StrEnum):
    VCENTER = "vcenter"
    ESXI = "esxi"


class ConnectionError_(StrEnum):
    FAILED = "connection-failed"
    THUMBPRINT_MISMATCH = "thumbprint-mismatch"


class PowerState(StrEnum):
    ON = "poweredOn"
    OFF = "poweredOff"
    SUSPENDED = "suspended"


class ToolsStatus(StrEnum):
    OK = "toolsOk"
    OLD = "toolsOld"
    NOT_RUNNING = "toolsNotRunning"
    NOT_INSTALLED = "toolsNotInstalled"


class BackupKind(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"


@dataclass(frozen=True)
class HostState:
    name: str
    connection_state: str = "connected"  # vSphere HostSystemConnectionState
    license_edition: str | None = None
    mgmt_nic_speed_mbps: int | None = None


@dataclass(frozen=True)
class ConnectionState:
    """One `Connection` as observed: reachable with its facts, or the error that stopped us."""

    name: str
    reachable: bool = True
    error: ConnectionError_ | None = None
    error_message: str = field(default="", metadata=_VOLATILE)
    api_type: ApiType = ApiType.VCENTER
    version: str = "8.0.2"
    license_edition: str | None = None
    hosts: tuple[HostState, ...] = ()


@dataclass(frozen=True)
class VmDisk:
    key: int  # device key, e.g. 2000
    capacity: int  # bytes
    backing: str  # "[ds1] web-01/web-01.vmdk"
    datastore: str
    change_id: str | None = None  # "52 3c …/17": the part before "/" is the CBT epoch


@dataclass(frozen=True)
class VmSnapshot:
    """A VMware snapshot of a VM (not a ZFS snapshot)."""

    moref: str
    name: str
    created: dt.datetime

    @property
    def ours(self) -> bool:
        return self.name.startswith(OUR_SNAPSHOT_PREFIX)

    @property
    def run_id(self) -> str | None:
        return self.name.removeprefix(OUR_SNAPSHOT_PREFIX) if self.ours else None


@dataclass(frozen=True)
class VolumeFinding:
    """A diagnostics-ready verdict on one volume, produced by `core.volumes` from partition facts."""

    disk: int
    volume: str  # "partition 2", "C:", a GUID…
    excluded: bool  # True: excluded by the policy (info); False: unsupported, cannot be read well
    reason: str


@dataclass(frozen=True)
class VmState:
    connection: str
    id: str  # MoRefID (vm-123) or standalone vmID (12): an address
    instance_uuid: str  # the identity
    name: str
    folder: str = "/"
    host: str = ""
    hw_version: int = 19
    power_state: PowerState = PowerState.ON
    tools_status: ToolsStatus = ToolsStatus.OK
    cbt_enabled: bool = True
    encrypted: bool = False
    tags: tuple[str, ...] = ()
    disks: tuple[VmDisk, ...] = ()
    snapshots: tuple[VmSnapshot, ...] = ()
    consolidation_needed: bool = False
    volumes: tuple[VolumeFinding, ...] = ()


@dataclass(frozen=True, slots=True)
class BackupDisk:
    key: int
    change_id: str | None
    capacity: int
    backing: str
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Backup:
    """One ZFS snapshot in a VM's dataset; a complete backup iff `complete`."""

    name: str  # the snapshot name after "@", e.g. reconciler-20260101T000000Z-a1b2c3
    created: dt.datetime  # aware, UTC
    kind: BackupKind | None = BackupKind.FULL
    complete: bool = True
    disks: tuple[BackupDisk, ...] = ()
    held: bool = False  # userrefs > 0
    ours: bool = True  # reconciler:managed=true
    created_ts: float = field(init=False, repr=False, compare=False, metadata=_VOLATILE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "created_ts", self.created.timestamp())


@dataclass(frozen=True, slots=True)
class ChainIndex:
    """Positions in a chain's backups, computed once on construction so retention never rescans."""

    complete: tuple[int, ...]  # our complete backups
    complete_ts: tuple[float, ...]  # their creation times, ascending (for bisection)
    protected: tuple[int, ...]  # held, or not ours
    incomplete: tuple[int, ...]  # ours, not complete

    @classmethod
    def of(cls, backups: tuple[Backup, ...]) -> ChainIndex:
        complete, protected, incomplete = [], [], []
        for i, b in enumerate(backups):
            if b.held or not b.ours:
                protected.append(i)
            if b.ours:
                (complete if b.complete else incomplete).append(i)
        return cls(tuple(complete), tuple(backups[i].created_ts for i in complete), tuple(protected),
                   tuple(incomplete))


@dataclass(frozen=True)
class Chain:
    """One VM dataset `<repository>/<instanceUuid>` and the recorded facts about its VM."""

    instance_uuid: str
    dataset: str
    vm_id: str = ""
    connection: str = ""
    vm_name: str = ""
    policy: str = ""
    retired: bool = False
    dirty_run_id: str | None = None
    backups: tuple[Backup, ...] = ()
    index: ChainIndex = field(init=False, repr=False, compare=False, metadata=_VOLATILE)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.backups, key=lambda b: (b.created_ts, b.name)))
        if any(a is not b for a, b in zip(ordered, self.backups, strict=True)):
            object.__setattr__(self, "backups", ordered)
        object.__setattr__(self, "index", ChainIndex.of(self.backups))


@dataclass(frozen=True)
class RepositoryState:
    name: str
    dataset: str
    reachable: bool = True
    error_message: str = field(default="", metadata=_VOLATILE)
    chains: tuple[Chain, ...] = ()


@dataclass(frozen=True)
class VmHistory:
    """What the journal remembers of a VM's recent runs."""

    instance_uuid: str
    last_failure: str | None = field(default=None, metadata=_VOLATILE)
    last_failure_at: dt.datetime | None = field(default=None, metadata=_VOLATILE)
    interrupted: bool = False  # the last backup failed mid-way (data partly written)


@dataclass(frozen=True)
class JournalState:
    runs_in_progress: frozenset[str] = frozenset()  # run ids of backups running right now
    vms: tuple[VmHistory, ...] = ()


@dataclass(frozen=True)
class Observed:
    connections: tuple[ConnectionState, ...] = ()
    vms: tuple[VmState, ...] = ()
    repositories: tuple[RepositoryState, ...] = ()
    journal: JournalState = JournalState()
    # (instanceUuid, snapshot name): the last replicated base of each replica (`core.replication`), which
    # source retention must keep even when its hold is missing, or the next send would have to be full
    replica_bases: frozenset[tuple[str, str]] = frozenset()

    def fingerprint(self) -> str:
        """sha256 of a canonical JSON of everything here that can change a plan."""
        text = json.dumps(_canonical(self), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, Chain):
        # A snapshot's properties are written once when it is made, and its name carries a unique run
        # id: names plus the flags that can still change identify the backups (5M hash in seconds).
        data = {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in ("backups", "index")}
        index = value.index
        data["backups"] = hashlib.sha256("\n".join([b.name for b in value.backups]).encode()).hexdigest()
        data["flags"] = [index.complete, index.protected, index.incomplete]
        return data
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name))
                for f in dataclasses.fields(value) if not f.metadata.get("volatile")}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, frozenset | set):
        return sorted(_canonical(v) for v in value)
    if isinstance(value, tuple | list):
        if value and isinstance(value[0], Backup):
            return [_canonical(v) for v in value]  # already in a canonical order (Chain sorts them)
        # the order adapters list things in is not part of the world's identity
        natural = _NATURAL_ORDER.get(type(value[0])) if value else None
        if natural is not None:
            return [_canonical(v) for v in sorted(value, key=natural)]
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


_NATURAL_ORDER: dict[type, Any] = {
    VmState: lambda v: (v.connection, v.id, v.instance_uuid),
    Chain: lambda c: (c.instance_uuid, c.dataset),
    VmDisk: lambda d: d.key,
    BackupDisk: lambda d: d.key,
}
