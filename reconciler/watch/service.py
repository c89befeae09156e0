"""The watch loop: reload policies on (debounced) file changes and SIGHUP, keep the last good set when a
change is invalid, run a cycle (observe → plan → apply per mode) when the policies change or the backup
clock says something is due, and stop gracefully on SIGTERM/SIGINT.

Threads: file events arrive on watchdog's thread and only note themselves and set `_wake`; signal
handlers only set flags (and arm the grace timer); everything else runs on the loop's thread.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.adapters import metrics as m
from reconciler.policy.model import PolicySet
from reconciler.watch import systemd
from reconciler.watch.clock import Clock, due_times, monotonic, next_wake, wall_jump
from reconciler.watch.cycle import ApplyMode, CycleReport, run_cycle
from reconciler.watch.debounce import Debouncer
from reconciler.watch.files import PolicyFileWatch
from reconciler.watch.log import Log

Listener = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class WatchConfig:
    paths: tuple[Path, ...]
    state_dir: Path
    mode: ApplyMode = ApplyMode.SAFE
    debounce_quiet: float = 0.25  # seconds of silence that end a burst of file events
    debounce_max: float = 2.0  # a burst never delays a reload longer than this
    resync: dt.timedelta = dt.timedelta(minutes=15)  # re-plan at least this often (drift, clock jumps)
    retry: dt.timedelta = dt.timedelta(minutes=5)  # a due backup that did not succeed is retried after this
    grace: float = 300.0  # seconds in-flight work may finish after SIGTERM before it is aborted
    parallel: int = 4
    task_timeout: float = 1800.0


class Watcher:
    def __init__(self, config: WatchConfig, clock: Clock, log: Log, metrics: m.LiveMetrics | None = None,
                 cycle: Callable[..., CycleReport] = run_cycle) -> None:
        self.config, self.clock, self.log = config, clock, log
        self.metrics = metrics or m.LiveMetrics()
        self._cycle = cycle
        self.listeners: list[Listener] = []
        self.policies: PolicySet | None = None  # the last good set
        self.last_report: CycleReport | None = None
        self._wake = threading.Event()
        self._cancel = threading.Event()  # handed to the executor: aborts in-flight work, cleanup still runs
        self._draining = threading.Event()  # a stop was asked for: no new apply run starts
        self._lock = threading.Lock()
        self._debouncer = Debouncer(config.debounce_quiet, config.debounce_max)
        self._reload_requested = False
        self._stopping = False
        self._in_cycle = False
        self._grace_timer: threading.Timer | None = None
        self._files = PolicyFileWatch(config.paths, self._on_file_event)
        self._wake_at: dt.datetime | None = None

    # -- events from other threads and signals ------------------------------------------------------------
    def _on_file_event(self, path: str) -> None:
        with self._lock:
            self._debouncer.note(monotonic())
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def request_stop(self) -> None:
        """First call: finish (within the grace period) and exit; second call: abort in-flight work now."""
        if self._stopping:
            self._abort("second stop request")
            return
        self._stopping = True
        self._draining.set()
        self._wake.set()
        if self._in_cycle:
            self._grace_timer = threading.Timer(self.config.grace, self._abort, args=("grace period over",))
            self._grace_timer.daemon = True
            self._grace_timer.start()

    def _abort(self, why: str) -> None:
        if not self._cancel.is_set():
            self._cancel.set()
            self.emit("warning", "stop.aborting", reason=why,
                      detail="stopping transfers; VMware snapshots are removed, nothing is marked complete")

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())

    # -- logging and listeners ----------------------------------------------------------------------------
    def emit(self, level: str, event: str, **fields: Any) -> None:
        self.log.write(level, event, fields)
        for listener in list(self.listeners):
            listener(event, fields)

    def _executor_event(self, event: Any) -> None:
        kind = event.kind.value
        if kind.startswith("disk-") and kind != "disk-done":
            return  # progress is for terminals; the journal and the action's end tell the story
        level = "warning" if event.data.get("result") == "failed" else "info"
        self.emit(level, f"apply.{kind}", vm=event.vm, action=event.action, **event.data)

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self) -> int:
        stop_pinger = threading.Event()
        self._files.start()
        systemd.start_watchdog(stop_pinger)
        self.emit("info", "watch.started", paths=[str(p) for p in self.config.paths], mode=self.config.mode.value,
                  state_dir=str(self.config.state_dir))
        try:
            need_cycle = self._reload("start")
            if not need_cycle:  # nothing valid to run yet: re-read on file events, or after a resync period
                self._wake_at = self.clock.now() + self.config.resync
            ready = False
            while not self._stopping:
                self._wake.clear()
                if self._reload_due():
                    need_cycle = self._reload("SIGHUP" if self._take_reload_request() else "files") or need_cycle
                if self._stopping:
                    break
                now = self.clock.now()
                timer = self._wake_at is None or now >= self._wake_at
                if timer and not need_cycle:
                    # files are re-read on the clock too: a missed inotify event (queue overflow, a watch
                    # that could not be placed) costs at most one resync period
                    need_cycle = self._reload("clock") or self.policies is not None
                if self.policies is not None and need_cycle:
                    self._run_cycle()
                    need_cycle = False
                if not ready:
                    systemd.notify("READY=1\nSTATUS=watching")
                    ready = True
                self._sleep()
        finally:
            stop_pinger.set()
            self._files.stop()
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            systemd.notify("STOPPING=1")
            self.metrics.shutdown()
            self.emit("info", "watch.stopped")
        return 0

    def _reload_due(self) -> bool:
        with self._lock:
            files_ready = self._debouncer.ready(monotonic())
        return self._reload_requested or files_ready

    def _take_reload_request(self) -> bool:
        requested, self._reload_requested = self._reload_requested, False
        return requested

    def _sleep(self) -> None:
        with self._lock:
            burst = self._debouncer.remaining(monotonic())
        if self._stopping:
            return
        if burst is not None:
            self._wake.wait(burst)  # the end of a burst of file events is measured in real time
            return
        until = self._wake_at or (self.clock.now() + self.config.resync)
        wall, mono = self.clock.now(), monotonic()
        self.clock.sleep_until(until, self._wake)
        jump = wall_jump(wall, self.clock.now(), mono, monotonic())
        if jump is not None:
            self.emit("warning", "clock.jumped", seconds=round(jump.delta.total_seconds(), 1),
                      detail="re-planning with the new time")
            self._wake_at = None

    def _reload(self, reason: str) -> bool:
        """Load the policy files; True when a new valid set is in force (a cycle is owed)."""
        from reconciler.policy import load

        with self._lock:
            events = self._debouncer.take()
        self._files.rearm()
        now = self.clock.now()
        try:
            result = load([str(p) for p in self.config.paths])
        except Exception as exc:  # load reports bad input as errors; this is a bug or the OS: keep running
            self.metrics.update(lambda d: m.with_policy(d, False, 1, now))
            self.emit("error", "policy.load_failed", reason=reason, error=f"{type(exc).__name__}: {exc}",
                      kept="last good policy set" if self.policies is not None else "none yet: nothing runs")
            return False
        if result.errors:
            errors = [str(e) for e in result.errors]
            self.metrics.update(lambda d: m.with_policy(d, False, len(errors), now))
            self.emit("error", "policy.invalid", reason=reason, events=events or None, errors=errors,
                      kept="last good policy set" if self.policies is not None else "none yet: nothing runs")
            systemd.notify(f"STATUS=policy files invalid ({len(errors)} error(s)); last good set kept")
            return False
        self.metrics.update(lambda d: m.with_policy(d, True, 0, now))
        if result.policy_set == self.policies:
            self.emit("info", "policy.unchanged", reason=reason, events=events or None)
            return False
        self.policies = result.policy_set
        self.emit("info", "policy.loaded", reason=reason, events=events or None, files=len(result.files),
                  documents=result.documents, policies=sorted(self.policies.policies))
        return True

    def _run_cycle(self) -> None:
        assert self.policies is not None
        now = self.clock.now()
        self._in_cycle = True
        try:
            report = self._cycle(self.policies, now, self.config.state_dir, self.config.mode, cancel=self._cancel,
                                 emit=self._executor_event, parallel=self.config.parallel,
                                 task_timeout=self.config.task_timeout, draining=self._draining)
        except Exception as exc:  # the service outlives any one cycle: report, retry later
            self._wake_at = now + self.config.retry
            self.metrics.update(lambda d: _count_cycle(d, "failed"))
            self.emit("error", "cycle.failed", error=f"{type(exc).__name__}: {exc}", retry_at=self._wake_at)
            return
        finally:
            self._in_cycle = False
        self.last_report = report
        self._after_cycle(report)

    def _after_cycle(self, report: CycleReport) -> None:
        now = self.clock.now()
        assert self.policies is not None
        self.metrics.update(lambda d: _count_cycle(m.with_plan(m.with_outcomes(m.from_observed(report.observed, d),
                                                                               report.outcomes, now),
                                                               report.pending), "succeeded"))
        plan = report.plan
        by_action: dict[str, int] = {}
        for change in plan.changes:
            by_action[change.action.value] = by_action.get(change.action.value, 0) + 1
        self.emit("info", "plan.ready", changes=len(plan.changes), actions=by_action or None,
                  diagnostics=len(plan.diagnostics), errors=sum(d.severity.value == "error" for d in plan.diagnostics),
                  fingerprint=plan.fingerprint, complete=plan.complete)
        if not plan.complete:
            self.emit("warning", "plan.incomplete", detail=f"the plan is incomplete: {plan.unobserved.describe()}",
                      **plan.unobserved.to_json())
        for diagnostic in plan.diagnostics:
            if diagnostic.severity.value == "error":
                self.emit("warning", "plan.diagnostic", **diagnostic.to_json())
        if report.locked:
            self.emit("warning", "apply.locked", detail=report.locked)
        if report.held:
            self.emit("info", "apply.held", mode=self.config.mode.value,
                      changes=[f"{c.action.value} {c.vm.name}" for c in report.held],
                      detail="run `reconciler apply` (or watch --apply all) to carry these out")
        failed = [o for o in report.outcomes if o.result.value == "failed"]
        if report.outcomes:
            self.emit("warning" if failed else "info", "apply.done", run=report.run_id,
                      succeeded=sum(o.result.value == "succeeded" for o in report.outcomes),
                      failed=[o.change.vm.name for o in failed] or None,
                      skipped=sum(o.result.value == "skipped" for o in report.outcomes) or None)
        dues = due_times(self.policies, report.observed, now)
        self._wake_at = next_wake((d.at for d in dues), now, resync=self.config.resync, retry=self.config.retry)
        self.metrics.update(lambda d: _with_wake(d, self._wake_at))
        first = next((d for d in dues if d.at <= self._wake_at), None)
        self.emit("info", "clock.sleep", until=self._wake_at,
                  next=f"{first.vm} ({first.policy}) due {_iso(first.at)}" if first else "re-plan (resync)")
        self.emit("info", "cycle.done", pending=len(report.pending))
        incomplete = "" if plan.complete else f"; plan incomplete: {plan.unobserved.describe()}"
        systemd.notify(f"STATUS={len(report.pending)} change(s) pending{incomplete}; next wake {_iso(self._wake_at)}")


def _count_cycle(data: m.MetricsData, result: str) -> m.MetricsData:
    from dataclasses import replace

    cycles = dict(data.cycles)
    cycles[result] = cycles.get(result, 0) + 1
    return replace(data, cycles=cycles)


def _with_wake(data: m.MetricsData, at: dt.datetime | None) -> m.MetricsData:
    from dataclasses import replace

    return replace(data, next_wake=at)


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
