"""`watch` with a real watchdog observer on a temp directory and the real reload → observe → plan cycle
(`--apply none`, a vCenter that refuses connections): edits re-plan, broken files keep the last good set
and are reported as FILE:LINE:COL, a deleted directory is survived, a burst of 1,000 events is one reload.
Assertions wait for events, never for a duration (the timeouts are only a safety net)."""

from __future__ import annotations

import io
import queue
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.watch.clock import SystemClock
from reconciler.watch.cycle import ApplyMode
from reconciler.watch.log import Log, LogFormat
from reconciler.watch.service import WatchConfig, Watcher
from tests.unit.watch.policyset import write_policy_set

SAFETY_NET = 60.0  # seconds; a hang fails the test instead of blocking the suite
RELOADS = ("policy.loaded", "policy.invalid", "policy.unchanged")


@dataclass
class Running:
    watcher: Watcher
    events: queue.Queue[tuple[str, dict[str, Any]]]
    policy_dir: Path
    log: io.StringIO

    def next(self, *names: str) -> tuple[str, dict[str, Any]]:
        """The next event among `names` (others are skipped)."""
        while True:
            try:
                event, fields = self.events.get(timeout=SAFETY_NET)
            except queue.Empty:
                raise AssertionError(f"no {names} event; log so far:\n{self.log.getvalue()}") from None
            if event in names:
                return event, fields

    def drain(self) -> list[str]:
        names = []
        while not self.events.empty():
            names.append(self.events.get_nowait()[0])
        return names


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    monkeypatch.setenv("VC1_PASSWORD", "not-a-real-password")
    policy_dir = write_policy_set(tmp_path / "policies")
    out = io.StringIO()
    config = WatchConfig((policy_dir,), tmp_path / "state", ApplyMode.NONE, debounce_quiet=1.0, debounce_max=30.0)
    watcher = Watcher(config, SystemClock(), Log(out, LogFormat.JSON))
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    watcher.listeners.append(lambda event, fields: events.put((event, fields)))
    thread = threading.Thread(target=watcher.run, name="watch-under-test")
    thread.start()
    run = Running(watcher, events, policy_dir, out)
    try:
        run.next("cycle.done")  # the first plan, made at start
        yield run
    finally:
        watcher.request_stop()
        thread.join(SAFETY_NET)
        assert not thread.is_alive(), "the watcher did not stop"


def every(run: Running) -> str:
    assert run.watcher.policies is not None
    return str(run.watcher.policies.schedules["daily"].rules[0].every)


def test_editing_a_policy_reloads_it_and_plans_again(running: Running) -> None:
    write_policy_set(running.policy_dir, every="12h")
    event, fields = running.next(*RELOADS)
    assert event == "policy.loaded" and fields["reason"] == "files"
    running.next("plan.ready")
    assert every(running) == "12:00:00"


def test_a_broken_file_keeps_the_last_good_set_and_reports_file_line_col(running: Running) -> None:
    broken = running.policy_dir / "schedule.yaml"
    broken.write_text(broken.read_text().replace("every: 24h", "every: soon"))
    event, fields = running.next(*RELOADS)
    assert event == "policy.invalid" and fields["kept"] == "last good policy set"
    assert any(e.startswith(f"{broken}:7:") for e in fields["errors"]), fields["errors"]
    assert every(running) == "1 day, 0:00:00"
    write_policy_set(running.policy_dir, every="6h")  # fixed: the new set takes over
    assert running.next(*RELOADS)[0] == "policy.loaded"
    assert every(running) == "6:00:00"


def test_deleting_the_whole_directory_keeps_the_last_good_set_until_it_comes_back(running: Running) -> None:
    shutil.rmtree(running.policy_dir)
    event, fields = running.next(*RELOADS)
    assert event == "policy.invalid" and fields["kept"] == "last good policy set"
    assert str(running.policy_dir) in fields["errors"][0]
    assert every(running) == "1 day, 0:00:00"
    write_policy_set(running.policy_dir, every="8h")  # a re-clone, a branch switch back
    while (reload := running.next(*RELOADS))[0] != "policy.loaded":
        assert reload[0] == "policy.invalid"  # the directory may be seen half-written first
    assert every(running) == "8:00:00"


def test_a_burst_of_a_thousand_file_events_is_one_reload(running: Running) -> None:
    schedule = running.policy_dir / "schedule.yaml"
    text = schedule.read_text()
    for i in range(999):  # a `git pull` rewriting files over and over
        schedule.write_text(text + f"# revision {i}\n")
    write_policy_set(running.policy_dir, every="2h")
    event, fields = running.next(*RELOADS)
    assert event == "policy.loaded" and fields["events"] >= 1000
    running.next("cycle.done")
    (running.policy_dir / "retention.yaml").write_text(
        (running.policy_dir / "retention.yaml").read_text().replace("keepLast: 3", "keepLast: 4"))
    assert running.next(*RELOADS)[0] == "policy.loaded"  # the next reload is this edit's, not a straggler
    assert every(running) == "2:00:00"


def test_sighup_style_reload_request_rereads_the_files(running: Running) -> None:
    running.watcher.request_reload()
    event, fields = running.next(*RELOADS)
    assert (event, fields["reason"]) == ("policy.unchanged", "SIGHUP")


def test_editor_scratch_files_and_vcs_internals_trigger_nothing(running: Running) -> None:
    (running.policy_dir / ".schedule.yaml.swp").write_text("scratch")
    (running.policy_dir / ".git").mkdir()
    (running.policy_dir / ".git" / "index.yaml").write_text("x")
    (running.policy_dir / "notes.txt").write_text("not a policy")
    running.watcher.request_reload()  # a marker: the first reload must be this one
    _, fields = running.next(*RELOADS)
    assert fields["reason"] == "SIGHUP" and fields.get("events") is None
