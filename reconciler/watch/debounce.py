"""Coalesce a burst of file events (a `git pull`, a branch switch, an editor's save dance) into one reload.

Pure: times are plain monotonic seconds passed in, so tests never sleep. A reload fires `quiet` seconds
after the last event, but never later than `max_delay` after the first, so a directory that never stops
changing is still re-read.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Debouncer:
    quiet: float = 0.25
    max_delay: float = 2.0
    _first: float | None = None
    _last: float | None = None
    _count: int = 0

    def __post_init__(self) -> None:
        if self.quiet < 0 or self.max_delay < self.quiet:
            raise ValueError(f"debounce needs 0 ≤ quiet ≤ max_delay, got {self.quiet} and {self.max_delay}")

    def note(self, at: float) -> None:
        if self._first is None:
            self._first = at
        self._last = at if self._last is None else max(self._last, at)
        self._count += 1

    @property
    def pending(self) -> int:
        """Events noted since the last `take`."""
        return self._count

    def fire_at(self) -> float | None:
        if self._first is None or self._last is None:
            return None
        return min(self._last + self.quiet, self._first + self.max_delay)

    def ready(self, now: float) -> bool:
        due = self.fire_at()
        return due is not None and now >= due

    def remaining(self, now: float) -> float | None:
        due = self.fire_at()
        return None if due is None else max(0.0, due - now)

    def take(self) -> int:
        """Start over; returns how many events this reload covers."""
        count, self._first, self._last, self._count = self._count, None, None, 0
        return count
