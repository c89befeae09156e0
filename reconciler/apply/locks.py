"""One applier at a time per repository: an `flock` on a file in the state directory (the kernel frees it
when the holder dies, however it dies) plus a journal lock (visible to `status`, and to other hosts once
the journal is shared). The file names its holder so the refusal can say who it is."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from reconciler.adapters.journal.base import Journal, LockHeld


class ApplyLocked(Exception):
    """Another apply holds a repository this one needs."""


def lock_name(repository: str) -> str:
    return f"repository:{repository}"


@contextlib.contextmanager
def repository_locks(state_dir: Path, journal: Journal, repositories: Iterable[str], run_id: str) -> Iterator[None]:
    """Hold every repository's lock for the duration; taken in name order so two appliers cannot deadlock."""
    with contextlib.ExitStack() as stack:
        for repository in sorted(set(repositories)):
            stack.enter_context(_flock(state_dir, repository, run_id))
            try:
                journal.acquire_lock(lock_name(repository), run_id)
            except LockHeld as held:
                raise ApplyLocked(f"another apply is running on repository {repository!r}: {held}; "
                                  "wait for it to finish") from None
            stack.callback(journal.release_lock, lock_name(repository), run_id)
        yield


@contextlib.contextmanager
def _flock(state_dir: Path, repository: str, run_id: str) -> Iterator[None]:
    directory = state_dir / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{repository.replace('/', '_')}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ApplyLocked(f"another apply is running on repository {repository!r} "
                              f"({_holder(path)}); wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"run": run_id, "pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _holder(path: Path) -> str:
    try:
        data = json.loads(path.read_text() or "{}")
        return f"run {data['run']}, pid {data['pid']} on {data['host']}"
    except (OSError, ValueError, KeyError):
        return f"holder unknown: lock file {path}"
