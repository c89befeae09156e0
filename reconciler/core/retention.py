"""Which backups of one chain to prune: zrepl-style composable keep rules, all pure.

Each rule names the snapshots it keeps; a snapshot is pruned only if *no* rule keeps it. The prune
safety guarantees of DESIGN.md §4 are rules like the GFS ones, so no code path can forget them.
Snapshots are indexed by position in `Chain.backups` (oldest first). Time is an argument.
Rules work on the chain's precomputed `ChainIndex` and bisect instead of scanning: planning
10,000 VMs × 500 snapshots must stay within seconds.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

from reconciler.core.observed import Backup, ChainIndex
from reconciler.policy.model import Retention

_QUARTER_HOUR = 900  # every real-world UTC-offset change happens on a quarter hour
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_FIRST_MONDAY = 4  # 1970-01-05, in days since the epoch


class LocalCalendar:
    """Fast local-day arithmetic for one time zone (UTC offsets cached per quarter hour)."""

    def __init__(self, tz: ZoneInfo) -> None:
        self._tz = tz
        self._offsets: dict[int, int] = {}
        self._starts: dict[tuple[str, int], int] = {}
        self._midnights: dict[int, float] = {}
        self.cached_offset = self._offsets.get  # the hot path of the bucket rules

    def offset(self, ts: float) -> int:
        quarter = int(ts // _QUARTER_HOUR)
        offset = self._offsets.get(quarter)
        if offset is None:
            local = dt.datetime.fromtimestamp(quarter * _QUARTER_HOUR, self._tz)
            offset = self._offsets[quarter] = int(local.utcoffset().total_seconds())  # type: ignore[union-attr]
        return offset

    def day(self, ts: float) -> int:
        """Days since 1970-01-01, local time."""
        return int((ts + self.offset(ts)) // 86400)

    def midnight(self, day: int) -> float:
        """The first UTC instant whose local day is `day` (local days never go backwards at real DST
        changes, so this is where a bucket starts)."""
        instant = self._midnights.get(day)
        if instant is None:
            wall = day * 86400
            instant = wall - self.offset(wall - self.offset(wall))
            instant -= instant % _QUARTER_HOUR
            while self.day(instant - _QUARTER_HOUR) >= day:
                instant -= _QUARTER_HOUR
            while self.day(instant) < day:
                instant += _QUARTER_HOUR
            # within the quarter hour (offsets like +05:45 keep midnight off the quarter grid)
            while self.day(instant - 60) >= day:
                instant -= 60
            self._midnights[day] = instant
        return instant

    def bucket_start(self, period: str, day: int) -> int:
        """The first local day of the day/week/month/year holding `day`."""
        if period == "daily":
            return day
        if period == "weekly":
            return day - (day - _FIRST_MONDAY) % 7
        key = (period, day)
        start = self._starts.get(key)
        if start is None:
            date = dt.date.fromordinal(day + _EPOCH_ORDINAL)
            first = date.replace(day=1) if period == "monthly" else date.replace(month=1, day=1)
            start = self._starts[key] = first.toordinal() - _EPOCH_ORDINAL
        return start


@lru_cache(maxsize=64)
def calendar(tz_name: str) -> LocalCalendar:
    return LocalCalendar(ZoneInfo(tz_name))


@dataclass(frozen=True)
class ChainView:
    """One chain prepared for the rules."""

    backups: Sequence[Backup]
    index: ChainIndex
    now_ts: float
    calendar: LocalCalendar
    live_disk_keys: frozenset[int] | None  # the VM's disks now; None: the VM was not observed
    repairing: bool


class KeepRule(Protocol):
    name: str

    def keep(self, view: ChainView) -> Iterable[int]: ...


@dataclass(frozen=True)
class KeepAllFor:
    span: dt.timedelta
    name: str = "keepAllFor"

    def keep(self, view: ChainView) -> Iterable[int]:
        start = bisect_left(view.index.complete_ts, view.now_ts - self.span.total_seconds())
        return view.index.complete[start:]


@dataclass(frozen=True)
class KeepLast:
    count: int
    name: str = "keepLast"

    def keep(self, view: ChainView) -> Iterable[int]:
        return view.index.complete[-self.count:] if self.count > 0 else ()


@dataclass(frozen=True)
class KeepBuckets:
    """GFS: the newest backup of each of the `count` newest days/weeks/months/years that have one."""

    period: str  # daily | weekly | monthly | yearly
    count: int

    @property
    def name(self) -> str:
        return self.period

    def keep(self, view: ChainView) -> Iterable[int]:
        cal, complete, ts = view.calendar, view.index.complete, view.index.complete_ts
        cached_offset, offset, midnight = cal.cached_offset, cal.offset, cal.midnight
        period, daily = self.period, self.period == "daily"
        kept: list[int] = []
        pos = len(ts) - 1
        while pos >= 0 and len(kept) < self.count:
            kept.append(complete[pos])
            here = ts[pos]
            here_offset = cached_offset(int(here // _QUARTER_HOUR))
            if here_offset is None:
                here_offset = offset(here)
            day = int((here + here_offset) // 86400)
            start = day if daily else cal.bucket_start(period, day)
            # jump to the newest backup before this bucket: log n, not a scan
            pos = bisect_left(ts, midnight(start), 0, pos) - 1
        return kept


@dataclass(frozen=True)
class KeepNewestComplete:
    name: str = "newest"

    def keep(self, view: ChainView) -> Iterable[int]:
        return view.index.complete[-1:]


@dataclass(frozen=True)
class KeepIncrementalBase:
    """Each disk's next incremental continues from the change ID of the newest complete backup that
    holds that disk: those snapshots are the bases (usually just the newest one)."""

    name: str = "incremental-base"

    def keep(self, view: ChainView) -> Iterable[int]:
        complete, backups = view.index.complete, view.backups
        if not complete:
            return ()
        wanted = set(view.live_disk_keys if view.live_disk_keys is not None
                     else (d.key for d in backups[complete[-1]].disks))
        bases: list[int] = []
        for i in reversed(complete):
            if not wanted:
                break
            found = wanted.intersection(d.key for d in backups[i].disks)
            if found:
                bases.append(i)
                wanted -= found
        return bases


@dataclass(frozen=True)
class KeepProtected:
    """Held snapshots, snapshots we did not create, and incomplete ones a repair is about to handle."""

    name: str = "protected"

    def keep(self, view: ChainView) -> Iterable[int]:
        if view.repairing:
            return (*view.index.protected, *view.index.incomplete)
        return view.index.protected


def explain_protected(backup: Backup, repairing: bool) -> tuple[str, ...]:
    reasons = []
    if backup.held:
        reasons.append("held")
    if not backup.ours:
        reasons.append("not-ours")
    if repairing and not backup.complete:
        reasons.append("being-repaired")
    return tuple(reasons)


SAFETY_RULES: tuple[KeepRule, ...] = (KeepNewestComplete(), KeepIncrementalBase(), KeepProtected())


def policy_rules(retention: Retention) -> tuple[KeepRule, ...]:
    rules: list[KeepRule] = []
    if retention.keep_all_for > dt.timedelta(0):
        rules.append(KeepAllFor(retention.keep_all_for))
    for period in ("daily", "weekly", "monthly", "yearly"):
        count = getattr(retention, period)
        if count > 0:
            rules.append(KeepBuckets(period, count))
    if retention.keep_last > 0:
        rules.append(KeepLast(retention.keep_last))
    return tuple(rules)


@dataclass(frozen=True)
class Kept:
    name: str
    rules: tuple[str, ...]


@dataclass(frozen=True)
class RetentionDecision:
    prune: tuple[str, ...]  # snapshot names, oldest first
    kept: tuple[Kept, ...]  # filled only when an explanation was asked for
    complete_total: int
    complete_pruned: int
    refused: bool  # more than half of the complete backups would go and mass prune was not allowed


def decide(
    backups: Sequence[Backup],
    rules: Sequence[KeepRule],
    now: dt.datetime,
    tz_name: str,
    *,
    index: ChainIndex | None = None,
    live_disk_keys: frozenset[int] | None = None,
    repairing: bool = False,
    allow_mass_prune: bool = False,
    explain: bool = False,
) -> RetentionDecision:
    """`backups` sorted oldest first; pass the chain's `index` when there is one (else it is built)."""
    index = index or ChainIndex.of(tuple(backups))
    view = ChainView(backups, index, now.timestamp(), calendar(tz_name), live_disk_keys, repairing)
    all_rules = (*rules, *SAFETY_RULES)
    keepers: dict[int, list[str]] = {}
    kept_ix: set[int] = set()
    for rule in all_rules:
        chosen = rule.keep(view)
        if explain:
            for i in chosen:
                names = (explain_protected(backups[i], repairing) if isinstance(rule, KeepProtected)
                         else (rule.name,))
                keepers.setdefault(i, []).extend(names)
        kept_ix.update(chosen)
    prune_ix = sorted(set(range(len(backups))).difference(kept_ix)) if len(kept_ix) < len(backups) else []
    # foreign snapshots are never pruned, so everything pruned is complete or one of our incomplete ones
    incomplete_pruned = len(set(index.incomplete).difference(kept_ix)) if index.incomplete else 0
    complete_pruned = len(prune_ix) - incomplete_pruned
    refused = not allow_mass_prune and complete_pruned * 2 > len(index.complete)
    return RetentionDecision(
        prune=() if refused else tuple(backups[i].name for i in prune_ix),
        kept=tuple(Kept(backups[i].name, tuple(keepers[i])) for i in sorted(keepers)),
        complete_total=len(index.complete),
        complete_pruned=complete_pruned,
        refused=refused,
    )
