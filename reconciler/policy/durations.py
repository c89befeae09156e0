"""Parsers for the small value languages inside policies: durations, daily windows, weekdays.

Each parser raises `ValueError` with a message fit for the user; each has an inverse used by `dump`.
"""

from __future__ import annotations

import datetime as dt
import re

from reconciler.policy.model import TimeWindow, Weekday

_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_TIME = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MAX_DURATION = dt.timedelta(days=3660 * 10)  # beyond this, timedelta arithmetic in the planner overflows


def parse_duration(text: str) -> dt.timedelta:
    """`1h30m`, `4h`, `90d`, `2w`, `0s`: units w d h m s, largest first, each at most once."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or not text.strip():
        raise ValueError(f"invalid duration {text!r}: write e.g. 30m, 1h, 1h30m, 7d, 2w (units w d h m s)")
    seconds = sum(int(n) * mult for n, mult in zip(match.groups(), _UNIT_SECONDS.values(), strict=True) if n)
    if seconds > _MAX_DURATION.total_seconds():
        raise ValueError(f"duration {text!r} is too long (at most {_MAX_DURATION.days} days)")
    return dt.timedelta(seconds=seconds)


def format_duration(value: dt.timedelta) -> str:
    """The canonical spelling of a duration: `parse_duration(format_duration(d)) == d`."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, mult in _UNIT_SECONDS.items():
        count, seconds = divmod(seconds, mult)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _parse_time(text: str, *, is_end: bool) -> dt.time:
    match = _TIME.match(text)
    if not match:
        raise ValueError(f"invalid time {text!r}: write HH:MM, 24-hour clock")
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour == 24:
        if minute or not is_end:
            raise ValueError(f"invalid time {text!r}: 24:00 is only allowed as the end of a window")
        return dt.time(0, 0)  # end at midnight: end <= start reads as "until midnight"
    return dt.time(hour, minute)


def parse_window(text: str) -> TimeWindow:
    """`08:00-18:00`; `22:00-06:00` crosses midnight; `18:00-24:00` runs until midnight."""
    if not isinstance(text, str) or text.count("-") != 1:
        raise ValueError(f"invalid window {text!r}: write START-END, e.g. 08:00-18:00")
    start_text, end_text = (part.strip() for part in text.split("-"))
    start = _parse_time(start_text, is_end=False)
    end = _parse_time(end_text, is_end=True)
    if start == end:
        raise ValueError(f"empty window {text!r}: leave out `window` for the whole day")
    return TimeWindow(start=start, end=end)


def format_window(window: TimeWindow) -> str:
    end = window.end.strftime("%H:%M")
    if window.end == dt.time(0, 0):
        end = "24:00"
    return f"{window.start.strftime('%H:%M')}-{end}"


def parse_days(items: list[str]) -> frozenset[Weekday]:
    """`[mon-fri]`, `[sat, sun]`, `[mon, wed-fri]`; ranges may wrap (`fri-mon`)."""
    days: set[Weekday] = set()
    for item in items:
        first, _, last = item.lower().partition("-")
        if first not in _DAY_NAMES or (last and last not in _DAY_NAMES):
            raise ValueError(f"invalid day {item!r}: write mon..sun or a range like mon-fri")
        start = _DAY_NAMES.index(first)
        stop = _DAY_NAMES.index(last) if last else start
        days.update(Weekday((start + i) % 7) for i in range((stop - start) % 7 + 1))
    return frozenset(days)


def format_days(days: frozenset[Weekday]) -> list[str]:
    return [_DAY_NAMES[day] for day in sorted(days)]
