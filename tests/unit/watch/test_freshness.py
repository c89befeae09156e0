"""`status --check`: a backup's freshness against its schedule, Nagios-style."""

from __future__ import annotations

import datetime as dt

import pytest

from reconciler.core.freshness import Freshness, Thresholds, freshness, worst
from reconciler.policy.model import Schedule, ScheduleRule, TimeWindow, Weekday

UTC = dt.UTC
H = dt.timedelta(hours=1)
EVERY_DAY = frozenset(Weekday)
WEEKDAYS = frozenset({Weekday.MON, Weekday.TUE, Weekday.WED, Weekday.THU, Weekday.FRI})
HOURLY = Schedule("hourly", "UTC", rules=(ScheduleRule(EVERY_DAY, H),))
OFFICE_ONLY = Schedule("office", "UTC", rules=(ScheduleRule(WEEKDAYS, H, TimeWindow(dt.time(8), dt.time(18))),))
NIGHTLY = Schedule("nightly", "Europe/Berlin", cron="0 22 * * *")


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """March 2026: the 9th is a Monday."""
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(("age_minutes", "expected"), [
    (30, Freshness.OK),  # not due yet
    (80, Freshness.OK),  # due, a little late
    (90, Freshness.WARNING),  # 1.5 × 1 h
    (179, Freshness.WARNING),
    (180, Freshness.CRITICAL),  # 3 × 1 h
])
def test_hourly_backup_turns_warning_at_one_and_a_half_intervals_and_critical_at_three(
        age_minutes: int, expected: Freshness) -> None:
    now = at(10, 12)
    assert freshness(HOURLY, now - dt.timedelta(minutes=age_minutes), now).state is expected


def test_schedule_asleep_at_night_is_not_late_in_the_morning() -> None:
    last = at(10, 17, 30)  # Tuesday; the window closes at 18:00, next due Wednesday 08:00
    assert freshness(OFFICE_ONLY, last, at(11, 7, 59)).state is Freshness.OK
    assert freshness(OFFICE_ONLY, last, at(11, 8, 20)).state is Freshness.OK
    assert freshness(OFFICE_ONLY, last, at(11, 8, 30)).state is Freshness.WARNING
    assert freshness(OFFICE_ONLY, last, at(11, 10, 0)).state is Freshness.CRITICAL


def test_weekend_gap_is_not_late_on_monday_morning() -> None:
    friday_evening = at(13, 17, 45)
    assert freshness(OFFICE_ONLY, friday_evening, at(16, 8, 10)).state is Freshness.OK


def test_cron_interval_is_the_spacing_of_its_instants() -> None:
    last = dt.datetime(2026, 3, 10, 21, 5, tzinfo=UTC)  # 22:05 Berlin
    verdict = freshness(NIGHTLY, last, dt.datetime(2026, 3, 11, 21, 30, tzinfo=UTC))
    assert verdict.state is Freshness.OK and verdict.interval == 24 * H
    assert freshness(NIGHTLY, last, dt.datetime(2026, 3, 12, 9, 30, tzinfo=UTC)).state is Freshness.WARNING
    assert freshness(NIGHTLY, last, dt.datetime(2026, 3, 13, 22, 0, tzinfo=UTC)).state is Freshness.CRITICAL


def test_thresholds_are_configurable() -> None:
    now = at(10, 12)
    strict = Thresholds(warning=1.1, critical=1.2)
    assert freshness(HOURLY, now - dt.timedelta(minutes=70), now, strict).state is Freshness.WARNING
    assert freshness(HOURLY, now - dt.timedelta(minutes=75), now, strict).state is Freshness.CRITICAL


def test_thresholds_out_of_order_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="warning"):
        Thresholds(warning=3, critical=2)


def test_never_backed_up_is_a_warning_and_paused_is_ok() -> None:
    assert freshness(HOURLY, None, at(10, 12)).state is Freshness.WARNING
    assert freshness(HOURLY, None, at(10, 12), paused=True).state is Freshness.OK


def test_backup_from_the_future_is_unknown_and_says_check_the_clock() -> None:
    verdict = freshness(HOURLY, at(10, 13), at(10, 12))
    assert verdict.state is Freshness.UNKNOWN and "clock" in verdict.message


def test_message_names_the_lateness_and_exit_code_is_nagios() -> None:
    verdict = freshness(HOURLY, at(10, 8), at(10, 12))
    assert verdict.exit_code == 2
    assert "due since 2026-03-10T09:00:00Z" in verdict.message and "4.0×" in verdict.message


def test_worst_state_wins_and_unknown_only_when_nothing_is_worse() -> None:
    assert worst([Freshness.OK, Freshness.WARNING, Freshness.UNKNOWN]) is Freshness.WARNING
    assert worst([Freshness.OK, Freshness.UNKNOWN]) is Freshness.UNKNOWN
    assert worst([Freshness.CRITICAL, Freshness.WARNING]) is Freshness.CRITICAL
    assert worst([]) is Freshness.OK
