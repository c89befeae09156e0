"""Export a backup's disks as image files: raw (sparse kept), qcow2 or vmdk (through `qemu-img convert`)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from reconciler.restore.clone import DiskImage
from reconciler.restore.locate import RestoreError

CHUNK = 4 << 20
ZEROS = bytes(CHUNK)


class ImageFormat(StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"


@dataclass(frozen=True)
class ExportedDisk:
    key: int
    path: Path
    format: ImageFormat
    capacity: int


def _data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of every data extent; holes are skipped by SEEK_DATA/SEEK_HOLE."""
    extents, position = [], 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end))
        position = end
    return extents


def sparse_copy(source: Path, target: Path, progress: Callable[[int], None] | None = None) -> None:
    """Copy `source` to a new file `target` of the same size writing only non-zero chunks, so holes (and
    runs of written zeros) stay holes: `cp --sparse=always` semantics."""
    with source.open("rb") as src, target.open("xb") as dst:
        size = os.fstat(src.fileno()).st_size
        dst.truncate(size)
        for start, end in _data_extents(src.fileno(), size):
            position = start
            while position < end:
                data = os.pread(src.fileno(), min(CHUNK, end - position), position)
                if not data:
                    break
                if data != ZEROS[: len(data)]:
                    os.pwrite(dst.fileno(), data, position)
                position += len(data)
                if progress is not None:
                    progress(len(data))
        os.fsync(dst.fileno())


def convert(source: Path, target: Path, fmt: ImageFormat) -> None:
    """qemu-img keeps zeros unallocated in qcow2 and in (monolithic sparse) vmdk."""
    if shutil.which("qemu-img") is None:
        raise RestoreError("qemu-img is not installed (Debian package qemu-utils)")
    options = ["-o", "subformat=monolithicSparse"] if fmt is ImageFormat.VMDK else []
    result = subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", fmt.value, *options, str(source), str(target)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        target.unlink(missing_ok=True)
        raise RestoreError(f"qemu-img convert to {fmt} failed: {result.stderr.strip()}")


def export_disks(images: Sequence[DiskImage], directory: Path, fmt: ImageFormat, basename: str) -> list[ExportedDisk]:
    """Write one file per disk into `directory` as `<basename>-disk-<key>.<format>`; never overwrites."""
    directory.mkdir(parents=True, exist_ok=True)
    targets = [directory / f"{basename}-disk-{image.key}.{fmt.value}" for image in images]
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise RestoreError(f"refusing to overwrite {', '.join(existing)}")
    exported = []
    for image, target in zip(images, targets, strict=True):
        try:
            if fmt is ImageFormat.RAW:
                sparse_copy(image.path, target)
            else:
                convert(image.path, target, fmt)
        except OSError as exc:
            target.unlink(missing_ok=True)
            raise RestoreError(f"cannot write {target}: {exc.strerror}") from None
        except BaseException:  # Ctrl-C / SIGTERM: a half-written image must not pass for a restored disk
            target.unlink(missing_ok=True)
            raise
        exported.append(ExportedDisk(image.key, target, fmt, image.capacity))
    return exported
