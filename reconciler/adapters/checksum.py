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

Incremental digests: the leaves are kept next to the image (`.reconciler/disk-<key>.leaves`, 32 bytes per
block, captured by the same ZFS snapshot), so after a transfer only the blocks it wrote or punched are read
again (`refresh_digest`). A missing or damaged leaves file costs one full recompute, never a wrong digest.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def combine(size: int, block_size: int, leaves: Sequence[bytes]) -> str:
    """The digest string from the per-block leaves."""
    outer = hashlib.sha256(DOMAIN + size.to_bytes(8, "big") + block_size.to_bytes(8, "big"))
    for leaf in leaves:
        outer.update(leaf)
    return f"{ALGORITHM}:{outer.hexdigest()}"


def _open_image(path: str | os.PathLike[str], block_size: int) -> int:
    if block_size <= 0:
        raise ChecksumError(f"block size must be positive, got {block_size}")
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ChecksumError(f"cannot read image {path}: {exc.strerror}") from None


def image_digest(path: str | os.PathLike[str], *, block_size: int = BLOCK_SIZE,
                 progress: Callable[[int], None] | None = None) -> tuple[str, DigestStats]:
    """The `bsha256-64m:` digest of a raw image, reading only blocks that contain data."""
    fd = _open_image(path, block_size)
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
        return combine(size, block_size, leaves), DigestStats(len(leaves), blocks_read, bytes_read)
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


# ---- incremental digests: leaves kept beside the image ---------------------------------------------------
LEAVES_MAGIC = b"reconciler-leaves/1\0"
_LEAVES_HEADER = len(LEAVES_MAGIC) + 24  # magic, size, block size, block count (8 bytes each, big-endian)


@dataclass(frozen=True)
class Leaves:
    """The per-block leaves of an image of `size` bytes: enough to give its digest without reading it."""

    size: int
    block_size: int
    leaves: tuple[bytes, ...]

    @property
    def digest(self) -> str:
        return combine(self.size, self.block_size, self.leaves)

    def to_bytes(self) -> bytes:
        body = (LEAVES_MAGIC + self.size.to_bytes(8, "big") + self.block_size.to_bytes(8, "big")
                + len(self.leaves).to_bytes(8, "big") + b"".join(self.leaves))
        return body + hashlib.sha256(body).digest()  # a torn or edited file is recognised, never trusted


def block_count(size: int, block_size: int) -> int:
    return -(-size // block_size)


def leaves_path(image: str | os.PathLike[str]) -> Path:
    """Where the leaves of `image` live: inside the same dataset, so the same ZFS snapshot holds both."""
    image = Path(image)
    return image.parent / ".reconciler" / f"{image.stem}.leaves"


def parse_leaves(data: bytes) -> Leaves | None:
    """Pure: a leaves file's contents, or None when they are not a complete, intact leaves file."""
    if len(data) < _LEAVES_HEADER + 32 or not data.startswith(LEAVES_MAGIC):
        return None
    body, check = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != check:
        return None
    position = len(LEAVES_MAGIC)
    size, block_size, count = (int.from_bytes(body[position + 8 * i: position + 8 * i + 8], "big") for i in range(3))
    leaves = body[_LEAVES_HEADER:]
    if block_size <= 0 or count != block_count(size, block_size) or len(leaves) != 32 * count:
        return None
    return Leaves(size, block_size, tuple(leaves[i: i + 32] for i in range(0, len(leaves), 32)))


def leaves_of(path: str | os.PathLike[str]) -> Leaves | None:
    """The leaves file at `path`; None when it is missing, unreadable or damaged (then recompute)."""
    try:
        return parse_leaves(Path(path).read_bytes())
    except OSError:
        return None


def write_leaves(path: str | os.PathLike[str], leaves: Leaves) -> None:
    """Write (temporary file, fsync, rename, fsync the directory): a crash leaves the old file or the new."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, leaves.to_bytes())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def image_leaves(path: str | os.PathLike[str], *, block_size: int = BLOCK_SIZE) -> tuple[Leaves, DigestStats]:
    """Every leaf of the image, read from scratch (holes skipped where the file system reports them)."""
    return update_leaves(path, None, [], fresh=False, block_size=block_size)


def _touched_blocks(ranges: Iterable[Any], block_size: int, count: int) -> set[int]:
    """Blocks overlapping `ranges`: (offset, length) pairs or objects with `.offset` and `.length`."""
    blocks: set[int] = set()
    for item in ranges:
        offset, length = (item.offset, item.length) if hasattr(item, "offset") else item
        if length > 0:
            blocks.update(range(offset // block_size, min(count, (offset + length - 1) // block_size + 1)))
    return blocks


def update_leaves(path: str | os.PathLike[str], old_leaves: Leaves | None,
                  touched_ranges: Iterable[Any], fresh: bool, *,
                  block_size: int = BLOCK_SIZE) -> tuple[Leaves, DigestStats]:
    """The image's leaves after a transfer that wrote or punched `touched_ranges` ((offset, length) pairs,
    e.g. the NBD read requests). Only touched blocks are read; the others come from `old_leaves`, or are
    zeros when the image was `fresh` (truncated empty before the transfer). Without usable old leaves (none,
    or for another size or block size) every block is read."""
    fd = _open_image(path, block_size)
    try:
        size = os.fstat(fd).st_size
        count = block_count(size, block_size)
        if fresh:
            leaves, reread = [ZERO_LEAF] * count, _touched_blocks(touched_ranges, block_size, count)
        elif old_leaves is not None and (old_leaves.size, old_leaves.block_size) == (size, block_size):
            leaves, reread = list(old_leaves.leaves), _touched_blocks(touched_ranges, block_size, count)
        else:
            leaves, reread = [ZERO_LEAF] * count, set(range(count))
        blocks_read = bytes_read = 0
        for block in sorted(reread):
            start, end = block * block_size, min((block + 1) * block_size, size)
            leaf, read = _block_leaf(fd, path, start, end, size)
            leaves[block] = leaf
            blocks_read += read > 0
            bytes_read += read
        return Leaves(size, block_size, tuple(leaves)), DigestStats(count, blocks_read, bytes_read)
    except OSError as exc:
        raise ChecksumError(f"cannot read image {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _block_leaf(fd: int, path: str | os.PathLike[str], start: int, end: int, size: int) -> tuple[bytes, int]:
    """(leaf, bytes read) of one block."""
    if _next_data(fd, start, size) >= end:
        return ZERO_LEAF, 0
    leaf = _Leaf()
    position = start
    while position < end:
        data = os.pread(fd, min(READ_CHUNK, end - position), position)
        if not data:
            raise ChecksumError(f"{path}: short read at {position} (the file shrank?)")
        leaf.update(data)
        position += len(data)
    return leaf.digest(), end - start


def refresh_digest(image: str | os.PathLike[str], touched_ranges: Iterable[Any], *,
                   fresh: bool, block_size: int = BLOCK_SIZE) -> tuple[str, DigestStats]:
    """For the backup pipeline, after a disk's transfer and fsync: update the image's leaves file from the
    ranges the transfer touched (falling back to a full recompute when the file is missing or damaged),
    write it durably, and return the image's digest."""
    path = leaves_path(image)
    old = None if fresh else leaves_of(path)
    leaves, stats = update_leaves(image, old, touched_ranges, fresh, block_size=block_size)
    try:
        write_leaves(path, leaves)
    except OSError as exc:
        raise ChecksumError(f"cannot write {path}: {exc.strerror}") from None
    return leaves.digest, stats
