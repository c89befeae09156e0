"""What the target holds: its VM datasets' snapshots with guid, status and hold count, in one ssh command."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.adapters.replication.ssh import SshError, SshFailure, SshSession
from reconciler.adapters.zfs import parse
from reconciler.adapters.zfs.runner import run

PROPS = ("guid", "creation", "userrefs", "reconciler:status", "reconciler:run-id")


@dataclass(frozen=True)
class SnapshotGuid:
    """A snapshot seen on either side; a replica is the same snapshot iff its guid is the source's."""

    dataset: str
    name: str  # after "@"
    guid: str
    created: int
    userrefs: int
    complete: bool  # reconciler:status=complete, its own (set, or received with `send -p`)


def parse_snapshots(text: str) -> list[SnapshotGuid]:
    """Pure: `zfs get -H -p -r -o name,property,value,source guid,creation,…` output, snapshots only."""
    snaps = []
    for name, props in parse.parse_get_output(text).items():
        if "@" not in name:
            continue
        dataset, _, short = name.partition("@")
        status = props.get("reconciler:status", ("-", "-"))
        snaps.append(SnapshotGuid(dataset, short, props.get("guid", ("", ""))[0],
                                  int(props.get("creation", ("0", ""))[0] or 0),
                                  int(props.get("userrefs", ("0", ""))[0] or 0),
                                  status[0] == "complete" and status[1] in parse.OWN_SOURCES))
    return sorted(snaps, key=lambda s: (s.dataset, s.created, s.name))


def _get(dataset: str) -> list[str]:
    return ["zfs", "get", "-H", "-p", "-r", "-o", "name,property,value,source", ",".join(PROPS), dataset]


def list_local(dataset: str) -> list[SnapshotGuid]:
    return parse_snapshots(run(_get(dataset)).stdout)


def list_remote(ssh: SshSession, dataset: str) -> list[SnapshotGuid] | None:
    """The target's snapshots under `dataset`; None when the dataset does not exist there yet."""
    try:
        return parse_snapshots(ssh.run(_get(dataset)))
    except SshError as error:
        if error.failure is SshFailure.COMMAND_FAILED and "does not exist" in error.stderr:
            return None
        raise
