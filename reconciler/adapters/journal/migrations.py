"""Schema migrations of the SQLite journal: ordered functions, each run once, in one transaction each.

Append a new function to MIGRATIONS to change the schema; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def _execute_all(db: sqlite3.Connection, statements: str) -> None:
    # Not executescript(): it COMMITs first, which would break the migration's transaction.
    for statement in statements.split(";"):
        if statement.strip():
            db.execute(statement)


def _v1_runs_events_locks(db: sqlite3.Connection) -> None:
    _execute_all(
        db,
        """
        CREATE TABLE runs (
            id        TEXT PRIMARY KEY,
            command   TEXT NOT NULL,
            started   TEXT NOT NULL,
            finished  TEXT,
            result    TEXT,
            pid       INTEGER NOT NULL,
            host      TEXT NOT NULL,
            pid_start INTEGER
        );
        CREATE INDEX runs_unfinished ON runs (started) WHERE finished IS NULL;
        CREATE TABLE events (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id        TEXT NOT NULL REFERENCES runs (id),
            at            TEXT NOT NULL,
            instance_uuid TEXT,
            action        TEXT NOT NULL,
            phase_before  TEXT,
            phase_after   TEXT,
            status        TEXT NOT NULL,
            detail        TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX events_by_run ON events (run_id, id);
        CREATE INDEX events_by_vm ON events (instance_uuid, id);
        CREATE TABLE locks (
            name      TEXT PRIMARY KEY,
            run_id    TEXT NOT NULL,
            pid       INTEGER NOT NULL,
            host      TEXT NOT NULL,
            pid_start INTEGER,
            acquired  TEXT NOT NULL
        )
        """,
    )


class SchemaTooNew(Exception):
    pass


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1_runs_events_locks]
LATEST = len(MIGRATIONS)


def current_version(db: sqlite3.Connection) -> int:
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    return row[0] or 0


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema to LATEST; safe when several processes open a new journal at once (the write
    lock of BEGIN IMMEDIATE serialises them, the second one finds nothing left to do)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = current_version(db)
        if version > LATEST:
            raise SchemaTooNew(
                f"journal schema version {version} is newer than this reconciler knows ({LATEST}); "
                "upgrade the reconciler"
            )
        for number in range(version + 1, LATEST + 1):
            MIGRATIONS[number - 1](db)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return LATEST

