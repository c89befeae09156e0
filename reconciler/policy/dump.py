"""The model back to policy YAML: `load_policies` of the output gives an equal `PolicySet`.

Defaults are left out, so the output reads like a hand-written file.
"""

from __future__ import annotations

import io
from typing import Any

from reconciler.policy.durations import format_days, format_duration, format_window
from reconciler.policy.formatting import canonical_yaml
from reconciler.policy.model import (
    API_VERSION,
    Connection,
    Kind,
    PolicySet,
    ProtectionPolicy,
    Replication,
    Repository,
    Retention,
    Schedule,
    SecretRef,
    Selector,
    Transport,
    Weekday,
)


def _secret(ref: SecretRef) -> dict[str, str]:
    return {"env": ref.env} if ref.env is not None else {"file": ref.file or ""}


def _connection(c: Connection) -> dict[str, Any]:
    spec: dict[str, Any] = {"address": c.address, "user": c.user, "passwordFrom": _secret(c.password_from)}
    if c.thumbprint:
        spec["thumbprint"] = c.thumbprint
    if c.insecure:
        spec["insecure"] = True
    if c.max_concurrent_per_host != 2:
        spec["maxConcurrentPerHost"] = c.max_concurrent_per_host
    if c.nbd_bandwidth_share != 40:
        spec["nbdBandwidthShare"] = c.nbd_bandwidth_share
    return spec


def _repository(r: Repository) -> dict[str, Any]:
    spec: dict[str, Any] = {"dataset": r.dataset}
    if r.driver != "auto":
        spec["driver"] = str(r.driver)
    for key in ("compression", "recordsize"):
        if getattr(r, key) is not None:
            spec[key] = getattr(r, key)
    if r.encryption:
        spec["encryption"] = {"keyFrom": _secret(r.encryption.key_from), "algorithm": r.encryption.algorithm}
        if r.encryption.key_format != "passphrase":
            spec["encryption"]["keyFormat"] = r.encryption.key_format
    return spec


def _schedule(s: Schedule) -> dict[str, Any]:
    spec: dict[str, Any] = {"timezone": s.timezone}
    if s.cron is not None:
        spec["cron"] = s.cron
    rules = []
    for rule in s.rules:
        item: dict[str, Any] = {}
        if rule.days != frozenset(Weekday):
            item["days"] = format_days(rule.days)
        if rule.window is not None:
            item["window"] = format_window(rule.window)
        item["every"] = format_duration(rule.every)
        rules.append(item)
    if rules:
        spec["rules"] = rules
    return spec


def _retention(r: Retention) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if r.keep_all_for:
        spec["keepAllFor"] = format_duration(r.keep_all_for)
    for key in ("daily", "weekly", "monthly", "yearly"):
        if getattr(r, key):
            spec[key] = getattr(r, key)
    spec["keepLast"] = r.keep_last
    return spec


def _selector(s: Selector) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for key, value in (
        ("ids", s.ids),
        ("instanceUuids", s.instance_uuids),
        ("names", s.names),
        ("folders", s.folders),
        ("tags", s.tags),
    ):
        if value:
            spec[key] = list(value)
    if s.exclude is not None:
        spec["exclude"] = _selector(s.exclude)
    return spec


def _policy(p: ProtectionPolicy) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "connection": p.connection,
        "repository": p.repository,
        "schedule": p.schedule,
        "retention": p.retention,
        "select": _selector(p.select),
    }
    e = p.exclusions
    exclusions: dict[str, Any] = {
        key: True
        for key, value in (
            ("refs", e.refs),
            ("dynamicDisk", e.dynamic_disk),
            ("upd", e.upd),
            ("lvm", e.lvm),
            ("bitlocker", e.bitlocker),
            ("dedup", e.dedup),
        )
        if value
    }
    if e.mount_points:
        exclusions["mountPoints"] = list(e.mount_points)
    if exclusions:
        spec["exclusions"] = exclusions
    if p.quiesce != "preferred":
        spec["quiesce"] = str(p.quiesce)
    if p.transports != (Transport.NBD,):
        spec["transports"] = [str(t) for t in p.transports]
    if p.paused:
        spec["paused"] = True
    if p.verify != "none":
        spec["verify"] = str(p.verify)
    if p.skip_free_blocks:
        spec["skipFreeBlocks"] = True
    return spec


def _replication(r: Replication) -> dict[str, Any]:
    spec: dict[str, Any] = {"repository": r.repository, "target": r.target.url, "hostKey": r.host_key,
                            "identityFrom": {"file": r.identity_file}, "schedule": r.schedule,
                            "retention": r.retention}
    if r.bandwidth_limit is not None:
        spec["bandwidthLimit"] = str(r.bandwidth_limit)
    if r.paused:
        spec["paused"] = True
    return spec


def policy_documents(policy_set: PolicySet) -> list[dict[str, Any]]:
    """One plain document per model value, in dependency order (connections first)."""
    documents = []
    for kind, table, to_spec in (
        (Kind.CONNECTION, policy_set.connections, _connection),
        (Kind.REPOSITORY, policy_set.repositories, _repository),
        (Kind.SCHEDULE, policy_set.schedules, _schedule),
        (Kind.RETENTION, policy_set.retentions, _retention),
        (Kind.PROTECTION_POLICY, policy_set.policies, _policy),
        (Kind.REPLICATION, policy_set.replications, _replication),
    ):
        for name, value in table.items():
            documents.append(
                {"apiVersion": API_VERSION, "kind": str(kind), "metadata": {"name": name}, "spec": to_spec(value)}
            )
    return documents


def dump_policies(policy_set: PolicySet) -> str:
    """Policy YAML (several documents) declaring exactly `policy_set`."""
    stream = io.StringIO()
    canonical_yaml().dump_all(policy_documents(policy_set), stream)
    return stream.getvalue()
