"""Benchmark: replicating new backup data over a real ssh into a second zfs-fuse pool.

    .venv/bin/python benchmarks/bench_replication.py [--mib 256] [--change-percent 1]

Compares `replicate_dataset` (zfs send -p | Python pipe with the rate limiter | ssh zfs receive, then the
guid check and the holds) with a plain `zfs send | ssh zfs receive` shell pipe in the same run, and times
an incremental after changing `--change-percent` of the image. Builds its pools (`rtest-<pid>-…`, reaped
if the process dies), its sshd and keys in a temp dir, and removes them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

from reconciler.adapters.replication.send import replicate_dataset
from reconciler.adapters.replication.ssh import SshEndpoint, SshSession
from reconciler.adapters.zfs.cli import CliZfsDriver
from reconciler.lab.sshd import Sshd
from reconciler.lab.zfs import TEST_POOL_PREFIX, ZfsFusePool


def _snapshot(dataset: str, name: str) -> None:
    driver = CliZfsDriver()
    driver.snapshot(f"{dataset}@{name}", {"reconciler:managed": "true"})
    driver.set_properties(f"{dataset}@{name}", {"reconciler:status": "complete"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--change-percent", type=float, default=1.0)
    args = parser.parse_args()
    size = args.mib * 2**20
    with tempfile.TemporaryDirectory() as state, \
            ZfsFusePool(f"{TEST_POOL_PREFIX}{os.getpid()}-bsrc", state, f"{args.mib * 3 + 256}M") as src, \
            ZfsFusePool(f"{TEST_POOL_PREFIX}{os.getpid()}-bdst", state, f"{args.mib * 3 + 256}M") as dst:
        sshd = Sshd(Path(state) / "sshd").start()
        try:
            driver = CliZfsDriver()
            dataset = f"{src.name}/vm"
            driver.create_dataset(dataset, {"compression": "off"})
            image = src.mountpoint / "vm" / "disk-2000.raw"
            with open(image, "wb") as out:
                for _ in range(args.mib):
                    out.write(os.urandom(2**20))  # incompressible: what is sent is what is written
            _snapshot(dataset, "reconciler-1")
            endpoint = SshEndpoint(sshd.user, "127.0.0.1", sshd.port, sshd.host_public_key, str(sshd.client_key))
            with SshSession(endpoint) as ssh:
                plain = shlex.join(ssh.argv(["zfs", "receive", f"{dst.name}/plain"]))
                started = time.perf_counter()
                subprocess.run(f"zfs send {dataset}@reconciler-1 | {plain}", shell=True, check=True)
                plain_s = time.perf_counter() - started
                started = time.perf_counter()
                full = replicate_dataset(ssh, dataset, f"{dst.name}/ours", "bench")
                ours_s = time.perf_counter() - started
                changed = int(size * args.change_percent / 100)
                with open(image, "r+b") as out:
                    for offset in range(0, changed, 2**20):
                        out.seek((offset * 97) % (size - 2**20))
                        out.write(os.urandom(min(2**20, changed - offset)))
                _snapshot(dataset, "reconciler-2")
                started = time.perf_counter()
                incremental = replicate_dataset(ssh, dataset, f"{dst.name}/ours", "bench")
                incr_s = time.perf_counter() - started
            assert full is not None and incremental is not None
            print(f"plain zfs send | ssh zfs receive: {args.mib} MiB in {plain_s:.2f} s "
                  f"({args.mib / plain_s:.0f} MiB/s)")
            print(f"replicate_dataset full:           {full.bytes_sent / 2**20:.0f} MiB in {ours_s:.2f} s "
                  f"({full.bytes_sent / 2**20 / ours_s:.0f} MiB/s) = {plain_s / ours_s:.2f}x the plain pipe's speed")
            print(f"incremental after {args.change_percent:g}% change:  {incremental.bytes_sent / 2**20:.1f} MiB "
                  f"in {incr_s:.2f} s = {incr_s / ours_s * 100:.1f}% of the full's time, "
                  f"{incremental.bytes_sent / full.bytes_sent * 100:.1f}% of its bytes")
            for snap in ("reconciler-1", "reconciler-2"):
                subprocess.run(["zfs", "release", "reconciler-replica-bench", f"{dataset}@{snap}"], check=False,
                               capture_output=True)
        finally:
            sshd.stop()


if __name__ == "__main__":
    main()
