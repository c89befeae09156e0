"""Plain-data builders for planner tests: a small desired policy set and an observed world."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from reconciler.core.observed import (
    Backup,
    BackupDisk,
    BackupKind,
    Chain,
    ConnectionState,
    JournalState,
    Observed,
    RepositoryState,
    VmDisk,
    VmState,
)
from reconciler.policy.model import (
    Connection,
    PolicySet,
    ProtectionPolicy,
    Repository,
    Retention,
    Schedule,
    ScheduleRule,
    SecretRef,
    Selector,
    Weekday,
)

UTC = dt.UTC
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # a Tuesday
EVERY_DAY = frozenset(Weekday)
REPO_DATASET = "tank/agentless"


def uuid(n: int) -> str:
    return f"50{n:06d}-0000-4000-8000-{n:012d}"


WEB_VMS = Selector(names=("web-*",))
NO_JOURNAL = JournalState()


def desired(
    *,
    select: Selector = WEB_VMS,
    every: dt.timedelta = dt.timedelta(hours=24),
    retention: Retention | None = None,
    extra_policies: tuple[ProtectionPolicy, ...] = (),
    **policy: object,
) -> PolicySet:
    gold = ProtectionPolicy(name="gold", connection="vc1", repository="main", schedule="daily",
                            retention="std", select=select)
    gold = replace(gold, **policy)  # type: ignore[arg-type]
    return PolicySet(
        connections={"vc1": Connection("vc1", "vc1.lab", "backup", SecretRef(env="VC1_PASSWORD")),
                     "esx1": Connection("esx1", "esx1.lab", "root", SecretRef(env="ESX1_PASSWORD"))},
        repositories={"main": Repository("main", REPO_DATASET)},
        schedules={"daily": Schedule("daily", "UTC", rules=(ScheduleRule(EVERY_DAY, every),))},
        retentions={"std": retention or Retention("std", keep_last=3)},
        policies={p.name: p for p in (gold, *extra_policies)},
    )


def disk(key: int = 2000, *, capacity: int = 4 * 2**30, epoch: str = "52 3c", seq: int = 10,
         datastore: str = "ds1", vm_name: str = "web-01") -> VmDisk:
    return VmDisk(key, capacity, f"[{datastore}] {vm_name}/{vm_name}_{key}.vmdk", datastore, f"{epoch}/{seq}")


def vm(n: int = 1, name: str | None = None, **fields: object) -> VmState:
    name = name or f"web-{n:02d}"
    base = VmState(connection="vc1", id=f"vm-{100 + n}", instance_uuid=uuid(n), name=name,
                   folder="/dc1/vm/web", host="esx-01", disks=(disk(vm_name=name),))
    return replace(base, **fields)  # type: ignore[arg-type]


def recorded(d: VmDisk, seq: int | None = None) -> BackupDisk:
    change_id = d.change_id if seq is None else f"{d.change_id.rpartition('/')[0]}/{seq}"  # type: ignore[union-attr]
    return BackupDisk(d.key, change_id, d.capacity, d.backing)


def run_id(at: dt.datetime, n: int = 0) -> str:
    return f"{at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{n:06x}"


def backup(at: dt.datetime, of: VmState, **fields: object) -> Backup:
    base = Backup(name=f"reconciler-{run_id(at)}", created=at, kind=BackupKind.INCREMENTAL,
                  disks=tuple(recorded(d, seq=5) for d in of.disks))
    return replace(base, **fields)  # type: ignore[arg-type]


def chain(of: VmState, backups: tuple[Backup, ...] = (), **fields: object) -> Chain:
    base = Chain(of.instance_uuid, f"{REPO_DATASET}/{of.instance_uuid}", of.id, of.connection, of.name,
                 "gold", backups=backups)
    return replace(base, **fields)  # type: ignore[arg-type]


def hours_ago(h: float) -> dt.datetime:
    return NOW - dt.timedelta(hours=h)


def world(vms: tuple[VmState, ...] = (), chains: tuple[Chain, ...] = (), *,
          connections: tuple[ConnectionState, ...] | None = None,
          repo: RepositoryState | None = None, journal: JournalState = NO_JOURNAL) -> Observed:
    return Observed(
        connections=connections if connections is not None else (ConnectionState("vc1"),),
        vms=vms,
        repositories=(repo or RepositoryState("main", REPO_DATASET, chains=chains),),
        journal=journal,
    )


def protected(n: int = 1, last_hours_ago: float = 2.0, **vm_fields: object) -> tuple[VmState, Chain]:
    """A VM already paired, with one complete backup `last_hours_ago`: converged for a daily schedule."""
    v = vm(n, **vm_fields)
    return v, chain(v, (backup(hours_ago(last_hours_ago), v),))
