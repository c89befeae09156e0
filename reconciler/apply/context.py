"""What one action needs to run: resolved once by the executor from the plan, the policies and what was
observed, so the actions themselves never look anything up by name."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from reconciler.adapters.journal.base import EventStatus
from reconciler.adapters.vsphere.session import VsphereSession
from reconciler.adapters.zfs.backups import BackupRepository
from reconciler.apply.events import Event, Kind
from reconciler.core.observed import VmState
from reconciler.core.plan import Change
from reconciler.policy.model import Connection, ProtectionPolicy, Quiesce


class ActionFailed(Exception):
    """An action could not do its job; the message is the one line the operator reads."""


class Cancelled(ActionFailed):
    """The operator interrupted apply (Ctrl-C): running work stops, cleanup still runs."""


class EventLog(Protocol):
    """The part of the journal an action writes to."""

    def record_event(self, run_id: str, action: str, status: EventStatus, **kwargs: Any) -> None: ...


@dataclass(frozen=True)
class ApplyOptions:
    parallel: int = 4
    task_timeout: float = 30 * 60.0
    nbd_connections: int = 4
    nbd_in_flight: int = 8
    nbd_request: int = 4 * 1024 * 1024
    transfer_attempts: int = 3  # a disk's transfer is re-read from the start (idempotent) this many times
    snapshot_attempts: int = 3
    remove_attempts: int = 4
    backoff: float = 2.0  # seconds before the first retry; doubles each time
    keepalive_every: float = 60.0
    work_dir: Path = Path("/tmp")  # nbdkit sockets, cookie files and logs
    crash_at: str | None = None  # test hook: os._exit(137) when this step is reached (RECONCILER_CRASH_AT)


@dataclass
class ActionContext:
    change: Change
    run_id: str
    connection: Connection | None
    session: VsphereSession | None
    repository: BackupRepository | None
    repository_name: str | None
    policy: ProtectionPolicy | None
    vm: VmState | None  # as observed, None when the VM is gone
    journal: EventLog
    options: ApplyOptions
    emit: Callable[[Event], None]
    host_rate: float | None = None  # bytes/s NBD may read from the VM's host
    throttle: Any = None  # a TokenBucket shared by the host's transfers
    snapshot_id: str | None = None  # the VMware snapshot a backup reads (set once it exists)
    notes: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def vm_name(self) -> str:
        return self.change.vm.name or self.change.vm.instance_uuid

    @property
    def vm_id(self) -> str:
        return self.vm.id if self.vm is not None else self.change.vm.id

    @property
    def quiesce(self) -> Quiesce:
        return self.policy.quiesce if self.policy is not None else Quiesce.PREFERRED

    def require_session(self) -> VsphereSession:
        if self.session is None:
            raise ActionFailed(f"no vSphere session for connection {self.change.vm.connection!r}")
        return self.session

    def require_repository(self) -> BackupRepository:
        if self.repository is None:
            raise ActionFailed(f"{self.vm_name}: its repository is not known (policy {self.change.policy!r})")
        return self.repository

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("interrupted by the operator")

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.emit(Event(Kind.NOTE, self.vm_name, self.change.action.value, {"message": message}))

    @contextlib.contextmanager
    def step(self, name: str, *, cancellable: bool = True, **detail: Any) -> Iterator[None]:
        """Journal a step before and after it runs (crash recovery reads where a run stopped)."""
        action = f"{self.change.action.value}.{name}"
        uuid = self.change.vm.instance_uuid
        self.journal.record_event(self.run_id, action, EventStatus.STARTED, instance_uuid=uuid,
                                  phase_after=name, detail=detail)
        crash_point(self.options, name)
        try:
            if cancellable:
                self.check_cancel()
            yield
        except BaseException as exc:
            self.journal.record_event(self.run_id, action, EventStatus.FAILED, instance_uuid=uuid,
                                      phase_before=name, detail={"error": str(exc) or type(exc).__name__})
            raise
        self.journal.record_event(self.run_id, action, EventStatus.SUCCEEDED, instance_uuid=uuid,
                                  phase_before=name)
        crash_point(self.options, f"after-{name}")


def crash_point(options: ApplyOptions, name: str) -> None:
    """Crash tests kill apply at named points, exactly like `kill -9` (no cleanup, no finally)."""
    if options.crash_at == name:
        import os

        os._exit(137)


def retry(attempts: int, backoff: float, what: Callable[[], Any], retryable: Callable[[Exception], bool],
          on_retry: Callable[[int, Exception], None]) -> Any:
    """Call `what` until it succeeds, at most `attempts` times, sleeping backoff, 2×backoff, … between."""
    delay = backoff
    for attempt in range(1, attempts + 1):
        try:
            return what()
        except Exception as exc:
            if attempt == attempts or not retryable(exc):
                raise
            on_retry(attempt, exc)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
