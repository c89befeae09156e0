"""The watch loop under an injected clock: it sleeps until the next backup is due, runs it, and survives
the clock jumping and a cycle failing. The world is in memory (the real pure planner decides); the
file-watching side is covered by tests/integration/test_watch_files.py."""

from __future__ import annotations

import datetime as dt
import io
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reconciler.apply.executor import Outcome, Result
from reconciler.core.observed import ConnectionError_, ConnectionState, Observed
from reconciler.core.plan import Action
from reconciler.core.planner import plan as compute_plan
from reconciler.watch.cycle import ApplyMode, CycleReport, select_changes
from reconciler.watch.log import Log
from reconciler.watch.service import WatchConfig, Watcher
from tests.unit.core.world import NOW, backup, protected, world
from tests.unit.watch.policyset import write_policy_set

H = dt.timedelta(hours=1)


@dataclass
class FakeClock:
    """Time moves only when the loop sleeps; after `stop_after` sleeps the watcher is asked to stop."""

    t: dt.datetime
    stop_after: int = 3
    sleeps: list[dt.datetime] = field(default_factory=list)
    jumps: dict[int, dt.datetime] = field(default_factory=dict)  # sleep number → wall time after it
    watcher: Any = None

    def now(self) -> dt.datetime:
        return self.t

    def sleep_until(self, until: dt.datetime, wake: threading.Event) -> bool:
        if wake.is_set():
            return True
        self.sleeps.append(until)
        self.t = self.jumps.get(len(self.sleeps), max(self.t, until))
        if len(self.sleeps) >= self.stop_after:
            self.watcher.request_stop()
        return False


@dataclass
class MemoryWorld:
    """Stands in for vSphere and the pool: a backup change appends a complete backup at `now`."""

    observed: Observed
    backups_at: list[dt.datetime] = field(default_factory=list)
    fail_first: int = 0

    def cycle(self, policies: Any, now: dt.datetime, state_dir: Path, mode: ApplyMode, **_: Any) -> CycleReport:
        if self.fail_first:
            self.fail_first -= 1
            raise ConnectionResetError("vCenter dropped the connection")
        plan = compute_plan(policies, self.observed, now)
        outcomes = []
        for change in select_changes(plan, mode).apply:
            if change.action is Action.BACKUP:
                self._add_backup(change.vm.instance_uuid, now)
                outcomes.append(Outcome(change, Result.SUCCEEDED, seconds=1.0))
        return CycleReport(plan, self.observed, outcomes=tuple(outcomes))

    def _add_backup(self, uuid: str, at: dt.datetime) -> None:
        self.backups_at.append(at)
        repo = self.observed.repositories[0]
        chains = tuple(replace(c, backups=(*c.backups, replace(c.backups[-1], name=f"reconciler-{at:%s}",
                                                                created=at)))
                       if c.instance_uuid == uuid else c for c in repo.chains)
        self.observed = replace(self.observed, repositories=(replace(repo, chains=chains),))


def make_watcher(tmp_path: Path, the_world: MemoryWorld, clock: FakeClock) -> tuple[Watcher, io.StringIO]:
    policies = write_policy_set(tmp_path / "policies", every="24h")
    out = io.StringIO()
    config = WatchConfig((policies,), tmp_path / "state", resync=dt.timedelta(days=2), retry=dt.timedelta(minutes=5))
    watcher = Watcher(config, clock, Log(out, now=clock.now), cycle=the_world.cycle)
    clock.watcher = watcher
    return watcher, out


def test_clock_sleeps_until_the_backup_is_due_then_runs_it(tmp_path: Path) -> None:
    web1, chain1 = protected(1, last_hours_ago=20)  # daily schedule: due in 4 h
    the_world = MemoryWorld(world((web1,), (chain1,)))
    clock = FakeClock(NOW, stop_after=2)
    watcher, _ = make_watcher(tmp_path, the_world, clock)
    assert watcher.run() == 0
    assert clock.sleeps == [NOW + 4 * H, NOW + 28 * H]
    assert the_world.backups_at == [NOW + 4 * H]


def test_clock_set_back_causes_no_backup_storm(tmp_path: Path) -> None:
    web1, chain1 = protected(1, last_hours_ago=1)
    the_world = MemoryWorld(world((web1,), (chain1,)))
    clock = FakeClock(NOW, stop_after=3, jumps={1: NOW - 3 * 24 * H})
    watcher, out = make_watcher(tmp_path, the_world, clock)
    watcher.run()
    assert the_world.backups_at == []
    assert "clock.jumped" in out.getvalue()


def test_clock_jumping_forward_runs_the_overdue_backup_at_once(tmp_path: Path) -> None:
    web1, chain1 = protected(1, last_hours_ago=1)
    the_world = MemoryWorld(world((web1,), (chain1,)))
    clock = FakeClock(NOW, stop_after=2, jumps={1: NOW + 3 * 24 * H})
    watcher, _ = make_watcher(tmp_path, the_world, clock)
    watcher.run()
    assert the_world.backups_at == [NOW + 3 * 24 * H]


def test_a_failing_cycle_is_logged_and_retried_and_the_service_keeps_running(tmp_path: Path) -> None:
    web1, chain1 = protected(1, last_hours_ago=30)  # overdue
    chain1 = replace(chain1, backups=(backup(NOW - 30 * H, web1),))
    the_world = MemoryWorld(world((web1,), (chain1,)), fail_first=1)
    clock = FakeClock(NOW, stop_after=2)
    watcher, out = make_watcher(tmp_path, the_world, clock)
    assert watcher.run() == 0
    assert clock.sleeps[0] == NOW + dt.timedelta(minutes=5)
    assert the_world.backups_at == [NOW + dt.timedelta(minutes=5)]
    assert "cycle.failed" in out.getvalue() and "ConnectionResetError" in out.getvalue()


def test_stop_requested_before_the_first_sleep_exits_cleanly(tmp_path: Path) -> None:
    web1, chain1 = protected(1, last_hours_ago=1)
    the_world = MemoryWorld(world((web1,), (chain1,)))
    clock = FakeClock(NOW)
    watcher, out = make_watcher(tmp_path, the_world, clock)
    watcher.listeners.append(lambda event, _: event == "cycle.done" and watcher.request_stop())
    assert watcher.run() == 0
    assert clock.sleeps == [] and "watch.stopped" in out.getvalue()


def test_a_cycle_that_could_not_observe_a_connection_logs_the_plan_as_incomplete(tmp_path: Path) -> None:
    down = ConnectionState("vc1", reachable=False, error=ConnectionError_.FAILED,
                           error_message="environment variable VC1_PASSWORD is not set")
    the_world = MemoryWorld(world((), connections=(down,)))
    clock = FakeClock(NOW, stop_after=1)
    watcher, out = make_watcher(tmp_path, the_world, clock)
    events: dict[str, dict[str, Any]] = {}
    watcher.listeners.append(lambda event, fields: events.setdefault(event, fields))
    assert watcher.run() == 0
    assert events["plan.ready"]["complete"] is False
    assert events["plan.incomplete"]["detail"] == "the plan is incomplete: connection 'vc1' not observed"
    assert events["plan.incomplete"]["connections"] == [
        {"name": "vc1", "reason": "environment variable VC1_PASSWORD is not set"}]
    assert "WARNING plan.incomplete" in out.getvalue()
