"""Benchmark: edit a policy file → the new plan is ready (target: ≤ 1 s).

    .venv/bin/python benchmarks/bench_watch.py [--edits 20] [--no-lab]

A `Watcher` (real watchdog observer, real reload → observe → plan cycle, `--apply none`) runs on a temp
policy directory. Each edit rewrites the retention file with a new `keepLast`; the latency is the time
from the write to the `plan.ready` event of the cycle that edit caused. It includes the debounce quiet
period (0.25 s: what makes a `git pull` one reload) and a full observation: with the lab, vSphere (vcsim,
one PropertyCollector retrieval) and the zfs-fuse pool; with `--no-lab`, a vCenter refusing connections.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.watch.clock import SystemClock
from reconciler.watch.cycle import ApplyMode
from reconciler.watch.log import Log, LogFormat
from reconciler.watch.service import WatchConfig, Watcher

POLICIES = """\
apiVersion: reconciler/v1
kind: Repository
metadata: {{name: bench-pool}}
spec: {{dataset: {dataset}, driver: cli}}
---
apiVersion: reconciler/v1
kind: Schedule
metadata: {{name: hourly}}
spec:
  rules:
    - every: 1h
---
apiVersion: reconciler/v1
kind: ProtectionPolicy
metadata: {{name: bench}}
spec:
  connection: {connection}
  repository: bench-pool
  schedule: hourly
  retention: short
  select:
    names: ["*"]
"""
RETENTION = """\
apiVersion: reconciler/v1
kind: Retention
metadata: {{name: short}}
spec: {{keepLast: {keep}}}
"""
UNREACHABLE = """\
apiVersion: reconciler/v1
kind: Connection
metadata: {name: lab-vcenter}
spec:
  address: https://127.0.0.1:9/sdk
  user: user
  passwordFrom: {env: RECONCILER_LAB_PASSWORD}
  insecure: true
"""


def measure(policy_dir: Path, state_dir: Path, edits: int) -> list[float]:
    events: queue.Queue[tuple[str, float]] = queue.Queue()
    watcher = Watcher(WatchConfig((policy_dir,), state_dir, ApplyMode.NONE), SystemClock(),
                      Log(io.StringIO(), LogFormat.JSON))
    watcher.listeners.append(lambda event, _: events.put((event, time.perf_counter())))
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        wait(events, "cycle.done")
        latencies = []
        for keep in range(4, 4 + edits):
            started = time.perf_counter()
            (policy_dir / "retention.yaml").write_text(RETENTION.format(keep=keep))
            latencies.append(wait(events, "plan.ready") - started)
            wait(events, "cycle.done")
        return latencies
    finally:
        watcher.request_stop()
        thread.join()


def wait(events: queue.Queue[tuple[str, float]], name: str) -> float:
    while True:
        event, at = events.get(timeout=120)
        if event == name:
            return at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--no-lab", action="store_true", help="no lab: a vCenter that refuses connections")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        root = Path(tmp)
        policy_dir = root / "policies"
        policy_dir.mkdir()
        (policy_dir / "retention.yaml").write_text(RETENTION.format(keep=3))
        if args.no_lab:
            os.environ.setdefault("RECONCILER_LAB_PASSWORD", "unused")
            (policy_dir / "connections.yaml").write_text(UNREACHABLE)
            (policy_dir / "rest.yaml").write_text(POLICIES.format(dataset="nopool/bench", connection="lab-vcenter"))
            latencies = measure(policy_dir, root / "state", args.edits)
        else:
            from reconciler.lab.lab import Lab, LabPorts
            from reconciler.lab.zfs import TEST_POOL_PREFIX

            lab = Lab(root / "lab", ports=LabPorts.auto(), pool_name=f"{TEST_POOL_PREFIX}{os.getpid()}-bench",
                      pool_size="1G", detach=False)
            lab.up()
            try:
                state = lab.require_state()
                os.environ["RECONCILER_LAB_PASSWORD"] = state.sites["vcenter"].password
                (policy_dir / "connections.yaml").write_text((lab.state_dir / "connections.yaml").read_text())
                assert state.pool is not None
                (policy_dir / "rest.yaml").write_text(POLICIES.format(dataset=f"{state.pool.name}/bench",
                                                                      connection="lab-vcenter"))
                latencies = measure(policy_dir, root / "state", args.edits)
            finally:
                lab.down()
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"edit → plan.ready over {len(latencies)} edits ({'no lab' if args.no_lab else 'lab'}): "
          f"min {ordered[0]:.3f} s, median {statistics.median(ordered):.3f} s, p95 {p95:.3f} s, "
          f"max {ordered[-1]:.3f} s")


if __name__ == "__main__":
    main()
