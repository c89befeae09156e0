"""What a thin backup keeps beside a disk's image: the disk's allocated ranges at that backup.

The next incremental needs them (`core.thin`: blocks freed since are punched, blocks allocated since are
read). They live in the image's dataset (`.reconciler/disk-KEY.allocated`), so the backup's ZFS snapshot
holds them with the image, a rollback restores both, and losing the file only costs a wider punch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Sequence
from pathlib import Path

from reconciler.core.extents import Range, normalise

MAGIC = b"RCALLOC1"


def allocation_path(image: Path) -> Path:
    return image.parent / ".reconciler" / f"{image.stem}.allocated"


def write_allocated(image: Path, allocated: Sequence[Range]) -> None:
    """Durably (temporary file, fsync, rename): a torn file must never pass for a smaller allocation."""
    path = allocation_path(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    ranges = normalise(allocated)
    data = MAGIC + struct.pack("<Q", len(ranges)) + b"".join(struct.pack("<QQ", r.offset, r.length) for r in ranges)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def read_allocated(image: Path) -> list[Range] | None:
    """The recorded allocation, or None when there is none or it is damaged (then: unknown)."""
    try:
        data = allocation_path(image).read_bytes()
    except OSError:
        return None
    if data[:8] != MAGIC or len(data) < 16:
        return None
    (count,) = struct.unpack_from("<Q", data, 8)
    if len(data) != 16 + 16 * count:
        return None
    return [Range(*struct.unpack_from("<QQ", data, 16 + 16 * i)) for i in range(count)]


def forget_allocated(image: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        allocation_path(image).unlink()


def data_extents(fd: int, size: int) -> list[Range] | None:
    """Where the image file stores data (SEEK_DATA/SEEK_HOLE); None where the file system cannot say."""
    extents: list[Range] = []
    position = 0
    try:
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after position
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            extents.append(Range(start, end - start))
            position = end
    except OSError:
        return None
    return normalise(extents, size=size)
