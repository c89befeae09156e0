"""Benchmark: planning 10,000 VMs × 500 snapshots (target: ≤ 2 s on the reference machine).

    .venv/bin/python benchmarks/bench_planner.py [--vms 10000] [--snapshots 500] [--repeat 3]

Two worlds, both fully due (every VM gets a backup with per-disk modes and a load-spreading wave):
  steady  hourly backups kept 20 days + dailies: a few snapshots per VM age out (the daily case);
  churn   4-hourly backups under a short GFS retention, --allow-mass-prune: most snapshots go (worst case).
The world is built before timing (that is the adapters' cost); the observed-state fingerprint for
saved plans is timed separately.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import statistics
import time

from reconciler.core.observed import (
    Backup,
    BackupDisk,
    BackupKind,
    Chain,
    ConnectionState,
    Observed,
    RepositoryState,
    VmDisk,
    VmState,
)
from reconciler.core.planner import plan
from reconciler.policy.model import (
    Connection,
    PolicySet,
    ProtectionPolicy,
    Repository,
    Retention,
    Schedule,
    ScheduleRule,
    SecretRef,
    Selector,
    Weekday,
)

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def policies(retention: Retention) -> PolicySet:
    return PolicySet(
        connections={"vc1": Connection("vc1", "vc1.lab", "backup", SecretRef(env="X"), max_concurrent_per_host=2)},
        repositories={"main": Repository("main", "tank/agentless")},
        schedules={"hourly": Schedule("hourly", "Europe/Berlin",
                                      rules=(ScheduleRule(frozenset(Weekday), HOUR),))},
        retentions={"r": retention},
        policies={"all": ProtectionPolicy("all", "vc1", "main", "hourly", "r", Selector(names=("vm-*",)))},
    )


def world(vms: int, snapshots: int, step: dt.timedelta, dailies: int) -> Observed:
    vm_states, chains = [], []
    for n in range(vms):
        uuid = f"5000{n:04x}-0000-4000-8000-{n:012x}"
        disks = tuple(VmDisk(2000 + k, 40 * 2**30, f"[ds{(n + k) % 50}] vm-{n}/d{k}.vmdk", f"ds{(n + k) % 50}",
                             f"52 3c {n:x}/{900 + k}") for k in range(2))
        vm_states.append(VmState("vc1", f"vm-{n}", uuid, f"vm-{n:05d}", "/dc/vm", f"esx-{n % 200:03d}",
                                 disks=disks))
        recorded = tuple(BackupDisk(d.key, d.change_id, d.capacity, d.backing) for d in disks)
        times = [NOW - HOUR * 1.5 - step * i for i in range(snapshots - dailies)]
        times += [times[-1] - dt.timedelta(days=d + 1) for d in range(dailies)]
        backups = tuple(Backup(f"reconciler-{t:%Y%m%dT%H%M%SZ}-{n:06x}", t, BackupKind.INCREMENTAL,
                               disks=recorded) for t in reversed(times))
        chains.append(Chain(uuid, f"tank/agentless/{uuid}", f"vm-{n}", "vc1", f"vm-{n:05d}", "all",
                            backups=backups))
    return Observed(connections=(ConnectionState("vc1"),), vms=tuple(vm_states),
                    repositories=(RepositoryState("main", "tank/agentless", chains=tuple(chains)),))


def timed(label: str, desired: PolicySet, observed: Observed, repeat: int, **kw: bool) -> None:
    """Best and median of `repeat` plans, first with the collector as it is after building the world,
    then with that world frozen out of the collector (what `gc.freeze()` after observing gives)."""
    for frozen in (False, True):
        if frozen:
            gc.collect()
            gc.freeze()
        _timed(f"{label}{' (gc frozen)' if frozen else ''}", desired, observed, repeat, **kw)
        if frozen:
            gc.unfreeze()


def _timed(label: str, desired: PolicySet, observed: Observed, repeat: int, **kw: bool) -> None:
    runs, cpu, result = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = plan(desired, observed, NOW, fingerprint="sha256:skipped", **kw)
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    assert result is not None
    counts: dict[str, int] = {}
    for change in result.changes:
        counts[change.action.value] = counts.get(change.action.value, 0) + len(change.snapshots or (1,))
    waves = max((c.wave or 0) for c in result.changes) + 1 if result.changes else 0
    print(f"{label:18} plan: wall best {min(runs):.2f} s, median {statistics.median(runs):.2f} s; "
          f"CPU best {min(cpu):.2f} s ({repeat} runs); {counts}; {waves} waves")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--snapshots", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}; "
          f"{args.vms} VMs × {args.snapshots} snapshots")

    start = time.perf_counter()
    steady = world(args.vms, args.snapshots, HOUR, dailies=20)
    print(f"built steady world in {time.perf_counter() - start:.1f} s")
    timed("steady", policies(Retention("r", keep_all_for=dt.timedelta(days=20), daily=45)), steady, args.repeat)
    start, start_cpu = time.perf_counter(), time.process_time()
    fingerprint = steady.fingerprint()
    print(f"fingerprint of the observed world: wall {time.perf_counter() - start:.2f} s, "
          f"CPU {time.process_time() - start_cpu:.2f} s ({fingerprint[:19]}…)")
    del steady

    churn = world(args.vms, args.snapshots, 4 * HOUR, dailies=0)
    timed("churn", policies(Retention("r", keep_all_for=dt.timedelta(days=2), daily=7, weekly=4)),
          churn, args.repeat, allow_mass_prune=True)


if __name__ == "__main__":
    main()
