"""Finding policy files and reading them without ever hanging or trusting what is on disk.

A directory is walked recursively (hidden entries skipped, symlinked directories followed once) for
`*.yaml`, `*.yml` and their `.j2` templates; `*.vars.yaml` / `*.vars.yml` hold template variables.
FIFOs, devices and sockets are reported, never opened: a FIFO would block `open()` forever.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from enum import StrEnum

from reconciler.policy.errors import PolicyError
from reconciler.policy.model import Location

DEFAULT_MAX_FILE_BYTES = 1024 * 1024
MAX_FILES = 10_000


class Role(StrEnum):
    POLICY = "policy"
    TEMPLATE = "template"
    VARS = "vars"


@dataclass(frozen=True, order=True)
class SourceFile:
    path: str  # as the user will see it in error messages
    role: Role


class SourceError(Exception):
    def __init__(self, error: PolicyError) -> None:
        super().__init__(str(error))
        self.error = error


def role_of(name: str) -> Role | None:
    lowered = name.lower()
    if lowered.endswith((".vars.yaml", ".vars.yml")):
        return Role.VARS
    if lowered.endswith((".yaml.j2", ".yml.j2")):
        return Role.TEMPLATE
    if lowered.endswith((".yaml", ".yml")):
        return Role.POLICY
    return None


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _file_error(path: str, message: str, hint: str | None = None) -> PolicyError:
    return PolicyError(Location(path), message, hint)


def discover(paths: list[str]) -> tuple[list[SourceFile], list[PolicyError]]:
    """The files to load from the given files and directories, in a stable order, and what was wrong."""
    found: list[SourceFile] = []
    errors: list[PolicyError] = []
    visited_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()

    def visit(path: str, *, explicit: bool) -> None:
        if len(found) >= MAX_FILES:
            return
        role = role_of(os.path.basename(path))
        try:
            info = os.stat(path)
        except OSError as exc:
            if not explicit and role is None:
                return
            if exc.errno == errno.ELOOP:
                errors.append(_file_error(path, "symlink loop: skipped", "remove or fix the symlink"))
            elif exc.errno == errno.ENOENT:
                what = "no such file or directory" if explicit else "broken symlink: skipped"
                errors.append(_file_error(path, what))
            else:
                errors.append(_file_error(path, f"cannot read: {exc.strerror}"))
            return
        if stat.S_ISDIR(info.st_mode):
            key = (info.st_dev, info.st_ino)
            if key in visited_dirs:
                return  # a symlinked directory seen before (or a directory loop)
            visited_dirs.add(key)
            try:
                names = sorted(os.listdir(path))
            except OSError as exc:
                errors.append(_file_error(path, f"cannot list directory: {exc.strerror}"))
                return
            for name in names:
                if not name.startswith("."):
                    visit(os.path.join(path, name), explicit=False)
            return
        if role is None and not explicit:
            return
        if not stat.S_ISREG(info.st_mode):
            errors.append(_file_error(path, f"{_kind_of(info.st_mode)}, not a policy file: skipped unread"))
            return
        if (info.st_dev, info.st_ino) in seen_files:
            return  # named twice (`validate dir dir/file`) or linked: loading it twice would clash with itself
        seen_files.add((info.st_dev, info.st_ino))
        found.append(SourceFile(path, role or Role.POLICY))

    for path in paths:
        visit(str(path), explicit=True)
    if len(found) >= MAX_FILES:
        errors.append(_file_error(str(paths[0]), f"more than {MAX_FILES} policy files: stopped looking"))
    return found, errors


def read_text(path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> str:
    """The file's text, checked: regular file, size cap, no NUL bytes, valid UTF-8 (a BOM is dropped)."""
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since discovery, open() still returns at once.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise SourceError(_file_error(path, f"cannot open: {exc.strerror}")) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SourceError(_file_error(path, f"{_kind_of(info.st_mode)}, not a policy file: skipped unread"))
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SourceError(
            _file_error(
                path,
                f"file too large: more than {max_bytes} bytes",
                "split it into several files, or raise the limit with --max-file-size",
            )
        )
    return decode(path, data)


def _position(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    col = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return line, col


def decode(path: str, data: bytes) -> str:
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _position(data, nul)
        raise SourceError(PolicyError(Location(path, line, col), "NUL byte in file: is this a binary file?"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _position(data, exc.start)
        byte = data[exc.start : exc.start + 1].hex()
        raise SourceError(
            PolicyError(Location(path, line, col), f"invalid UTF-8 (byte 0x{byte})", "save the file as UTF-8")
        ) from None
    return text.removeprefix("\ufeff")
