"""How backups live in ZFS (DESIGN.md §3), read and written through a `ZfsDriver`.

One dataset per protected VM, `<repository>/<instanceUuid>`; one snapshot per completed backup,
`<dataset>@reconciler-<run id>`, whose own `reconciler:*` properties describe it. Reading a whole
repository costs two commands, whatever the number of VMs. The records are adapter-level and plain; a
thin mapping turns them into the planner's observed types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.adapters.zfs.base import SnapshotInfo, ZfsDriver, ZfsError

PREFIX = "reconciler:"
SNAPSHOT_PREFIX = "reconciler-"
RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
KINDS = ("full", "incremental")

DATASET_PROPERTIES = tuple(
    PREFIX + p
    for p in ("managed", "instance-uuid", "vm-name", "vm-id", "connection", "policy", "retired", "dirty")
)
SNAPSHOT_PROPERTIES = tuple(
    PREFIX + p
    for p in ("managed", "run-id", "kind", "status", "created", "disks", "bytes-read", "bytes-written", "volumes",
              "deep", "verified", "verify-result")
)
# what volume inspection found and left unread (compact JSON; encoded by `reconciler.apply.inspection`)
VOLUMES_PROPERTY = PREFIX + "volumes"


@dataclass(frozen=True)
class DiskRecord:
    key: int
    change_id: str | None
    capacity: int | None
    backing: str | None
    sha256: str | None


@dataclass(frozen=True)
class VmDatasetRecord:
    dataset: str
    instance_uuid: str  # from the property; falls back to the dataset's last component
    vm_name: str | None
    vm_id: str | None
    connection: str | None
    policy: str | None
    managed: bool
    retired: bool
    dirty_run_id: str | None  # a backup was writing the live images and did not finish
    mountpoint: str | None
    used: int
    referenced: int
    mounted: bool = True


@dataclass(frozen=True)
class BackupSnapshotRecord:
    name: str
    dataset: str
    run_id: str | None
    kind: str | None
    status: str | None
    created: int  # ZFS creation, epoch seconds
    vm_created: str | None  # ISO-8601 UTC of the VMware snapshot the backup read
    disks: tuple[DiskRecord, ...]
    bytes_read: int | None
    bytes_written: int | None
    userrefs: int
    managed: bool  # carries its own reconciler:managed=true: we made it
    problems: tuple[str, ...] = ()  # properties that did not parse (reported, never fatal)
    volumes: str | None = None  # the raw reconciler:volumes JSON; None for backups made before inspection
    deep: str | None = None  # the raw reconciler:deep JSON: deep inspection (libguestfs) of this backup's images
    verified: str | None = None  # reconciler:verified, ISO time of the last verification
    verify_result: str | None = None  # reconciler:verify-result, "ok" or "failed: …"
    # no reconciler:managed yet, but named for a run of ours that never finished: our backup, cut off while
    # labelling (zfs-fuse sets properties one by one after `zfs snapshot`; a kill -9 can land in between)
    unlabelled: bool = False

    @property
    def complete(self) -> bool:
        return self.managed and self.status == "complete"

    @property
    def ours(self) -> bool:
        """We made it: labelled so, or recognised as our own cut-off backup."""
        return self.managed or self.unlabelled

    @property
    def name_run_id(self) -> str | None:
        """The run id in the name `…@reconciler-<run id>`, if the name has that shape."""
        short = self.name.partition("@")[2]
        run_id = short.removeprefix(SNAPSHOT_PREFIX)
        return run_id if short.startswith(SNAPSHOT_PREFIX) and RUN_ID.match(run_id) else None

    @property
    def held(self) -> bool:
        return self.userrefs > 0


@dataclass(frozen=True)
class RepositoryRecord:
    parent: str
    exists: bool
    datasets: tuple[VmDatasetRecord, ...] = ()
    snapshots: tuple[BackupSnapshotRecord, ...] = field(default=(), repr=False)

    def snapshots_of(self, dataset: str) -> list[BackupSnapshotRecord]:
        return [s for s in self.snapshots if s.dataset == dataset]


# ---- read --------------------------------------------------------------------------------------------
# run id -> True when the journal knows that run and it is not running any more (it never completed)
UnfinishedRun = Callable[[str], bool]


def read_repository(driver: ZfsDriver, parent: str, unfinished_run: UnfinishedRun | None = None) -> RepositoryRecord:
    """Every VM dataset directly under `parent` and all their snapshots, in two commands. A snapshot without
    our label but named for the run in its dataset's dirty mark (or for a run `unfinished_run` confirms) is
    recognised as ours and incomplete, so repair can remove it (see `recognise_unlabelled`)."""
    try:
        datasets = driver.list_datasets(parent, DATASET_PROPERTIES)
    except ZfsError as error:
        if error.missing:
            return RepositoryRecord(parent, exists=False)
        raise
    vm_datasets = tuple(
        replace(_vm_dataset(d.name, d.properties, d.mountpoint, d.used, d.referenced), mounted=d.mounted)
        for d in datasets
        if d.name.rpartition("/")[0] == parent
    )
    dirty = {d.dataset: d.dirty_run_id for d in vm_datasets}
    snapshots = tuple(
        recognise_unlabelled(snapshot_record(s), dirty[s.dataset], unfinished_run)
        for s in driver.list_snapshots(parent, SNAPSHOT_PROPERTIES) if s.dataset in dirty
    )
    return RepositoryRecord(parent, True, vm_datasets, snapshots)


def recognise_unlabelled(snap: BackupSnapshotRecord, dirty_run_id: str | None,
                         unfinished_run: UnfinishedRun | None = None) -> BackupSnapshotRecord:
    """Pure but for `unfinished_run`: mark `snap` as our unlabelled incomplete backup when its name is
    `reconciler-<run id>` and that run is the one the dataset's dirty mark names, or one the journal shows
    never completed. Anything else without our label stays foreign."""
    run_id = snap.name_run_id
    if snap.managed or run_id is None:
        return snap
    if run_id == dirty_run_id or (unfinished_run is not None and unfinished_run(run_id)):
        return replace(snap, unlabelled=True)
    return snap


def _vm_dataset(name: str, props: Mapping[str, str], mountpoint: str | None, used: int,
                referenced: int) -> VmDatasetRecord:
    return VmDatasetRecord(
        dataset=name,
        instance_uuid=props.get(PREFIX + "instance-uuid") or name.rpartition("/")[2],
        vm_name=props.get(PREFIX + "vm-name"),
        vm_id=props.get(PREFIX + "vm-id"),
        connection=props.get(PREFIX + "connection"),
        policy=props.get(PREFIX + "policy"),
        managed=props.get(PREFIX + "managed") == "true",
        retired=props.get(PREFIX + "retired") == "true",
        dirty_run_id=props.get(PREFIX + "dirty") or None,
        mountpoint=mountpoint,
        used=used,
        referenced=referenced,
    )


def snapshot_record(snap: SnapshotInfo) -> BackupSnapshotRecord:
    """Pure: a listed snapshot as a backup record. Bad property values become `problems`."""
    props = snap.properties
    problems: list[str] = []
    disks = parse_disks(props.get(PREFIX + "disks"), problems)
    return BackupSnapshotRecord(
        name=snap.name,
        dataset=snap.dataset,
        run_id=props.get(PREFIX + "run-id"),
        kind=props.get(PREFIX + "kind"),
        status=props.get(PREFIX + "status"),
        created=snap.created,
        vm_created=props.get(PREFIX + "created"),
        disks=disks,
        bytes_read=_optional_int(props, PREFIX + "bytes-read", problems),
        bytes_written=_optional_int(props, PREFIX + "bytes-written", problems),
        userrefs=snap.userrefs,
        managed=props.get(PREFIX + "managed") == "true",
        problems=tuple(problems),
        volumes=props.get(VOLUMES_PROPERTY),
        deep=props.get(PREFIX + "deep"),
        verified=props.get(PREFIX + "verified"),
        verify_result=props.get(PREFIX + "verify-result"),
    )


def parse_disks(text: str | None, problems: list[str]) -> tuple[DiskRecord, ...]:
    if text is None:
        return ()
    try:
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError("not a list")
        return tuple(
            DiskRecord(
                key=int(item["key"]),
                change_id=item.get("changeId"),
                capacity=None if item.get("capacity") is None else int(item["capacity"]),
                backing=item.get("backing"),
                sha256=item.get("sha256"),
            )
            for item in items
        )
    except (ValueError, TypeError, KeyError) as exc:
        problems.append(f"{PREFIX}disks is not a valid disk list ({exc}): {text[:80]!r}")
        return ()


def _optional_int(props: Mapping[str, str], prop: str, problems: list[str]) -> int | None:
    value = props.get(prop)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        problems.append(f"{prop} is not a number: {value!r}")
        return None


# ---- write (used by apply) -------------------------------------------------------------------------------
def snapshot_name(dataset: str, run_id: str) -> str:
    check_run_id(run_id)
    return f"{dataset}@{SNAPSHOT_PREFIX}{run_id}"


def check_run_id(run_id: str) -> None:
    if not RUN_ID.match(run_id):
        raise ZfsError(f"invalid run id {run_id!r} (expected YYYYmmddTHHMMSSZ-<6 hex>)")


def backup_properties(kind: str, vm_created: str, disks: Sequence[Mapping[str, Any]], bytes_read: int,
                      bytes_written: int) -> dict[str, str]:
    """The descriptive properties of a backup snapshot, encoded as the contract says."""
    if kind not in KINDS:
        raise ZfsError(f"invalid backup kind {kind!r} (expected full or incremental)")
    return {
        PREFIX + "kind": kind,
        PREFIX + "created": vm_created,
        PREFIX + "disks": json.dumps(list(disks), separators=(",", ":"), ensure_ascii=False),
        PREFIX + "bytes-read": str(bytes_read),
        PREFIX + "bytes-written": str(bytes_written),
    }


class BackupRepository:
    """The write side of the contract, on one repository parent dataset."""

    def __init__(self, driver: ZfsDriver, parent: str, unfinished_run: UnfinishedRun | None = None,
                 dataset_options: Mapping[str, str] | None = None) -> None:
        self.driver = driver
        self.parent = parent
        self.unfinished_run = unfinished_run
        self.dataset_options = dict(dataset_options or {})  # native properties of new VM datasets

    def dataset_for(self, instance_uuid: str) -> str:
        if not instance_uuid or "/" in instance_uuid or "@" in instance_uuid:
            raise ZfsError(f"invalid instanceUuid {instance_uuid!r}")
        return f"{self.parent}/{instance_uuid}"

    def read(self) -> RepositoryRecord:
        return read_repository(self.driver, self.parent, self.unfinished_run)

    def pair(self, instance_uuid: str, vm_name: str, vm_id: str, connection: str, policy: str) -> str:
        """Create the VM's dataset (or re-adopt a retired one, data kept); returns its name."""
        dataset = self.dataset_for(instance_uuid)
        identity = {
            PREFIX + "managed": "true",
            PREFIX + "instance-uuid": instance_uuid,
            PREFIX + "vm-name": vm_name,
            PREFIX + "vm-id": vm_id,
            PREFIX + "connection": connection,
            PREFIX + "policy": policy,
        }
        if not self.driver.exists(self.parent):
            self.driver.create_dataset(self.parent)
        if self.driver.exists(dataset):
            self.driver.set_properties(dataset, identity)
            self.driver.inherit_property(dataset, PREFIX + "retired")
        else:
            self.driver.create_dataset(dataset, {**self.dataset_options, **identity})
        return dataset

    def rebind(self, dataset: str, vm_id: str, connection: str, vm_name: str | None = None) -> None:
        props = {PREFIX + "vm-id": vm_id, PREFIX + "connection": connection}
        if vm_name is not None:
            props[PREFIX + "vm-name"] = vm_name
        self.driver.set_properties(dataset, props)

    def mount(self, dataset: str) -> None:
        """Mount a VM dataset that is not (an encrypted one after an import or reboot: key not loaded)."""
        self.driver.mount(dataset)

    def mark_dirty(self, dataset: str, run_id: str) -> None:
        """Set before the first byte is written into the live images."""
        check_run_id(run_id)
        self.driver.set_properties(dataset, {PREFIX + "dirty": run_id})

    def clear_dirty(self, dataset: str) -> None:
        self.driver.inherit_property(dataset, PREFIX + "dirty")

    def complete_backup(self, dataset: str, run_id: str, props: Mapping[str, str]) -> str:
        """Snapshot the live images with `props` (see `backup_properties`), then `status=complete` LAST,
        then clear the dirty mark. A snapshot without the status is never a backup: if the last step
        fails the snapshot is destroyed so a retry can take the same name."""
        name = snapshot_name(dataset, run_id)
        for reserved in ("status", "managed", "run-id"):
            if PREFIX + reserved in props:
                raise ZfsError(f"{PREFIX}{reserved} is set by complete_backup itself")
        self.driver.snapshot(name, {**props, PREFIX + "managed": "true", PREFIX + "run-id": run_id})
        try:
            self.driver.set_properties(name, {PREFIX + "status": "complete"})
        except ZfsError:
            self.driver.destroy_snapshot(name)
            raise
        self.clear_dirty(dataset)
        return name

    def retire(self, dataset: str) -> None:
        """After unpair: the data stays, the dataset is marked no longer protected."""
        self.driver.set_properties(dataset, {PREFIX + "retired": "true"})
