"""Benchmark: thin full backups (`skipFreeBlocks`) against a plain CBT full (what the seed does) and nbdcopy,
on the seed FAQ's scenario scaled down: a disk whose file system uses little but had much more written and
deleted, so the deleted data is still on the disk.

    .venv/bin/python benchmarks/bench_thin.py [--size-gib 4] [--used-gib 1.2] [--deleted-gib 2]

Source: a sparse raw disk holding one real ext4 file system (mke2fs -d from random files, the "deleted"
file then removed by debugfs: its blocks are free but its bytes stay), served read-only by nbdkit `file`.
Each run ends with the image fsynced, into the same zfs-fuse pool:
  nbdcopy   nbdcopy NBD-URI IMAGE (copies every allocated extent of the disk)
  plain     our full as the seed does it: the disk's written areas (CBT `*`) → copy_ranges
  thin      the same, after the ext4 allocation map is read over NBD: written ∩ allocated → copy_ranges
Targets (issue 14): thin stores ≤ 1.1× the used bytes; thin's time ≤ used/total × plain's time + 10 %.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

from reconciler.adapters.inspect.allocation import AllocationMap, read_ext_allocation
from reconciler.adapters.inspect.reader import NbdReader
from reconciler.adapters.nbd.client import MAX_REQUEST, NbdClient
from reconciler.adapters.nbd.copy import copy_ranges
from reconciler.adapters.nbd.server import FileSource, Listen, NbdkitServer
from reconciler.apply.allocation import data_extents
from reconciler.apply.context import ApplyOptions
from reconciler.apply.images import open_image
from reconciler.core.extents import Range, read_requests, subtract, total
from reconciler.core.thin import thin_work
from reconciler.lab.zfs import ZfsFusePool

MiB = 1024 * 1024
GiB = 1024 * MiB


def make_source(root: Path, size: int, used: int, deleted: int) -> Path:
    tree = root / "tree"
    tree.mkdir()
    for name, length in (("kept.bin", used), ("deleted.bin", deleted)):
        with (tree / name).open("wb") as f:
            for _ in range(0, length, 8 * MiB):
                f.write(os.urandom(8 * MiB))
    disk = root / "disk-flat.vmdk"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(disk), f"{size // 1024}k"], check=True)
    subprocess.run(["debugfs", "-w", "-R", "rm /deleted.bin", str(disk)], check=True, capture_output=True)
    for child in tree.iterdir():
        child.unlink()
    return disk


def used_bytes(disk: Path) -> int:
    out = subprocess.run(["dumpe2fs", "-h", str(disk)], capture_output=True, text=True, check=True).stdout
    field = {k: int(re.search(rf"^{k}:\s+(\d+)", out, re.M).group(1)) for k in ("Block size", "Block count",
                                                                                "Free blocks")}
    return (field["Block count"] - field["Free blocks"]) * field["Block size"]


def copy(uri: str, areas: list[Range], image: Path, size: int) -> tuple[float, int]:
    options = ApplyOptions()
    requests = read_requests(areas, size=size, max_request=min(options.nbd_request, MAX_REQUEST))
    started = time.perf_counter()
    fd = open_image(image, size, fresh=True)
    try:
        stats = copy_ranges(lambda: NbdClient.open(uri), requests, fd, fresh_target=True,
                            connections=options.nbd_connections, in_flight=options.nbd_in_flight)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started, stats.bytes_read


def stored(image: Path) -> int:
    return image.stat().st_blocks * 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--used-gib", type=float, default=1.2)
    parser.add_argument("--deleted-gib", type=float, default=2)
    args = parser.parse_args()
    size = int(args.size_gib * GiB)
    with tempfile.TemporaryDirectory(prefix="bench-thin-") as tmp:
        root = Path(tmp)
        disk = make_source(root, size, int(args.used_gib * GiB), int(args.deleted_gib * GiB))
        used = used_bytes(disk)
        with open(disk, "rb") as f:
            written = data_extents(f.fileno(), size) or [Range(0, size)]  # what CBT `*` reports
        rows = []
        with ZfsFusePool(f"benchthin{os.getpid()}", root / "pool", size=f"{int(size * 2 / GiB) + 2}G") as pool, \
                NbdkitServer(FileSource(disk), Listen(socket=root / "nbd.sock"), readonly=True) as server:
            target = Path(pool.mountpoint)
            image = target / "nbdcopy.raw"
            started = time.perf_counter()
            subprocess.run(["nbdcopy", server.uri, str(image)], check=True)
            os.sync()
            rows.append(("nbdcopy", time.perf_counter() - started, total(written), stored(image)))
            image.unlink()
            seconds, read = copy(server.uri, written, target / "plain.raw", size)
            rows.append(("plain full", seconds, read, stored(target / "plain.raw")))
            (target / "plain.raw").unlink()
            started = time.perf_counter()
            with NbdClient.open(server.uri) as client:
                found = read_ext_allocation(NbdReader(client.handle), 0)
            assert isinstance(found, AllocationMap), found
            work = thin_work(size, written, subtract([Range(0, size)], list(found.free)), None, ())
            map_seconds = time.perf_counter() - started
            seconds, read = copy(server.uri, list(work.read), target / "thin.raw", size)
            rows.append(("thin full", seconds + map_seconds, read, stored(target / "thin.raw")))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          "zfs-fuse pool")
    print(f"disk {size / GiB:.1f} GiB, ext4 using {used / GiB:.2f} GiB, {total(written) / GiB:.2f} GiB written "
          f"(incl. {args.deleted_gib:g} GiB deleted); allocation map read in {map_seconds:.2f} s")
    print("| run | time | read | stored | stored / used |")
    print("| --- | --- | --- | --- | --- |")
    for name, seconds, read, kept in rows:
        print(f"| {name} | {seconds:.2f} s | {read / GiB:.2f} GiB | {kept / GiB:.2f} GiB | {kept / used:.2f}× |")
    plain, thin = rows[1][1], rows[2][1]
    print(f"thin stored / used = {rows[2][3] / used:.2f} (target ≤ 1.10); thin time / plain = {thin / plain:.2f} "
          f"(target ≤ used/total + 0.10 = {used / total(written) + 0.10:.2f})")


if __name__ == "__main__":
    main()
