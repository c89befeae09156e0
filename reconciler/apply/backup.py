"""One VM's backup (DESIGN.md §5): VMware snapshot → changed areas → NBD reads into sparse images → fsync →
ZFS snapshot with `status=complete` last → VMware snapshot removed, always.

Invariants: the dataset is marked dirty before the first byte of an image changes, so an interrupted
backup is rolled back by the next plan's `repair`; only `complete_backup` makes a backup exist; the
VMware snapshot is removed in a `finally` (Ctrl-C too), or the next plan lists it as remove-vm-snapshot.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from reconciler.adapters.checksum import ChecksumError, refresh_digest
from reconciler.adapters.inspect import InspectError
from reconciler.adapters.nbd.client import NbdClient, NbdClientError
from reconciler.adapters.nbd.copy import copy_ranges, punch_hole
from reconciler.adapters.nbd.server import CurlSource, Listen, NbdkitError, NbdkitServer, VddkSource
from reconciler.adapters.secrets import resolve_secret
from reconciler.adapters.vsphere import ops
from reconciler.adapters.vsphere.session import VsphereError
from reconciler.adapters.zfs.backups import VOLUMES_PROPERTY, backup_properties
from reconciler.adapters.zfs.base import ZfsError
from reconciler.apply import inspection
from reconciler.apply.allocation import data_extents, forget_allocated, read_allocated, write_allocated
from reconciler.apply.context import ActionContext, ActionFailed, crash_point, retry
from reconciler.apply.events import Event, Kind
from reconciler.apply.images import BaseDisk, disk_bases, image_path, open_image, vm_dataset
from reconciler.core.extents import Range, normalise, read_requests, subtract, total
from reconciler.core.observed import BackupKind, PowerState
from reconciler.core.plan import DiskPlan
from reconciler.core.thin import thin_work
from reconciler.policy.model import Exclusions, Quiesce, VerifyMode

# vSphere faults that mean "could not quiesce" (a crash-consistent snapshot may still be possible)
QUIESCE_FAULTS = ("ToolsUnavailable", "ApplicationQuiesceFault", "ToolsNotRunning", "GuestOperationsUnavailable")
# faults not worth retrying within this run
VDDK_LIBDIR_ENV = "RECONCILER_VDDK_LIBDIR"  # where VMware's VDDK is unpacked on a real appliance
PERMANENT_FAULTS = ("HostNotConnected", "InvalidState", "InvalidPowerState", "ManagedObjectNotFound")


@dataclass(frozen=True)
class DiskResult:
    key: int
    mode: BackupKind
    change_id: str | None
    capacity: int
    backing: str
    bytes_read: int
    bytes_written: int
    digest: str | None = None  # `bsha256-64m:` of the image after this backup (see adapters.checksum)


@dataclass(frozen=True)
class BackupResult:
    kind: BackupKind
    snapshot: str  # the ZFS snapshot
    disks: tuple[DiskResult, ...]
    consistency: str  # "quiesced" or "crash-consistent"
    seconds: float
    verify_result: str | None = None  # `verify: after-backup`: "ok" or "failed: …"; None when not verified

    @property
    def verify_failed(self) -> bool:
        return self.verify_result is not None and self.verify_result != "ok"

    @property
    def bytes_read(self) -> int:
        return sum(d.bytes_read for d in self.disks)

    @property
    def bytes_written(self) -> int:
        return sum(d.bytes_written for d in self.disks)


def run_backup(ctx: ActionContext) -> BackupResult:
    started = time.monotonic()
    session = ctx.require_session()
    repository = ctx.require_repository()
    record = vm_dataset(repository, ctx.change.vm.instance_uuid)
    if record is None:
        raise ActionFailed(f"{ctx.vm_name} is not paired: its dataset does not exist (run apply again)")
    if record.dirty_run_id:
        raise ActionFailed(f"{ctx.vm_name}: dataset {record.dataset} is dirty after run {record.dirty_run_id}; "
                           "it must be repaired first (the next plan does)")
    if not record.mounted:  # never write into the directory under an unmounted dataset
        try:
            repository.mount(record.dataset)
        except ZfsError as exc:
            raise ActionFailed(f"dataset {record.dataset} is not mounted and cannot be: {exc}") from None
    if not record.mountpoint or not Path(record.mountpoint).is_dir():
        raise ActionFailed(f"dataset {record.dataset} is not mounted (mountpoint {record.mountpoint!r})")
    bases = disk_bases(repository, record.dataset)
    name = f"reconciler-{ctx.run_id}"
    snapshot_id: str | None = None
    attempted = False
    try:
        with ctx.step("vm-snapshot", snapshot=name):
            attempted = True
            snapshot_id, consistency = _create_snapshot(ctx, name)
            ctx.snapshot_id = snapshot_id
        created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        disks = ops.snapshot_disks(session, snapshot_id)
        if not disks:
            raise ActionFailed(f"{ctx.vm_name}: the snapshot has no disks")
        plans = {d.key: d for d in ctx.change.disks}
        work = [_disk_areas(ctx, snapshot_id, disk, plans.get(disk.key), bases.get(disk.key),
                            Path(record.mountpoint)) for disk in disks]
        datacenter = ops.datacenter_of(session, ctx.vm_id)
        with ctx.step("inspect"):
            work, volumes = _inspect_volumes(ctx, snapshot_id, datacenter, work, record.dataset,
                                             Path(record.mountpoint), quiesced=consistency == "quiesced")
        with ctx.step("mark-dirty"):
            repository.mark_dirty(record.dataset, ctx.run_id)
        results = [_transfer(ctx, datacenter, item) for item in work]
        kind = BackupKind.FULL if all(r.mode is BackupKind.FULL for r in results) else BackupKind.INCREMENTAL
        live = {d.key: d.backing for d in ctx.vm.disks} if ctx.vm is not None else {}
        props = backup_properties(
            kind.value, created,
            [{"key": r.key, "changeId": r.change_id, "capacity": r.capacity,
              "backing": live.get(r.key, r.backing), "mode": r.mode.value, "sha256": r.digest} for r in results],
            sum(r.bytes_read for r in results), sum(r.bytes_written for r in results),
        )
        props[VOLUMES_PROPERTY] = inspection.encode(volumes.disks)
        with ctx.step("zfs-snapshot"):
            snapshot = repository.complete_backup(record.dataset, ctx.run_id, props)
        result = BackupResult(kind, snapshot, tuple(results), consistency, time.monotonic() - started)
    except (VsphereError, ZfsError, NbdClientError, NbdkitError, ChecksumError, OSError) as exc:
        raise ActionFailed(str(exc)) from exc
    finally:
        if attempted:
            try:
                with ctx.step("remove-vm-snapshot", cancellable=False):
                    remove_our_snapshot(ctx, name, snapshot_id)
            except ActionFailed:
                pass  # reported as a note; the next plan lists the snapshot as remove-vm-snapshot
    _deep_inspect_backup(ctx, volumes, Path(record.mountpoint), result)
    return _verify_after_backup(ctx, record.dataset, result)  # the VMware snapshot is gone by now


def _verify_after_backup(ctx: ActionContext, dataset: str, result: BackupResult) -> BackupResult:
    """`verify: after-backup`: check the backup just completed (digests, partition tables) and record the
    outcome on its snapshot. A failure keeps the snapshot (it is complete) but fails the VM's result."""
    if ctx.policy is None or ctx.policy.verify is not VerifyMode.AFTER_BACKUP:
        return result
    if ctx.cancel.is_set():
        ctx.note("verification skipped: the run was interrupted (run `reconciler verify` later)")
        return result
    from reconciler.restore.locate import VERIFIED, VERIFY_RESULT, RestoreError
    from reconciler.restore.verify import now_iso, verify_after_backup

    driver = ctx.require_repository().driver
    with ctx.step("verify", cancellable=False):
        try:
            outcome = verify_after_backup(driver, dataset, ctx.run_id, exclusions=ctx.policy.exclusions).result
        except (RestoreError, ZfsError, OSError) as exc:
            outcome = f"failed: could not verify: {exc}"
            try:
                driver.set_properties(result.snapshot, {VERIFIED: now_iso(), VERIFY_RESULT: outcome[:1000]})
            except ZfsError as again:
                ctx.note(f"could not record the verification result on {result.snapshot}: {again}")
    return replace(result, verify_result=outcome)


def _create_snapshot(ctx: ActionContext, name: str) -> tuple[str, str]:
    session = ctx.require_session()
    powered_on = ctx.vm is None or ctx.vm.power_state is PowerState.ON
    quiesce = ctx.quiesce is not Quiesce.OFF and powered_on

    def create(with_quiesce: bool) -> str:
        return retry(
            ctx.options.snapshot_attempts, ctx.options.backoff,
            lambda: ops.create_snapshot(session, ctx.vm_id, name, quiesce=with_quiesce,
                                        timeout=ctx.options.task_timeout),
            lambda exc: _retryable(exc) and not _quiesce_fault(exc),
            lambda n, exc: (_cleanup_half_made(ctx, name), ctx.note(f"snapshot attempt {n} failed ({exc}); retrying")),
        )

    try:
        return create(quiesce), "quiesced" if quiesce else "crash-consistent"
    except ops.TaskFailed as exc:
        if not (quiesce and _quiesce_fault(exc)):
            raise
        if ctx.quiesce is Quiesce.REQUIRED:
            raise ActionFailed(f"{ctx.vm_name}: quiescing failed ({exc}); quiesce is required, so no backup "
                               "was taken") from exc
        ctx.note(f"quiescing failed ({exc.fault}); falling back to a crash-consistent snapshot (quiesce: preferred)")
        return create(False), "crash-consistent"


def _quiesce_fault(exc: Exception) -> bool:
    return isinstance(exc, ops.TaskFailed) and exc.fault in QUIESCE_FAULTS


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, ops.TaskFailed):
        return exc.fault not in PERMANENT_FAULTS
    return not isinstance(exc, ops.TaskTimeout)


def _cleanup_half_made(ctx: ActionContext, name: str) -> None:
    """A failed or timed-out create may still have made the snapshot: never leave it behind."""
    try:
        remove_our_snapshot(ctx, name, None)
    except ActionFailed as exc:
        ctx.note(f"could not remove a half-made snapshot {name}: {exc}")


def remove_our_snapshot(ctx: ActionContext, name: str, snapshot_id: str | None) -> None:
    """Remove our snapshot(s) named `name`, retrying with back-off; a failure is reported, not raised over
    the backup's own outcome (the next plan lists the snapshot as remove-vm-snapshot)."""
    session = ctx.require_session()

    def remove_all() -> None:
        ids = [snapshot_id] if snapshot_id else []
        ids += [sid for sid, sname in ops.vm_snapshots(session, ctx.vm_id) if sname == name and sid not in ids]
        for sid in ids:
            try:
                ops.remove_snapshot(session, sid, timeout=ctx.options.task_timeout)
            except ops.TaskFailed as exc:
                if exc.fault != "ManagedObjectNotFound":
                    raise

    try:
        retry(ctx.options.remove_attempts, ctx.options.backoff, remove_all, _retryable,
              lambda n, exc: ctx.note(f"removing VMware snapshot {name} failed ({exc}); retrying"))
    except VsphereError as exc:
        ctx.note(f"VMware snapshot {name} could not be removed ({exc}); the next plan removes it")
        raise ActionFailed(f"VMware snapshot {name} could not be removed: {exc}") from exc


@dataclass(frozen=True)
class _DiskWork:
    disk: ops.SnapshotDisk
    mode: BackupKind
    areas: tuple[Range, ...] | None  # None: the whole disk, allocation from NBD block status
    image: Path
    holes: tuple[Range, ...] = ()  # excluded/unsupported volumes: never read, they stay holes
    thin: bool = False  # skipFreeBlocks: `free` is not read, and what was freed since the base is punched
    free: tuple[Range, ...] = ()

    @property
    def allocated(self) -> list[Range] | None:
        return subtract([Range(0, self.disk.capacity)], self.free) if self.thin else None


def _disk_areas(ctx: ActionContext, snapshot_id: str, disk: ops.SnapshotDisk, planned: DiskPlan | None,
                base: BaseDisk | None, mountpoint: Path) -> _DiskWork:
    """What to read of one disk; the plan's mode is re-checked against what is on disk now."""
    image = image_path(mountpoint, disk.key)
    session = ctx.require_session()
    mode = planned.mode if planned is not None else BackupKind.FULL
    if mode is BackupKind.INCREMENTAL:
        problem = _incremental_problem(disk, base, image)
        if problem is None:
            assert base is not None and base.change_id is not None
            try:
                areas = ops.changed_areas(session, ctx.vm_id, snapshot_id, disk.key, disk.capacity, base.change_id)
                return _DiskWork(disk, mode, tuple(normalise(areas, size=disk.capacity)), image)
            except ops.ChangeIdInvalid as exc:
                problem = str(exc)
        ctx.note(f"disk {disk.key}: read in full instead of incrementally: {problem}")
        mode = BackupKind.FULL
    if disk.change_id:
        try:
            areas = ops.changed_areas(session, ctx.vm_id, snapshot_id, disk.key, disk.capacity, "*")
            return _DiskWork(disk, mode, tuple(normalise(areas, size=disk.capacity)), image)
        except ops.ChangeIdInvalid:
            pass  # CBT cannot list allocated areas here: fall back to the whole disk
    return _DiskWork(disk, mode, None, image)


def _inspect_volumes(ctx: ActionContext, snapshot_id: str, datacenter: str, work: list[_DiskWork], dataset: str,
                     mountpoint: Path, quiesced: bool = True) -> tuple[list[_DiskWork], inspection.Inspection]:
    """Each disk's holes from its headers (see `apply.inspection`); a disk whose holes changed since its base
    backup is read in full instead of incrementally. Never fails the backup."""
    tag = hashlib.sha1(ctx.change.vm.instance_uuid.encode()).hexdigest()[:8]
    exclusions = ctx.policy.exclusions if ctx.policy is not None else Exclusions()
    thin = ctx.policy is not None and ctx.policy.skip_free_blocks
    snapshots = ctx.require_repository().read().snapshots_of(dataset)
    deep = inspection.recorded_deep(snapshots) if inspection.needs_deep(exclusions) else None
    found = inspection.inspect_vm(
        [(w.disk.key, lambda run_dir, w=w: _nbd_source(ctx, datacenter, w, run_dir)) for w in work],
        exclusions, lambda key: ctx.options.work_dir / f"{tag}-{key}-inspect", deep, thin=thin, quiesced=quiesced)
    for warning in found.warnings:
        ctx.note(f"volume inspection: {warning}")
    recorded = inspection.recorded_holes(snapshots)
    result = []
    for item in work:
        if item.mode is BackupKind.INCREMENTAL and inspection.changed_holes(found, recorded, item.disk.key):
            ctx.note(f"disk {item.disk.key}: read in full: its excluded volumes changed since the last backup")
            item = _disk_areas(ctx, snapshot_id, item.disk, None, None, mountpoint)
        elif item.mode is BackupKind.INCREMENTAL and not thin and read_allocated(item.image) is not None:
            # the base left free blocks as zeros; CBT alone would never bring them back
            ctx.note(f"disk {item.disk.key}: read in full: the last backup skipped free blocks, skipFreeBlocks "
                     "is off now")
            item = _disk_areas(ctx, snapshot_id, item.disk, None, None, mountpoint)
        for volume in found.of(item.disk.key).thin:
            ctx.note(f"disk {item.disk.key}: {volume.describe()}")
        result.append(replace(item, holes=found.of(item.disk.key).holes, thin=thin,
                              free=found.of(item.disk.key).free))
    return result, found


def _deep_inspect_backup(ctx: ActionContext, volumes: inspection.Inspection, mountpoint: Path,
                         result: BackupResult) -> None:
    """Only when the policy excludes what headers cannot show (UPDs, dedup, mount points), and a disk was read
    in full or no backup was deep-inspected yet: deep-inspect the images just snapshotted (identical to the
    snapshot: nothing writes them until the next backup; never the production VM) and record the facts on
    the snapshot for the next backup."""
    exclusions = ctx.policy.exclusions if ctx.policy is not None else Exclusions()
    first_time = volumes.deep is None
    if not inspection.needs_deep(exclusions) or (
            not first_time and all(d.mode is BackupKind.INCREMENTAL for d in result.disks)):
        return
    images = [(d.key, image_path(mountpoint, d.key)) for d in result.disks]
    try:
        with ctx.step("deep-inspect", cancellable=False):
            props, warnings = inspection.deep_record(volumes, exclusions, images)
            ctx.require_repository().driver.set_properties(result.snapshot, props)
        for warning in warnings:
            ctx.note(f"deep inspection: {warning}")
    except (InspectError, ZfsError, OSError, ImportError, RuntimeError) as exc:  # guestfs raises RuntimeError
        ctx.note(f"deep inspection of the backup failed ({exc}); volumes were judged on their headers only")


def _incremental_problem(disk: ops.SnapshotDisk, base: BaseDisk | None, image: Path) -> str | None:
    if base is None or not base.change_id:
        return "no earlier backup of this disk with a change ID"
    if not disk.change_id:
        return "CBT is off on this disk"
    if base.capacity is not None and base.capacity != disk.capacity:
        return f"resized from {base.capacity} to {disk.capacity} bytes"
    if not image.exists() or image.stat().st_size != disk.capacity:
        return f"image {image.name} is missing or has the wrong size"
    return None


def _transfer(ctx: ActionContext, datacenter: str, work: _DiskWork) -> DiskResult:
    """Read one disk's areas into its image; retried from the start (idempotent: same bytes, same places)."""
    key = work.disk.key
    with ctx.step(f"disk-{key}", mode=work.mode.value):
        fd = open_image(work.image, work.disk.capacity, fresh=work.mode is BackupKind.FULL)
        try:
            stats = retry(
                ctx.options.transfer_attempts, ctx.options.backoff,
                lambda: _copy_disk(ctx, datacenter, work, fd),
                lambda exc: isinstance(exc, NbdClientError | NbdkitError),
                lambda n, exc: ctx.note(f"disk {key}: transfer attempt {n} failed ({exc}); reading it again"),
            )
            crash_point(ctx.options, "before-fsync")
            os.fsync(fd)
            if work.allocated is not None:  # part of this backup's snapshot: the next incremental's "before"
                write_allocated(work.image, work.allocated)
            else:
                forget_allocated(work.image)
            # only the blocks this transfer wrote or punched are read again (leaves kept beside the image)
            digest, digest_cost = refresh_digest(work.image, stats[2], fresh=work.mode is BackupKind.FULL)
        finally:
            os.close(fd)
    ctx.emit(Event(Kind.DISK_DONE, ctx.vm_name, "backup",
                   {"disk": key, "mode": work.mode.value, "bytes_read": stats[0], "bytes_written": stats[1],
                    "digest_bytes_read": digest_cost.bytes_read}))
    return DiskResult(key, work.mode, work.disk.change_id, work.disk.capacity, work.disk.backing, *stats[:2], digest)


def _copy_disk(ctx: ActionContext, datacenter: str, work: _DiskWork, fd: int) -> tuple[int, int, list[Range]]:
    """(bytes read, bytes written, the ranges read: the only ones the image may have changed in)"""
    key = work.disk.key
    # short: a Unix socket path has at most 107 bytes
    run_dir = ctx.options.work_dir / f"{hashlib.sha1(ctx.change.vm.instance_uuid.encode()).hexdigest()[:8]}-{key}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "nbdkit.log").unlink(missing_ok=True)  # this attempt's errors only
    try:
        source = _nbd_source(ctx, datacenter, work, run_dir)
        server = NbdkitServer(source, Listen(socket=run_dir / "nbd.sock"), log_path=run_dir / "nbdkit.log",
                              exit_with_parent=True)
        with server:
            if work.areas is None:
                with NbdClient.open(server.uri) as client:
                    areas = [Range(e.offset, e.length) for e in client.extents() if not (e.hole or e.zero)]
            else:
                areas = list(work.areas)
            punch: list[Range] = []
            if work.thin:
                fresh = work.mode is BackupKind.FULL
                thin = thin_work(work.disk.capacity, normalise(areas), work.allocated,
                                 None if fresh else read_allocated(work.image),
                                 () if fresh else data_extents(fd, work.disk.capacity))
                areas = list(thin.read)
                punch = subtract(list(thin.punch), normalise(work.holes, size=work.disk.capacity))
            requests = read_requests(areas, size=work.disk.capacity, holes=work.holes,
                                     max_request=ctx.options.nbd_request)
            wanted = total(requests)
            ctx.emit(Event(Kind.DISK_STARTED, ctx.vm_name, "backup",
                           {"disk": key, "mode": work.mode.value, "total": wanted}))
            progress = _Progress(ctx, key, wanted)
            stats = copy_ranges(
                lambda: NbdClient.open(server.uri), requests, fd,
                fresh_target=work.mode is BackupKind.FULL,
                connections=ctx.options.nbd_connections, in_flight=ctx.options.nbd_in_flight,
                throttle=ctx.throttle, on_progress=progress,
            )
            for freed in punch:  # freed since the base: zeros, as the guest sees them (disjoint from reads)
                punch_hole(fd, freed.offset, freed.length)
    finally:
        for secret in ("cookie", "password"):  # never left behind, even when the transfer failed
            (run_dir / secret).unlink(missing_ok=True)
    (run_dir / "nbdkit.log").unlink(missing_ok=True)  # kept only when the transfer failed, for a post-mortem
    run_dir.rmdir()
    return stats.bytes_read, stats.bytes_written, requests + punch  # punched ranges changed the image too


def _secret_file(path: Path, value: str) -> Path:
    """nbdkit reads secrets from files (`+FILE`): never on a command line that `ps` shows."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return path


def _nbd_source(ctx: ActionContext, datacenter: str, work: _DiskWork, run_dir: Path) -> CurlSource | VddkSource:
    """VMware's VDDK where it is installed (a real appliance: `RECONCILER_VDDK_LIBDIR`), else vSphere's
    datastore HTTP file access (`curl`), which reads the snapshot's frozen disk file just the same."""
    session = ctx.require_session()
    connection = ctx.connection
    libdir = os.environ.get(VDDK_LIBDIR_ENV)
    if libdir and connection is not None and ctx.snapshot_id is not None:
        password = resolve_secret(connection.password_from)
        return VddkSource(
            libdir=Path(libdir), server=session.endpoint.host, user=connection.user,
            password_file=_secret_file(run_dir / "password", password),
            thumbprint=connection.thumbprint or "", vm_moref=ctx.vm_id, disk_file=work.disk.backing,
            snapshot_moref=ctx.snapshot_id,
        )
    # a fresh cookie per attempt: the session may have been renewed since the last one
    cookie = _secret_file(run_dir / "cookie", ops.session_cookie(session).split(";", 1)[0].strip())
    url = ops.datastore_file_url(session, datacenter, work.disk.backing)
    # We verify the pin ourselves at login; curl cannot check a thumbprint, so it skips CA checks only then.
    sslverify = not (connection is not None and (connection.insecure or connection.thumbprint))
    return CurlSource(url, sslverify=sslverify, cookie_file=cookie, timeout_seconds=300)


class _Progress:
    """Progress callback: events for the views, and a vSphere keepalive at most once per interval (a 2 TB
    disk takes hours; an idle session expires after 30 minutes)."""

    def __init__(self, ctx: ActionContext, key: int, total_bytes: int) -> None:
        self.ctx, self.key, self.total = ctx, key, total_bytes
        self.done = 0
        self.last_keepalive = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, nbytes: int) -> None:
        self.ctx.check_cancel()  # raised inside the copy: it stops, and the backup cleans up
        with self.lock:
            self.done += nbytes
            done = self.done
            now = time.monotonic()
            due = now - self.last_keepalive >= self.ctx.options.keepalive_every
            if due:
                self.last_keepalive = now
        if done * 2 >= self.total:
            crash_point(self.ctx.options, "mid-read")
        self.ctx.emit(Event(Kind.DISK_PROGRESS, self.ctx.vm_name, "backup",
                            {"disk": self.key, "advance": nbytes, "done": done, "total": self.total}))
        if due and self.ctx.session is not None:
            try:
                self.ctx.session.keepalive()
            except VsphereError as exc:
                self.ctx.note(f"session keepalive failed ({exc}); the next call logs in again")
