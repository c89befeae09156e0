"""The SQLite journal: schema migrations, runs and events, locks across processes."""

from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.adapters.journal import (
    EventStatus,
    Journal,
    JournalError,
    LockHeld,
    RunResult,
    SqliteJournal,
)
from reconciler.adapters.journal.migrations import LATEST

T0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
VM_A = "5012a3c4-0000-4000-8000-00000000000a"
VM_B = "5012a3c4-0000-4000-8000-00000000000b"


@pytest.fixture
def journal(tmp_path: Path):
    with SqliteJournal(tmp_path / "journal.sqlite") as journal:
        yield journal


def _write_events(path: str, run_id: str, count: int) -> None:
    with SqliteJournal(path) as journal:
        journal.start_run(run_id, "apply")
        for n in range(count):
            journal.record_event(run_id, "backup", EventStatus.SUCCEEDED, instance_uuid=f"vm-{run_id}-{n}")
        journal.finish_run(run_id, RunResult.SUCCEEDED)


def _hold_lock_until_told(path: str, ready, done) -> None:
    with SqliteJournal(path) as journal:
        journal.acquire_lock("apply", "run-child")
        ready.set()
        done.wait(30)


def test_sqlite_journal_implements_the_journal_interface(journal):
    assert isinstance(journal, Journal)


def test_new_journal_is_migrated_from_empty_to_latest_in_wal_mode(journal):
    assert journal.db.execute("SELECT max(version) FROM schema_version").fetchone()[0] == LATEST
    assert journal.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in journal.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "events", "locks", "schema_version"} <= tables


def test_reopening_a_journal_keeps_its_data_and_migrates_nothing_twice(tmp_path):
    with SqliteJournal(tmp_path / "j.sqlite") as first:
        first.start_run("r1", "plan", at=T0)
    with SqliteJournal(tmp_path / "j.sqlite") as second:
        assert second.run("r1").command == "plan"
        assert second.db.execute("SELECT count(*) FROM schema_version").fetchone()[0] == LATEST


def test_journal_from_a_newer_reconciler_is_refused_clearly(tmp_path):
    path = tmp_path / "j.sqlite"
    SqliteJournal(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version VALUES (?)", (LATEST + 1,))
    with pytest.raises(JournalError, match="newer than this reconciler"):
        SqliteJournal(path)


def test_unusable_path_is_a_journal_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(JournalError, match="cannot open the journal"):
        SqliteJournal(tmp_path / "file" / "journal.sqlite")


def test_run_is_in_progress_until_finished(journal):
    run = journal.start_run("r1", "apply policies/", at=T0)
    assert run.in_progress and not run.interrupted
    assert [r.id for r in journal.runs_in_progress()] == ["r1"]
    journal.finish_run("r1", RunResult.PARTIAL, at=T0 + timedelta(minutes=5))
    assert journal.runs_in_progress() == []
    finished = journal.run("r1")
    assert finished.result == RunResult.PARTIAL
    assert finished.finished - finished.started == timedelta(minutes=5)


def test_a_run_whose_process_died_is_reported_interrupted(tmp_path):
    path = str(tmp_path / "j.sqlite")
    child = multiprocessing.get_context("spawn").Process(target=_start_and_die, args=(path,))
    child.start()
    child.join(60)
    with SqliteJournal(path) as journal:
        (run,) = journal.runs_in_progress()
        assert run.id == "crashed" and run.interrupted


def _start_and_die(path: str) -> None:
    SqliteJournal(path).start_run("crashed", "apply")


def test_duplicate_run_id_and_unknown_run_are_clear_errors(journal):
    journal.start_run("r1", "apply")
    with pytest.raises(JournalError, match="already"):
        journal.start_run("r1", "apply")
    with pytest.raises(JournalError, match="no run"):
        journal.finish_run("nope", RunResult.FAILED)
    with pytest.raises(JournalError, match="unknown run"):
        journal.record_event("nope", "backup", EventStatus.STARTED)


def test_events_keep_order_phases_and_json_detail(journal):
    journal.start_run("r1", "apply", at=T0)
    detail = {"error": 'quiesce "failed": VSS', "bytes": 1 << 40, "disks": [2000, 2001]}
    journal.record_event("r1", "backup", EventStatus.STARTED, instance_uuid=VM_A, phase_before="idle",
                         phase_after="snapshotting", at=T0)
    journal.record_event("r1", "backup", EventStatus.FAILED, instance_uuid=VM_A, phase_before="snapshotting",
                         phase_after="idle", detail=detail, at=T0 + timedelta(seconds=3))
    started, failed = journal.events("r1")
    assert (started.status, started.phase_after) == (EventStatus.STARTED, "snapshotting")
    assert failed.detail == detail and failed.at == T0 + timedelta(seconds=3)


def test_detail_that_is_not_json_is_refused(journal):
    journal.start_run("r1", "apply")
    with pytest.raises(JournalError, match="JSON"):
        journal.record_event("r1", "backup", EventStatus.FAILED, detail={"when": object()})


def test_naive_times_are_refused(journal):
    with pytest.raises(JournalError, match="time-zone aware"):
        journal.start_run("r1", "apply", at=datetime(2026, 1, 1))


def test_last_outcome_per_vm_is_the_latest_finished_event(journal):
    journal.start_run("r1", "apply", at=T0)
    journal.record_event("r1", "backup", EventStatus.SUCCEEDED, instance_uuid=VM_A)
    journal.record_event("r1", "backup", EventStatus.FAILED, instance_uuid=VM_B)
    journal.start_run("r2", "apply", at=T0 + timedelta(hours=1))
    journal.record_event("r2", "backup", EventStatus.FAILED, instance_uuid=VM_A)
    journal.record_event("r2", "prune", EventStatus.SUCCEEDED, instance_uuid=VM_B)
    journal.record_event("r2", "backup", EventStatus.STARTED, instance_uuid=VM_B)  # not finished: ignored
    outcomes = journal.last_outcomes()
    assert {uuid: (e.run_id, e.action, e.status) for uuid, e in outcomes.items()} == {
        VM_A: ("r2", "backup", EventStatus.FAILED),
        VM_B: ("r2", "prune", EventStatus.SUCCEEDED),
    }
    backups = journal.last_outcomes("backup")
    assert (backups[VM_B].run_id, backups[VM_B].status) == ("r1", EventStatus.FAILED)


def test_two_processes_write_concurrently_without_losing_events(tmp_path):
    path = str(tmp_path / "j.sqlite")
    SqliteJournal(path).close()
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_events, args=(path, f"run{n}", 150)) for n in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    with SqliteJournal(path) as journal:
        assert len(journal.events("run0")) == len(journal.events("run1")) == 150
        assert {r.result for r in journal.recent_runs()} == {RunResult.SUCCEEDED}


def test_lock_held_by_a_live_process_is_refused_with_its_holder(tmp_path):
    path = str(tmp_path / "j.sqlite")
    SqliteJournal(path).close()
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    child = context.Process(target=_hold_lock_until_told, args=(path, ready, done))
    child.start()
    try:
        assert ready.wait(60)
        with SqliteJournal(path) as journal, pytest.raises(LockHeld) as caught:
            journal.acquire_lock("apply", "run-parent")
        assert caught.value.lock.pid == child.pid and "run-child" in str(caught.value)
    finally:
        done.set()
        child.join(60)


def test_lock_of_a_dead_process_is_stale_and_taken_over(tmp_path):
    path = str(tmp_path / "j.sqlite")
    SqliteJournal(path).close()
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    done.set()  # the child takes the lock and exits without releasing it
    child = context.Process(target=_hold_lock_until_told, args=(path, ready, done))
    child.start()
    child.join(60)
    with SqliteJournal(path) as journal:
        assert journal.locks()[0].run_id == "run-child"
        lock = journal.acquire_lock("apply", "run-parent")
        assert lock.run_id == "run-parent" and [x.run_id for x in journal.locks()] == ["run-parent"]


def test_lock_is_released_by_its_run_only(journal):
    with journal.lock("apply", "r1"):
        journal.release_lock("apply", "someone-else")
        assert [x.run_id for x in journal.locks()] == ["r1"]
    assert journal.locks() == []


def test_same_run_may_reacquire_its_own_lock(journal):
    journal.acquire_lock("apply", "r1")
    assert journal.acquire_lock("apply", "r1").run_id == "r1"
