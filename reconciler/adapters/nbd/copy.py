"""Copy byte ranges from an NBD export into a sparse image file, many requests in flight.

All-zero blocks never become data on the target: on a new image they are skipped (the file is sparse
already); over an older image (an incremental) they are punched out, so the image equals the source
byte for byte and stays sparse. Reads are issued with libnbd's asynchronous API so the server always has
`in_flight` requests to work on — the same technique as nbdcopy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import nbd

from reconciler.adapters.nbd.client import NbdClient, NbdClientError
from reconciler.core.extents import Range

ZERO_BLOCK = 64 * 1024  # granularity of hole detection; a multiple of every ZFS recordsize ≤ 64 KiB
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)


@dataclass
class CopyStats:
    bytes_read: int = 0
    bytes_written: int = 0
    bytes_zero: int = 0  # read, found all-zero, left or made a hole


class Throttle:
    """Something that delays the caller so that no more than a share of a link is used."""

    def consume(self, nbytes: int) -> None: ...


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range; where the file system cannot (zfs-fuse), write zeros, which ZFS with
    compression on stores as holes anyway."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        raise OSError(err, os.strerror(err))
    zeros = bytes(min(length, 4 * 1024 * 1024))
    position = offset
    while position < offset + length:
        n = min(len(zeros), offset + length - position)
        os.pwrite(fd, zeros[:n], position)
        position += n


def _runs(buffer: nbd.Buffer, length: int) -> Iterable[tuple[int, int, bool]]:
    """(start, length, is_zero) runs of a read buffer at ZERO_BLOCK granularity, neighbours merged."""
    start, current = 0, None
    for block in range(0, length, ZERO_BLOCK):
        zero = buffer.is_zero(block, min(ZERO_BLOCK, length - block))
        if current is None:
            current = zero
        elif zero != current:
            yield start, block - start, current
            start, current = block, zero
    if current is not None:
        yield start, length - start, current


def copy_ranges(
    connect: Callable[[], NbdClient],
    requests: Iterable[Range],
    fd: int,
    *,
    fresh_target: bool,
    connections: int = 4,
    in_flight: int = 8,
    throttle: Throttle | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> CopyStats:
    """Read each request from the export and write it at the same offset of `fd`.

    `connect` opens one connection; `connections` of them work in parallel threads (libnbd releases the
    GIL while it waits, `os.pwrite` too), each keeping `in_flight` reads outstanding — nbdcopy's recipe.
    `fresh_target`: the target holds no data yet (a full backup into a new sparse file), so zeros are
    skipped; otherwise zero runs are punched out to replace whatever the older image held there.
    """
    queue: deque[Range] = deque(requests)
    if not queue:
        return CopyStats()
    max_request = max(r.length for r in queue)
    totals = CopyStats()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(client: NbdClient) -> None:
        try:
            stats = _Worker(client, fd, fresh_target, max_request, in_flight, throttle, on_progress, lock).run(
                queue, errors
            )
        except BaseException as exc:  # reported to the caller below, after every thread stopped
            errors.append(exc)
            queue.clear()  # stop the other workers early
            return
        finally:
            client.close()
        with lock:
            totals.bytes_read += stats.bytes_read
            totals.bytes_written += stats.bytes_written
            totals.bytes_zero += stats.bytes_zero

    clients = [connect() for _ in range(max(1, min(connections, len(queue))))]
    threads = [threading.Thread(target=worker, args=(c,), name=f"nbd-copy-{i}") for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return totals


@dataclass
class _Worker:
    client: NbdClient
    fd: int
    fresh_target: bool
    max_request: int
    in_flight: int
    throttle: Throttle | None
    on_progress: Callable[[int], None] | None
    progress_lock: threading.Lock

    def run(self, queue: deque[Range], errors: list[BaseException]) -> CopyStats:
        handle = self.client.handle
        stats = CopyStats()
        running: dict[int, tuple[Range, nbd.Buffer, memoryview, bytearray]] = {}
        # Buffers are allocated once and reused: a fresh 4 MiB allocation costs a page fault per page.
        spare: list[bytearray] = []
        try:
            while (queue or running) and not errors:
                while len(running) < self.in_flight:
                    try:
                        request = queue.popleft()
                    except IndexError:
                        break
                    if self.throttle is not None:
                        self.throttle.consume(request.length)
                    backing = spare.pop() if spare else bytearray(self.max_request)
                    view = memoryview(backing)[: request.length]
                    buffer = nbd.Buffer.from_buffer(view)
                    running[handle.aio_pread(buffer, request.offset)] = (request, buffer, view, backing)
                if not running:
                    break
                handle.poll(-1)
                while running and (cookie := handle.aio_peek_command_completed()) > 0:
                    request, buffer, view, backing = running.pop(cookie)
                    try:
                        handle.aio_command_completed(cookie)
                    except nbd.Error as err:
                        raise NbdClientError(
                            f"{self.client.uri}: read of {request.length} bytes at offset {request.offset} "
                            f"failed: {err}"
                        ) from err
                    self._write(request, buffer, view, stats)
                    spare.append(backing)
        except nbd.Error as err:
            raise NbdClientError(f"{self.client.uri}: {err}") from err
        finally:
            _drain(handle, running)
        return stats

    def _write(self, request: Range, buffer: nbd.Buffer, view: memoryview, stats: CopyStats) -> None:
        for start, length, zero in _runs(buffer, request.length):
            offset = request.offset + start
            if zero:
                stats.bytes_zero += length
                if not self.fresh_target:
                    punch_hole(self.fd, offset, length)
                continue
            _pwrite_all(self.fd, view[start : start + length], offset)
            stats.bytes_written += length
        stats.bytes_read += request.length
        if self.on_progress is not None:
            with self.progress_lock:
                self.on_progress(request.length)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _drain(handle: nbd.NBD, running: dict[int, tuple[Range, nbd.Buffer, memoryview, bytearray]]) -> None:
    """Never free buffers that reads are still in flight into: wait for them (results ignored)."""
    while running:
        try:
            handle.poll(-1)
        except nbd.Error:
            return  # the connection is gone: nothing is in flight any more
        for cookie in list(running):
            try:
                done = handle.aio_command_completed(cookie)
            except nbd.Error:
                done = True
            if done:
                del running[cookie]
