"""Planning off-site replication (pure): what to send to each VM's replica, what the target's retention
prunes there, and why a replica cannot be brought up to date.

Snapshots are matched by ZFS guid, never by name alone: a same-named snapshot with another guid is not our
replica. No clock, no ssh: the observed target arrives as data (`TargetState`), `now` as an argument.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from reconciler.core import retention, schedule
from reconciler.core.diagnostics import Code, Diagnostic, Severity
from reconciler.core.observed import Backup, BackupKind
from reconciler.core.refs import VmRef
from reconciler.policy.model import Replication, Retention, Schedule


@dataclass(frozen=True)
class ReplicaSnapshot:
    name: str  # after "@"
    guid: str
    created: dt.datetime  # aware
    complete: bool = True
    held: bool = False


@dataclass(frozen=True)
class SourceVm:
    """A VM's complete backups in the source repository, oldest first, with their guids."""

    vm: VmRef
    snapshots: tuple[ReplicaSnapshot, ...]
    referenced: int = 0  # bytes: what a full resend costs, about


class TargetFailure(StrEnum):
    UNREACHABLE = "unreachable"
    HOST_KEY_MISMATCH = "host-key-mismatch"


@dataclass(frozen=True)
class TargetState:
    reachable: bool = True
    failure: TargetFailure | None = None
    message: str = field(default="", metadata={"volatile": True})
    datasets: dict[str, tuple[ReplicaSnapshot, ...]] = field(default_factory=dict)  # instanceUuid -> snapshots


class ReplicaAction(StrEnum):
    REPLICATE = "replicate"
    PRUNE_REPLICA = "prune-replica"

    @property
    def symbol(self) -> str:
        return ">" if self is ReplicaAction.REPLICATE else "-"


@dataclass(frozen=True)
class ReplicaChange:
    action: ReplicaAction
    replication: str
    vm: VmRef
    snapshots: tuple[str, ...]  # to send (oldest first) or to prune on the target
    base: str | None = None  # incremental from this common snapshot; None: a full send
    kind: BackupKind | None = None
    reason: str = ""

    def describe(self) -> str:
        """`> replicate web-01: 3 snapshots (incremental from @X)`, what the plan shows."""
        count = f"{len(self.snapshots)} snapshot{'s' if len(self.snapshots) != 1 else ''}"
        if self.action is ReplicaAction.PRUNE_REPLICA:
            return f"- prune-replica {self.vm.name}: {count} on the target ({self.reason})"
        how = f"incremental from @{self.base}" if self.base else "full"
        return f"> replicate {self.vm.name}: {count} ({how})"


def common_base(source: Sequence[ReplicaSnapshot], target: Sequence[ReplicaSnapshot]) -> ReplicaSnapshot | None:
    """The newest source snapshot the target holds (same guid): where the next incremental starts."""
    on_target = {s.guid for s in target}
    for snap in reversed(source):
        if snap.guid in on_target:
            return snap
    return None


def protected_bases(replication: Replication, vms: Sequence[SourceVm], target: TargetState) -> dict[str, str]:
    """instanceUuid -> snapshot name that source retention must keep (the last replicated base)."""
    bases = {}
    for vm in vms:
        base = common_base(vm.snapshots, target.datasets.get(vm.vm.instance_uuid, ()))
        if base is not None:
            bases[vm.vm.instance_uuid] = base.name
    return bases


def plan_replication(replication: Replication, sched: Schedule, keep: Retention, vms: Sequence[SourceVm],
                     target: TargetState, now: dt.datetime) -> tuple[tuple[ReplicaChange, ...], tuple[Diagnostic, ...]]:
    changes: list[ReplicaChange] = []
    diagnostics: list[Diagnostic] = []
    if not target.reachable:
        code = (Code.REPLICA_HOST_KEY_MISMATCH if target.failure is TargetFailure.HOST_KEY_MISMATCH
                else Code.REPLICA_TARGET_UNREACHABLE)
        what = ("presented another host key than the pinned one: refused (check it; never accept it blindly)"
                if code is Code.REPLICA_HOST_KEY_MISMATCH else "is unreachable")
        diagnostics.append(Diagnostic(code, Severity.ERROR,
                                      f"replication {replication.name!r}: target {replication.target.url} {what}"
                                      f"{': ' + target.message if target.message else ''}; nothing replicated",
                                      location=replication.location))
        return (), tuple(diagnostics)
    rules = retention.policy_rules(keep)
    for vm in sorted(vms, key=lambda v: (v.vm.name, v.vm.instance_uuid)):
        source = tuple(s for s in vm.snapshots if s.complete)
        remote = target.datasets.get(vm.vm.instance_uuid, ())
        base = common_base(source, remote)
        source_guids = {s.guid for s in source}
        if remote and base is None:
            diagnostics.append(Diagnostic(
                Code.REPLICA_BASE_LOST, Severity.ERROR,
                f"replica of {vm.vm.name!r} shares no snapshot with the source: a full resend of "
                f"{len(source)} snapshot(s), about {vm.referenced / 2**30:.1f} GiB, is needed once the replica "
                f"dataset is moved away on the target", vm=vm.vm, location=replication.location))
            continue
        foreign = [s.name for s in remote if base is not None and s.created > base.created
                   and s.guid not in source_guids]
        if foreign:
            diagnostics.append(Diagnostic(
                Code.REPLICA_DIVERGED, Severity.ERROR,
                f"replica of {vm.vm.name!r} diverged: {', '.join(foreign)} on the target are not ours; "
                "nothing is sent until they are removed there", vm=vm.vm, location=replication.location))
            continue
        if not replication.paused and source and (base is None or base.guid != source[-1].guid) \
                and schedule.is_due(sched, base.created if base else None, now):
            pending = tuple(s.name for s in source if base is None or s.created > base.created)
            changes.append(ReplicaChange(
                ReplicaAction.REPLICATE, replication.name, vm.vm, pending, base.name if base else None,
                BackupKind.INCREMENTAL if base else BackupKind.FULL,
                f"{len(pending)} backup(s) not on the target yet"))
        if not replication.paused and remote:
            backups = tuple(Backup(s.name, s.created, complete=s.complete,
                                   held=s.held or (base is not None and s.guid == base.guid))
                            for s in sorted(remote, key=lambda s: (s.created, s.name)))
            decision = retention.decide(backups, rules, now, sched.timezone)
            if decision.prune:
                changes.append(ReplicaChange(ReplicaAction.PRUNE_REPLICA, replication.name, vm.vm,
                                             decision.prune, reason=f"outside retention {keep.name!r}"))
    return tuple(changes), tuple(diagnostics)
