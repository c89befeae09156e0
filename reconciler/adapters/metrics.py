"""Prometheus metrics from plain data: an HTTP exposition while `watch` runs, and a textfile for
node_exporter's textfile collector after `apply`.

Everything is rendered from one frozen `MetricsData`, built by pure functions (`from_observed`,
`with_outcomes`, `with_plan`), so `apply` can write a textfile without a running service and tests need
no scraping. Counters (`*_total`) count since the process started for the HTTP exposition and within the
run for a textfile; Prometheus' `rate()`/`increase()` handle both resets.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "reconciler"


@dataclass(frozen=True)
class VmMetrics:
    vm: str
    instance_uuid: str
    policy: str = ""
    last_success: dt.datetime | None = None  # the newest complete backup
    last_duration_seconds: float | None = None  # of the last successful backup this process ran
    bytes_read: int = 0
    bytes_written: int = 0
    chain_length: int = 0


@dataclass(frozen=True)
class MetricsData:
    vms: Mapping[str, VmMetrics] = field(default_factory=dict)  # by instanceUuid
    backups: Mapping[str, int] = field(default_factory=dict)  # by result: succeeded, failed, skipped
    prunes: Mapping[str, int] = field(default_factory=dict)  # prune actions by result
    pruned_snapshots: int = 0
    pending: Mapping[str, int] = field(default_factory=dict)  # actions a plan still owes, by action
    policy_valid: bool | None = None
    policy_errors: int = 0
    policy_loaded_at: dt.datetime | None = None
    next_wake: dt.datetime | None = None
    cycles: Mapping[str, int] = field(default_factory=dict)  # watch cycles by result


def from_observed(observed: Any, base: MetricsData = MetricsData()) -> MetricsData:
    """Last success and chain length per VM, from the ZFS pool (the source of truth): `observed` is a
    `reconciler.core.observed.Observed`."""
    vms = dict(base.vms)
    for repository in observed.repositories:
        for chain in repository.chains:
            if chain.retired:
                vms.pop(chain.instance_uuid, None)
                continue
            complete = [b for b in chain.backups if b.complete and b.ours]
            previous = vms.get(chain.instance_uuid) or VmMetrics(chain.vm_name, chain.instance_uuid)
            vms[chain.instance_uuid] = replace(
                previous, vm=chain.vm_name or chain.instance_uuid, policy=chain.policy, chain_length=len(complete),
                last_success=max((b.created for b in complete), default=previous.last_success))
    return replace(base, vms=vms)


def with_outcomes(base: MetricsData, outcomes: Iterable[Any], at: dt.datetime) -> MetricsData:
    """Fold an apply run's outcomes (`reconciler.apply.executor.Outcome`) in: counts, bytes, durations."""
    vms, backups, prunes = dict(base.vms), Counter(base.backups), Counter(base.prunes)
    pruned = base.pruned_snapshots
    for outcome in outcomes:
        change, result = outcome.change, outcome.result.value
        if change.action.value == "backup":
            backups[result] += 1
            uuid = change.vm.instance_uuid
            vm = vms.get(uuid) or VmMetrics(change.vm.name, uuid, change.policy or "")
            if outcome.backup is not None:
                vm = replace(vm, bytes_read=vm.bytes_read + outcome.backup.bytes_read,
                             bytes_written=vm.bytes_written + outcome.backup.bytes_written)
            if result == "succeeded":
                vm = replace(vm, last_success=at, last_duration_seconds=outcome.seconds)
            vms[uuid] = vm
        elif change.action.value == "prune":
            prunes[result] += 1
            if result == "succeeded":
                pruned += len(change.snapshots)
    return replace(base, vms=vms, backups=dict(backups), prunes=dict(prunes), pruned_snapshots=pruned)


def with_plan(base: MetricsData, pending: Iterable[Any]) -> MetricsData:
    """Drift: the changes (`reconciler.core.plan.Change`) a plan still owes."""
    return replace(base, pending=dict(Counter(c.action.value for c in pending)))


def with_policy(base: MetricsData, valid: bool, errors: int, at: dt.datetime) -> MetricsData:
    return replace(base, policy_valid=valid, policy_errors=errors,
                   policy_loaded_at=at if valid else base.policy_loaded_at)


def families(data: MetricsData) -> Iterator[Any]:
    """The metric families for `data`, in exposition order."""
    labels = ["vm", "instance_uuid", "policy"]
    last = GaugeMetricFamily(f"{PREFIX}_backup_last_success_timestamp_seconds",
                             "Creation time of the newest complete backup (ZFS snapshot).", labels=labels)
    duration = GaugeMetricFamily(f"{PREFIX}_backup_last_duration_seconds",
                                 "Duration of the last successful backup run by this process.", labels=labels)
    chain = GaugeMetricFamily(f"{PREFIX}_backup_chain_length", "Complete backups kept for the VM.", labels=labels)
    read = CounterMetricFamily(f"{PREFIX}_backup_read_bytes", "Bytes read from vSphere by backups.", labels=labels)
    written = CounterMetricFamily(f"{PREFIX}_backup_written_bytes", "Bytes written into the pool by backups.",
                                  labels=labels)
    for vm in sorted(data.vms.values(), key=lambda v: (v.vm, v.instance_uuid)):
        values = [vm.vm, vm.instance_uuid, vm.policy]
        if vm.last_success is not None:
            last.add_metric(values, vm.last_success.timestamp())
        if vm.last_duration_seconds is not None:
            duration.add_metric(values, vm.last_duration_seconds)
        chain.add_metric(values, vm.chain_length)
        read.add_metric(values, vm.bytes_read)
        written.add_metric(values, vm.bytes_written)
    yield from (last, duration, chain, read, written)
    yield _by_label(CounterMetricFamily(f"{PREFIX}_backups", "Backups run, by result.", labels=["result"]),
                    data.backups, ("succeeded", "failed", "skipped"))
    yield _by_label(CounterMetricFamily(f"{PREFIX}_prunes", "Prune actions run, by result.", labels=["result"]),
                    data.prunes, ("succeeded", "failed", "skipped"))
    yield CounterMetricFamily(f"{PREFIX}_pruned_snapshots", "Backups (ZFS snapshots) destroyed by retention.",
                              value=data.pruned_snapshots)
    yield _by_label(GaugeMetricFamily(f"{PREFIX}_plan_pending_actions",
                                      "Changes the last plan still owes (drift), by action.", labels=["action"]),
                    data.pending, ())
    if data.policy_valid is not None:
        yield GaugeMetricFamily(f"{PREFIX}_policy_valid", "1 when the policy files load cleanly, else 0 (the last "
                                "good set keeps running).", value=1 if data.policy_valid else 0)
        yield GaugeMetricFamily(f"{PREFIX}_policy_errors", "Errors found in the policy files.",
                                value=data.policy_errors)
    if data.policy_loaded_at is not None:
        yield GaugeMetricFamily(f"{PREFIX}_policy_last_load_timestamp_seconds",
                                "When the policy set in force was loaded.", value=data.policy_loaded_at.timestamp())
    if data.next_wake is not None:
        yield GaugeMetricFamily(f"{PREFIX}_watch_next_wake_timestamp_seconds",
                                "When the backup clock wakes next.", value=data.next_wake.timestamp())
    if data.cycles:
        yield _by_label(CounterMetricFamily(f"{PREFIX}_watch_cycles", "Watch cycles, by result.",
                                            labels=["result"]), data.cycles, ())


def _by_label(family: Any, counts: Mapping[str, int], always: tuple[str, ...]) -> Any:
    for key in sorted(set(counts) | set(always)):
        family.add_metric([key], counts.get(key, 0))
    return family


class _DataCollector(Collector):
    def __init__(self, read: Any) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        return families(self._read())


def registry_for(data: MetricsData) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DataCollector(lambda: data))
    return registry


def write_textfile(path: str | os.PathLike[str], data: MetricsData) -> None:
    """Atomically (write, then rename) replace `path`, a `*.prom` file in node_exporter's
    `--collector.textfile.directory`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(os.fspath(path), registry_for(data))


def render_text(data: MetricsData) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry_for(data)).decode()


class LiveMetrics:
    """The watch service's metrics: replaced whole under a lock, served by a scrape at any time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data = MetricsData()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_DataCollector(self.get))
        self._server: Any = None

    def get(self) -> MetricsData:
        with self._lock:
            return self._data

    def update(self, change: Any) -> None:
        """`change`: MetricsData → MetricsData, applied atomically."""
        with self._lock:
            self._data = change(self._data)

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Start the HTTP exposition (a daemon thread); returns the bound address (port 0: any free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound = server.server_address
        return str(bound[0]), int(bound[1])

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[v6]:PORT` → (host, port); ValueError with the reason otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:9108)")
    return host.strip("[]"), int(port)

