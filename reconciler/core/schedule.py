"""When is a VM's next backup due? Pure functions of (schedule, last complete backup, now).

Rule schedules: the first rule whose days and window contain the local wall-clock time is *in force*;
a backup is due when a rule is in force and its `every` has elapsed since the last complete backup
(elapsed real time, so DST shifts do not shorten or stretch intervals). A window that crosses midnight
belongs to the day it starts on ("Fri 22:00-06:00" runs into Saturday morning).
Cron schedules: due when a cron instant passed since the last complete backup.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import croniter

from reconciler.policy.model import Schedule, ScheduleRule

_HORIZON_DAYS = 9  # a weekly pattern repeats within 7 days; 2 days spare for windows and DST


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def rule_in_force(schedule: Schedule, at: dt.datetime) -> ScheduleRule | None:
    local = at.astimezone(zone(schedule.timezone))
    for rule in schedule.rules:
        if _rule_covers(rule, local):
            return rule
    return None


def _rule_covers(rule: ScheduleRule, local: dt.datetime) -> bool:
    weekday = local.weekday()
    if rule.window is None:
        return weekday in rule.days
    start, end, now = rule.window.start, rule.window.end, local.time().replace(tzinfo=None)
    if start < end:
        return weekday in rule.days and start <= now < end
    # crosses midnight: the evening part is today's window, the morning part yesterday's
    if now >= start:
        return weekday in rule.days
    return now < end and (weekday - 1) % 7 in rule.days


def is_due(schedule: Schedule, last_complete: dt.datetime | None, now: dt.datetime) -> bool:
    if schedule.cron:
        return _cron_is_due(schedule, last_complete, now)
    rule = rule_in_force(schedule, now)
    return rule is not None and (last_complete is None or now - last_complete >= rule.every)


def next_due(schedule: Schedule, last_complete: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    """The first instant >= now at which a backup is due; None if no rule is ever in force."""
    if schedule.cron:
        return _cron_next_due(schedule, last_complete, now)
    edges = _edges(schedule, now)
    for start, end in zip([now, *edges], edges, strict=False):
        rule = rule_in_force(schedule, start)
        if rule is None:
            continue
        due = start if last_complete is None else max(start, last_complete + rule.every)
        if due < end:
            return due
    return None


def _edges(schedule: Schedule, now: dt.datetime) -> list[dt.datetime]:
    """Instants after `now` at which the rule in force may change: window edges and midnights."""
    tz = zone(schedule.timezone)
    today = now.astimezone(tz).date()
    wall_times = {dt.time(0)}
    for rule in schedule.rules:
        if rule.window is not None:
            wall_times |= {rule.window.start, rule.window.end}
    edges: set[dt.datetime] = set()
    for offset in range(-1, _HORIZON_DAYS):
        day = today + dt.timedelta(days=offset)
        for wall in wall_times:
            for fold in (0, 1):  # a repeated hour at the end of DST has two instants per wall time
                instant = dt.datetime.combine(day, wall, tzinfo=tz).replace(fold=fold).astimezone(dt.UTC)
                if instant > now:
                    edges.add(instant)
    return sorted(edges)


def _cron_prev(schedule: Schedule, now: dt.datetime) -> dt.datetime:
    """The latest cron instant <= now."""
    tz = zone(schedule.timezone)
    it = croniter(schedule.cron, now.astimezone(tz) + dt.timedelta(seconds=1))
    return it.get_prev(dt.datetime).astimezone(dt.UTC)


def _cron_is_due(schedule: Schedule, last_complete: dt.datetime | None, now: dt.datetime) -> bool:
    return last_complete is None or last_complete < _cron_prev(schedule, now)


def _cron_next_due(schedule: Schedule, last_complete: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    if _cron_is_due(schedule, last_complete, now):
        return now
    tz = zone(schedule.timezone)
    return croniter(schedule.cron, now.astimezone(tz)).get_next(dt.datetime).astimezone(dt.UTC)


def problem(schedule: Schedule) -> str | None:
    """Why this schedule cannot be evaluated, or None (the loader checks too; the planner never trusts)."""
    try:
        zone(schedule.timezone)
    except (KeyError, ValueError):
        return f"unknown time zone {schedule.timezone!r}"
    if schedule.cron is not None and not croniter.is_valid(schedule.cron):
        return f"invalid cron expression {schedule.cron!r}"
    return None
