"""Due-ness: the rule in force at `now` decides the interval; windows, midnight and DST behave."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from reconciler.core.schedule import is_due, next_due, rule_in_force
from reconciler.policy.model import Schedule, ScheduleRule, TimeWindow, Weekday

UTC = dt.UTC
WEEKDAYS = frozenset({Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI})
EVERY_DAY = frozenset(Weekday)
H = dt.timedelta(hours=1)

OFFICE = Schedule("office", "UTC", rules=(
    ScheduleRule(WEEKDAYS, H, TimeWindow(dt.time(8), dt.time(18))),
    ScheduleRule(EVERY_DAY, 4 * H),
))


def at(day: int, hour: int, minute: int = 0, tz: dt.tzinfo = UTC) -> dt.datetime:
    """March 2026: the 9th is a Monday."""
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=tz)


def test_never_backed_up_is_due_as_soon_as_a_rule_is_in_force() -> None:
    assert is_due(OFFICE, None, at(10, 3))


def test_interval_not_elapsed_is_not_due() -> None:
    assert not is_due(OFFICE, at(10, 9, 30), at(10, 10, 0))
    assert is_due(OFFICE, at(10, 9, 0), at(10, 10, 0))


def test_rule_in_force_at_now_decides_the_interval() -> None:
    assert rule_in_force(OFFICE, at(10, 12)) is OFFICE.rules[0]
    assert rule_in_force(OFFICE, at(10, 19)) is OFFICE.rules[1]
    assert rule_in_force(OFFICE, at(14, 12)) is OFFICE.rules[1]  # Saturday


def test_next_due_moves_to_the_evening_rule_at_the_window_end() -> None:
    # hourly would be due at 18:00 sharp, but 18:00 belongs to the 4-hourly rule: 17:00 + 4 h
    assert next_due(OFFICE, at(10, 17), at(10, 17, 30)) == at(10, 21)


def test_next_due_at_the_window_start_when_the_stricter_rule_begins() -> None:
    assert not is_due(OFFICE, at(10, 6), at(10, 7, 59))
    assert next_due(OFFICE, at(10, 6), at(10, 7)) == at(10, 8)


def test_next_due_is_now_when_already_due() -> None:
    assert next_due(OFFICE, at(10, 9), at(10, 10, 30)) == at(10, 10, 30)


def test_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    friday_night = Schedule("fri", "UTC", rules=(
        ScheduleRule(frozenset({Weekday.FRI}), 24 * H, TimeWindow(dt.time(22), dt.time(6))),))
    assert is_due(friday_night, None, at(14, 3))  # Saturday 03:00
    assert not is_due(friday_night, None, at(14, 7))
    assert not is_due(friday_night, None, at(12, 23))  # Thursday night
    assert next_due(friday_night, None, at(11, 12)) == at(13, 22)


def test_interval_counts_real_time_across_spring_forward() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    nightly = Schedule("n", "Europe/Berlin", rules=(
        ScheduleRule(EVERY_DAY, 24 * H, TimeWindow(dt.time(1), dt.time(4))),))
    last = dt.datetime(2026, 3, 28, 1, 0, tzinfo=berlin)  # CET, 00:00 UTC
    due = next_due(nightly, last, dt.datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert due == dt.datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 CET, 24 h later
    # the window still closes at 04:00 CEST on the short night
    assert not is_due(nightly, last, dt.datetime(2026, 3, 29, 2, 0, tzinfo=UTC))


def test_repeated_hour_at_fall_back_is_inside_the_window_twice() -> None:
    two_am = Schedule("t", "Europe/Berlin", rules=(
        ScheduleRule(EVERY_DAY, H, TimeWindow(dt.time(2), dt.time(3))),))
    last = dt.datetime(2026, 10, 25, 0, 15, tzinfo=UTC)  # 02:15 CEST
    assert next_due(two_am, last, dt.datetime(2026, 10, 25, 0, 20, tzinfo=UTC)) == \
        dt.datetime(2026, 10, 25, 1, 15, tzinfo=UTC)  # 02:15 CET, the second 02:15


def test_schedule_without_any_rule_is_never_due() -> None:
    never = Schedule("never", "UTC", rules=())
    assert not is_due(never, None, at(10, 12))
    assert next_due(never, None, at(10, 12)) is None


def test_cron_is_due_when_an_instant_passed_since_the_last_backup() -> None:
    nightly = Schedule("c", "Europe/Berlin", cron="0 2 * * *")
    last = dt.datetime(2026, 3, 10, 1, 5, tzinfo=UTC)  # 02:05 CET on the 10th
    assert not is_due(nightly, last, at(10, 23))
    assert is_due(nightly, last, at(11, 1, 0))  # 02:00 CET on the 11th
    assert next_due(nightly, last, at(10, 23)) == at(11, 1)
    assert is_due(nightly, None, at(10, 23))
