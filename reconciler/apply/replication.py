"""Apply one replication change, journalled before and after like every other change.

`replicate` re-checks everything itself (`replicate_dataset` finds the common base again by guid), so a
plan made before a crash is still safe to apply; `prune-replica` destroys on the target only snapshots of
ours that are not held (the common base always is)."""

from __future__ import annotations

from reconciler.adapters.journal.base import EventStatus, Journal
from reconciler.adapters.replication.send import replicate_dataset
from reconciler.adapters.replication.ssh import SshEndpoint, SshError, SshSession
from reconciler.adapters.replication.target import list_remote
from reconciler.core.replication import ReplicaAction, ReplicaChange
from reconciler.policy.model import Replication


def apply_replica_change(change: ReplicaChange, replication: Replication, repository_dataset: str,
                         journal: Journal, run_id: str) -> str:
    """The summary on success; raises SshError (journalled as failed) otherwise."""
    action = change.action.value
    uuid = change.vm.instance_uuid
    journal.record_event(run_id, action, EventStatus.STARTED, instance_uuid=uuid,
                         detail={"replication": replication.name, "snapshots": list(change.snapshots)})
    try:
        with SshSession(SshEndpoint.of(replication)) as ssh:
            target = f"{replication.target.dataset}/{uuid}"
            if change.action is ReplicaAction.REPLICATE:
                result = replicate_dataset(ssh, f"{repository_dataset}/{uuid}", target, replication.name,
                                           replication.bandwidth_limit)
                summary = ("nothing to do: in sync" if result is None else
                           f"sent {result.bytes_sent} bytes up to @{result.snapshot} in {result.seconds:.1f} s")
                detail = {"summary": summary, **({"bytesSent": result.bytes_sent, "snapshot": result.snapshot}
                                                 if result else {})}
            else:
                current = {s.name: s for s in list_remote(ssh, target) or () if s.dataset == target}
                doomed = [n for n in change.snapshots
                          if n in current and current[n].userrefs == 0 and n.startswith("reconciler-")]
                for name in doomed:
                    ssh.run(["zfs", "destroy", f"{target}@{name}"])
                summary = f"pruned {len(doomed)} replica snapshot(s)"
                detail = {"summary": summary}
    except SshError as error:
        journal.record_event(run_id, action, EventStatus.FAILED, instance_uuid=uuid, detail={"error": str(error)})
        raise
    journal.record_event(run_id, action, EventStatus.SUCCEEDED, instance_uuid=uuid, detail=detail)
    return summary
