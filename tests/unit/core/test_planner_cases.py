"""The planner, one situation per row: {desired, observed, now} -> the actions and diagnostics it gives."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from reconciler.core.observed import (
    ApiType,
    ConnectionError_,
    ConnectionState,
    HostState,
    JournalState,
    Observed,
    PowerState,
    RepositoryState,
    ToolsStatus,
    VmHistory,
    VmSnapshot,
    VolumeFinding,
)
from reconciler.core.plan import Action, Plan
from reconciler.core.planner import plan
from reconciler.policy.model import PolicySet, ProtectionPolicy, Quiesce, Schedule, Selector
from tests.unit.core.world import (
    NOW,
    REPO_DATASET,
    backup,
    chain,
    desired,
    disk,
    hours_ago,
    protected,
    run_id,
    uuid,
    vm,
    world,
)


@dataclass(frozen=True)
class Case:
    build: Callable[[], tuple[PolicySet, Observed]]
    actions: tuple[str, ...] = ()  # "action[ kind] vm-name"
    diagnostics: tuple[str, ...] = ()  # "code[ vm-name]"


def summarise(result: Plan) -> tuple[tuple[str, ...], tuple[str, ...]]:
    actions = tuple(sorted(
        " ".join(filter(None, (c.action.value, c.kind.value if c.kind else None, c.vm.name)))
        for c in result.changes))
    diags = tuple(sorted(" ".join(filter(None, (d.code.value, d.vm.name if d.vm else None)))
                         for d in result.diagnostics))
    return actions, diags


def _converged() -> tuple[PolicySet, Observed]:
    v, c = protected()
    return desired(), world((v,), (c,))


def _new_vm() -> tuple[PolicySet, Observed]:
    return desired(), world((vm(1),))


def _due_incremental() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25)
    return desired(), world((v,), (c,))


def _retired_chain_re_protected() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25)
    return desired(), world((v,), (replace(c, retired=True),))


def _left_every_policy() -> tuple[PolicySet, Observed]:
    v, c = protected()
    return desired(select=Selector(names=("db-*",))), world((v,), (c,))


def _retired_stays_quiet() -> tuple[PolicySet, Observed]:
    v, c = protected()
    return desired(select=Selector(names=("db-*",))), world((v,), (replace(c, retired=True),))


def _left_inventory() -> tuple[PolicySet, Observed]:
    _, c = protected()
    return desired(), world((), (c,))


def _cbt_off() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25, cbt_enabled=False)
    return desired(), world((v,), (c,))


def _moref_changed() -> tuple[PolicySet, Observed]:
    v, c = protected()
    return desired(), world((replace(v, id="vm-999"),), (c,))


def _esxi_to_vcenter() -> tuple[PolicySet, Observed]:
    v, c = protected(connection="esx1", id="12")
    moved = replace(v, connection="vc1", id="vm-4242")
    return desired(), world((moved,), (c,))


def _dirty_chain() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25)
    half = backup(hours_ago(1), v, complete=False, name=f"reconciler-{run_id(hours_ago(1), 7)}")
    return desired(), world((v,), (replace(c, dirty_run_id=run_id(hours_ago(1), 7),
                                         backups=(*c.backups, half)),))


def _journal_interrupted() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25)
    history = VmHistory(v.instance_uuid, last_failure="nbd read failed", interrupted=True)
    return desired(), world((v,), (c,), journal=JournalState(vms=(history,)))


def _hw_version_6() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25, hw_version=4)
    return desired(), world((v,), (c,))


def _cbt_reset() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25)
    return desired(), world((replace(v, disks=(disk(epoch="99 aa"),)),), (c,))


def _new_disk() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25)
    return desired(), world((replace(v, disks=(*v.disks, disk(2001))),), (c,))


def _disk_resized() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25)
    return desired(), world((replace(v, disks=(disk(capacity=8 * 2**30),)),), (c,))


def _paused_prunes_only() -> tuple[PolicySet, Observed]:
    v = vm(1)
    old = tuple(backup(hours_ago(24 * d), v) for d in (30, 20, 3, 2))
    return desired(paused=True), world((v,), (chain(v, old),))


def _prune_past_retention() -> tuple[PolicySet, Observed]:
    v = vm(1)
    snaps = tuple(backup(hours_ago(h), v) for h in (96, 72, 48, 24.5, 2))
    return desired(), world((v,), (chain(v, snaps),))


def _mass_prune_refused() -> tuple[PolicySet, Observed]:
    v = vm(1)
    snaps = tuple(backup(hours_ago(24 * d + 2), v) for d in range(10, 0, -1))
    return desired(), world((v,), (chain(v, snaps),))


def _orphan_vm_snapshot() -> tuple[PolicySet, Observed]:
    v, c = protected()
    snap = VmSnapshot("snapshot-7", f"reconciler-{run_id(hours_ago(30))}", hours_ago(30))
    return desired(), world((replace(v, snapshots=(snap,)),), (c,))


def _running_snapshot_is_kept() -> tuple[PolicySet, Observed]:
    v, c = protected()
    rid = run_id(hours_ago(0.1))
    snap = VmSnapshot("snapshot-8", f"reconciler-{rid}", hours_ago(0.1))
    return desired(), world((replace(v, snapshots=(snap,)),), (c,),
                            journal=JournalState(runs_in_progress=frozenset({rid})))


def _foreign_snapshot() -> tuple[PolicySet, Observed]:
    v, c = protected()
    snap = VmSnapshot("snapshot-9", "before upgrade", hours_ago(24 * 9))
    return desired(), world((replace(v, snapshots=(snap,)),), (c,))


def _consolidation() -> tuple[PolicySet, Observed]:
    v, c = protected(consolidation_needed=True)
    return desired(), world((v,), (c,))


def _encrypted() -> tuple[PolicySet, Observed]:
    return desired(), world((vm(1, encrypted=True),))


def _tools_required() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25, tools_status=ToolsStatus.NOT_RUNNING)
    return desired(quiesce=Quiesce.REQUIRED), world((v,), (c,))


def _tools_preferred() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25, tools_status=ToolsStatus.NOT_RUNNING)
    return desired(), world((v,), (c,))


def _powered_off() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25, power_state=PowerState.OFF, tools_status=ToolsStatus.NOT_RUNNING)
    return desired(quiesce=Quiesce.REQUIRED), world((v,), (c,))


def _conflict() -> tuple[PolicySet, Observed]:
    other = ProtectionPolicy("silver", "vc1", "main", "daily", "std", Selector(folders=("/dc1/vm",)))
    return desired(extra_policies=(other,)), world((vm(1),))


def _connection_failed() -> tuple[PolicySet, Observed]:
    v, c = protected(last_hours_ago=25)
    down = ConnectionState("vc1", reachable=False, error=ConnectionError_.FAILED, error_message="timed out")
    return desired(), world((v,), (c,), connections=(down,))


def _thumbprint() -> tuple[PolicySet, Observed]:
    down = ConnectionState("vc1", reachable=False, error=ConnectionError_.THUMBPRINT_MISMATCH)
    return desired(), world((vm(1),), connections=(down,))


def _free_licence() -> tuple[PolicySet, Observed]:
    esx = ConnectionState("vc1", api_type=ApiType.ESXI, license_edition="vSphere 8 Hypervisor")
    return desired(), world((vm(1),), connections=(esx,))


def _host_licence() -> tuple[PolicySet, Observed]:
    vc = ConnectionState("vc1", hosts=(HostState("esx-01", license_edition="Evaluation Mode"),))
    return desired(), world((vm(1), vm(2, host="esx-02")), connections=(vc,))


def _old_vsphere() -> tuple[PolicySet, Observed]:
    v, c = protected()
    return desired(), world((v,), (c,), connections=(ConnectionState("vc1", version="5.5.0"),))


def _large_disk() -> tuple[PolicySet, Observed]:
    v, c = protected(disks=(disk(capacity=2 * 2**40),))
    return desired(), world((v,), (c,))


def _volumes() -> tuple[PolicySet, Observed]:
    findings = (VolumeFinding(2000, "partition 2", True, "ReFS, excluded by policy"),
                VolumeFinding(2000, "partition 3", False, "dynamic disk: cannot be read volume by volume"))
    v, c = protected(volumes=findings)
    return desired(), world((v,), (c,))


def _explicit_id_missing() -> tuple[PolicySet, Observed]:
    return desired(select=Selector(ids=("vm-404",))), world()


def _repository_down() -> tuple[PolicySet, Observed]:
    return desired(), world((vm(1),), repo=RepositoryState("main", REPO_DATASET, reachable=False))


def _excluded_by_selector() -> tuple[PolicySet, Observed]:
    sel = Selector(names=("web-*",), exclude=Selector(tags=("no-backup",)))
    return desired(select=sel), world((vm(1), vm(2, tags=("backup:no-backup",))))


def _by_uuid_and_tag() -> tuple[PolicySet, Observed]:
    sel = Selector(instance_uuids=(uuid(1).upper(),), tags=("tier:gold",))
    vms = (vm(1, name="a"), vm(2, name="b", tags=("tier:gold",)), vm(3, name="c"))
    return desired(select=sel), world(vms)


CASES = {
    "converged world: nothing to do": Case(_converged),
    "new VM: pair and first full backup": Case(_new_vm, ("backup full web-01", "pair web-01")),
    "due VM with a chain: incremental": Case(_due_incremental, ("backup incremental web-01",)),
    "retired chain claimed again: pair, chain reused": Case(
        _retired_chain_re_protected, ("backup incremental web-01", "pair web-01")),
    "VM left every policy: unpair, data kept": Case(_left_every_policy, ("unpair web-01",)),
    "retired chain of an unclaimed VM: silent": Case(_retired_stays_quiet),
    "VM left the inventory: chain kept, vm-not-found": Case(_left_inventory,
                                                            diagnostics=("vm-not-found web-01",)),
    "CBT off: enable it, full backup": Case(_cbt_off, ("backup full web-01", "enable-cbt web-01")),
    "new MoRefID, same instanceUuid: rebind": Case(_moref_changed, ("rebind web-01",)),
    "standalone ESXi to vCenter: rebind keeps the chain": Case(_esxi_to_vcenter, ("rebind web-01",)),
    "dirty live image: repair first, then full": Case(_dirty_chain, ("backup full web-01", "repair web-01")),
    "journal says last backup failed mid-way: full": Case(_journal_interrupted, ("backup full web-01",)),
    "hardware version < 7: full and a warning": Case(
        _hw_version_6, ("backup full web-01",), ("hw-version-below-7 web-01",)),
    "CBT reset: that disk full, diagnostic": Case(_cbt_reset, ("backup full web-01",), ("cbt-reset web-01",)),
    "new disk: its own full, the others incremental": Case(_new_disk, ("backup incremental web-01",)),
    "resized disk restarts its chain": Case(_disk_resized, ("backup full web-01",)),
    "paused policy: no backup, prune still": Case(_paused_prunes_only, ("prune web-01",)),
    "snapshots outside retention: prune": Case(_prune_past_retention, ("prune web-01",)),
    "more than half pruned: refused": Case(_mass_prune_refused, ("backup incremental web-01",),
                                           ("mass-prune-refused web-01",)),
    "our VMware snapshot outlived its run: remove": Case(_orphan_vm_snapshot, ("remove-vm-snapshot web-01",)),
    "our VMware snapshot of a running backup: kept": Case(_running_snapshot_is_kept),
    "long-lived foreign snapshot: warning": Case(_foreign_snapshot, diagnostics=("foreign-snapshot web-01",)),
    "consolidation needed": Case(_consolidation, ("consolidate web-01",), ("consolidation-needed web-01",)),
    "encrypted VM: error, nothing planned": Case(_encrypted, diagnostics=("encrypted-vm web-01",)),
    "Tools not running, quiesce required: blocked": Case(_tools_required,
                                                         diagnostics=("tools-not-running web-01",)),
    "Tools not running, quiesce preferred: crash-consistent": Case(
        _tools_preferred, ("backup incremental web-01",), ("tools-not-running web-01",)),
    "powered-off VM is backed up like a running one": Case(_powered_off, ("backup incremental web-01",)),
    "VM claimed by two policies: conflict, no backup": Case(_conflict,
                                                            diagnostics=("policy-conflict web-01",)),
    "connection down: diagnostic, no guesses": Case(_connection_failed, diagnostics=("connection-failed",)),
    "thumbprint mismatch": Case(_thumbprint, diagnostics=("thumbprint-mismatch",)),
    "free ESXi licence: no backups": Case(_free_licence, ("pair web-01",), ("unsupported-license",)),
    "evaluation licence on one host blocks its VMs only": Case(
        _host_licence, ("backup full web-02", "pair web-01", "pair web-02"), ("unsupported-license",)),
    "vSphere 5.5: unsupported version warning": Case(_old_vsphere,
                                                     diagnostics=("unsupported-vsphere-version",)),
    "disk over 1 TiB over NBD: warning": Case(_large_disk, diagnostics=("nbd-large-disk web-01",)),
    "excluded and unsupported volumes": Case(_volumes, diagnostics=("excluded-volume web-01",
                                                                    "unsupported-volume web-01")),
    "policy names an id that does not exist": Case(_explicit_id_missing, diagnostics=("vm-not-found",)),
    "repository unreachable": Case(_repository_down, diagnostics=("repository-unreachable",)),
    "exclude removes a tagged VM": Case(_excluded_by_selector, ("backup full web-01", "pair web-01")),
    "select by instanceUuid (any case) or tag": Case(_by_uuid_and_tag, ("backup full a", "backup full b",
                                                                         "pair a", "pair b")),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_planner_gives_the_expected_actions_and_diagnostics(case: Case) -> None:
    policies, observed = case.build()
    assert summarise(plan(policies, observed, NOW)) == (tuple(sorted(case.actions)),
                                                       tuple(sorted(case.diagnostics)))


def test_new_disk_gets_its_own_full_while_others_stay_incremental() -> None:
    policies, observed = _new_disk()
    (change,) = plan(policies, observed, NOW).changes
    assert [(d.key, d.mode.value) for d in change.disks] == [(2000, "incremental"), (2001, "full")]


def test_rebind_records_before_and_after_addresses() -> None:
    policies, observed = _esxi_to_vcenter()
    (change,) = plan(policies, observed, NOW).changes
    assert (change.before.connection, change.before.id) == ("esx1", "12")  # type: ignore[union-attr]
    assert (change.after.connection, change.after.id) == ("vc1", "vm-4242")  # type: ignore[union-attr]


def test_repair_lists_the_incomplete_snapshots_after_the_last_good_one() -> None:
    policies, observed = _dirty_chain()
    repair = next(c for c in plan(policies, observed, NOW).changes if c.action.value == "repair")
    assert repair.snapshots == (f"reconciler-{run_id(hours_ago(1), 7)}",)


def test_mass_prune_goes_through_when_allowed() -> None:
    policies, observed = _mass_prune_refused()
    result = plan(policies, observed, NOW, allow_mass_prune=True)
    prune = next(c for c in result.changes if c.action.value == "prune")
    assert len(prune.snapshots) == 7
    assert not [d for d in result.diagnostics if d.code.value == "mass-prune-refused"]


def test_conflict_names_both_policies() -> None:
    policies, observed = _conflict()
    (diag,) = plan(policies, observed, NOW).diagnostics
    assert "gold" in diag.message and "silver" in diag.message


def test_target_restricts_the_plan_to_the_named_vms() -> None:
    result = plan(desired(), world((vm(1), vm(2))), NOW, targets=["web-02"])
    assert {c.vm.name for c in result.changes} == {"web-02"}


def test_explain_retention_names_the_rules_that_keep_each_snapshot() -> None:
    policies, observed = _prune_past_retention()
    (explanation,) = plan(policies, observed, NOW, explain_retention=True).retention
    kept = {k.name: k.rules for k in explanation.kept}
    newest = observed.repositories[0].chains[0].backups[-1].name
    assert set(kept[newest]) >= {"keepLast", "newest", "incremental-base"}


def test_naive_now_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan(desired(), world(), dt.datetime(2026, 1, 1))  # naive on purpose


def test_policy_with_unknown_references_is_skipped_with_a_diagnostic() -> None:
    result = plan(desired(schedule="nope"), world((vm(1),)), NOW)
    assert [d.code.value for d in result.diagnostics] == ["policy-invalid"]
    assert result.changes == ()


@pytest.mark.parametrize("bad", [Schedule("daily", "Mars/Olympus_Mons"), Schedule("daily", cron="every tuesday")])
def test_a_schedule_that_cannot_be_evaluated_is_a_diagnostic_not_a_traceback(bad: Schedule) -> None:
    policies = desired()
    policies.schedules["daily"] = bad
    result = plan(policies, world((vm(1),)), NOW)
    assert [d.code.value for d in result.diagnostics] == ["policy-invalid"] and result.changes == ()


def test_a_due_backup_brings_the_prune_it_makes_room_for_so_one_apply_converges() -> None:
    v = vm(1)
    snaps = tuple(backup(hours_ago(h), v) for h in (72, 48, 25))  # keepLast 3: all kept, one backup due
    result = plan(desired(), world((v,), (chain(v, snaps),)), NOW)
    prunes = [c for c in result.changes if c.action is Action.PRUNE]
    assert [(c.snapshots, c.after_backup) for c in prunes] == [((snaps[0].name,), True)]
    assert "once this run's backup is complete" in prunes[0].reason


def test_a_prune_owed_anyway_does_not_wait_for_the_backup() -> None:
    v = vm(1)
    snaps = tuple(backup(hours_ago(h), v) for h in (96, 72, 48, 25))
    result = plan(desired(), world((v,), (chain(v, snaps),)), NOW)
    prunes = [(c.snapshots, c.after_backup) for c in result.changes if c.action is Action.PRUNE]
    assert prunes == [((snaps[0].name,), False), ((snaps[1].name,), True)]


def test_the_after_backup_mark_survives_a_saved_plan() -> None:
    v = vm(1)
    snaps = tuple(backup(hours_ago(h), v) for h in (72, 48, 25))
    saved = plan(desired(), world((v,), (chain(v, snaps),)), NOW)
    assert Plan.from_json(saved.to_json()).changes == saved.changes
