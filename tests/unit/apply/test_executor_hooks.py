"""The executor's stop hooks for `watch`: `drain` lets running changes finish and starts no new one;
`cancel` is the event every action checks. Real executor, real SQLite journal; the actions fail fast
because no vSphere connection is configured, which is all these tests need."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

from reconciler.adapters.journal.sqlite import SqliteJournal
from reconciler.adapters.observe import Sessions
from reconciler.apply.context import ApplyOptions
from reconciler.apply.events import Event, Kind
from reconciler.apply.executor import Executor, Result, ThreadJournals
from reconciler.core.observed import Observed
from reconciler.core.plan import Action, Change, Plan
from reconciler.core.refs import VmRef
from reconciler.policy.model import PolicySet

RUN_ID = "20261130T020000Z-abcdef"


def plan_of(*changes: Change) -> Plan:
    return Plan(changes=changes, diagnostics=(), fingerprint="sha256:test", made_at=dt.datetime.now(dt.UTC))


def cbt(vm: str, uuid: str) -> Change:
    return Change(Action.ENABLE_CBT, VmRef(uuid, vm, "vm-1", "nowhere"), policy="none")


def executor(tmp_path: Path, plan: Plan, on_event, **hooks) -> Executor:  # type: ignore[no-untyped-def]
    with SqliteJournal(tmp_path / "journal.db") as journal:
        journal.start_run(RUN_ID, "apply")
    journals = ThreadJournals(lambda: SqliteJournal(tmp_path / "journal.db"))
    return Executor(plan, PolicySet(), Observed(), Sessions(), journals, RUN_ID,
                    ApplyOptions(parallel=1, work_dir=tmp_path), on_event, **hooks)


def test_drain_stops_new_vms_from_starting(tmp_path: Path) -> None:
    drain = threading.Event()
    plan = plan_of(cbt("a", "uuid-a"), cbt("b", "uuid-b"), cbt("c", "uuid-c"))

    def on_event(event: Event) -> None:
        if event.kind is Kind.ACTION_DONE:
            drain.set()  # SIGTERM arrives while the first VM is worked on

    outcomes = executor(tmp_path, plan, on_event, drain=drain).run()
    assert [o.result for o in outcomes] == [Result.FAILED, Result.SKIPPED, Result.SKIPPED]
    assert all("stopping" in o.error for o in outcomes[1:])


def test_drain_lets_the_running_change_finish_but_starts_none_after_it(tmp_path: Path) -> None:
    drain = threading.Event()
    plan = plan_of(cbt("a", "uuid-a"), Change(Action.PRUNE, VmRef("uuid-a", "a", "vm-1", "nowhere"), policy="none"))

    def on_event(event: Event) -> None:
        if event.kind is Kind.ACTION_STARTED:
            drain.set()

    first, second = executor(tmp_path, plan, on_event, drain=drain).run()
    assert first.result is Result.FAILED and "no vSphere session" in first.error  # it ran to its end
    assert second.result is Result.SKIPPED


def test_without_hooks_every_change_runs(tmp_path: Path) -> None:
    outcomes = executor(tmp_path, plan_of(cbt("a", "uuid-a"), cbt("b", "uuid-b")), lambda _: None).run()
    assert [o.result for o in outcomes] == [Result.FAILED, Result.FAILED]


def test_cancel_is_the_event_every_action_checks(tmp_path: Path) -> None:
    cancel = threading.Event()
    plan = plan_of(cbt("a", "uuid-a"))
    ex = executor(tmp_path, plan, lambda _: None, cancel=cancel)
    assert ex.cancel is cancel and ex.context(plan.changes[0]).cancel is cancel
    cancel.set()
    (outcome,) = ex.run()
    assert outcome.result is Result.SKIPPED and "interrupted" in outcome.error
