"""Checks across documents: unique names per kind, references that resolve, VMs claimed only once."""

from __future__ import annotations

from collections import defaultdict

from reconciler.policy.build import Built
from reconciler.policy.errors import PolicyError
from reconciler.policy.model import Kind, Location
from reconciler.policy.schema import did_you_mean


def _duplicates(built: list[Built]) -> list[PolicyError]:
    errors = []
    by_name: dict[tuple[Kind, str], list[Built]] = defaultdict(list)
    for item in built:
        by_name[(item.kind, item.name)].append(item)
    for (kind, name), items in by_name.items():
        if len(items) < 2:
            continue
        for item in items:
            others = ", ".join(str(o.name_at) for o in items if o is not item)
            errors.append(PolicyError(item.name_at, f"duplicate {kind} {name!r}", f"also defined at {others}"))
    return errors


def _references(built: list[Built]) -> list[PolicyError]:
    errors = []
    names: dict[Kind, list[str]] = defaultdict(list)
    for item in built:
        names[item.kind].append(item.name)
    for item in built:
        for kind, (name, where) in item.references.items():
            if name in names[kind]:
                continue
            hint = did_you_mean(name, names[kind])
            if hint is None:
                known = ", ".join(sorted(names[kind]))
                hint = f"defined {kind}s: {known}" if known else f"no {kind} is defined"
            errors.append(PolicyError(where, f"{kind} {name!r} is not defined", hint))
    return errors


def _claims(built: list[Built]) -> list[PolicyError]:
    """A VM address or identity named by two policies on one connection would be backed up twice."""
    errors = []
    first: dict[tuple[str, str], tuple[str, Location]] = {}
    for item in built:
        if item.kind is not Kind.PROTECTION_POLICY or item.value is None:
            continue
        connection = item.references[Kind.CONNECTION][0]
        for field, vm, where in item.claims:
            key = (connection, vm)
            if key not in first:
                first[key] = (item.name, where)
                continue
            owner, owner_at = first[key]
            if owner == item.name:
                errors.append(PolicyError(where, f"{field} lists {vm!r} twice", f"first at {owner_at}"))
                continue
            message = f"VM {vm!r} on connection {connection!r} is claimed by policies {owner!r} and {item.name!r}"
            errors.append(PolicyError(owner_at, message, f"also claimed at {where}"))
            errors.append(PolicyError(where, message, f"also claimed at {owner_at}"))
    return errors


def crosscheck(built: list[Built]) -> list[PolicyError]:
    return _duplicates(built) + _references(built) + _claims(built)
