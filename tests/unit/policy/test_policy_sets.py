"""The shipped policy sets load, and the loader's public API behaves as promised."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from reconciler.policy import PolicyError, PolicyInvalid, load, load_policies
from reconciler.policy.model import Location, Quiesce, SecretRef, TimeWindow, Weekday
from tests.unit.policy.helpers import BASE, write

ROOT = Path(__file__).resolve().parents[3]


def test_the_lab_policy_set_declares_what_the_lab_needs() -> None:
    policies = load_policies([ROOT / "policies"], environ={})
    assert sorted(policies.connections) == ["lab-esxi", "lab-vcenter"]
    assert policies.connections["lab-vcenter"].password_from == SecretRef(env="RECONCILER_LAB_PASSWORD")
    assert policies.repositories["lab-pool"].dataset == "reconciler-lab/agentless"
    office = policies.schedules["office-hours"]
    assert office.rules[0].days == frozenset(Weekday(d) for d in range(5))
    assert office.rules[0].window == TimeWindow(dt.time(8), dt.time(18))
    assert office.rules[0].every == dt.timedelta(hours=1)
    assert office.rules[1].every == dt.timedelta(hours=4)
    assert policies.schedules["nightly"].cron == "0 22 * * *"
    assert policies.retentions["gfs"].keep_last >= 1
    assert sorted(policies.policies) == ["prod-vcenter", "standalone-nightly"]
    assert policies.policies["prod-vcenter"].select.folders == ("prod/web", "prod/db")
    assert policies.policies["prod-vcenter"].exclusions.dynamic_disk
    assert policies.policies["standalone-nightly"].quiesce is Quiesce.OFF


def test_the_examples_and_the_lab_set_validate_together() -> None:
    result = load([ROOT / "policies", ROOT / "examples"], environ={})
    assert result.errors == ()
    assert len(result.policy_set.policies) >= 8


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_dir()))
def test_each_example_is_self_contained_and_documented(example: str) -> None:
    assert load([ROOT / "examples" / example], environ={}).errors == ()
    assert (ROOT / "examples" / example / "README.md").is_file()


def test_load_policies_raises_policy_invalid_with_every_error_sorted(tmp_path: Path) -> None:
    write(tmp_path, {"b.yaml": BASE.replace("keepLast: 3", "keepLast: 0"), "a.yaml": "x: [\n"})
    with pytest.raises(PolicyInvalid) as raised:
        load_policies([tmp_path], environ={})
    errors = raised.value.errors
    assert [Path(e.location.file).name for e in errors] == ["a.yaml", "b.yaml"]
    assert str(errors[1]) == f"{tmp_path / 'b.yaml'}:32:13: error: spec.keepLast must be at least 1, not 0"


def test_policy_error_renders_as_file_line_col() -> None:
    error = PolicyError(Location("p.yaml", 3, 7), "bad thing", hint="do this")
    assert str(error) == "p.yaml:3:7: error: bad thing"


def test_model_values_remember_where_they_were_declared(tmp_path: Path) -> None:
    write(tmp_path, {"base.yaml": BASE})
    policies = load_policies([tmp_path], environ={})
    assert policies.policies["web"].location == Location(str(tmp_path / "base.yaml"), 34, 1)


def test_a_secret_file_path_is_relative_to_the_policy_file(tmp_path: Path) -> None:
    write(tmp_path, {"sub/base.yaml": BASE.replace("env: VC_PASSWORD", "file: secrets/vc.txt")})
    connection = load_policies([tmp_path], environ={}).connections["vc"]
    assert connection.password_from == SecretRef(file=str(tmp_path / "sub" / "secrets" / "vc.txt"))


def test_defaults_match_the_model() -> None:
    from reconciler.policy.model import Connection, ProtectionPolicy, Selector

    policies = load_policies([ROOT / "examples" / "gfs-retention"], environ={})
    assert policies.retentions["last-ten"].daily == 0
    assert Connection("c", "h", "u", SecretRef(env="X")).max_concurrent_per_host == 2
    assert ProtectionPolicy("p", "c", "r", "s", "k", Selector()).quiesce is Quiesce.PREFERRED
