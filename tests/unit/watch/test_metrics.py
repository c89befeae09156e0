"""Metrics from plain data: the pool's newest backups, an apply run's outcomes, a plan's drift, policy
validity; rendered for a scrape and written as a node_exporter textfile."""

from __future__ import annotations

import datetime as dt
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from reconciler.adapters import metrics as m
from reconciler.apply.backup import BackupResult, DiskResult
from reconciler.apply.executor import Outcome, Result
from reconciler.core.observed import BackupKind
from reconciler.core.plan import Action, Change
from reconciler.core.refs import VmRef
from tests.unit.core.world import NOW, protected, world

REF = VmRef("50000001-0000-4000-8000-000000000001", "web-01", "vm-101", "vc1")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def backup_outcome(result: Result, read: int = 0, written: int = 0, seconds: float = 12.5) -> Outcome:
    disk = DiskResult(2000, BackupKind.FULL, "52 3c/10", 4 << 30, "[ds1] web-01/web-01.vmdk", read, written)
    backup = BackupResult(BackupKind.FULL, "tank/agentless/x@reconciler-1", (disk,), "quiesced", seconds)
    return Outcome(Change(Action.BACKUP, REF, "gold"), result, seconds=seconds,
                   backup=backup if result is Result.SUCCEEDED else None)


def test_last_success_comes_from_the_pools_newest_complete_backup() -> None:
    web1, chain1 = protected(1, last_hours_ago=2)
    data = m.from_observed(world((web1,), (chain1,)))
    vm = data.vms[web1.instance_uuid]
    assert vm.last_success == NOW - dt.timedelta(hours=2) and vm.chain_length == 1 and vm.policy == "gold"
    labels = (("instance_uuid", web1.instance_uuid), ("policy", "gold"), ("vm", "web-01"))
    assert samples(m.render_text(data))[("reconciler_backup_last_success_timestamp_seconds", labels)] == \
        (NOW - dt.timedelta(hours=2)).timestamp()


def test_outcomes_count_backups_by_result_and_add_bytes_and_duration() -> None:
    data = m.with_outcomes(m.MetricsData(), [backup_outcome(Result.SUCCEEDED, 100, 60),
                                             backup_outcome(Result.FAILED)], NOW)
    data = m.with_outcomes(data, [backup_outcome(Result.SUCCEEDED, 10, 5, seconds=3.0)], NOW)
    got = samples(m.render_text(data))
    labels = (("instance_uuid", REF.instance_uuid), ("policy", "gold"), ("vm", "web-01"))
    assert got[("reconciler_backups_total", (("result", "succeeded"),))] == 2
    assert got[("reconciler_backups_total", (("result", "failed"),))] == 1
    assert got[("reconciler_backups_total", (("result", "skipped"),))] == 0
    assert got[("reconciler_backup_read_bytes_total", labels)] == 110
    assert got[("reconciler_backup_written_bytes_total", labels)] == 65
    assert got[("reconciler_backup_last_duration_seconds", labels)] == 3.0


def test_prunes_count_actions_and_destroyed_snapshots() -> None:
    prune = Change(Action.PRUNE, REF, "gold", snapshots=("a", "b", "c"))
    data = m.with_outcomes(m.MetricsData(), [Outcome(prune, Result.SUCCEEDED)], NOW)
    got = samples(m.render_text(data))
    assert got[("reconciler_prunes_total", (("result", "succeeded"),))] == 1
    assert got[("reconciler_pruned_snapshots_total", ())] == 3


def test_drift_counts_pending_changes_by_action() -> None:
    pending = [Change(Action.BACKUP, REF), Change(Action.BACKUP, REF), Change(Action.PRUNE, REF)]
    got = samples(m.render_text(m.with_plan(m.MetricsData(), pending)))
    assert got[("reconciler_plan_pending_actions", (("action", "backup"),))] == 2
    assert got[("reconciler_plan_pending_actions", (("action", "prune"),))] == 1


def test_invalid_policy_keeps_the_time_the_good_set_was_loaded() -> None:
    data = m.with_policy(m.MetricsData(), True, 0, NOW)
    data = m.with_policy(data, False, 4, NOW + dt.timedelta(minutes=5))
    got = samples(m.render_text(data))
    assert got[("reconciler_policy_valid", ())] == 0 and got[("reconciler_policy_errors", ())] == 4
    assert got[("reconciler_policy_last_load_timestamp_seconds", ())] == NOW.timestamp()


def test_textfile_is_written_for_node_exporter(tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "reconciler.prom"
    m.write_textfile(path, m.with_outcomes(m.MetricsData(), [backup_outcome(Result.SUCCEEDED, 1, 1)], NOW))
    text = path.read_text()
    assert "# TYPE reconciler_backups_total counter" in text
    assert list(path.parent.iterdir()) == [path]  # written beside, then renamed: no temp file left


def test_live_metrics_are_served_over_http_on_a_free_port() -> None:
    live = m.LiveMetrics()
    host, port = live.serve("127.0.0.1", 0)
    try:
        live.update(lambda d: m.with_policy(d, True, 0, NOW))
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert samples(body)[("reconciler_policy_valid", ())] == 1
    finally:
        live.shutdown()


def test_metrics_address_is_parsed_or_refused_clearly() -> None:
    assert m.parse_address("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert m.parse_address("[::1]:9108") == ("::1", 9108)
    for bad in ("9108", "localhost:", "host:99999", "host:port"):
        try:
            m.parse_address(bad)
        except ValueError as exc:
            assert "HOST:PORT" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")
