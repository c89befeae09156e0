"""Benchmark: reading a repository of 500 VM datasets × 20 backup snapshots on zfs-fuse.

    .venv/bin/python benchmarks/bench_zfs_listing.py [--vms 500] [--snapshots 20]

Compares `read_repository` (three `zfs` commands on zfs-fuse, two on OpenZFS, whatever the number of VMs) with the naive
one-command-per-dataset listing it replaces. Builds its own pool (`rbench-<pid>`) in a temp dir and
destroys it. Results are recorded at the bottom of this file.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from reconciler.adapters.zfs.backups import DATASET_PROPERTIES, SNAPSHOT_PROPERTIES, read_repository
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.adapters.zfs.runner import run
from reconciler.lab.zfs import ZfsFusePool


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--snapshots", type=int, default=20)
    args = parser.parse_args()
    driver = CliZfsDriver()
    with tempfile.TemporaryDirectory() as state, ZfsFusePool(f"rbench-{os.getpid()}", state, "2G") as pool:
        parent = f"{pool.name}/agentless"
        started = time.perf_counter()
        driver.create_dataset(parent)
        for n in range(args.vms):
            uuid = f"5012a3c4-0000-4000-8000-{n:012x}"
            driver.create_dataset(f"{parent}/{uuid}", {
                "reconciler:managed": "true", "reconciler:instance-uuid": uuid,
                "reconciler:vm-name": f"vm {n}", "reconciler:vm-id": f"vm-{n}",
                "reconciler:connection": "vc1", "reconciler:policy": "gold",
            })
        for s in range(args.snapshots):
            # one recursive snapshot per "run" (zfs-fuse has `snapshot -r`): setup in minutes, not hours
            run(["zfs", "snapshot", "-r", f"{parent}@reconciler-20260101T{s:06d}Z-a1b2c3"])
        print(f"setup: {args.vms} datasets x {args.snapshots} snapshots in {time.perf_counter() - started:.1f} s")

        timings = []
        for _ in range(3):
            started = time.perf_counter()
            record = read_repository(driver, parent)
            timings.append(time.perf_counter() - started)
        assert len(record.datasets) == args.vms and len(record.snapshots) == args.vms * args.snapshots
        print(f"read_repository (3 commands): best {min(timings):.2f} s of {len(timings)}")
        for label, call in (("datasets", lambda: driver.list_datasets(parent, DATASET_PROPERTIES)),
                            ("snapshots", lambda: driver.list_snapshots(parent, SNAPSHOT_PROPERTIES))):
            started = time.perf_counter()
            call()
            print(f"  of which {label}: {time.perf_counter() - started:.2f} s")

        started = time.perf_counter()
        for dataset in record.datasets:
            driver.list_datasets(dataset.dataset, DATASET_PROPERTIES)
            driver.list_snapshots(dataset.dataset, SNAPSHOT_PROPERTIES)
        naive = time.perf_counter() - started
        print(f"per-dataset listing ({2 * args.vms} commands): {naive:.2f} s "
              f"({naive / min(timings):.1f}x slower)")


if __name__ == "__main__":
    main()

# Results (Debian 12, 2 cores shared with ~6 other sessions, zfs-fuse 0.7.0, 2026-11-30); the machine's load
# average was 7-10 during these runs, so read them as orders of magnitude:
#   setup: 500 datasets x 20 snapshots in 31.5 s
#   read_repository (3 commands): best 4.85 s of 3   (10.2 s in a run at load 10)
#   per-dataset listing (1000 commands): 25.8 s (5.3x slower)
# Where the time goes: zfs-fuse walking 10,000 snapshots (~2 s per 4,000 at rest, measured on a
# 200 x 20 pool); parsing the 140,000 output lines takes ~0.6 s of Python, building records ~0.2 s.
