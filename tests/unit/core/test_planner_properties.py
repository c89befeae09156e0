"""Properties of the planner over generated worlds: deterministic, convergent, JSON round-trips."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.observed import (
    Backup,
    BackupDisk,
    BackupKind,
    Chain,
    JournalState,
    Observed,
    PowerState,
    ToolsStatus,
    VmHistory,
    VmSnapshot,
    VmState,
)
from reconciler.core.plan import Action, Plan
from reconciler.core.planner import plan
from reconciler.policy.model import PolicySet, Quiesce, Retention, Selector
from tests.unit.core.world import (
    NOW,
    REPO_DATASET,
    backup,
    chain,
    desired,
    disk,
    hours_ago,
    run_id,
    vm,
    world,
)


@st.composite
def vms(draw: st.DrawFn, n: int) -> tuple[VmState, Chain | None, VmHistory | None]:
    name = draw(st.sampled_from([f"web-{n:02d}", f"db-{n:02d}"]))
    disks = tuple(disk(2000 + k, vm_name=name, epoch=draw(st.sampled_from(["52 3c", "99 aa"])),
                       capacity=draw(st.sampled_from([2**30, 2**31])))
                  for k in range(draw(st.integers(1, 3))))
    snaps = ()
    if draw(st.booleans()):
        created = hours_ago(draw(st.floats(0, 72)))
        ours = draw(st.booleans())
        snaps = (VmSnapshot(f"snapshot-{n}", f"reconciler-{run_id(created)}" if ours else "manual", created),)
    v = vm(n, name, hw_version=draw(st.sampled_from([4, 19])), cbt_enabled=draw(st.booleans()),
           encrypted=draw(st.booleans()) and draw(st.booleans()),
           power_state=draw(st.sampled_from(list(PowerState))),
           tools_status=draw(st.sampled_from(list(ToolsStatus))),
           consolidation_needed=draw(st.booleans()), disks=disks, snapshots=snaps)
    c = None
    if draw(st.booleans()):
        hours = sorted(draw(st.lists(st.floats(0.5, 24 * 60), max_size=12)), reverse=True)
        backups = []
        for h in hours:
            complete = draw(st.booleans()) or draw(st.booleans())
            backups.append(backup(hours_ago(h), v, complete=complete, held=draw(st.booleans()) and complete,
                                  disks=tuple(BackupDisk(d.key, "52 3c/1", 2**30, d.backing) for d in disks)))
        c = chain(v, tuple(backups), retired=draw(st.booleans()) and draw(st.booleans()),
                  dirty_run_id=run_id(hours_ago(0.2)) if draw(st.booleans()) else None)
        if draw(st.booleans()):
            c = replace(c, vm_id="12", connection="esx1")
    history = VmHistory(v.instance_uuid, interrupted=True) if draw(st.booleans()) else None
    return v, c, history


@st.composite
def worlds(draw: st.DrawFn) -> tuple[PolicySet, Observed]:
    generated = [draw(vms(n)) for n in range(draw(st.integers(0, 6)))]
    vm_list = tuple(v for v, _, _ in generated if draw(st.integers(0, 9)) > 0)  # some left the inventory
    chains = tuple(c for _, c, _ in generated if c is not None)
    journal = JournalState(vms=tuple(h for _, _, h in generated if h is not None))
    retention = Retention("std", keep_all_for=dt.timedelta(hours=draw(st.integers(0, 48))),
                          daily=draw(st.integers(0, 7)), weekly=draw(st.integers(0, 3)),
                          keep_last=draw(st.integers(1, 4)))
    policies = desired(retention=retention, paused=draw(st.booleans()) and draw(st.booleans()),
                       quiesce=draw(st.sampled_from(list(Quiesce))),
                       every=dt.timedelta(hours=draw(st.sampled_from([1, 4, 24]))))
    return policies, world(vm_list, chains, journal=journal)


def simulate(observed: Observed, result: Plan, now: dt.datetime) -> Observed:
    """What a perfect apply would leave behind: each change done exactly as planned."""
    vms = {v.instance_uuid: v for v in observed.vms}
    chains = {c.instance_uuid: c for c in observed.repositories[0].chains}
    history = {h.instance_uuid: h for h in observed.journal.vms}
    for change in result.changes:
        uuid = change.vm.instance_uuid
        v, c = vms.get(uuid), chains.get(uuid)
        match change.action:
            case Action.PAIR:
                chains[uuid] = replace(c, retired=False, vm_id=v.id, connection=v.connection) if c else \
                    Chain(uuid, f"{REPO_DATASET}/{uuid}", v.id, v.connection, v.name, change.policy or "")
            case Action.UNPAIR:
                chains[uuid] = replace(c, retired=True)
            case Action.REBIND:
                chains[uuid] = replace(c, vm_id=change.after.id, connection=change.after.connection)
            case Action.REPAIR:
                chains[uuid] = replace(c, dirty_run_id=None,
                                       backups=tuple(b for b in c.backups if b.name not in change.snapshots))
            case Action.ENABLE_CBT:
                vms[uuid] = replace(v, cbt_enabled=True)
            case Action.CONSOLIDATE:
                vms[uuid] = replace(v, consolidation_needed=False)
            case Action.REMOVE_VM_SNAPSHOT:
                kept = tuple(s for s in v.snapshots if s.name not in change.snapshots)
                vms[uuid] = replace(v, snapshots=kept)
            case Action.BACKUP:
                disks = tuple(BackupDisk(d.key, d.change_id, d.capacity, d.backing) for d in v.disks)
                new = Backup(f"reconciler-{run_id(now, 1)}", now, kind=change.kind, disks=disks)
                chains[uuid] = replace(chains[uuid], backups=(*chains[uuid].backups, new))
                history.pop(uuid, None)
            case Action.PRUNE:
                left = tuple(b for b in c.backups if b.name not in change.snapshots)
                chains[uuid] = replace(c, backups=left)
    repo = replace(observed.repositories[0], chains=tuple(chains.values()))
    return replace(observed, vms=tuple(vms.values()), repositories=(repo,),
                   journal=replace(observed.journal, vms=tuple(history.values())))


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(worlds())
def test_applying_the_plan_converges_to_an_empty_plan(world_: tuple[PolicySet, Observed]) -> None:
    policies, observed = world_
    for _ in range(3):  # a backup may make one more snapshot fall out of keepLast: one more round
        result = plan(policies, observed, NOW)
        if not result.changes:
            break
        observed = simulate(observed, result, NOW)
    assert plan(policies, observed, NOW).changes == ()


@SETTINGS
@given(worlds(), st.randoms(use_true_random=False))
def test_planning_is_deterministic_whatever_the_order_of_observation(
    world_: tuple[PolicySet, Observed], rnd: random.Random
) -> None:
    policies, observed = world_
    vm_list, chains = list(observed.vms), list(observed.repositories[0].chains)
    rnd.shuffle(vm_list)
    rnd.shuffle(chains)
    shuffled = replace(observed, vms=tuple(vm_list),
                       repositories=(replace(observed.repositories[0], chains=tuple(chains)),))
    assert plan(policies, shuffled, NOW) == plan(policies, observed, NOW)


@SETTINGS
@given(worlds(), st.booleans())
def test_plan_json_round_trips(world_: tuple[PolicySet, Observed], explain: bool) -> None:
    policies, observed = world_
    result = plan(policies, observed, NOW, explain_retention=explain, allow_mass_prune=True)
    assert Plan.from_json(result.to_json()) == result


def test_converged_world_plans_nothing_even_with_many_vms() -> None:
    vms_, chains = [], []
    for n in range(50):
        v = vm(n)
        vms_.append(v)
        chains.append(chain(v, tuple(backup(hours_ago(h), v) for h in (50, 26, 2))))
    assert plan(desired(), world(tuple(vms_), tuple(chains)), NOW).changes == ()


def test_backups_are_spread_so_no_host_exceeds_its_limit() -> None:
    vms_ = tuple(vm(n, host=f"esx-{n % 2}", disks=(disk(vm_name=f"web-{n:02d}", datastore=f"ds{n % 5}"),))
                 for n in range(20))
    result = plan(desired(), world(vms_), NOW)
    waves: dict[tuple[int, str], int] = {}
    datastores: dict[tuple[int, str], int] = {}
    for change in result.of(Action.BACKUP):
        waves[(change.wave, change.host)] = waves.get((change.wave, change.host), 0) + 1  # type: ignore[index]
        for ds in change.datastores:
            datastores[(change.wave, ds)] = datastores.get((change.wave, ds), 0) + 1  # type: ignore[index]
    assert max(waves.values()) <= 2  # max_concurrent_per_host defaults to 2
    assert max(datastores.values()) <= 4
    assert len({c.wave for c in result.of(Action.BACKUP)}) == 5  # 10 per host, 2 at a time


def test_vcenter_nfc_budget_limits_disks_read_at_once() -> None:
    many_disks = tuple(disk(2000 + k, datastore=f"ds{k}") for k in range(30))
    vms_ = tuple(vm(n, host=f"esx-{n}", disks=many_disks) for n in range(4))
    result = plan(desired(), world(vms_), NOW)
    per_wave: dict[int, int] = {}
    for change in result.of(Action.BACKUP):
        per_wave[change.wave] = per_wave.get(change.wave, 0) + len(change.disks)  # type: ignore[index]
    assert max(per_wave.values()) <= 52


def test_fingerprint_ignores_volatile_fields_and_sees_real_changes() -> None:
    v = vm(1)
    c = chain(v, (backup(hours_ago(5), v),))
    base = world((v,), (c,), journal=JournalState(vms=(VmHistory(v.instance_uuid, last_failure="x"),)))
    noisy = replace(base, journal=JournalState(vms=(VmHistory(v.instance_uuid, last_failure="y"),)))
    moved = world((replace(v, id="vm-7"),), (c,))
    assert base.fingerprint() == noisy.fingerprint() != moved.fingerprint()
    assert base.fingerprint().startswith("sha256:")


def test_selector_exclude_can_nest() -> None:
    keep_01 = Selector(names=("web-01",))
    sel = Selector(folders=("/dc1/vm",), exclude=Selector(names=("web-0*",), exclude=keep_01))
    result = plan(desired(select=sel), world((vm(1), vm(2), vm(11))), NOW)
    assert {c.vm.name for c in result.of(Action.PAIR)} == {"web-01", "web-11"}
    assert all(c.kind is BackupKind.FULL for c in result.of(Action.BACKUP))
