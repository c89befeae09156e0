"""A plan is data: ordered changes plus diagnostics, and what it was made from.

Apply reads a plan and never plans again; renderers see only a plan. `reason` is for display only:
nothing may decide anything from it. The JSON format (`format_version` 1; a reader refuses other versions):

    {"format_version": 1, "made_at": ISO-8601 UTC, "fingerprint": "sha256:…", "options": {…},
     "actions": [{"action": "backup", "kind": "full", "vm": {"instanceUuid", "name", "id", "connection"},
                  "policy": "gold", "reason": "…", "disks": [{"key", "mode", "reason"}], "wave": 0,
                  "host": "esx-01", "datastores": [...], "snapshots": [...], "before": {…}, "after": {…},
                  "after_backup": true}],
     "diagnostics": [{"code", "severity", "message", "vm"?, "disk"?, "location"?}],
     "retention": [{"vm": {…}, "policy", "kept": [{"name", "rules": [...]}]}],   (--explain-retention)
     "complete": bool, "unobserved": {"connections": [{"name", "reason"}], "repositories": [...]}}

Keys of an action whose value is empty are left out. `complete` is false when a connection or repository
that a policy needs could not be observed: then "no changes" does not mean the world matches.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reconciler.core.diagnostics import Diagnostic, Severity
from reconciler.core.observed import BackupKind
from reconciler.core.refs import VmRef
from reconciler.core.retention import Kept

FORMAT_VERSION = 1


class PlanFormatError(ValueError):
    """A saved plan that this version cannot read."""


class Action(StrEnum):
    """Values are what users see and what JSON carries; order is the order of execution per VM."""

    REPAIR = "repair"
    REBIND = "rebind"
    PAIR = "pair"
    ENABLE_CBT = "enable-cbt"
    REMOVE_VM_SNAPSHOT = "remove-vm-snapshot"
    CONSOLIDATE = "consolidate"
    BACKUP = "backup"
    PRUNE = "prune"
    UNPAIR = "unpair"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @property
    def rank(self) -> int:
        return _RANK[self]


_SYMBOLS = {
    Action.PAIR: "+",
    Action.BACKUP: "+",
    Action.ENABLE_CBT: "~",
    Action.REBIND: "~",
    Action.CONSOLIDATE: "~",
    Action.REPAIR: "±",
    Action.PRUNE: "-",
    Action.REMOVE_VM_SNAPSHOT: "-",
    Action.UNPAIR: "-",
}
_RANK = {action: n for n, action in enumerate(Action)}


@dataclass(frozen=True)
class DiskPlan:
    """How one disk is read in a backup: a full read restarts that disk's chain."""

    key: int
    mode: BackupKind
    reason: str = ""


@dataclass(frozen=True)
class Address:
    """Where a VM lives: what `rebind` changes from/to."""

    connection: str
    id: str


@dataclass(frozen=True)
class Change:
    action: Action
    vm: VmRef
    policy: str | None = None
    reason: str = ""
    kind: BackupKind | None = None
    disks: tuple[DiskPlan, ...] = ()
    snapshots: tuple[str, ...] = ()  # ZFS snapshots to prune, or VMware snapshot names to remove
    before: Address | None = None
    after: Address | None = None
    wave: int | None = None  # backups in the same wave may run together (load spreading)
    host: str | None = None
    datastores: tuple[str, ...] = ()
    # a prune that retention asks for only once this run's backup of the VM is complete: skipped otherwise
    after_backup: bool = False

    def sort_key(self) -> tuple[Any, ...]:
        vm = self.vm
        return (self.policy or "\uffff", vm.name, vm.instance_uuid, self.action.rank, vm.connection, vm.id)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action": self.action.value, "kind": self.kind.value if self.kind else None,
                                "vm": self.vm.to_json(), "policy": self.policy, "reason": self.reason}
        optional = {
            "disks": [{"key": d.key, "mode": d.mode.value, "reason": d.reason} for d in self.disks],
            "snapshots": list(self.snapshots),
            "before": _address_json(self.before),
            "after": _address_json(self.after),
            "wave": self.wave,
            "host": self.host,
            "datastores": list(self.datastores),
            "after_backup": self.after_backup or None,
        }
        data.update({k: v for k, v in optional.items() if v not in (None, [])})
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        return cls(
            action=Action(data["action"]),
            vm=VmRef.from_json(data["vm"]),
            policy=data.get("policy"),
            reason=data.get("reason", ""),
            kind=BackupKind(data["kind"]) if data.get("kind") else None,
            disks=tuple(DiskPlan(d["key"], BackupKind(d["mode"]), d.get("reason", ""))
                        for d in data.get("disks", ())),
            snapshots=tuple(data.get("snapshots", ())),
            before=_address(data.get("before")),
            after=_address(data.get("after")),
            wave=data.get("wave"),
            host=data.get("host"),
            datastores=tuple(data.get("datastores", ())),
            after_backup=bool(data.get("after_backup", False)),
        )


def _address_json(address: Address | None) -> dict[str, str] | None:
    return None if address is None else {"connection": address.connection, "id": address.id}


def _address(data: dict[str, str] | None) -> Address | None:
    return None if data is None else Address(data["connection"], data["id"])


@dataclass(frozen=True)
class RetentionExplanation:
    """Which rules keep each snapshot a VM keeps (`--explain-retention`); not a change."""

    vm: VmRef
    policy: str
    kept: tuple[Kept, ...]

    def to_json(self) -> dict[str, Any]:
        return {"vm": self.vm.to_json(), "policy": self.policy,
                "kept": [{"name": k.name, "rules": list(k.rules)} for k in self.kept]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetentionExplanation:
        return cls(VmRef.from_json(data["vm"]), data["policy"],
                   tuple(Kept(k["name"], tuple(k["rules"])) for k in data["kept"]))


@dataclass(frozen=True)
class NotObserved:
    """A connection or repository the plan needed and could not see, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class Unobserved:
    connections: tuple[NotObserved, ...] = ()
    repositories: tuple[NotObserved, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.connections or self.repositories)

    def describe(self) -> str:
        """`connection 'vc' and repositories 'a', 'b' not observed`; the one wording plan, apply and watch use."""
        parts = []
        for one, many, items in (("connection", "connections", self.connections),
                                 ("repository", "repositories", self.repositories)):
            if items:
                parts.append(f"{one if len(items) == 1 else many} {', '.join(repr(i.name) for i in items)}")
        return f"{' and '.join(parts)} not observed" if parts else ""

    def to_json(self) -> dict[str, list[dict[str, str]]]:
        return {kind: [{"name": n.name, "reason": n.reason} for n in items]
                for kind, items in (("connections", self.connections), ("repositories", self.repositories))}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Unobserved:
        def items(kind: str) -> tuple[NotObserved, ...]:
            return tuple(NotObserved(d["name"], d.get("reason", "")) for d in data.get(kind, ()))

        return cls(items("connections"), items("repositories"))


@dataclass(frozen=True)
class PlanOptions:
    allow_mass_prune: bool = False
    targets: tuple[str, ...] = ()
    explain_retention: bool = False


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    diagnostics: tuple[Diagnostic, ...]
    fingerprint: str
    made_at: dt.datetime
    options: PlanOptions = field(default_factory=PlanOptions)
    retention: tuple[RetentionExplanation, ...] = ()
    format_version: int = FORMAT_VERSION
    unobserved: Unobserved = field(default_factory=Unobserved)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    @property
    def complete(self) -> bool:
        """Everything the policies need was observed: only then does "no changes" mean "in sync"."""
        return not self.unobserved

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.diagnostics)

    def of(self, *actions: Action) -> Iterable[Change]:
        return (c for c in self.changes if c.action in actions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "made_at": self.made_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "fingerprint": self.fingerprint,
            "options": {"allow_mass_prune": self.options.allow_mass_prune,
                        "targets": list(self.options.targets),
                        "explain_retention": self.options.explain_retention},
            "actions": [c.to_json() for c in self.changes],
            "diagnostics": [d.to_json() for d in self.diagnostics],
            **({"retention": [r.to_json() for r in self.retention]} if self.retention else {}),
            "complete": self.complete,
            "unobserved": self.unobserved.to_json(),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanFormatError(f"not a saved plan: invalid JSON ({exc})") from exc
        if not isinstance(data, dict) or "format_version" not in data:
            raise PlanFormatError("not a saved plan: no format_version")
        if data["format_version"] != FORMAT_VERSION:
            raise PlanFormatError(f"saved plan has format_version {data['format_version']}, "
                                  f"this reconciler reads {FORMAT_VERSION}")
        try:
            options = data.get("options", {})
            return cls(
                changes=tuple(Change.from_json(c) for c in data["actions"]),
                diagnostics=tuple(Diagnostic.from_json(d) for d in data["diagnostics"]),
                fingerprint=data["fingerprint"],
                made_at=dt.datetime.fromisoformat(data["made_at"].replace("Z", "+00:00")),
                options=PlanOptions(bool(options.get("allow_mass_prune", False)),
                                    tuple(options.get("targets", ())),
                                    bool(options.get("explain_retention", False))),
                retention=tuple(RetentionExplanation.from_json(r) for r in data.get("retention", ())),
                unobserved=Unobserved.from_json(data.get("unobserved") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanFormatError(f"saved plan is malformed: {exc!r}") from exc
