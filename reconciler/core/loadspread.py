"""Load spreading: put backups into waves so that no shared resource is over its budget.

Budgets: per ESXi host the connection's `max_concurrent_per_host` backups; per vCenter about 52 NFC
(NBD) connections, one per disk being read; per datastore a few of our snapshots at once (each snapshot
grows delta files there). Backups of one wave may run together; the executor follows the waves.
First fit, with a per-resource floor so that 10,000 backups stay linear in practice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

VCENTER_NFC_BUDGET = 52  # VDDK: ~52 NBD connections through one vCenter
DATASTORE_SNAPSHOT_LIMIT = 4


@dataclass(frozen=True)
class Demand:
    """One backup's claim on shared resources: (resource, weight, capacity)."""

    needs: tuple[tuple[tuple[str, ...], int, int], ...]


def assign_waves(demands: Sequence[Demand]) -> list[int]:
    """A wave number per demand, in order: earlier demands get earlier waves."""
    usage: dict[tuple[tuple[str, ...], int], int] = {}
    floor: dict[tuple[str, ...], int] = {}
    waves: list[int] = []
    for demand in demands:
        needs = [(res, min(weight, cap), cap) for res, weight, cap in demand.needs]
        wave = max((floor.get(res, 0) for res, _, _ in needs), default=0)
        while not all(usage.get((res, wave), 0) + weight <= cap for res, weight, cap in needs):
            wave += 1
        for res, weight, cap in needs:
            usage[(res, wave)] = usage.get((res, wave), 0) + weight
            low = floor.get(res, 0)
            while usage.get((res, low), 0) >= cap:
                low += 1
            floor[res] = low
        waves.append(wave)
    return waves
