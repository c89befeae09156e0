"""Random access to a disk's bytes: a file (an image, a block device) or an NBD connection.

Inspection reads only header sectors through this interface, so the same code inspects a local image
and, during a backup, the VMware snapshot served over NBD.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, Self


class BlockReader(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset`; fewer (possibly none) past the end of the disk."""
        ...


class FileReader:
    """An image file or a block device, opened read-only."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        try:
            # lseek to the end also works for block devices, where st_size is 0
            self.size = os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            os.close(self._fd)
            raise

    def read(self, offset: int, length: int) -> bytes:
        if offset >= self.size or length <= 0:
            return b""
        return os.pread(self._fd, min(length, self.size - offset), offset)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NbdReader:
    """A connected libnbd handle (`nbd.NBD()`); reads with `pread`, clamped to the export's size."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.size = handle.get_size()

    def read(self, offset: int, length: int) -> bytes:
        if offset >= self.size or length <= 0:
            return b""
        return bytes(self._handle.pread(min(length, self.size - offset), offset))


class CountingReader:
    """Wraps a reader and counts what was read: proves inspection stays on the headers."""

    def __init__(self, inner: BlockReader) -> None:
        self._inner = inner
        self.size = inner.size
        self.bytes_read = 0
        self.reads = 0

    def read(self, offset: int, length: int) -> bytes:
        data = self._inner.read(offset, length)
        self.bytes_read += len(data)
        self.reads += 1
        return data
