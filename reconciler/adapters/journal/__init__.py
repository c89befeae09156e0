"""The run journal: runs, events, locks (SQLite today, behind `Journal` for PostgreSQL later)."""

from reconciler.adapters.journal.base import (
    EventRecord,
    EventStatus,
    Journal,
    JournalError,
    LockHeld,
    LockRecord,
    RunRecord,
    RunResult,
)
from reconciler.adapters.journal.sqlite import SqliteJournal

__all__ = [
    "EventRecord",
    "EventStatus",
    "Journal",
    "JournalError",
    "LockHeld",
    "LockRecord",
    "RunRecord",
    "RunResult",
    "SqliteJournal",
]
