"""`reconciler watch` as the operator runs it (a subprocess, JSON logs) against the lab: a due backup runs
with the same executor and locks as `apply` and lands as a ZFS snapshot; metrics are served; SIGTERM in
the middle of a backup leaves no VMware snapshot and nothing marked complete."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from reconciler.adapters.zfs.runner import run
from reconciler.lab.lab import Lab
from tests.integration.backup_world import RECONCILER, World, make_world

pytestmark = pytest.mark.lab

SAFETY_NET = 240.0  # seconds; a hang fails the test instead of blocking the suite


@dataclass
class WatchProcess:
    process: subprocess.Popen[str]
    lines: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    seen: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def wait_for(self, event: str, **match: Any) -> dict[str, Any]:
        while True:
            try:
                record = self.lines.get(timeout=SAFETY_NET)
            except queue.Empty:
                raise AssertionError(f"no {event} {match}; seen: {self.seen}") from None
            self.seen.append(record)
            if record["event"] == event and all(record.get(k) == v for k, v in match.items()):
                return record

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=SAFETY_NET)

    def events(self) -> list[str]:
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        return [r["event"] for r in self.seen]


@pytest.fixture
def watching(lab: Lab) -> Iterator[Any]:
    started: list[WatchProcess] = []

    def start(world: World, *args: str) -> WatchProcess:
        command = [RECONCILER, "watch", str(world.policy_dir), "--state-dir", str(world.state_dir),
                   "--log-format", "json", "--at", world.next_time(), *args]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   env=world.env())
        started.append(WatchProcess(process))
        return started[-1]

    yield start
    for watch in started:
        if watch.process.poll() is None:
            watch.process.kill()
            watch.process.wait()


def wait_for_our_vmware_snapshot(world: World, vm: str, watch: WatchProcess) -> None:
    """Until the backup is truly under way: its VMware snapshot exists."""
    while not [n for n in world.vmware_snapshots(vm) if n.startswith("reconciler-")]:
        assert watch.process.poll() is None, watch.events()
        time.sleep(0.1)  # pacing the polls, not a timed assertion


def test_a_due_backup_runs_lands_as_a_zfs_snapshot_and_shows_in_metrics(lab: Lab, tmp_path, watching) -> None:
    world = make_world(lab, tmp_path, "watch-clock", ("web-01",))
    watch = watching(world, "--apply", "safe", "--metrics-address", "127.0.0.1:0", "--resync", "7200")
    address = watch.wait_for("metrics.serving")["address"]
    done = watch.wait_for("apply.done")
    assert done["succeeded"] >= 2 and "failed" not in done, watch.seen  # pair + backup
    sleep = watch.wait_for("clock.sleep")
    assert "web-01" in sleep["next"]  # hourly: the clock now waits for its next backup
    [snapshot] = world.complete_backups("web-01")
    assert snapshot.complete
    assert not [n for n in world.vmware_snapshots("web-01") if n.startswith("reconciler-")]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as response:
        metrics = response.read().decode()
    assert 'reconciler_backups_total{result="succeeded"} 1.0' in metrics
    assert "reconciler_policy_valid 1.0" in metrics
    assert watch.stop() == 0
    assert "watch.stopped" in watch.events()


def test_sigterm_mid_backup_leaves_no_vmware_snapshot_and_nothing_complete(lab: Lab, tmp_path, watching) -> None:
    world = make_world(lab, tmp_path, "watch-sigterm", ("db-01",))
    world.control.set_fault("task-hangs", vm="db-01", seconds=8)  # the snapshot is still being taken
    try:
        watch = watching(world, "--apply", "safe", "--metrics-address", "off", "--grace", "0")
        watch.wait_for("apply.action-started", vm="db-01", action="backup")
        wait_for_our_vmware_snapshot(world, "db-01", watch)
        assert watch.stop() == 0
    finally:
        world.clear_faults()
    events = watch.events()
    assert "stop.aborting" in events and "watch.stopped" in events
    backup_done = [r for r in watch.seen if r["event"] == "apply.action-done" and r.get("action") == "backup"]
    assert [r["result"] for r in backup_done] in ([], ["failed"], ["skipped"]), backup_done
    assert not [n for n in world.vmware_snapshots("db-01") if n.startswith("reconciler-")]
    assert world.complete_backups("db-01") == []


def test_sigterm_within_the_grace_period_lets_the_backup_finish(lab: Lab, tmp_path, watching) -> None:
    world = make_world(lab, tmp_path, "watch-grace", ("app-01",))
    world.control.set_fault("task-hangs", vm="app-01", seconds=3)
    try:
        watch = watching(world, "--apply", "safe", "--metrics-address", "off", "--grace", "600")
        watch.wait_for("apply.action-started", vm="app-01", action="backup")
        wait_for_our_vmware_snapshot(world, "app-01", watch)
        assert watch.stop() == 0
    finally:
        world.clear_faults()
    assert "stop.aborting" not in watch.events()
    done = [r for r in watch.seen if r["event"] == "apply.action-done" and r.get("action") == "backup"]
    assert [r["result"] for r in done] == ["succeeded"], watch.seen
    assert len(world.complete_backups("app-01")) == 1
    assert not [n for n in world.vmware_snapshots("app-01") if n.startswith("reconciler-")]


def test_a_full_pool_fails_the_backup_cleanly_and_the_service_keeps_running(lab: Lab, tmp_path, watching) -> None:
    world = make_world(lab, tmp_path, "watch-full", ("web-01",))
    run(["zfs", "create", "-p", world.dataset])
    run(["zfs", "set", "quota=1M", world.dataset])  # the pool "fills up" for this dataset
    watch = watching(world, "--apply", "safe", "--metrics-address", "off")
    done = watch.wait_for("apply.done")
    assert done.get("failed") == ["web-01"], watch.seen
    [backup] = [r for r in watch.seen if r["event"] == "apply.action-done" and r.get("action") == "backup"]
    assert "quota" in backup["error"].lower() or "space" in backup["error"].lower()
    sleep = watch.wait_for("clock.sleep")
    assert "web-01" in sleep["next"]  # retried after the retry delay, not in a tight loop
    assert watch.process.poll() is None  # still running
    assert world.complete_backups("web-01") == []
    assert not [n for n in world.vmware_snapshots("web-01") if n.startswith("reconciler-")]
    assert watch.stop() == 0
