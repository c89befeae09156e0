"""`--apply none|safe|all`: which of a plan's changes the watch service carries out by itself."""

from __future__ import annotations

import pytest

from reconciler.core.plan import Action, Change, Plan
from reconciler.core.refs import VmRef
from reconciler.watch.cycle import ApplyMode, select_changes
from tests.unit.core.world import NOW

REF = VmRef("50000001-0000-4000-8000-000000000001", "web-01", "vm-101", "vc1")


def plan_of(*actions: Action) -> Plan:
    return Plan(tuple(Change(a, REF, "gold") for a in actions), (), "sha256:0", NOW)


EVERYTHING = tuple(Action)


def test_none_applies_nothing_and_holds_everything() -> None:
    selection = select_changes(plan_of(*EVERYTHING), ApplyMode.NONE)
    assert selection.apply == () and len(selection.held) == len(EVERYTHING)


def test_all_applies_the_whole_plan() -> None:
    selection = select_changes(plan_of(*EVERYTHING), ApplyMode.ALL)
    assert [c.action for c in selection.apply] == list(EVERYTHING) and selection.held == ()


@pytest.mark.parametrize("action", [Action.PRUNE, Action.UNPAIR])
def test_safe_holds_what_loses_backups_or_protection(action: Action) -> None:
    selection = select_changes(plan_of(action), ApplyMode.SAFE)
    assert selection.apply == () and [c.action for c in selection.held] == [action]


@pytest.mark.parametrize("action", [Action.BACKUP, Action.PAIR, Action.ENABLE_CBT, Action.REBIND, Action.REPAIR,
                                    Action.REMOVE_VM_SNAPSHOT, Action.CONSOLIDATE])
def test_safe_applies_backups_and_additive_or_repairing_actions(action: Action) -> None:
    assert [c.action for c in select_changes(plan_of(action), ApplyMode.SAFE).apply] == [action]


def test_safe_keeps_plan_order() -> None:
    selection = select_changes(plan_of(Action.REPAIR, Action.BACKUP, Action.PRUNE), ApplyMode.SAFE)
    assert [c.action for c in selection.apply] == [Action.REPAIR, Action.BACKUP]
