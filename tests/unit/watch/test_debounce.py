"""A burst of file events becomes one reload: quiet period after the last event, capped after the first."""

from __future__ import annotations

import pytest

from reconciler.watch.debounce import Debouncer


def test_nothing_noted_never_fires() -> None:
    d = Debouncer(quiet=0.25, max_delay=2.0)
    assert d.fire_at() is None and not d.ready(1e9) and d.remaining(0) is None


def test_fires_a_quiet_period_after_the_last_event() -> None:
    d = Debouncer(quiet=0.25, max_delay=2.0)
    d.note(10.0)
    d.note(10.1)
    assert d.fire_at() == pytest.approx(10.35)
    assert not d.ready(10.3) and d.ready(10.35)
    assert d.remaining(10.3) == pytest.approx(0.05)


def test_thousand_events_in_a_burst_give_one_reload() -> None:
    d = Debouncer(quiet=0.25, max_delay=2.0)
    reloads = 0
    for i in range(1000):
        now = 100.0 + i * 0.001
        d.note(now)
        if d.ready(now):
            d.take()
            reloads += 1
    assert reloads == 0 and d.pending == 1000
    assert d.ready(101.3) and d.take() == 1000
    assert d.pending == 0 and d.fire_at() is None


def test_endless_changes_still_reload_after_max_delay() -> None:
    d = Debouncer(quiet=0.25, max_delay=2.0)
    for i in range(100):
        d.note(50.0 + i * 0.1)  # never quiet for 0.25 s
    assert d.fire_at() == pytest.approx(52.0)


def test_events_noted_out_of_order_keep_the_latest() -> None:
    d = Debouncer(quiet=1.0, max_delay=5.0)
    d.note(3.0)
    d.note(2.0)
    assert d.fire_at() == pytest.approx(4.0)


def test_inconsistent_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="quiet"):
        Debouncer(quiet=3.0, max_delay=1.0)
