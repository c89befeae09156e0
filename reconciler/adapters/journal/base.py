"""The run journal's interface: what ran, what happened to each VM, who holds which lock.

Losing the journal loses history, never backups (the ZFS pool is the source of truth). It sits behind
this small Protocol so a PostgreSQL journal can serve a fleet of appliances later (DESIGN.md §8).
"""

from __future__ import annotations

import enum
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class JournalError(Exception):
    """The journal cannot be opened or used (a clear message, never a raw sqlite3 traceback)."""


class LockHeld(JournalError):
    def __init__(self, lock: LockRecord) -> None:
        self.lock = lock
        super().__init__(
            f"lock {lock.name!r} is held by run {lock.run_id} (pid {lock.pid} on {lock.host}, "
            f"since {lock.acquired.isoformat()})"
        )


class RunResult(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIAL = "partial"  # some actions failed
    CANCELLED = "cancelled"


class EventStatus(enum.StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


TERMINAL_STATUSES = (EventStatus.SUCCEEDED, EventStatus.FAILED, EventStatus.SKIPPED)


@dataclass(frozen=True)
class Holder:
    """A process somewhere: stale when on this host and gone (or its pid was reused)."""

    pid: int
    host: str
    pid_start: int | None  # start time in clock ticks since boot, tells a reused pid apart

    @classmethod
    def current(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), process_start(os.getpid()))

    def is_gone(self) -> bool:
        if self.host != socket.gethostname():
            return False  # cannot tell from here: assume alive
        start = process_start(self.pid)
        return start is None or (self.pid_start is not None and start != self.pid_start)


@dataclass(frozen=True)
class RunRecord:
    id: str
    command: str
    started: datetime
    finished: datetime | None
    result: RunResult | None
    holder: Holder

    @property
    def in_progress(self) -> bool:
        return self.finished is None

    @property
    def interrupted(self) -> bool:
        """Never finished and its process is gone: a crash (apply converges on the next run)."""
        return self.finished is None and self.holder.is_gone()


@dataclass(frozen=True)
class EventRecord:
    run_id: str
    at: datetime
    instance_uuid: str | None
    action: str
    phase_before: str | None
    phase_after: str | None
    status: EventStatus
    detail: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class LockRecord:
    name: str
    run_id: str
    holder: Holder
    acquired: datetime

    @property
    def pid(self) -> int:
        return self.holder.pid

    @property
    def host(self) -> str:
        return self.holder.host


@runtime_checkable
class Journal(Protocol):
    def start_run(self, run_id: str, command: str, at: datetime | None = None) -> RunRecord: ...

    def finish_run(self, run_id: str, result: RunResult, at: datetime | None = None) -> None: ...

    def record_event(self, run_id: str, action: str, status: EventStatus, *, instance_uuid: str | None = None,
                     phase_before: str | None = None, phase_after: str | None = None,
                     detail: Mapping[str, Any] | None = None, at: datetime | None = None) -> None: ...

    def run(self, run_id: str) -> RunRecord | None: ...

    def runs_in_progress(self) -> list[RunRecord]: ...

    def recent_runs(self, limit: int = 20) -> list[RunRecord]: ...

    def events(self, run_id: str) -> list[EventRecord]: ...

    def last_outcomes(self, action: str | None = None) -> dict[str, EventRecord]:
        """instanceUuid -> its latest finished (succeeded/failed/skipped) event, optionally of one action."""
        ...

    def acquire_lock(self, name: str, run_id: str) -> LockRecord:
        """Take `name` for this process, taking over a stale holder's; raise LockHeld otherwise."""
        ...

    def release_lock(self, name: str, run_id: str) -> None: ...

    def locks(self) -> list[LockRecord]: ...

    def close(self) -> None: ...


def never_completed(journal: Journal, run_id: str) -> bool:
    """The journal knows `run_id`, it is not running any more, and it did not succeed: whatever it left
    behind under its name is an unfinished piece of ours."""
    run = journal.run(run_id)
    if run is None or (run.in_progress and not run.interrupted):
        return False
    return run.result is not RunResult.SUCCEEDED


def process_start(pid: int) -> int | None:
    """Start time of a live, non-zombie process (field 22 of /proc/PID/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])
