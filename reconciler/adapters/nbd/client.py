"""A small libnbd client: size, allocation extents and reads of one export.

The backup data path builds on this (many requests in flight, chunking) — keep it a thin, typed layer
over libnbd with errors turned into one exception type.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import nbd

# The NBD protocol caps one request's payload at 32 MiB; libnbd refuses larger reads.
MAX_REQUEST = 32 * 1024 * 1024
# Block status count is 32-bit on the wire.
MAX_STATUS_REQUEST = 2**32 - 2**20


class NbdClientError(RuntimeError):
    """Connecting to or reading from an NBD export failed."""


@dataclass(frozen=True)
class Extent:
    """A run of bytes with one allocation state (`base:allocation`)."""

    offset: int
    length: int
    hole: bool
    zero: bool

    @property
    def end(self) -> int:
        return self.offset + self.length


class NbdClient:
    """One connection to one export. Use as a context manager or call `close()`."""

    def __init__(self, handle: nbd.NBD, uri: str) -> None:
        self._handle = handle
        self.uri = uri

    @classmethod
    def open(cls, uri: str) -> NbdClient:
        handle = nbd.NBD()
        handle.set_handle_name("reconciler")
        handle.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        try:
            handle.connect_uri(uri)
        except nbd.Error as err:
            del handle  # libnbd 1.14's Python handle has no close(): dropping it closes the connection
            raise NbdClientError(f"cannot connect to {uri}: {err}") from err
        return cls(handle, uri)

    @property
    def handle(self) -> nbd.NBD:
        """The libnbd handle, for the asynchronous data path (`adapters.nbd.copy`)."""
        return self._handle

    @property
    def size(self) -> int:
        return self._call(self._handle.get_size)

    @property
    def read_only(self) -> bool:
        return bool(self._call(self._handle.is_read_only))

    @property
    def max_request(self) -> int:
        """The largest read worth issuing: the server's advertised maximum, capped by the protocol's."""
        advertised = self._call(self._handle.get_block_size, nbd.SIZE_MAXIMUM)
        return min(MAX_REQUEST, advertised) if advertised > 0 else MAX_REQUEST

    @property
    def supports_extents(self) -> bool:
        return bool(self._call(self._handle.can_meta_context, nbd.CONTEXT_BASE_ALLOCATION))

    def pread(self, offset: int, length: int) -> bytes:
        """Read `length` bytes at `offset` (at most MAX_REQUEST; the caller chunks)."""
        if length > MAX_REQUEST:
            raise ValueError(f"read of {length} bytes exceeds the NBD maximum of {MAX_REQUEST}")
        return bytes(self._call(self._handle.pread, length, offset))

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        """Allocation extents covering [offset, offset+length), clipped to it. Servers without
        block status (nbdkit-curl) report everything as data."""
        end = self.size if length is None else min(self.size, offset + length)
        if not self.supports_extents:
            if end > offset:
                yield Extent(offset, end - offset, hole=False, zero=False)
            return
        position = offset
        while position < end:
            batch = self._block_status(position, min(end - position, MAX_STATUS_REQUEST))
            if not batch:
                raise NbdClientError(f"{self.uri}: server returned no extents at offset {position}")
            for extent_length, flags in batch:
                length_here = min(extent_length, end - position)
                yield Extent(
                    position,
                    length_here,
                    hole=bool(flags & nbd.STATE_HOLE),
                    zero=bool(flags & nbd.STATE_ZERO),
                )
                position += length_here
                if position >= end:
                    break

    def _block_status(self, offset: int, count: int) -> list[tuple[int, int]]:
        entries: list[tuple[int, int]] = []

        def collect(metacontext: str, _offset: int, flat: list[int], _error: object) -> int:
            if metacontext == nbd.CONTEXT_BASE_ALLOCATION:
                entries.extend(zip(flat[0::2], flat[1::2], strict=True))
            return 0

        self._call(self._handle.block_status, count, offset, collect)
        return entries

    def _call(self, function, *args):  # type: ignore[no-untyped-def]
        try:
            return function(*args)
        except nbd.Error as err:
            raise NbdClientError(f"{self.uri}: {err}") from err

    def close(self) -> None:
        with contextlib.suppress(nbd.Error):  # already disconnected: closing is all that is left
            self._handle.shutdown()
        close = getattr(self._handle, "close", None)  # libnbd >= 1.16; older ones close on collection
        if close is not None:
            close()

    def __enter__(self) -> NbdClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
