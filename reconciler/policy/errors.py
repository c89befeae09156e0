"""Errors found in policy files: data first, so they can be sorted, rendered as text or JSON, and tested."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.policy.model import Location


@dataclass(frozen=True, order=True)
class PolicyError:
    location: Location
    message: str
    hint: str | None = None
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"


class PolicyInvalid(Exception):
    """The policy files do not load; `.errors` holds every problem found, sorted by location."""

    def __init__(self, errors: Iterable[PolicyError]) -> None:
        self.errors: tuple[PolicyError, ...] = tuple(sorted(set(errors)))
        super().__init__("\n".join(str(e) for e in self.errors))
