"""Load spreading into waves, and the stable vocabulary scripts rely on (action and diagnostic codes)."""

from __future__ import annotations

from reconciler.core.diagnostics import Code
from reconciler.core.loadspread import Demand, assign_waves
from reconciler.core.plan import Action


def test_waves_respect_every_budget_a_backup_needs() -> None:
    host_a, host_b, ds = ("host", "a"), ("host", "b"), ("datastore", "ds1")
    demands = [Demand(((host_a, 1, 2), (ds, 1, 3))) for _ in range(3)] + [Demand(((host_b, 1, 2), (ds, 1, 3)))]
    assert assign_waves(demands) == [0, 0, 1, 0]


def test_a_demand_bigger_than_a_budget_still_gets_a_wave_of_its_own() -> None:
    nfc = ("nfc", "vc1")
    assert assign_waves([Demand(((nfc, 60, 52),)), Demand(((nfc, 1, 52),))]) == [0, 1]


def test_earlier_demands_never_wait_for_later_ones() -> None:
    nfc = ("nfc", "vc1")
    waves = assign_waves([Demand(((nfc, 30, 52),)), Demand(((nfc, 30, 52),)), Demand(((nfc, 20, 52),))])
    assert waves == [0, 1, 0]


def test_diagnostic_codes_are_the_documented_stable_ones() -> None:
    documented = {
        "encrypted-vm", "unsupported-license", "hw-version-below-7", "tools-not-running", "cbt-reset",
        "vm-not-found", "consolidation-needed", "excluded-volume", "unsupported-volume", "policy-conflict",
        "connection-failed", "thumbprint-mismatch", "unsupported-vsphere-version", "nbd-large-disk",
        "foreign-snapshot",
    }
    assert documented <= {c.value for c in Code}


def test_actions_are_what_users_see_each_with_a_symbol() -> None:
    assert {a.value for a in Action} == {"pair", "unpair", "enable-cbt", "rebind", "backup", "repair", "prune",
                                         "remove-vm-snapshot", "consolidate"}
    assert {a.symbol for a in Action} <= {"+", "~", "-", "±"}
