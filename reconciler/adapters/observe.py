"""Observe: read vSphere, the ZFS repositories and the journal into one `Observed` world.

This is the only place that knows every adapter; the planner only ever sees the result. A connection or
repository that cannot be read is recorded as such (the planner turns it into a diagnostic and plans
nothing destructive for it) instead of aborting the whole observation.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.adapters.journal.base import Journal, never_completed
from reconciler.adapters.secrets import SecretUnavailable, resolve_secret
from reconciler.adapters.vsphere.collect import collect_inventory
from reconciler.adapters.vsphere.parse import to_observed
from reconciler.adapters.vsphere.session import ThumbprintMismatch, VsphereError, VsphereSession
from reconciler.adapters.zfs import ZfsError, select_driver
from reconciler.adapters.zfs.backups import BackupSnapshotRecord, RepositoryRecord, UnfinishedRun, read_repository
from reconciler.adapters.zfs.volumes import volume_findings
from reconciler.core.observed import (
    Backup,
    BackupDisk,
    BackupKind,
    Chain,
    ConnectionError_,
    ConnectionState,
    JournalState,
    Observed,
    RepositoryState,
    VmHistory,
    VmState,
    VolumeFinding,
)
from reconciler.policy.model import Connection, PolicySet, Repository

MAX_PARALLEL_CONNECTIONS = 8


@dataclass
class Sessions:
    """Open vSphere sessions by connection name, reused by observe and apply within one command."""

    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    base_dir: Path | None = None
    _open: dict[str, VsphereSession] = field(default_factory=dict)

    def get(self, connection: Connection) -> VsphereSession:
        session = self._open.get(connection.name)
        if session is None:
            password = resolve_secret(connection.password_from, environ=self.environ, base_dir=self.base_dir)
            session = VsphereSession(
                connection.address,
                connection.user,
                password,
                thumbprint=connection.thumbprint,
                insecure=connection.insecure,
            )
            self._open[connection.name] = session
        return session

    def close(self) -> None:
        for session in self._open.values():
            session.close()
        self._open.clear()


def observe_connection(connection: Connection, sessions: Sessions) -> tuple[ConnectionState, tuple[VmState, ...]]:
    try:
        session = sessions.get(connection)
        return to_observed(connection.name, collect_inventory(session))
    except ThumbprintMismatch as exc:
        return _unreachable(connection, ConnectionError_.THUMBPRINT_MISMATCH, str(exc)), ()
    except (VsphereError, SecretUnavailable, OSError) as exc:
        return _unreachable(connection, ConnectionError_.FAILED, str(exc)), ()


def _unreachable(connection: Connection, error: ConnectionError_, message: str) -> ConnectionState:
    return ConnectionState(name=connection.name, reachable=False, error=error, error_message=message)


def observe_repository(repository: Repository, unfinished_run: UnfinishedRun | None = None) -> RepositoryState:
    return _observe_repository(repository, unfinished_run)[0]


# instanceUuid -> what the VM's last complete backup found on its volumes
VolumeFindings = dict[str, tuple[VolumeFinding, ...]]


def _observe_repository(repository: Repository,
                        unfinished_run: UnfinishedRun | None = None) -> tuple[RepositoryState, VolumeFindings]:
    try:
        record = read_repository(select_driver(repository.driver.value), repository.dataset, unfinished_run)
    except ZfsError as exc:
        state = RepositoryState(repository.name, repository.dataset, reachable=False, error_message=str(exc))
        return state, {}
    return RepositoryState(repository.name, repository.dataset, chains=chains_of(record)), volumes_of(record)


def volumes_of(record: RepositoryRecord) -> VolumeFindings:
    """Pure: per VM (by instanceUuid), the volume findings its newest complete backup recorded."""
    found: VolumeFindings = {}
    for ds in record.datasets:
        complete = [s for s in record.snapshots_of(ds.dataset) if s.complete]
        if ds.managed and complete:
            found[ds.instance_uuid] = volume_findings(complete[-1])  # listed oldest first
    return found


def with_volumes(vms: tuple[VmState, ...], found: Mapping[str, tuple[VolumeFinding, ...]]) -> tuple[VmState, ...]:
    """Pure: the VMs with what their last backup found on their volumes (the plan shows it)."""
    return tuple(replace(vm, volumes=found[vm.instance_uuid]) if found.get(vm.instance_uuid) else vm for vm in vms)


def chains_of(record: RepositoryRecord) -> tuple[Chain, ...]:
    """Pure: the repository's VM datasets and their snapshots as the planner's chains."""
    snapshots: dict[str, list[BackupSnapshotRecord]] = {}
    for snap in record.snapshots:
        snapshots.setdefault(snap.dataset, []).append(snap)
    chains = []
    for ds in record.datasets:
        if not ds.managed:
            continue  # a dataset we did not create is not ours to plan on
        chains.append(
            Chain(
                instance_uuid=ds.instance_uuid,
                dataset=ds.dataset,
                vm_id=ds.vm_id or "",
                connection=ds.connection or "",
                vm_name=ds.vm_name or "",
                policy=ds.policy or "",
                retired=ds.retired,
                dirty_run_id=ds.dirty_run_id,
                backups=tuple(_backup(s) for s in snapshots.get(ds.dataset, ())),
            )
        )
    return tuple(chains)


def _backup(snap: BackupSnapshotRecord) -> Backup:
    created = _parse_time(snap.vm_created) or dt.datetime.fromtimestamp(snap.created, dt.UTC)
    kind = BackupKind(snap.kind) if snap.kind in ("full", "incremental") else None
    return Backup(
        name=snap.name.partition("@")[2],
        created=created,
        kind=kind,
        complete=snap.complete,
        disks=tuple(BackupDisk(d.key, d.change_id, d.capacity or 0, d.backing or "", d.sha256) for d in snap.disks),
        held=snap.held,
        ours=snap.ours,
    )


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def observe_journal(journal: Journal | None) -> JournalState:
    if journal is None:
        return JournalState()
    in_progress = frozenset(run.id for run in journal.runs_in_progress() if not run.interrupted)
    history = []
    for instance_uuid, event in sorted(journal.last_outcomes("backup").items()):
        failed = event.status.value == "failed"
        history.append(
            VmHistory(
                instance_uuid=instance_uuid,
                last_failure=(event.detail or {}).get("error") if failed else None,
                last_failure_at=event.at if failed else None,
                interrupted=failed and bool((event.detail or {}).get("dataWritten")),
            )
        )
    return JournalState(runs_in_progress=in_progress, vms=tuple(history))


def _remembered(journal: Journal | None) -> UnfinishedRun | None:
    return None if journal is None else lambda run_id: never_completed(journal, run_id)


def observe(policies: PolicySet, sessions: Sessions, journal: Journal | None = None) -> Observed:
    connections = sorted(policies.connections.values(), key=lambda c: c.name)
    repositories = sorted(policies.repositories.values(), key=lambda r: r.name)
    with ThreadPoolExecutor(max_workers=MAX_PARALLEL_CONNECTIONS) as pool:
        pending = [pool.submit(observe_connection, c, sessions) for c in connections]
        # repositories meanwhile on this thread: the journal is read here (an sqlite3 connection belongs
        # to the thread that made it)
        repos = [_observe_repository(r, _remembered(journal)) for r in repositories]
        vsphere = [future.result() for future in pending]
    found: VolumeFindings = {}
    for _, volumes in reversed(repos):  # the first repository wins if a VM has chains in several
        found.update(volumes)
    return Observed(
        connections=tuple(state for state, _ in vsphere),
        vms=with_volumes(tuple(vm for _, vms in vsphere for vm in vms), found),
        repositories=tuple(state for state, _ in repos),
        journal=observe_journal(journal),
    )
