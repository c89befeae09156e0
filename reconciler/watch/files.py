"""The policy paths under a watchdog observer. Any relevant event calls `on_change(path)`; the loop
debounces. A watched directory that is deleted (or replaced by a branch switch) is watched again
through its nearest existing ancestor, and `rearm()` re-attaches to it once it is back."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

_POLICY_SUFFIXES = (".yaml", ".yml", ".j2")
_EDITOR_DEBRIS = (".swp", ".swx", ".tmp", "~")


def relevant(path: str, is_directory: bool) -> bool:
    """Policy files and directories; not VCS internals nor editor scratch files."""
    parts = Path(path).parts
    if ".git" in parts:
        return False
    name = parts[-1] if parts else ""
    if is_directory:
        return True
    if name.startswith(".#") or name.endswith(_EDITOR_DEBRIS):
        return False
    return name.lower().endswith(_POLICY_SUFFIXES)


class _Handler(FileSystemEventHandler):
    def __init__(self, on_change: Callable[[str], None], roots: tuple[Path, ...]) -> None:
        self.on_change, self.roots = on_change, roots

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (our own loads among them) change nothing
        if event.is_directory and event.event_type == "modified":
            return  # "its entries changed": the entry's own event says whether that matters
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = os.fsdecode(raw) if raw else ""
            if path and self._concerns(path) and relevant(path, event.is_directory):
                self.on_change(path)
                return

    def _concerns(self, path: str) -> bool:
        """Events of an ancestor watch matter only on the way to a policy path."""
        candidate = Path(path)
        return any(candidate == root or root in candidate.parents or candidate in root.parents
                   for root in self.roots)


class PolicyFileWatch:
    def __init__(self, paths: Iterable[Path], on_change: Callable[[str], None]) -> None:
        self.roots = tuple(Path(os.path.abspath(p)) for p in paths)
        self._handler = _Handler(on_change, self.roots)
        self._observer = Observer()
        self._lock = threading.Lock()
        self._armed: dict[tuple[str, bool], object] = {}
        self._inodes: dict[str, int] = {}

    def start(self) -> None:
        self.rearm()
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)

    def rearm(self) -> None:
        """Watch each root (recursively when it is a directory) and its parent, or its nearest existing
        ancestor while it is gone. Cheap when nothing changed."""
        wanted: set[tuple[str, bool]] = set()
        for root in self.roots:
            if root.is_dir():
                wanted.add((str(root), True))
            anchor = root.parent
            while not anchor.is_dir() and anchor != anchor.parent:
                anchor = anchor.parent
            wanted.add((str(anchor), False))
        with self._lock:
            for key in list(self._armed):
                if key not in wanted or not os.path.isdir(key[0]) or (key[1] and self._stale(key[0])):
                    self._unschedule(key)
            for key in sorted(wanted - set(self._armed)):
                try:
                    self._armed[key] = self._observer.schedule(self._handler, key[0], recursive=key[1])
                    self._inodes[key[0]] = os.stat(key[0]).st_ino
                except OSError:
                    pass  # vanished between the check and the watch: the parent watch sees it come back

    def _stale(self, directory: str) -> bool:
        """A directory deleted and re-created under the same name is a new inode: the old watch is dead."""
        inode = self._inodes.get(directory)
        try:
            return inode is not None and os.stat(directory).st_ino != inode
        except OSError:
            return True

    def _unschedule(self, key: tuple[str, bool]) -> None:
        watch = self._armed.pop(key)
        with contextlib.suppress(KeyError, OSError):
            self._observer.unschedule(watch)  # type: ignore[arg-type]
