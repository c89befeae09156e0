"""The backup clock: when to wake, from the schedules and the pool's newest backups; clock jumps."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import replace

from reconciler.watch.clock import SystemClock, due_times, next_wake, wall_jump
from tests.unit.core.world import NOW, backup, chain, desired, hours_ago, protected, vm, world

H = dt.timedelta(hours=1)
MIN = dt.timedelta(minutes=1)


def wake(dues: list[dt.datetime], now: dt.datetime = NOW) -> dt.datetime:
    return next_wake(dues, now, resync=15 * MIN, retry=5 * MIN)


def test_wakes_at_the_earliest_due_time_within_the_resync_period() -> None:
    assert wake([NOW + 10 * MIN, NOW + 3 * MIN]) == NOW + 3 * MIN


def test_nothing_due_soon_wakes_at_resync_to_re_plan() -> None:
    assert wake([NOW + 4 * H]) == NOW + 15 * MIN
    assert wake([]) == NOW + 15 * MIN


def test_something_already_due_waits_the_retry_delay_instead_of_spinning() -> None:
    assert wake([NOW - H]) == NOW + 5 * MIN
    assert wake([NOW]) == NOW + 5 * MIN


def test_due_soon_but_before_the_retry_delay_is_not_postponed() -> None:
    assert wake([NOW + 2 * MIN]) == NOW + 2 * MIN


def test_due_times_come_from_the_newest_complete_backup_and_the_schedule() -> None:
    web1, chain1 = protected(1, last_hours_ago=20)
    web2, chain2 = protected(2, last_hours_ago=2)
    dues = due_times(desired(), world((web1, web2), (chain1, chain2)), NOW)
    assert [(d.vm, d.at) for d in dues] == [("web-01", NOW + 4 * H), ("web-02", NOW + 22 * H)]


def test_incomplete_and_foreign_snapshots_do_not_count_as_the_last_backup() -> None:
    web1 = vm(1)
    backups = (backup(hours_ago(20), web1), backup(hours_ago(1), web1, complete=False),
               backup(hours_ago(2), web1, ours=False))
    dues = due_times(desired(), world((web1,), (chain(web1, backups),)), NOW)
    assert dues[0].at == hours_ago(20) + 24 * H


def test_paused_policies_and_retired_chains_never_wake_the_clock() -> None:
    web1, chain1 = protected(1, last_hours_ago=30)
    assert due_times(desired(paused=True), world((web1,), (chain1,)), NOW) == []
    assert due_times(desired(), world((web1,), (replace(chain1, retired=True),)), NOW) == []


def test_a_chain_of_a_policy_no_longer_declared_is_ignored() -> None:
    web1, chain1 = protected(1, last_hours_ago=30)
    assert due_times(desired(), world((web1,), (replace(chain1, policy="gone"),)), NOW) == []


def test_wall_clock_jump_is_told_apart_from_elapsed_time() -> None:
    start = NOW
    assert wall_jump(start, start + 30 * MIN, 100.0, 100.0 + 1800) is None
    forward = wall_jump(start, start + 2 * H, 100.0, 160.0)
    assert forward is not None and forward.delta == 2 * H - MIN
    backward = wall_jump(start, start - H, 100.0, 101.0)
    assert backward is not None and backward.delta < dt.timedelta(0)


def test_system_clock_returns_at_once_when_woken_and_when_the_time_has_passed() -> None:
    clock = SystemClock()
    woken = threading.Event()
    woken.set()
    assert clock.sleep_until(clock.now() + H, woken) is True
    assert clock.sleep_until(clock.now() - H, threading.Event()) is False


def test_shifted_clock_starts_at_the_requested_time() -> None:
    clock = SystemClock.starting_at(NOW)
    assert abs(clock.now() - NOW) < MIN


def test_nightly_cron_wakes_at_local_time_across_the_spring_dst_change() -> None:
    from reconciler.policy.model import Schedule

    policies = desired()
    policies.schedules["daily"] = Schedule("daily", "Europe/Berlin", cron="0 22 * * *")
    web1 = vm(1)
    last = dt.datetime(2026, 3, 28, 21, 0, tzinfo=dt.UTC)  # Saturday 22:00 CET
    now = dt.datetime(2026, 3, 29, 12, 0, tzinfo=dt.UTC)  # Sunday, CEST since 01:00Z
    dues = due_times(policies, world((web1,), (chain(web1, (backup(last, web1),)),)), now)
    assert dues[0].at == dt.datetime(2026, 3, 29, 20, 0, tzinfo=dt.UTC)  # 22:00 CEST
