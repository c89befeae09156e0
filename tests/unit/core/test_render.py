"""Renderers see only a Plan: Terraform-style human output and the versioned JSON format."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from rich.console import Console

from reconciler.cli.render import render_human, render_json, summary
from reconciler.core.diagnostics import Code, Diagnostic, Severity
from reconciler.core.observed import BackupKind, ConnectionError_, ConnectionState, RepositoryState
from reconciler.core.plan import Action, Change, DiskPlan, NotObserved, Plan, PlanFormatError, Unobserved
from reconciler.core.planner import plan
from reconciler.core.refs import VmRef
from tests.unit.core.world import NOW, REPO_DATASET, backup, chain, desired, hours_ago, protected, vm, world

WEB = VmRef("4210-aa", "web-01", "vm-12", "vc1")
DB = VmRef("4210-bb", "db-01", "vm-13", "vc1")


def _plan(*changes: Change, diagnostics: tuple[Diagnostic, ...] = ()) -> Plan:
    return Plan(changes, diagnostics, "sha256:0", NOW)


def _text(p: Plan, **kw: bool) -> str:
    out = io.StringIO()
    render_human(p, Console(file=out, width=200, color_system=None), **kw)
    return out.getvalue()


def test_summary_counts_pairs_backups_by_kind_prunes_and_removals() -> None:
    p = _plan(
        Change(Action.PAIR, WEB, "gold"), Change(Action.PAIR, DB, "gold"),
        Change(Action.BACKUP, WEB, "gold", kind=BackupKind.FULL),
        Change(Action.BACKUP, DB, "gold", kind=BackupKind.INCREMENTAL),
        Change(Action.PRUNE, WEB, "gold", snapshots=("a", "b", "c")),
        Change(Action.REMOVE_VM_SNAPSHOT, DB, "gold", snapshots=("reconciler-x",)),
    )
    assert summary(p) == "Plan: 2 to pair, 2 backups (1 full, 1 incremental), 3 to prune, 1 snapshot to remove."


def test_an_empty_plan_says_the_world_matches() -> None:
    assert summary(_plan()) == "No changes. The world matches the policies."
    assert "No changes. The world matches the policies." in _text(_plan())


def test_human_output_groups_per_policy_and_vm_with_symbols_reasons_and_diagnostics() -> None:
    v = vm(1)
    result = plan(desired(), world((v, vm(2)), (chain(v, (backup(hours_ago(30), v),)),)), NOW)
    text = _text(result)
    assert "policy gold" in text
    assert "# web-01" in text and "# web-02" in text
    assert "+ backup incremental" in text and "+ backup full" in text and "+ pair" in text
    assert "first backup" in text
    assert text.strip().endswith("Plan: 1 to pair, 2 backups (1 full, 1 incremental).")


def test_diagnostics_are_listed_below_the_changes() -> None:
    diag = Diagnostic(Code.ENCRYPTED_VM, Severity.ERROR, "VM 'web-01' is encrypted", WEB)
    text = _text(_plan(Change(Action.PAIR, DB, "gold", "new"), diagnostics=(diag,)))
    assert text.index("+ pair") < text.index("Diagnostics:") < text.index("encrypted-vm")


def test_markup_in_names_is_shown_literally() -> None:
    odd = VmRef("u", "[bold]x[/bold]", "vm-1", "vc1")
    assert "[bold]x[/bold]" in _text(_plan(Change(Action.PAIR, odd, "gold", "new")))


def test_explain_retention_lists_the_rules_keeping_each_snapshot() -> None:
    v = vm(1)
    snaps = tuple(backup(hours_ago(h), v) for h in (96, 72, 48, 24.5, 2))
    result = plan(desired(), world((v,), (chain(v, snaps),)), NOW, explain_retention=True)
    text = _text(result)
    assert "- prune 2 snapshots" in text
    assert text.index("- prune") < text.index("Retention:")
    assert f"= {snaps[-1].name} kept by keepLast, newest, incremental-base" in text


def test_explaining_retention_is_not_a_change() -> None:
    v, c = protected()
    result = plan(desired(), world((v,), (c,)), NOW, explain_retention=True)
    assert result.changes == () and len(result.retention) == 1


def test_json_has_the_documented_shape() -> None:
    v, c = protected(last_hours_ago=30)
    data = json.loads(render_json(plan(desired(), world((v,), (c,)), NOW)))
    assert data["format_version"] == 1
    assert data["made_at"] == "2026-03-10T12:00:00Z"
    (action,) = data["actions"]
    assert action["action"] == "backup" and action["kind"] == "incremental"
    assert action["vm"] == {"instanceUuid": v.instance_uuid, "name": "web-01", "id": "vm-101",
                            "connection": "vc1"}
    assert action["reason"].startswith("due:")
    assert data["diagnostics"] == []


def test_json_round_trip_keeps_every_detail() -> None:
    p = _plan(Change(Action.BACKUP, WEB, "gold", "due", kind=BackupKind.INCREMENTAL,
                     disks=(DiskPlan(2000, BackupKind.INCREMENTAL, "since x"), DiskPlan(2001, BackupKind.FULL)),
                     wave=3, host="esx-01", datastores=("ds1",)),
              diagnostics=(Diagnostic(Code.CBT_RESET, Severity.WARNING, "reset", WEB, 2000),))
    assert Plan.from_json(p.to_json()) == p


@pytest.mark.parametrize("text, message", [
    ("not json", "invalid JSON"),
    ("{}", "no format_version"),
    ('{"format_version": 99}', "format_version 99"),
    ('{"format_version": 1, "actions": [{"action": "explode"}]}', "malformed"),
])
def test_a_bad_saved_plan_is_refused_with_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(PlanFormatError, match=message):
        Plan.from_json(text)


def test_made_at_is_utc_whatever_now_was() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    assert plan(desired(), world(), NOW.astimezone(cet)).made_at.utcoffset() == dt.timedelta(0)


def _incomplete(*changes: Change) -> Plan:
    return Plan(changes, (), "sha256:0", NOW, unobserved=Unobserved(
        (NotObserved("vc1", "environment variable VC1_PASSWORD is not set"),),
        (NotObserved("main", "no pool"), NotObserved("spare", "no pool"))))


def test_an_incomplete_plan_without_changes_never_says_the_world_matches() -> None:
    assert summary(_incomplete()) == ("No changes in what could be observed. The plan is incomplete: "
                                      "connection 'vc1' and repositories 'main', 'spare' not observed.")
    assert "matches" not in _text(_incomplete())


def test_an_incomplete_plan_with_changes_counts_them_and_names_what_was_not_observed() -> None:
    assert summary(_incomplete(Change(Action.PAIR, WEB, "gold"))) == (
        "Plan: 1 to pair. The plan is incomplete: connection 'vc1' and repositories 'main', 'spare' not observed.")


def test_json_says_complete_and_lists_what_was_not_observed_with_the_reason() -> None:
    data = json.loads(render_json(_incomplete()))
    assert data["complete"] is False
    assert data["unobserved"] == {
        "connections": [{"name": "vc1", "reason": "environment variable VC1_PASSWORD is not set"}],
        "repositories": [{"name": "main", "reason": "no pool"}, {"name": "spare", "reason": "no pool"}],
    }
    assert Plan.from_json(render_json(_incomplete())) == _incomplete()
    assert json.loads(render_json(_plan()))["complete"] is True


def test_a_plan_saved_before_completeness_was_recorded_reads_as_complete() -> None:
    data = json.loads(render_json(_plan()))
    del data["complete"], data["unobserved"]
    assert Plan.from_json(json.dumps(data)).complete


def test_planner_records_the_unreachable_connection_and_repository_it_needed() -> None:
    down = ConnectionState("vc1", reachable=False, error=ConnectionError_.FAILED,
                           error_message="environment variable VC1_PASSWORD is not set")
    observed = world((vm(1),), connections=(down,), repo=RepositoryState("main", REPO_DATASET, reachable=False,
                                                                          error_message="pool gone"))
    result = plan(desired(), observed, NOW)
    assert result.unobserved == Unobserved((NotObserved("vc1", "environment variable VC1_PASSWORD is not set"),),
                                           (NotObserved("main", "pool gone"),))
    assert not result.complete and not result.changes


def test_planner_ignores_an_unreachable_connection_no_policy_uses() -> None:
    spare = ConnectionState("spare", reachable=False, error=ConnectionError_.FAILED, error_message="down")
    result = plan(desired(), world((vm(1),), connections=(ConnectionState("vc1"), spare)), NOW)
    assert result.complete
