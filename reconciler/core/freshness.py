"""Is a VM's newest complete backup fresh enough? Pure: (schedule, last complete backup, now) → a verdict,
Nagios-style (OK 0, WARNING 1, CRITICAL 2), for `reconciler status --check` and for monitoring.

Lateness is measured from the instant the next backup became *due*, not from the last backup, so a
schedule that sleeps at night or at weekends does not turn red every morning: the backup's effective age
is `interval + (now - due)`, where `interval` is the one that made it due (the rule in force then, or the
spacing of the cron instants). For a schedule due continuously that is simply the backup's age. WARNING
when the effective age reaches `warning` × interval, CRITICAL at `critical` × interval.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from croniter import croniter

from reconciler.core import schedule as schedules
from reconciler.policy.model import Schedule


class Freshness(IntEnum):
    """Values are the Nagios plugin exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class Thresholds:
    warning: float = 1.5  # × the interval in force
    critical: float = 3.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.warning <= self.critical:
            raise ValueError(f"thresholds need 1 ≤ warning ≤ critical, got warning={self.warning} "
                             f"critical={self.critical}")


@dataclass(frozen=True)
class Verdict:
    state: Freshness
    message: str
    due: dt.datetime | None = None  # when the next backup became (or becomes) due
    interval: dt.timedelta | None = None

    @property
    def exit_code(self) -> int:
        return int(self.state)


def freshness(schedule: Schedule, last_complete: dt.datetime | None, now: dt.datetime,
              thresholds: Thresholds = Thresholds(), *, paused: bool = False) -> Verdict:
    if paused:
        return Verdict(Freshness.OK, "policy paused")
    if last_complete is None:
        # a VM just paired is waiting for its first full backup; that is worth a look, not a page
        return Verdict(Freshness.WARNING, "no complete backup yet")
    if last_complete > now:
        return Verdict(Freshness.UNKNOWN, f"the last backup ({_iso(last_complete)}) is in the future: "
                                          "is the clock right?")
    due = schedules.next_due(schedule, last_complete, last_complete)
    if due is None:
        return Verdict(Freshness.OK, f"last backup {_iso(last_complete)}; no backup due (no rule ever in force)")
    interval = _interval_at(schedule, due)
    if due > now or interval is None:
        return Verdict(Freshness.OK, f"last backup {_iso(last_complete)}, next due {_iso(due)}", due, interval)
    effective = interval + (now - due)
    ratio = effective / interval
    state = (Freshness.CRITICAL if ratio >= thresholds.critical
             else Freshness.WARNING if ratio >= thresholds.warning else Freshness.OK)
    message = (f"last backup {_iso(last_complete)}, due since {_iso(due)} ({format_span(now - due)} late, "
               f"{ratio:.1f}× the {format_span(interval)} interval)")
    return Verdict(state, message, due, interval)


def _interval_at(schedule: Schedule, due: dt.datetime) -> dt.timedelta | None:
    if schedule.cron:
        tz = schedules.zone(schedule.timezone)
        following = croniter(schedule.cron, due.astimezone(tz)).get_next(dt.datetime).astimezone(dt.UTC)
        return following - due
    rule = schedules.rule_in_force(schedule, due)
    return rule.every if rule is not None else None


def worst(verdicts: Iterable[Freshness]) -> Freshness:
    """The state a check reports for many VMs: the worst one (UNKNOWN only when nothing is worse)."""
    states = list(verdicts)
    known = [s for s in states if s is not Freshness.UNKNOWN]
    if known and max(known) is not Freshness.OK:
        return max(known)
    return Freshness.UNKNOWN if Freshness.UNKNOWN in states else Freshness.OK


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def format_span(delta: dt.timedelta) -> str:
    """`45 s`, `12 min`, `3.5 h`, `2.0 d`: a human age or interval."""
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
