"""Observe one replication for the pure planner: the source VMs' complete backups with guids (one local
`zfs get`) and the target's replicas (one `zfs get` over ssh). A failed ssh becomes data, not an exception."""

from __future__ import annotations

import datetime as dt

from reconciler.adapters.replication.ssh import SshEndpoint, SshError, SshFailure, SshSession
from reconciler.adapters.replication.target import SnapshotGuid, list_local, list_remote
from reconciler.adapters.zfs.runner import run
from reconciler.core.refs import VmRef
from reconciler.core.replication import ReplicaSnapshot, SourceVm, TargetFailure, TargetState
from reconciler.policy.model import Replication


def _snapshot(s: SnapshotGuid) -> ReplicaSnapshot:
    return ReplicaSnapshot(s.name, s.guid, dt.datetime.fromtimestamp(s.created, dt.UTC), s.complete, s.userrefs > 0)


def observe_source(repository_dataset: str) -> list[SourceVm]:
    by_dataset: dict[str, list[ReplicaSnapshot]] = {}
    for snap in list_local(repository_dataset):
        if snap.dataset.rpartition("/")[0] == repository_dataset:
            by_dataset.setdefault(snap.dataset, []).append(_snapshot(snap))
    vms = []
    for dataset, snaps in sorted(by_dataset.items()):
        uuid = dataset.rpartition("/")[2]
        name = run(["zfs", "get", "-H", "-o", "value", "reconciler:vm-name", dataset]).stdout.strip()
        referenced = run(["zfs", "get", "-H", "-p", "-o", "value", "referenced", dataset]).stdout.strip()
        vms.append(SourceVm(VmRef(uuid, name if name != "-" else uuid, "", ""), tuple(snaps),
                            int(referenced or 0)))
    return vms


def observe_target(replication: Replication) -> TargetState:
    try:
        with SshSession(SshEndpoint.of(replication)) as ssh:
            snaps = list_remote(ssh, replication.target.dataset) or []
    except SshError as error:
        failure = (TargetFailure.HOST_KEY_MISMATCH if error.failure is SshFailure.HOST_KEY_MISMATCH
                   else TargetFailure.UNREACHABLE)
        return TargetState(False, failure, error.stderr.splitlines()[-1] if error.stderr else str(error))
    datasets: dict[str, list[ReplicaSnapshot]] = {}
    for snap in snaps:
        if snap.dataset.rpartition("/")[0] == replication.target.dataset:
            datasets.setdefault(snap.dataset.rpartition("/")[2], []).append(_snapshot(snap))
    return TargetState(datasets={uuid: tuple(s) for uuid, s in datasets.items()})
