"""The small value languages: durations, windows, days."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.policy import format_duration, parse_duration, parse_window
from reconciler.policy.durations import format_days, format_window, parse_days
from reconciler.policy.model import TimeWindow, Weekday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h30m", dt.timedelta(hours=1, minutes=30)),
        ("4h", dt.timedelta(hours=4)),
        ("2w", dt.timedelta(weeks=2)),
        ("1d12h", dt.timedelta(days=1, hours=12)),
        ("90s", dt.timedelta(seconds=90)),
        ("0s", dt.timedelta(0)),
    ],
)
def test_parse_duration_reads_units_largest_first(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1", "h", "30m1h", "1.5h", "-1h", "1hour", "1h 30m", "99999999w"])
def test_parse_duration_refuses_anything_else_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=3000 * 86400))
def test_format_duration_is_the_inverse_of_parse_duration(seconds: int) -> None:
    value = dt.timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


def test_parse_window_reads_a_daily_window() -> None:
    assert parse_window("08:00-18:00") == TimeWindow(dt.time(8), dt.time(18))


def test_a_window_ending_at_24_00_ends_at_midnight() -> None:
    assert parse_window("18:00-24:00") == TimeWindow(dt.time(18), dt.time(0))
    assert format_window(parse_window("18:00-24:00")) == "18:00-24:00"


def test_a_window_may_cross_midnight() -> None:
    window = parse_window("22:00-06:00")
    assert window.end < window.start


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("08:00", "write START-END"),
        ("8:00-18:00", "invalid time '8:00'"),
        ("24:00-06:00", "only allowed as the end"),
        ("08:60-09:00", "invalid time '08:60'"),
        ("09:00-09:00", "empty window"),
    ],
)
def test_parse_window_refuses_bad_windows(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window(text)


def test_parse_days_reads_days_and_ranges_that_may_wrap() -> None:
    assert parse_days(["mon-fri"]) == frozenset(Weekday(d) for d in range(5))
    assert parse_days(["fri-mon"]) == frozenset({Weekday.FRI, Weekday.SAT, Weekday.SUN, Weekday.MON})
    assert format_days(parse_days(["sat", "mon"])) == ["mon", "sat"]
