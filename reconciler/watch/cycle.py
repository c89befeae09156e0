"""One reconcile cycle of `watch`: observe → plan (pure) → apply the changes the `--apply` mode allows,
with the same executor, journal and repository locks as `reconciler apply`. This is the loop's only call
into the apply machinery, so the loop itself stays testable and the call site stays one function."""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from reconciler.core.observed import Observed
from reconciler.core.plan import Action, Change, Plan
from reconciler.policy.model import PolicySet


class ApplyMode(StrEnum):
    NONE = "none"  # plan and report only: nothing changes anywhere, not even backups
    SAFE = "safe"  # backups and additive or repairing actions; prune and unpair wait for a person
    ALL = "all"  # everything the plan says


# Losing backups (prune) or protection (unpair) because of a file edit needs `--apply all`.
_DESTRUCTIVE = frozenset({Action.PRUNE, Action.UNPAIR})


@dataclass(frozen=True)
class Selection:
    apply: tuple[Change, ...]
    held: tuple[Change, ...]


def select_changes(plan: Plan, mode: ApplyMode) -> Selection:
    if mode is ApplyMode.NONE:
        return Selection((), plan.changes)
    if mode is ApplyMode.ALL:
        return Selection(plan.changes, ())
    return Selection(tuple(c for c in plan.changes if c.action not in _DESTRUCTIVE),
                     tuple(c for c in plan.changes if c.action in _DESTRUCTIVE))


@dataclass(frozen=True)
class CycleReport:
    plan: Plan
    observed: Observed
    held: tuple[Change, ...] = ()
    outcomes: tuple[Any, ...] = ()  # reconciler.apply.executor.Outcome, in plan order
    run_id: str | None = None
    locked: str | None = None  # another apply held a repository: nothing was applied this time

    @property
    def pending(self) -> tuple[Change, ...]:
        """Changes still owed after this cycle (drift): held back, or applied without success."""
        done = {o.change for o in self.outcomes if o.result.value == "succeeded"}
        return tuple(c for c in self.plan.changes if c not in done)


def run_cycle(policies: PolicySet, now: dt.datetime, state_dir: Path, mode: ApplyMode, *,
              cancel: threading.Event, emit: Callable[[Any], None], parallel: int = 4,
              task_timeout: float = 1800.0, draining: threading.Event | None = None) -> CycleReport:
    """`cancel` aborts in-flight work (cleanup still runs); `draining` (a stop was asked for) keeps a new apply
    run, and within a run any change not yet started, from starting; running changes finish."""
    from reconciler.adapters.journal.sqlite import SqliteJournal
    from reconciler.adapters.observe import Sessions

    journal_path = state_dir / "journal.db"
    if mode is ApplyMode.NONE and not journal_path.exists():
        journal = None
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        journal = SqliteJournal(journal_path)
    sessions = Sessions()
    try:
        observed, plan = _observe_and_plan(policies, sessions, journal, now)
        selection = select_changes(plan, mode)
        if not selection.apply or journal is None:
            return CycleReport(plan, observed, held=selection.held)
        first = CycleReport(plan, observed, held=selection.held)
        if draining is not None and draining.is_set():
            return first
        return _apply(first, policies, sessions, journal, state_dir, now, mode, cancel, emit, parallel, task_timeout,
                      draining)
    finally:
        sessions.close()
        if journal is not None:
            journal.close()


def _observe_and_plan(policies: PolicySet, sessions: Any, journal: Any, now: dt.datetime) -> tuple[Observed, Plan]:
    from reconciler.adapters.observe import observe
    from reconciler.core.planner import plan as compute_plan

    observed = observe(policies, sessions, journal)
    return observed, compute_plan(policies, observed, now)


def _apply(first: CycleReport, policies: PolicySet, sessions: Any, journal: Any, state_dir: Path, now: dt.datetime,
           mode: ApplyMode, cancel: threading.Event, emit: Callable[[Any], None], parallel: int,
           task_timeout: float, draining: threading.Event | None) -> CycleReport:
    from reconciler.adapters.journal.base import RunResult
    from reconciler.adapters.journal.sqlite import SqliteJournal
    from reconciler.apply.context import ApplyOptions
    from reconciler.apply.executor import Executor, Result, ThreadJournals
    from reconciler.apply.locks import ApplyLocked, repository_locks
    from reconciler.cli.apply import new_run_id

    run_id = new_run_id(now)
    repositories = {p.repository for p in policies.policies.values()} & set(policies.repositories)
    try:
        with repository_locks(state_dir, journal, repositories, run_id):
            # the world may have moved while we waited for the lock: plan again under it, as apply does
            observed, plan = _observe_and_plan(policies, sessions, journal, now)
            selection = select_changes(plan, mode)
            if not selection.apply or cancel.is_set() or (draining is not None and draining.is_set()):
                return CycleReport(plan, observed, held=selection.held)
            journal.start_run(run_id, "watch")
            work_dir = Path(tempfile.mkdtemp(prefix="rcn-watch-"))
            options = ApplyOptions(parallel=parallel, task_timeout=task_timeout, work_dir=work_dir)
            executor = Executor(replace(plan, changes=selection.apply), policies, observed, sessions,
                                ThreadJournals(lambda: SqliteJournal(state_dir / "journal.db")), run_id,
                                options, emit, cancel=cancel, drain=draining)
            try:
                outcomes = executor.run()
            finally:
                with contextlib.suppress(OSError):
                    work_dir.rmdir()  # left in place when it holds an nbdkit log worth reading
            failed = [o for o in outcomes if o.result is Result.FAILED]
            journal.finish_run(run_id, RunResult.PARTIAL if failed and len(failed) < len(outcomes)
                               else RunResult.FAILED if failed else RunResult.SUCCEEDED)
            # the clock's next wake needs the backups just made: the pool is the source of truth, read it again
            observed = replace(observed, repositories=_reread_repositories(policies, observed))
            return CycleReport(plan, observed, held=selection.held, outcomes=tuple(outcomes), run_id=run_id)
    except ApplyLocked as exc:
        return replace(first, locked=str(exc))


def _reread_repositories(policies: PolicySet, observed: Observed) -> tuple[Any, ...]:
    from reconciler.adapters.observe import observe_repository

    fresh = []
    for state in observed.repositories:
        spec = policies.repositories.get(state.name)
        fresh.append(observe_repository(spec) if spec is not None else state)
    return tuple(fresh)
