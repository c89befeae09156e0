"""File-level restore through libguestfs: every disk is attached read-only, each file system is mounted
read-only on its own, and files are copied out with their timestamps.

A path names a file inside a volume: `[VOLUME:]PATH`, where VOLUME is a guestfs device (`sda3` or
`/dev/sda3`: disk a = the backup's first disk, partition 3). Without a volume, the path is looked up on
every file system and must exist on exactly one. Windows paths may use `\\`, any letter case and a drive
letter (ignored: which volume is `C:` is recorded in the guest's registry, not on the volume).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

from reconciler.restore.locate import RestoreError

VOLUME = re.compile(r"^(?:/dev/)?(sd[a-z]+\d*):(.*)$")
DRIVE_LETTER = re.compile(r"^[A-Za-z]:(?=[\\/])")  # `C:\Users\…`: searched on every volume
CASE_INSENSITIVE = frozenset({"ntfs", "vfat", "exfat"})


@dataclass(frozen=True)
class Entry:
    device: str
    path: str
    kind: str  # file, directory, symlink, other
    size: int
    mtime: int  # epoch seconds


@dataclass(frozen=True)
class RestoredFile:
    device: str
    source: str
    target: Path


def device_name(disk: int, partition: int | None) -> str:
    """guestfs's name for partition `partition` of the `disk`-th attached disk (None: the whole disk)."""
    letters, n = "", disk + 1
    while n:
        n, rest = divmod(n - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return f"/dev/sd{letters}{partition or ''}"


class GuestDisks:
    """A launched libguestfs appliance over image files (read-only); one launch (~16 s under TCG) serves
    any number of lookups, so callers share it."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        from reconciler.adapters.inspect.deep import configure_backend

        configure_backend()
        try:
            import guestfs  # Debian python3-guestfs; imported lazily: only file-level work needs it
        except ImportError:
            raise RestoreError("libguestfs is not available (Debian package python3-guestfs)") from None
        self.paths = [os.fspath(p) for p in paths]
        self.g: Any = guestfs.GuestFS(python_return_dict=True)
        try:
            for path in self.paths:
                self.g.add_drive_opts(path, readonly=1, format="raw")
            self.g.launch()
        except RuntimeError as exc:
            self.g.close()
            raise RestoreError(f"libguestfs could not start: {exc}") from None
        self._filesystems: dict[str, str] = {
            device: fstype for device, fstype in self.g.list_filesystems().items()
            if fstype not in ("unknown", "swap", "") and device.startswith("/dev/sd")
        }

    def close(self) -> None:
        self.g.close()

    def __enter__(self) -> GuestDisks:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def filesystems(self) -> dict[str, str]:
        """device -> file system type, of the volumes libguestfs can mount."""
        return dict(self._filesystems)

    # -- one volume at a time --------------------------------------------------------------------------
    def mount(self, device: str) -> None:
        self.g.umount_all()
        try:
            self.g.mount_ro(device, "/")
        except RuntimeError as exc:
            raise RestoreError(f"cannot mount {device} ({self._filesystems.get(device, '?')}) read-only: {exc}") \
                from None

    def root_listing(self, device: str) -> list[str]:
        """Mount `device` read-only and list its root: the proof that a file system is readable."""
        self.mount(device)
        try:
            return sorted(self.g.ls("/"))
        finally:
            self.g.umount_all()

    def _resolve(self, device: str, path: str) -> str | None:
        """`path` as it exists on the mounted `device` (case-corrected where the file system ignores
        case), or None."""
        path = "/" + path.replace("\\", "/").strip("/")
        if self._filesystems.get(device) in CASE_INSENSITIVE:
            try:
                path = self.g.case_sensitive_path(path)
            except RuntimeError:
                return None
        return path if self.g.exists(path) else None

    def locate(self, spec: str) -> tuple[str, str]:
        """(device, path) of `[VOLUME:]PATH`; errors name what was searched."""
        match = VOLUME.match(spec)
        if match is not None:
            device, path = "/dev/" + match.group(1), match.group(2) or "/"
            if device not in self._filesystems:
                known = ", ".join(sorted(self._filesystems)) or "none"
                raise RestoreError(f"{spec}: no mountable file system on {device} (file systems: {known})")
            devices = [device]
        else:
            path, devices = DRIVE_LETTER.sub("", spec), sorted(self._filesystems)
        found = []
        for device in devices:
            self.mount(device)
            try:
                resolved = self._resolve(device, path)
            finally:
                self.g.umount_all()
            if resolved is not None:
                found.append((device, resolved))
        if not found:
            raise RestoreError(f"{spec}: not found on {', '.join(devices) or 'any file system'}")
        if len(found) > 1:
            raise RestoreError(f"{spec} exists on {', '.join(d for d, _ in found)}: prefix it with the volume, "
                               f"e.g. {found[0][0].removeprefix('/dev/')}:{path}")
        return found[0]

    def list(self, spec: str) -> list[Entry]:
        """A directory's entries (or the file itself) at `[VOLUME:]PATH`."""
        device, path = self.locate(spec)
        self.mount(device)
        try:
            names = self.g.ls(path) if self.g.is_dir(path) else [None]
            entries = []
            for name in names:
                full = path if name is None else str(PurePosixPath(path) / name)
                st = self.g.lstatns(full)
                entries.append(Entry(device, full, _kind(st["st_mode"]), st["st_size"], st["st_mtime_sec"]))
            return entries
        finally:
            self.g.umount_all()

    def copy_out(self, spec: str, target_dir: Path) -> RestoredFile:
        """Copy a file or a directory tree to `target_dir`, keeping modification times."""
        device, path = self.locate(spec)
        target_dir.mkdir(parents=True, exist_ok=True)
        name = PurePosixPath(path).name or device.rpartition("/")[2]
        target = target_dir / name
        if target.exists():
            raise RestoreError(f"refusing to overwrite {target}")
        self.mount(device)
        try:
            if self.g.is_dir(path):
                self.g.copy_out(path, str(target_dir))  # tar underneath: times and modes kept
            else:
                self.g.download(path, str(target))
                st = self.g.statns(path)
                os.utime(target, ns=(st["st_atime_sec"] * 10**9 + st["st_atime_nsec"],
                                     st["st_mtime_sec"] * 10**9 + st["st_mtime_nsec"]))
        except RuntimeError as exc:
            raise RestoreError(f"cannot copy {device}:{path}: {exc}") from None
        finally:
            self.g.umount_all()
        return RestoredFile(device, path, target)


def _kind(mode: int) -> str:
    kind = mode & 0o170000
    return {0o100000: "file", 0o040000: "directory", 0o120000: "symlink"}.get(kind, "other")
