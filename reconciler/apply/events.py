"""What apply tells the operator while it runs: a small event vocabulary and two renderers, rich progress
bars for people and one JSON object per line for machines. The journal is written by the executor itself;
these are only views."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class Kind(StrEnum):
    RUN_STARTED = "run-started"
    ACTION_STARTED = "action-started"
    NOTE = "note"  # something the operator should know (a fallback, a retry)
    DISK_STARTED = "disk-started"
    DISK_PROGRESS = "disk-progress"
    DISK_DONE = "disk-done"
    ACTION_DONE = "action-done"
    RUN_DONE = "run-done"


@dataclass(frozen=True)
class Event:
    kind: Kind
    vm: str | None = None  # the VM's name
    action: str | None = None
    data: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> str:
        body = {"event": self.kind.value, "at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")}
        if self.vm is not None:
            body["vm"] = self.vm
        if self.action is not None:
            body["action"] = self.action
        return json.dumps(body | self.data, separators=(",", ":"), ensure_ascii=False)


class Reporter(Protocol):
    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class JsonLinesReporter:
    """One JSON object per line; disk progress at most once a second per disk (plus its last update)."""

    PROGRESS_INTERVAL = 1.0

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._last: dict[tuple[str | None, Any], float] = {}

    def emit(self, event: Event) -> None:
        if event.kind is Kind.DISK_PROGRESS:
            key = (event.vm, event.data.get("disk"))
            now = time.monotonic()
            done = event.data.get("done") == event.data.get("total")
            if not done and now - self._last.get(key, float("-inf")) < self.PROGRESS_INTERVAL:
                return
            self._last[key] = now
        with self._lock:
            self.stream.write(event.to_json() + "\n")
            self.stream.flush()

    def close(self) -> None:
        pass


class RichReporter:
    """A progress bar per disk (bytes, rate, ETA) and one overall, plus one line per finished action."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[tuple[str | None, Any], TaskID] = {}
        self._overall: TaskID | None = None
        self._started = False

    def _start(self) -> None:
        if not self._started:
            self.progress.start()
            self._started = True

    def emit(self, event: Event) -> None:
        data = event.data
        if event.kind is Kind.DISK_STARTED:
            self._start()
            if self._overall is None:
                self._overall = self.progress.add_task("[bold]all disks", total=0)
            key = (event.vm, data["disk"])
            self._tasks[key] = self.progress.add_task(f"{event.vm} disk {data['disk']} ({data['mode']})",
                                                      total=data["total"])
            self.progress.update(self._overall, total=(self.progress.tasks[self._overall].total or 0)
                                 + data["total"])
        elif event.kind is Kind.DISK_PROGRESS:
            task = self._tasks.get((event.vm, data["disk"]))
            if task is not None:
                self.progress.update(task, advance=data["advance"])
                if self._overall is not None:
                    self.progress.update(self._overall, advance=data["advance"])
        elif event.kind is Kind.NOTE:
            self.console.print(f"  [yellow]![/] {event.vm}: {data['message']}")
        elif event.kind is Kind.ACTION_DONE:
            ok = data["result"] == "succeeded"
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            detail = data.get("summary") or data.get("error") or ""
            self.console.print(f"  {mark} {event.action} {event.vm}" + (f": {detail}" if detail else ""))

    def close(self) -> None:
        if self._started:
            self.progress.stop()
