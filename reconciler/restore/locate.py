"""Find a VM's chain in the repositories and one backup in it, by instanceUuid, name or run id."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.adapters.zfs import ZfsDriver, ZfsError, select_driver
from reconciler.adapters.zfs.backups import (
    PREFIX,
    SNAPSHOT_PREFIX,
    SNAPSHOT_PROPERTIES,
    BackupSnapshotRecord,
    VmDatasetRecord,
    read_repository,
    snapshot_record,
)

VERIFIED = PREFIX + "verified"
VERIFY_RESULT = PREFIX + "verify-result"
VERIFY_PROPERTIES = (VERIFIED, VERIFY_RESULT)
LATEST = "latest"


class RestoreError(Exception):
    """A restore or verification that cannot proceed; the message is for the user."""


@dataclass(frozen=True)
class RepositoryRef:
    """A repository parent dataset and the driver to reach it (`auto`, `pyzfs` or `cli`)."""

    dataset: str
    driver: str = "auto"
    name: str | None = None  # the policy's Repository name, when it came from a policy set


@dataclass(frozen=True)
class Backup:
    record: BackupSnapshotRecord
    verified: str | None  # ISO time of the last verification
    verify_result: str | None  # "ok" or "failed: …"

    @property
    def run_id(self) -> str:
        return self.record.run_id or self.record.name.partition("@")[2]

    @property
    def time(self) -> dt.datetime:
        """When the VM was captured (the VMware snapshot's time), else the ZFS snapshot's creation."""
        if self.record.vm_created:
            try:
                parsed = dt.datetime.fromisoformat(self.record.vm_created.replace("Z", "+00:00"))
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
            except ValueError:
                pass
        return dt.datetime.fromtimestamp(self.record.created, dt.UTC)


@dataclass(frozen=True)
class VmChain:
    repository: RepositoryRef
    dataset: VmDatasetRecord
    backups: tuple[Backup, ...]  # oldest first, complete or not

    @property
    def label(self) -> str:
        name = self.dataset.vm_name
        return f"{name} ({self.dataset.instance_uuid})" if name else self.dataset.instance_uuid

    @property
    def complete(self) -> tuple[Backup, ...]:
        return tuple(b for b in self.backups if b.record.complete)


def _matches(dataset: VmDatasetRecord, vm: str) -> str | None:
    """How `vm` names this dataset: `uuid`, `name` or `id`; None when it does not."""
    if vm.lower() in (dataset.instance_uuid.lower(), dataset.dataset.rpartition("/")[2].lower()):
        return "uuid"
    if dataset.vm_name is not None and dataset.vm_name == vm:
        return "name"
    if dataset.vm_id is not None and dataset.vm_id == vm:
        return "id"
    return None


def find_chain(repositories: Sequence[RepositoryRef], vm: str) -> tuple[VmChain, ZfsDriver]:
    """The chain of `vm` (instanceUuid, VM name or MoRef/vmID) across `repositories`. An instanceUuid
    wins over a name; a name that two chains carry is ambiguous."""
    if not repositories:
        raise RestoreError("no repository to search: give --repository DATASET or a policy set")
    found: list[tuple[str, RepositoryRef, VmDatasetRecord, ZfsDriver]] = []
    missing = []
    for repo in repositories:
        try:
            driver = select_driver(repo.driver)
            record = read_repository(driver, repo.dataset)
        except ZfsError as exc:
            raise RestoreError(f"repository {repo.name or repo.dataset}: {exc}") from None
        if not record.exists:
            missing.append(repo.dataset)
        for dataset in record.datasets:
            how = _matches(dataset, vm)
            if how is not None:
                found.append((how, repo, dataset, driver))
    by_uuid = [f for f in found if f[0] == "uuid"]
    candidates = by_uuid or found
    if not candidates and len(missing) == len(repositories):
        raise RestoreError(f"repository dataset {', '.join(missing)} does not exist: no backups there yet")
    if not candidates:
        where = ", ".join(r.dataset for r in repositories)
        raise RestoreError(f"unknown VM {vm!r}: no backup chain with that instanceUuid, name or id in {where}")
    if len(candidates) > 1:
        listed = "; ".join(f"{d.vm_name or '?'} {d.instance_uuid} in {r.dataset}" for _, r, d, _ in candidates)
        raise RestoreError(f"VM name {vm!r} is ambiguous ({listed}): give the instanceUuid instead")
    _, repo, dataset, driver = candidates[0]
    return VmChain(repo, dataset, read_backups(driver, dataset.dataset)), driver


def read_backups(driver: ZfsDriver, dataset: str) -> tuple[Backup, ...]:
    """Every snapshot of the VM's own dataset (not of restore clones below it), with verify results."""
    try:
        snapshots = driver.list_snapshots(dataset, (*SNAPSHOT_PROPERTIES, *VERIFY_PROPERTIES))
    except ZfsError as exc:
        raise RestoreError(f"cannot list the backups of {dataset}: {exc}") from None
    return tuple(
        Backup(snapshot_record(s), s.properties.get(VERIFIED), s.properties.get(VERIFY_RESULT))
        for s in snapshots
        if s.dataset == dataset
    )


def parse_time(text: str) -> dt.datetime | None:
    """An ISO date or date-time; naive values are UTC. None when `text` is not a time."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def select_backup(chain: VmChain, spec: str | None) -> Backup:
    """`latest` (default), a run id (or the snapshot's name), or a time: the newest backup taken at or
    before it. Only complete backups can be selected."""
    complete = chain.complete
    if not complete:
        raise RestoreError(f"{chain.label} has no complete backup")
    if spec is None or spec == LATEST:
        return complete[-1]
    wanted = spec.partition("@")[2] if "@" in spec else spec
    for backup in chain.backups:
        short = backup.record.name.partition("@")[2]
        if wanted in (backup.record.run_id, short, short.removeprefix(SNAPSHOT_PREFIX)):
            if not backup.record.complete:
                raise RestoreError(f"backup {wanted} of {chain.label} is not complete (status "
                                   f"{backup.record.status or 'unset'}): it cannot be restored")
            return backup
    at = parse_time(spec)
    if at is None:
        runs = ", ".join(b.run_id for b in complete[-5:])
        raise RestoreError(f"backup {spec!r} not found for {chain.label} (latest: {runs})")
    earlier = [b for b in complete if b.time <= at]
    if not earlier:
        raise RestoreError(f"{chain.label} has no complete backup at or before {at.isoformat()} "
                           f"(the oldest is {complete[0].time.isoformat()})")
    return earlier[-1]
