"""The journal in SQLite: WAL (readers never block the writer), a busy timeout (several processes —
apply, watch, status — share one file), explicit transactions."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.adapters.journal.base import (
    TERMINAL_STATUSES,
    EventRecord,
    EventStatus,
    Holder,
    JournalError,
    LockHeld,
    LockRecord,
    RunRecord,
    RunResult,
)
from reconciler.adapters.journal.migrations import SchemaTooNew, migrate

BUSY_TIMEOUT_MS = 30_000


class SqliteJournal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            migrate(self.db)
        except SchemaTooNew as exc:
            raise JournalError(f"{self.path}: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> SqliteJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front so check-then-write is atomic."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path} is not writable: {exc}") from exc
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # ---- runs --------------------------------------------------------------------------------------
    def start_run(self, run_id: str, command: str, at: datetime | None = None) -> RunRecord:
        holder = Holder.current()
        started = _utc(at)
        with self._write() as db:
            try:
                db.execute(
                    "INSERT INTO runs (id, command, started, pid, host, pid_start) VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, command, _text(started), holder.pid, holder.host, holder.pid_start),
                )
            except sqlite3.IntegrityError as exc:
                raise JournalError(f"run {run_id} is already in the journal") from exc
        return RunRecord(run_id, command, started, None, None, holder)

    def finish_run(self, run_id: str, result: RunResult, at: datetime | None = None) -> None:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE runs SET finished = ?, result = ? WHERE id = ?",
                (_text(_utc(at)), RunResult(result).value, run_id),
            )
            if cursor.rowcount != 1:
                raise JournalError(f"no run {run_id} in the journal")

    def run(self, run_id: str) -> RunRecord | None:
        row = self.db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run(row) if row else None

    def runs_in_progress(self) -> list[RunRecord]:
        rows = self.db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE finished IS NULL ORDER BY started, id"
        ).fetchall()
        return [_run(row) for row in rows]

    def recent_runs(self, limit: int = 20) -> list[RunRecord]:
        rows = self.db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY started DESC, id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_run(row) for row in rows]

    # ---- events ------------------------------------------------------------------------------------
    def record_event(self, run_id: str, action: str, status: EventStatus, *, instance_uuid: str | None = None,
                     phase_before: str | None = None, phase_after: str | None = None,
                     detail: Mapping[str, Any] | None = None, at: datetime | None = None) -> None:
        try:
            detail_json = json.dumps(dict(detail or {}), separators=(",", ":"), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise JournalError(f"event detail is not JSON-serialisable: {exc}") from exc
        with self._write() as db:
            try:
                db.execute(
                    "INSERT INTO events (run_id, at, instance_uuid, action, phase_before, phase_after, "
                    "status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, _text(_utc(at)), instance_uuid, action, phase_before, phase_after,
                     EventStatus(status).value, detail_json),
                )
            except sqlite3.IntegrityError as exc:
                raise JournalError(f"event for unknown run {run_id}") from exc

    def events(self, run_id: str) -> list[EventRecord]:
        rows = self.db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id = ? ORDER BY id", (run_id,)
        ).fetchall()
        return [_event(row) for row in rows]

    def last_outcomes(self, action: str | None = None) -> dict[str, EventRecord]:
        terminal = tuple(s.value for s in TERMINAL_STATUSES)
        action_filter = "AND action = ?" if action else ""
        params: tuple[Any, ...] = (*terminal, *((action,) if action else ()))
        rows = self.db.execute(
            f"""SELECT {_EVENT_COLUMNS} FROM events WHERE id IN (
                    SELECT max(id) FROM events
                    WHERE instance_uuid IS NOT NULL AND status IN (?, ?, ?) {action_filter}
                    GROUP BY instance_uuid)""",
            params,
        ).fetchall()
        return {event.instance_uuid: event for event in map(_event, rows) if event.instance_uuid}

    # ---- locks -------------------------------------------------------------------------------------
    def acquire_lock(self, name: str, run_id: str) -> LockRecord:
        holder = Holder.current()
        with self._write() as db:
            row = db.execute(f"SELECT {_LOCK_COLUMNS} FROM locks WHERE name = ?", (name,)).fetchone()
            if row:
                existing = _lock(row)
                if existing.run_id != run_id and not existing.holder.is_gone():
                    raise LockHeld(existing)
            acquired = _utc(None)
            db.execute(
                "INSERT OR REPLACE INTO locks (name, run_id, pid, host, pid_start, acquired) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, run_id, holder.pid, holder.host, holder.pid_start, _text(acquired)),
            )
        return LockRecord(name, run_id, holder, acquired)

    def release_lock(self, name: str, run_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM locks WHERE name = ? AND run_id = ?", (name, run_id))

    @contextmanager
    def lock(self, name: str, run_id: str) -> Iterator[LockRecord]:
        record = self.acquire_lock(name, run_id)
        try:
            yield record
        finally:
            self.release_lock(name, run_id)

    def locks(self) -> list[LockRecord]:
        return [_lock(row) for row in self.db.execute(f"SELECT {_LOCK_COLUMNS} FROM locks ORDER BY name")]


_RUN_COLUMNS = "id, command, started, finished, result, pid, host, pid_start"
_EVENT_COLUMNS = "run_id, at, instance_uuid, action, phase_before, phase_after, status, detail"
_LOCK_COLUMNS = "name, run_id, pid, host, pid_start, acquired"


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        raise JournalError(f"journal times must be time-zone aware, got {at!r}")
    return at.astimezone(UTC)


def _text(at: datetime) -> str:
    return at.isoformat(timespec="microseconds")


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _run(row: tuple[Any, ...]) -> RunRecord:
    run_id, command, started, finished, result, pid, host, pid_start = row
    return RunRecord(run_id, command, datetime.fromisoformat(started), _time(finished),
                     RunResult(result) if result else None, Holder(pid, host, pid_start))


def _event(row: tuple[Any, ...]) -> EventRecord:
    run_id, at, instance_uuid, action, before, after, status, detail = row
    return EventRecord(run_id, datetime.fromisoformat(at), instance_uuid, action, before, after,
                       EventStatus(status), json.loads(detail))


def _lock(row: tuple[Any, ...]) -> LockRecord:
    name, run_id, pid, host, pid_start, acquired = row
    return LockRecord(name, run_id, Holder(pid, host, pid_start), datetime.fromisoformat(acquired))
