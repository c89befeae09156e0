"""Retrying with back-off, and the repository lock's refusal naming its holder (pure, or a temp dir)."""

from __future__ import annotations

import pytest

from reconciler.adapters.journal.sqlite import SqliteJournal
from reconciler.apply.context import retry
from reconciler.apply.locks import ApplyLocked, repository_locks


def test_retry_returns_the_first_success_and_reports_each_failed_attempt() -> None:
    attempts, reported = iter([ValueError("1"), ValueError("2"), "done"]), []

    def flaky() -> str:
        result = next(attempts)
        if isinstance(result, Exception):
            raise result
        return result

    assert retry(3, 0, flaky, lambda exc: True, lambda n, exc: reported.append((n, str(exc)))) == "done"
    assert reported == [(1, "1"), (2, "2")]


def test_retry_gives_up_after_the_last_attempt_with_the_last_error() -> None:
    def always() -> None:
        raise ValueError("still broken")

    with pytest.raises(ValueError, match="still broken"):
        retry(2, 0, always, lambda exc: True, lambda n, exc: None)


def test_retry_does_not_repeat_what_is_not_retryable() -> None:
    calls = []

    def permanent() -> None:
        calls.append(1)
        raise KeyError("permanent")

    with pytest.raises(KeyError):
        retry(5, 0, permanent, lambda exc: not isinstance(exc, KeyError), lambda n, exc: None)
    assert calls == [1]


def test_a_second_applier_is_refused_while_the_first_holds_the_repository(tmp_path) -> None:
    with SqliteJournal(tmp_path / "journal.db") as journal:
        holder = r"repository 'pool' \(run 20260101T000000Z-aaaaaa, pid \d+"
        with (repository_locks(tmp_path, journal, ["pool"], "20260101T000000Z-aaaaaa"),
              pytest.raises(ApplyLocked, match=holder),
              repository_locks(tmp_path, journal, ["pool"], "20260101T000000Z-bbbbbb")):
            pass
        # released: the next applier gets it
        with repository_locks(tmp_path, journal, ["pool"], "20260101T000000Z-cccccc"):
            assert [lock.run_id for lock in journal.locks()] == ["20260101T000000Z-cccccc"]
