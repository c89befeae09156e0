"""Benchmark: the backup data path against `nbdcopy`, in the same run, from the same nbdkit export, into the
same zfs-fuse pool.

    .venv/bin/python benchmarks/bench_backup.py [--size-gib 4] [--data-gib 1] [--repeat 3]

Source: a sparse raw disk of --size-gib with --data-gib of random data in 8 MiB runs spread over it, served
read-only by nbdkit's `file` plugin on a Unix socket (the same plugin family a real appliance reaches
through `vddk`). Three timings, each ending with the image fsynced:
  nbdcopy      nbdcopy NBD-URI IMAGE (its defaults: extents, 4 connections, zero detection)
  full         our pipeline for a full: allocated areas (as CBT `*` reports them) → read_requests →
               copy_ranges into a new sparse image
  incremental  1 % of the data changed (random 64 KiB blocks, as CBT reports areas) → copy_ranges over the
               full's image
Targets: full ≥ 0.8× nbdcopy's throughput; incremental ≤ 3 % of the full's time.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from reconciler.adapters.nbd.client import MAX_REQUEST, NbdClient
from reconciler.adapters.nbd.copy import copy_ranges
from reconciler.adapters.nbd.server import FileSource, Listen, NbdkitServer
from reconciler.apply.context import ApplyOptions
from reconciler.apply.images import open_image
from reconciler.core.extents import Range, normalise, read_requests
from reconciler.lab.zfs import ZfsFusePool

MiB = 1024 * 1024
GiB = 1024 * MiB
RUN = 8 * MiB


def make_source(path: Path, size: int, data: int, seed: int = 1) -> list[Range]:
    """A sparse disk with `data` bytes of random data in RUN-sized runs; returns where the data is."""
    rng = random.Random(seed)
    slots = rng.sample(range(size // RUN), data // RUN)
    with path.open("wb") as f:
        f.truncate(size)
        for slot in sorted(slots):
            f.seek(slot * RUN)
            f.write(os.urandom(RUN))
    return normalise(Range(s * RUN, RUN) for s in slots)


def change_one_percent(path: Path, areas: list[Range], amount: int, seed: int = 2) -> list[Range]:
    """Overwrite `amount` bytes of the data in 64 KiB blocks (CBT's granularity order); returns the areas."""
    rng = random.Random(seed)
    block = 64 * 1024
    candidates = [offset // block for a in areas for offset in range(a.offset, a.end, block)]
    blocks = rng.sample(candidates, amount // block)
    with path.open("r+b") as f:
        for b in blocks:
            f.seek(b * block)
            f.write(os.urandom(block))
    return normalise(Range(b * block, block) for b in blocks)


def our_copy(uri: str, areas: list[Range], image: Path, size: int, *, fresh: bool) -> float:
    options = ApplyOptions()
    requests = read_requests(areas, size=size, max_request=min(options.nbd_request, MAX_REQUEST))
    started = time.perf_counter()
    fd = open_image(image, size, fresh=fresh)
    try:
        copy_ranges(lambda: NbdClient.open(uri), requests, fd, fresh_target=fresh,
                    connections=options.nbd_connections, in_flight=options.nbd_in_flight)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def nbdcopy(uri: str, image: Path) -> float:
    image.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(["nbdcopy", uri, str(image)], check=True)
    fd = os.open(image, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--data-gib", type=float, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--changed-percent", type=float, default=1.0, help="of the data, for the incremental")
    args = parser.parse_args()
    size, data = int(args.size_gib * GiB), int(args.data_gib * GiB)
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        root = Path(tmp)
        source = root / "disk-flat.vmdk"
        allocated = make_source(source, size, data)
        with ZfsFusePool(f"benchbackup{os.getpid()}", root / "pool", size=f"{int(size * 3 / GiB) + 2}G") as pool:
            target = Path(pool.mountpoint)
            with NbdkitServer(FileSource(source), Listen(socket=root / "nbd.sock"), readonly=True) as server:
                ours, theirs = [], []
                for _ in range(args.repeat):
                    theirs.append(nbdcopy(server.uri, target / "nbdcopy.raw"))
                    (target / "nbdcopy.raw").unlink()
                    ours.append(our_copy(server.uri, allocated, target / "disk-2000.raw", size, fresh=True))
            changed = change_one_percent(source, allocated, int(data * args.changed_percent / 100))
            with NbdkitServer(FileSource(source), Listen(socket=root / "nbd2.sock"), readonly=True) as server:
                incremental = [our_copy(server.uri, changed, target / "disk-2000.raw", size, fresh=False)
                               for _ in range(args.repeat)]
    full, copy, incr = statistics.median(ours), statistics.median(theirs), statistics.median(incremental)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, zfs-fuse pool")
    print(f"disk {size / GiB:.1f} GiB with {data / GiB:.2f} GiB data; medians of {args.repeat}")
    print(f"nbdcopy       {copy:6.2f} s  {data / copy / MiB:7.1f} MiB/s")
    print(f"full (ours)   {full:6.2f} s  {data / full / MiB:7.1f} MiB/s  = {copy / full:.2f}× nbdcopy  (target ≥ 0.80)")
    print(f"incremental   {incr:6.2f} s  {args.changed_percent:g} % of the data changed = "
          f"{incr / full * 100:.1f} % of the full  (target ≤ 3 %)")


if __name__ == "__main__":
    main()
