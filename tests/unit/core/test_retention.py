"""Retention: composable keep rules; a snapshot goes only when no rule keeps it; safety rules always apply."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.observed import Backup, BackupDisk
from reconciler.core.retention import KeepBuckets, decide, policy_rules
from reconciler.policy.model import Retention

UTC = dt.UTC
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DISK = BackupDisk(2000, "52 3c/1", 2**30, "[ds1] a.vmdk")


def snap(hours_ago: float, *, disks: tuple[BackupDisk, ...] = (DISK,), **flags: bool) -> Backup:
    created = NOW - dt.timedelta(hours=hours_ago)
    return Backup(f"reconciler-{created:%Y%m%dT%H%M%SZ}-000000", created, disks=disks, **flags)  # type: ignore[arg-type]


def pruned(backups: list[Backup], retention: Retention, tz: str = "UTC", **kw: object) -> set[str]:
    return set(decide(backups, policy_rules(retention), NOW, tz, allow_mass_prune=True, **kw).prune)  # type: ignore[arg-type]


def names(*backups: Backup) -> set[str]:
    return {b.name for b in backups}


def test_keep_all_for_keeps_everything_younger_than_the_span() -> None:
    old, young = snap(50), snap(10)
    assert pruned([old, young], Retention("r", keep_all_for=dt.timedelta(days=1), keep_last=0)) == names(old)


def test_keep_last_is_a_floor() -> None:
    backups = [snap(h) for h in (40, 30, 20, 10)]
    assert pruned(backups, Retention("r", keep_last=2)) == names(*backups[:2])


def test_daily_keeps_the_newest_backup_of_each_local_day() -> None:
    morning, evening, yesterday, older = snap(6), snap(2), snap(26), snap(50)
    kept = {b.name for b in [morning, evening, yesterday, older]} - pruned(
        [older, yesterday, morning, evening], Retention("r", daily=2, keep_last=0))
    assert kept == names(evening, yesterday)


def test_days_are_counted_in_the_schedule_time_zone() -> None:
    # 23:30 and 00:30 UTC are two UTC days but one evening in New York
    late = Backup("reconciler-a", dt.datetime(2026, 3, 8, 23, 30, tzinfo=UTC), disks=(DISK,))
    early = Backup("reconciler-b", dt.datetime(2026, 3, 9, 0, 30, tzinfo=UTC), disks=(DISK,))
    rule = Retention("r", daily=5, keep_last=0)
    assert pruned([late, early], rule, "UTC") == set()
    assert pruned([late, early], rule, "America/New_York") == {"reconciler-a"}


def test_weekly_monthly_yearly_buckets() -> None:
    backups = [snap(24 * d) for d in (800, 400, 70, 40, 9, 2)]
    # 2023-12-31, 2025-02-03, 2025-12-30, 2026-01-29, 2026-03-01 (Sun), 2026-03-08 (Sun)
    rule = Retention("r", weekly=2, monthly=3, yearly=3, keep_last=0)
    # weeks: 03-08, 03-01; months: March, January, December; years: 2026, 2025 (Dec 30), 2023
    assert pruned(backups, rule) == names(backups[1])
    assert pruned(backups, Retention("r", weekly=1, keep_last=0)) == names(*backups[:5])


def test_the_newest_complete_backup_is_never_pruned() -> None:
    backups = [snap(30), snap(20), snap(10, complete=False)]
    assert pruned(backups, Retention("r", keep_last=0)) == names(backups[0], backups[2])


def test_held_foreign_and_repairing_snapshots_are_kept() -> None:
    held, foreign, half = snap(50, held=True), snap(40, ours=False), snap(1, complete=False)
    backups = [held, foreign, snap(30), half]
    assert pruned(backups, Retention("r", keep_last=0), repairing=True) == set()
    assert pruned(backups, Retention("r", keep_last=0)) == names(half)


def test_the_base_of_each_disks_next_incremental_is_kept() -> None:
    other = BackupDisk(2001, "7a 1b/4", 2**30, "[ds1] b.vmdk")
    with_both, only_first = snap(30, disks=(DISK, other)), snap(10)
    backups = [snap(40), with_both, only_first]
    assert pruned(backups, Retention("r", keep_last=0), live_disk_keys=frozenset({2000, 2001})) == \
        names(backups[0])


def test_more_than_half_pruned_is_refused_unless_allowed() -> None:
    backups = [snap(h) for h in (50, 40, 30, 20, 10)]
    refused = decide(backups, policy_rules(Retention("r", keep_last=2)), NOW, "UTC")
    assert refused.refused and refused.prune == ()
    assert (refused.complete_pruned, refused.complete_total) == (3, 5)
    allowed = decide(backups, policy_rules(Retention("r", keep_last=2)), NOW, "UTC", allow_mass_prune=True)
    assert len(allowed.prune) == 3


def test_explanation_names_every_rule_keeping_a_snapshot() -> None:
    backups = [snap(50, held=True), snap(10)]
    decision = decide(backups, policy_rules(Retention("r", keep_last=1, daily=3)), NOW, "UTC", explain=True)
    rules = {k.name: set(k.rules) for k in decision.kept}
    assert rules[backups[0].name] == {"daily", "held"}
    assert rules[backups[1].name] == {"daily", "keepLast", "newest", "incremental-base"}


# -- properties -------------------------------------------------------------------------------------------

snapshot_flags = st.fixed_dictionaries({
    "hours_ago": st.floats(0, 24 * 800, allow_nan=False),
    "complete": st.booleans(), "held": st.booleans(), "ours": st.booleans(),
    "disks": st.sets(st.sampled_from([2000, 2001, 2002]), max_size=3),
})
retentions = st.builds(
    Retention, name=st.just("r"),
    keep_all_for=st.timedeltas(dt.timedelta(0), dt.timedelta(days=30)),
    daily=st.integers(0, 10), weekly=st.integers(0, 5), monthly=st.integers(0, 5), yearly=st.integers(0, 3),
    keep_last=st.integers(0, 5),
)


def _build(specs: list[dict]) -> list[Backup]:
    backups = []
    for n, spec in enumerate(specs):
        created = NOW - dt.timedelta(hours=spec["hours_ago"])
        disks = tuple(BackupDisk(k, f"e/{n}", 2**30, f"[ds] {k}.vmdk") for k in sorted(spec["disks"]))
        backups.append(Backup(f"reconciler-{n:04d}", created, complete=spec["complete"], held=spec["held"],
                              ours=spec["ours"], disks=disks))
    return sorted(backups, key=lambda b: (b.created_ts, b.name))


@settings(max_examples=300, deadline=None)
@given(st.lists(snapshot_flags, max_size=40), retentions, st.booleans(), st.booleans(),
       st.sets(st.sampled_from([2000, 2001, 2002])))
def test_prune_never_removes_the_newest_a_held_a_foreign_snapshot_or_an_incremental_base(
    specs: list[dict], retention: Retention, allow: bool, repairing: bool, live: set[int]
) -> None:
    backups = _build(specs)
    decision = decide(backups, policy_rules(retention), NOW, "Europe/Berlin", live_disk_keys=frozenset(live),
                      repairing=repairing, allow_mass_prune=allow)
    gone = set(decision.prune)
    complete = [b for b in backups if b.complete and b.ours]
    if complete:
        assert complete[-1].name not in gone, "the newest complete backup"
    for key in live:
        holders = [b for b in complete if any(d.key == key for d in b.disks)]
        if holders:
            assert holders[-1].name not in gone, f"the incremental base of disk {key}"
    for b in backups:
        if b.held or not b.ours or (repairing and not b.complete):
            assert b.name not in gone
    if not allow:
        assert 2 * sum(1 for b in backups if b.name in gone and b.complete) <= len(complete)


@settings(max_examples=200, deadline=None)
@given(st.lists(snapshot_flags, max_size=30), retentions)
def test_pruning_is_idempotent(specs: list[dict], retention: Retention) -> None:
    backups = _build(specs)
    first = set(decide(backups, policy_rules(retention), NOW, "UTC", allow_mass_prune=True).prune)
    rest = [b for b in backups if b.name not in first]
    assert decide(rest, policy_rules(retention), NOW, "UTC", allow_mass_prune=True).prune == ()


def _naive_buckets(backups: list[Backup], period: str, count: int, tz: str) -> set[str]:
    """The obvious reference: group by local calendar fields, newest per group, `count` newest groups."""
    from zoneinfo import ZoneInfo

    def key(b: Backup) -> object:
        local = b.created.astimezone(ZoneInfo(tz))
        iso = local.isocalendar()
        return {"daily": local.date(), "weekly": (iso.year, iso.week),
                "monthly": (local.year, local.month), "yearly": local.year}[period]

    kept, seen = set(), []
    for b in sorted(backups, key=lambda b: (b.created, b.name), reverse=True):
        if key(b) not in seen:
            seen.append(key(b))
            if len(seen) <= count:
                kept.add(b.name)
    return kept


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 24 * 900, allow_nan=False), max_size=60, unique=True),
       st.sampled_from(["daily", "weekly", "monthly", "yearly"]), st.integers(1, 12),
       st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]))
def test_gfs_buckets_match_the_calendar_in_the_schedule_time_zone(
    hours: list[float], period: str, count: int, tz: str
) -> None:
    backups = sorted((snap(h) for h in hours), key=lambda b: b.created_ts)
    backups = [Backup(f"reconciler-{n:03d}", b.created, disks=b.disks) for n, b in enumerate(backups)]
    decision = decide(backups, (KeepBuckets(period, count),), NOW, tz, explain=True, allow_mass_prune=True)
    by_rule = {k.name for k in decision.kept if period in k.rules}
    assert by_rule == _naive_buckets(backups, period, count, tz)
