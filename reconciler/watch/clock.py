"""The backup clock: when to wake next, and the one place that reads and waits on real time.

`Clock` is the edge: the loop asks it for `now()` and to `sleep_until(t, wake)`; tests and `--at` inject
their own. The wake computation is pure. Wall-clock jumps (NTP steps, a suspended VM, an operator fixing
the date) are survived by napping at most `max_nap` at a time and re-reading the wall clock, and by
`resync`: the loop re-plans at least that often whatever the schedules say.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from reconciler.core import schedule as schedules
from reconciler.core.observed import Observed
from reconciler.policy.model import PolicySet


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """An aware UTC datetime."""
        ...

    def sleep_until(self, until: dt.datetime, wake: threading.Event) -> bool:
        """Return at `until` (False) or as soon as `wake` is set (True); never clears `wake`."""
        ...


@dataclass
class SystemClock:
    """The real clock, optionally shifted (`watch --at`: the service lives as if started at that time)."""

    offset: dt.timedelta = dt.timedelta(0)
    max_nap: float = 30.0  # seconds: the longest a wall-clock jump can go unnoticed

    @classmethod
    def starting_at(cls, start: dt.datetime) -> SystemClock:
        return cls(offset=start - dt.datetime.now(dt.UTC))

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def sleep_until(self, until: dt.datetime, wake: threading.Event) -> bool:
        while True:
            remaining = (until - self.now()).total_seconds()
            if remaining <= 0:
                return wake.is_set()
            if wake.wait(min(remaining, self.max_nap)):
                return True


@dataclass(frozen=True)
class WallJump:
    """The wall clock moved by `delta` more (or less) than the time that really elapsed."""

    delta: dt.timedelta


def wall_jump(wall_before: dt.datetime, wall_after: dt.datetime, mono_before: float, mono_after: float,
              tolerance: dt.timedelta = dt.timedelta(seconds=5)) -> WallJump | None:
    delta = (wall_after - wall_before) - dt.timedelta(seconds=mono_after - mono_before)
    return WallJump(delta) if abs(delta) > tolerance else None


@dataclass(frozen=True)
class Due:
    vm: str
    policy: str
    at: dt.datetime


def due_times(policies: PolicySet, observed: Observed, now: dt.datetime) -> list[Due]:
    """When each backed-up VM's next backup is due, from its chain's newest complete backup.

    VMs without a chain yet are planned (and backed up) by the cycle that sees them first."""
    dues: list[Due] = []
    for repository in observed.repositories:
        for chain in repository.chains:
            policy = policies.policies.get(chain.policy)
            if chain.retired or policy is None or policy.paused:
                continue
            schedule = policies.schedules.get(policy.schedule)
            if schedule is None:
                continue
            complete = [b.created for b in chain.backups if b.complete and b.ours]
            at = schedules.next_due(schedule, max(complete, default=None), now)
            if at is not None:
                dues.append(Due(chain.vm_name or chain.instance_uuid, policy.name, at))
    return sorted(dues, key=lambda d: d.at)


def next_wake(dues: Iterable[dt.datetime], now: dt.datetime, *, resync: dt.timedelta,
              retry: dt.timedelta) -> dt.datetime:
    """The earliest due time, but no sooner than `retry` from now when something is due already (it just
    ran and failed, or could not run: do not spin) and no later than `resync` from now."""
    earliest = min(dues, default=None)
    latest = now + resync
    if earliest is None or earliest >= latest:
        return latest
    return max(earliest, now + retry) if earliest <= now else earliest


def monotonic() -> float:
    return time.monotonic()
