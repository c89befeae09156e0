"""A sparse-aware digest of a raw disk image, fast on mostly-empty multi-TB images.

Format (recorded by the backup pipeline in `reconciler:disks[].sha256`, checked by `reconciler verify`):

    bsha256-64m:<64 hex digits>

The image is cut into 64 MiB blocks (the last one may be shorter). Each block's leaf is the SHA-256 of
its bytes, except that a block of only zeros has the leaf `32 × 0x00`; a block that is all hole (found
with SEEK_DATA/SEEK_HOLE) is known to be zeros without being read. The digest is

    SHA-256( b"reconciler-bsha256/1\\0" || size as 8 bytes big-endian || block size as 8 bytes big-endian
             || leaf_0 || leaf_1 || … )

so it depends only on the image's logical bytes and size, never on which zeros are holes: a dense copy, a
sparse copy and the source disk read over NBD all give the same digest. A plain 64-hex value (no prefix)
is understood as the SHA-256 of the whole image, for callers that record that instead.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ALGORITHM = "bsha256-64m"
BLOCK_SIZE = 64 << 20
DOMAIN = b"reconciler-bsha256/1\0"
ZERO_LEAF = bytes(32)
READ_CHUNK = 8 << 20  # a block is read in pieces, so memory stays small
ZEROS = bytes(READ_CHUNK)


class ChecksumError(Exception):
    """The image cannot be read, or a recorded digest is not in a known format."""


@dataclass(frozen=True)
class DigestStats:
    """What computing a digest cost: blocks read versus skipped as holes."""

    blocks: int
    blocks_read: int
    bytes_read: int


def _next_data(fd: int, offset: int, size: int) -> int:
    """The offset of the first data byte at or after `offset`, or `size` when only holes follow."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return size
        raise


class _Leaf:
    """Hashes one block and remembers whether it held only zeros. Zeros are hashed lazily: a block that
    stays all-zero (a file system that cannot report holes, such as zfs-fuse) costs a read, no hashing."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.pending_zeros = 0  # zero bytes seen but not hashed yet
        self.zero = True

    def update(self, data: bytes | memoryview) -> None:
        if data == ZEROS[: len(data)]:
            if self.zero:
                self.pending_zeros += len(data)
                return
        elif self.zero:
            self.zero = False
            while self.pending_zeros:
                n = min(self.pending_zeros, len(ZEROS))
                self.sha.update(ZEROS[:n])
                self.pending_zeros -= n
        self.sha.update(data)

    def digest(self) -> bytes:
        return ZERO_LEAF if self.zero else self.sha.digest()


def _combine(size: int, block_size: int, leaves: list[bytes]) -> str:
    outer = hashlib.sha256(DOMAIN + size.to_bytes(8, "big") + block_size.to_bytes(8, "big"))
    for leaf in leaves:
        outer.update(leaf)
    return f"{ALGORITHM}:{outer.hexdigest()}"


def image_digest(path: str | os.PathLike[str], *, block_size: int = BLOCK_SIZE,
                 progress: Callable[[int], None] | None = None) -> tuple[str, DigestStats]:
    """The `bsha256-64m:` digest of a raw image, reading only blocks that contain data."""
    if block_size <= 0:
        raise ChecksumError(f"block size must be positive, got {block_size}")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ChecksumError(f"cannot read image {path}: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        leaves: list[bytes] = []
        blocks_read = bytes_read = 0
        offset = 0
        while offset < size:
            end = min(offset + block_size, size)
            if _next_data(fd, offset, size) >= end:
                leaves.append(ZERO_LEAF)  # all hole: zeros by definition, nothing to read
            else:
                leaf = _Leaf()
                position = offset
                while position < end:
                    data = os.pread(fd, min(READ_CHUNK, end - position), position)
                    if not data:
                        raise ChecksumError(f"{path}: short read at {position} (the file shrank?)")
                    leaf.update(data)
                    position += len(data)
                leaves.append(leaf.digest())
                blocks_read += 1
                bytes_read += end - offset
            offset = end
            if progress is not None:
                progress(offset)
        return _combine(size, block_size, leaves), DigestStats(len(leaves), blocks_read, bytes_read)
    except OSError as exc:
        raise ChecksumError(f"cannot read image {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def whole_file_sha256(path: str | os.PathLike[str]) -> str:
    """Plain SHA-256 of every byte (the fallback format); holes are read as zeros."""
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                sha.update(chunk)
    except OSError as exc:
        raise ChecksumError(f"cannot read image {path}: {exc.strerror}") from None
    return sha.hexdigest()


def digest_matches(recorded: str, path: str | os.PathLike[str]) -> tuple[bool, str]:
    """Whether the image at `path` has the `recorded` digest; also returns the digest computed, in the
    recorded format."""
    text = recorded.strip().lower()
    if text.startswith(ALGORITHM + ":"):
        actual, _ = image_digest(path)
    elif len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        actual = whole_file_sha256(path)
    else:
        raise ChecksumError(f"unknown digest format {recorded[:40]!r} (expected {ALGORITHM}:<hex> or 64 hex)")
    return actual == text, actual


def file_digest(path: Path) -> str:
    """Shorthand for the pipeline: the digest string only."""
    return image_digest(path)[0]
