"""The replication planner, one situation per test: {replication, source, target, now} -> changes, diagnostics."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from reconciler.core.diagnostics import Code
from reconciler.core.observed import BackupKind
from reconciler.core.refs import VmRef
from reconciler.core.replication import (
    ReplicaAction,
    ReplicaSnapshot,
    SourceVm,
    TargetFailure,
    TargetState,
    plan_replication,
    protected_bases,
)
from reconciler.policy.model import Replication, Retention, Schedule, ScheduleRule, SshTarget, Weekday

NOW = dt.datetime(2026, 12, 4, 22, 0, tzinfo=dt.UTC)
VM = VmRef("4210aaaa-0000-0000-0000-000000000001", "web-01", "vm-1", "vc")
HOURLY = Schedule("hourly", rules=(ScheduleRule(frozenset(Weekday), dt.timedelta(hours=1)),))
KEEP_3 = Retention("keep-3", keep_last=3)
OFFSITE = Replication("offsite", "tank", SshTarget("backup", "dr", 22, "vault/replicas"),
                      "ssh-ed25519 AAAA", "/keys/id", "hourly", "keep-3")


def snap(n: int, hours_ago: float, *, held: bool = False) -> ReplicaSnapshot:
    return ReplicaSnapshot(f"reconciler-{n}", f"guid-{n}", NOW - dt.timedelta(hours=hours_ago), held=held)


def source(*snaps: ReplicaSnapshot) -> SourceVm:
    return SourceVm(VM, snaps, referenced=3 * 2**30)


def run(vm: SourceVm, target: TargetState, replication: Replication = OFFSITE):  # type: ignore[no-untyped-def]
    return plan_replication(replication, HOURLY, KEEP_3, [vm], target, NOW)


def test_a_vm_never_replicated_gets_a_full_send_of_its_whole_history() -> None:
    changes, diagnostics = run(source(snap(1, 3), snap(2, 2)), TargetState())
    assert diagnostics == ()
    assert [(c.action, c.snapshots, c.base, c.kind) for c in changes] == \
        [(ReplicaAction.REPLICATE, ("reconciler-1", "reconciler-2"), None, BackupKind.FULL)]
    assert changes[0].describe() == "> replicate web-01: 2 snapshots (full)"


def test_new_backups_are_sent_incrementally_from_the_common_base() -> None:
    target = TargetState(datasets={VM.instance_uuid: (snap(1, 3), snap(2, 2, held=True))})
    changes, _ = run(source(snap(1, 3), snap(2, 2), snap(3, 1.5)), target)
    assert [(c.snapshots, c.base) for c in changes] == [(("reconciler-3",), "reconciler-2")]
    assert changes[0].describe() == "> replicate web-01: 1 snapshot (incremental from @reconciler-2)"


def test_a_replica_in_sync_needs_nothing() -> None:
    target = TargetState(datasets={VM.instance_uuid: (snap(1, 3), snap(2, 2))})
    assert run(source(snap(1, 3), snap(2, 2)), target) == ((), ())


def test_replication_waits_for_its_schedule() -> None:
    target = TargetState(datasets={VM.instance_uuid: (snap(1, 0.5),)})
    assert run(source(snap(1, 0.5), snap(2, 0.2)), target) == ((), ())  # replicated 30 min ago, hourly


def test_the_target_retention_prunes_old_replicas_but_never_the_common_base() -> None:
    remote = tuple(snap(n, 10 - n) for n in range(1, 6))
    changes, _ = run(source(snap(5, 5)), TargetState(datasets={VM.instance_uuid: remote}))
    assert [(c.action, c.snapshots) for c in changes] == \
        [(ReplicaAction.PRUNE_REPLICA, ("reconciler-1", "reconciler-2"))]
    # the base is the oldest one the source still has: kept however old
    changes, _ = run(source(snap(1, 9)), TargetState(datasets={VM.instance_uuid: remote}))
    assert all("reconciler-1" not in c.snapshots for c in changes)


def test_source_retention_is_told_which_base_to_keep() -> None:
    target = TargetState(datasets={VM.instance_uuid: (snap(1, 3), snap(2, 2))})
    assert protected_bases(OFFSITE, [source(snap(1, 3), snap(2, 2), snap(3, 1))], target) == \
        {VM.instance_uuid: "reconciler-2"}


def test_an_unreachable_target_is_one_error_and_nothing_is_planned() -> None:
    changes, diagnostics = run(source(snap(1, 3)), TargetState(False, TargetFailure.UNREACHABLE, "refused"))
    assert changes == ()
    assert [(d.code, "unreachable: refused" in d.message) for d in diagnostics] == \
        [(Code.REPLICA_TARGET_UNREACHABLE, True)]


def test_a_changed_host_key_is_refused_not_learnt() -> None:
    _, diagnostics = run(source(snap(1, 3)), TargetState(False, TargetFailure.HOST_KEY_MISMATCH))
    assert [d.code for d in diagnostics] == [Code.REPLICA_HOST_KEY_MISMATCH]


def test_foreign_snapshots_newer_than_the_base_mean_a_diverged_target() -> None:
    foreign = ReplicaSnapshot("manual", "guid-x", NOW - dt.timedelta(hours=1))
    target = TargetState(datasets={VM.instance_uuid: (snap(1, 3), foreign)})
    changes, diagnostics = run(source(snap(1, 3), snap(2, 2)), target)
    assert [c.action for c in changes] == []
    assert [(d.code, "manual" in d.message) for d in diagnostics] == [(Code.REPLICA_DIVERGED, True)]


def test_a_lost_common_base_asks_for_a_full_resend_and_says_how_big() -> None:
    target = TargetState(datasets={VM.instance_uuid: (ReplicaSnapshot("reconciler-0", "other", NOW),)})
    changes, diagnostics = run(source(snap(1, 3), snap(2, 2)), target)
    assert changes == ()
    assert [(d.code, "3.0 GiB" in d.message) for d in diagnostics] == [(Code.REPLICA_BASE_LOST, True)]


def test_a_paused_replication_sends_and_prunes_nothing() -> None:
    remote = tuple(snap(n, 10 - n) for n in range(1, 6))
    paused = replace(OFFSITE, paused=True)
    assert run(source(snap(5, 5), snap(6, 2)), TargetState(datasets={VM.instance_uuid: remote}), paused) == ((), ())


def test_source_retention_never_prunes_the_last_replicated_base_even_without_its_hold() -> None:
    from reconciler.core.plan import Action
    from reconciler.core.planner import plan
    from tests.unit.core.test_planner_cases import _prune_past_retention

    policies, observed = _prune_past_retention()
    pruned = next(c for c in plan(policies, observed, observed_now()).changes if c.action is Action.PRUNE)
    base = pruned.snapshots[0]
    uuid = observed.repositories[0].chains[0].instance_uuid
    protected = replace(observed, replica_bases=frozenset({(uuid, base)}))
    again = [c for c in plan(policies, protected, observed_now()).changes if c.action is Action.PRUNE]
    assert all(base not in c.snapshots for c in again)
    assert {n for c in again for n in c.snapshots} == set(pruned.snapshots) - {base}


def observed_now() -> dt.datetime:
    from tests.unit.core.world import NOW as WORLD_NOW

    return WORLD_NOW
